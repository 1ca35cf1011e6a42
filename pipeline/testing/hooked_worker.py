"""``coverwatch worker`` with test hooks: ``python -m pipeline.testing.hooked_worker``.

Runs the CLI's worker exactly as deployed (same Settings from the environment, same app),
after installing the hooks the environment asks for. Production code has none of them.

- ``COVERWATCH_TEST_STOP_MERGES=1``: no background merge on the embedded engine
  (:func:`stop_merges`), so ReplacingMergeTree never collapses rows and a raw ``count()``
  shows every row that ever landed (the fault suite counts duplicates that way; it also
  checks that no part came from a merge).
- ``COVERWATCH_TEST_GLOBALS_EVERY_S=S``: save the global models (population, campaign
  stage) every ``S`` seconds instead of 5. The fault suite plays a day of traffic in 40 s,
  where 5 s is three hours of traffic: three kills could lose a third of the day's
  population learning, which a real crash (5 s of a day) never does.
- ``COVERWATCH_TEST_LAND_THEN_FAIL=N``: the first ``N`` inserts reach the real client and
  land, then raise as if the acknowledgement was lost (the sink must retry with the same
  dedup token, which adds no rows).
- ``COVERWATCH_TEST_KILL_AFTER_ROWS=N:PATH``: unless ``PATH`` exists, create it and
  SIGKILL this process right after the events insert that takes the rows it stored to
  ``N`` or more landed: before that batch's tenant state and offsets reach Kafka, the
  moment a re-delivery repeats stored events. (Rows, not inserts: a loaded worker takes
  larger batches, and a count of inserts was not reached in one run with a CPU hog.)
- ``COVERWATCH_TEST_SKIP_RECORD=P:O``: the internal topic's record at partition ``P``,
  offset ``O`` does not reach the detect agent the first time it is read, as Faust's
  consumer can skip records around a rebalance (``pipeline.stream.batch.Continuity``).
"""
from __future__ import annotations

import logging
import os
import signal
import sys

log = logging.getLogger("coverwatch.testhooks")


FROZEN_TABLES = ("events", "alerts", "tenant_minutes")


def stop_merges(client) -> None:
    """No background merge from now on, in this process and the next ones to open the engine.

    ``SYSTEM STOP MERGES`` acts on this process only, and a restarted engine schedules
    merges of the parts it finds as it opens, before any command of ours; so the tables also
    get settings (kept in their metadata) under which no merge is ever selected. Inserts are
    never delayed for having many parts.
    """
    client.command("SYSTEM STOP MERGES")
    for table in FROZEN_TABLES:
        client.command(f"ALTER TABLE coverwatch.{table} MODIFY SETTING "
                       "max_bytes_to_merge_at_max_space_in_pool = 1, "
                       "max_bytes_to_merge_at_min_space_in_pool = 1, "
                       "parts_to_delay_insert = 100000, parts_to_throw_insert = 200000")


def install_hooks(env=None) -> None:
    env = os.environ if env is None else env
    from pipeline.sinks import clickhouse as ch
    if env.get("COVERWATCH_TEST_STOP_MERGES") == "1":
        migrate = ch.apply_migrations

        def apply_migrations(client, *args, **kwargs):
            client.command("SYSTEM STOP MERGES")   # as early as this process can
            out = migrate(client, *args, **kwargs)
            stop_merges(client)
            log.warning("test hook: background merges stopped")
            return out
        ch.apply_migrations = apply_migrations
    every = env.get("COVERWATCH_TEST_GLOBALS_EVERY_S")
    if every:
        from pipeline.stream import state
        init = state.Checkpoints.__init__

        def __init__(self, *args, **kwargs):
            init(self, *args, **kwargs)
            self.every_s = float(every)
        state.Checkpoints.__init__ = __init__
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
    skip = env.get("COVERWATCH_TEST_SKIP_RECORD")
    if skip:
        from pipeline.stream import app as worker_app
        read = worker_app.records
        where = tuple(map(int, skip.split(":")))
        skipped = [False]

        def records(batch):
            out = read(batch)
            if skipped[0]:
                return out
            kept = [r for r in out if (r.partition, r.offset) != where]
            if len(kept) < len(out):
                skipped[0] = True
                log.warning("test hook: internal record %d:%d skipped once", *where)
            return kept
        worker_app.records = records
    kill_at = env.get("COVERWATCH_TEST_KILL_AFTER_ROWS")
    if kill_at:
        n, marker = kill_at.split(":", 1)
        real_kill = ch.ClickHouseSink._insert
        rows = [0]

        def _insert(self, table, data, columns, dedup, column_oriented=False):
            real_kill(self, table, data, columns, dedup, column_oriented)
            if table == "coverwatch.events" and not os.path.exists(marker):
                rows[0] += len(data[0]) if column_oriented else len(data)
                if rows[0] >= int(n):
                    open(marker, "w").close()
                    log.warning("test hook: SIGKILL after storing %d rows", rows[0])
                    os.kill(os.getpid(), signal.SIGKILL)
        ch.ClickHouseSink._insert = _insert


def main() -> int:
    install_hooks()
    from pipeline.cli import main as cli_main
    return cli_main(["worker", "--loglevel", os.environ.get("COVERWATCH_LOGLEVEL", "info")])


if __name__ == "__main__":
    sys.exit(main())
