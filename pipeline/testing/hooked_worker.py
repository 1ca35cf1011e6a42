"""``coverwatch worker`` with test hooks: ``python -m pipeline.testing.hooked_worker``.

Runs the CLI's worker exactly as deployed (same Settings from the environment, same app),
after installing the hooks the environment asks for. Production code has none of them.

- ``COVERWATCH_TEST_STOP_MERGES=1``: ``SYSTEM STOP MERGES`` on the embedded engine right
  after it opens (before and after the migrations), so ReplacingMergeTree never collapses
  rows in the background and a raw ``count()`` shows every row that ever landed (the
  fault suite counts duplicates that way; it also checks that no part was merged).
- ``COVERWATCH_TEST_LAND_THEN_FAIL=N``: the first ``N`` inserts reach the real client and
  land, then raise as if the acknowledgement was lost (the sink must retry with the same
  dedup token, which adds no rows).
"""
from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("coverwatch.testhooks")


def stop_merges(client) -> None:
    """Stop background merges of every table the engine has (a no-op for a server)."""
    client.command("SYSTEM STOP MERGES")


def install_hooks(env=None) -> None:
    env = os.environ if env is None else env
    from pipeline.sinks import clickhouse as ch
    if env.get("COVERWATCH_TEST_STOP_MERGES") == "1":
        migrate = ch.apply_migrations

        def apply_migrations(client, *args, **kwargs):
            try:
                stop_merges(client)        # tables of an earlier run: before anything merges
            except Exception:  # noqa: BLE001 - first start: nothing to stop yet
                pass
            out = migrate(client, *args, **kwargs)
            stop_merges(client)
            log.warning("test hook: background merges stopped")
            return out
        ch.apply_migrations = apply_migrations
    fail_n = int(env.get("COVERWATCH_TEST_LAND_THEN_FAIL") or 0)
    if fail_n:
        real = ch.ClickHouseSink._insert
        left = [fail_n]

        def _insert(self, table, data, columns, dedup, column_oriented=False):
            real(self, table, data, columns, dedup, column_oriented)   # lands for real
            if left[0] > 0:
                left[0] -= 1
                log.warning("test hook: insert into %s landed (token %s), reporting failure",
                            table, dedup)
                raise ConnectionError("test hook: acknowledgement lost after the insert")
        ch.ClickHouseSink._insert = _insert


def main() -> int:
    install_hooks()
    from pipeline.cli import main as cli_main
    return cli_main(["worker", "--loglevel", os.environ.get("COVERWATCH_LOGLEVEL", "info")])


if __name__ == "__main__":
    sys.exit(main())
