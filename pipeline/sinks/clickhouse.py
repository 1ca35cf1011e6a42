"""ClickHouse sink: schema migrations and batched, idempotent inserts.

One code path for the embedded engine (``chdb://path``, in-process, the default) and a
ClickHouse server (``http(s)://user:pass@host:port/db``): both go through clickhouse-connect.
Every insert carries an ``insert_deduplication_token`` built by the caller from what the
batch *is* (topic/partition/offset range, or file/line range for replay), so a retried or
replayed batch adds no rows; ``async_insert=0`` because we already batch.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import clickhouse_connect
import orjson

from pipeline.contracts.alerts import Alert
from pipeline.contracts.events import Event
from pipeline.contracts.scored import Scored, scored_columns
from pipeline.sinks import readonly_sql

log = logging.getLogger(__name__)
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "clickhouse"

EVENT_COLUMNS = ["ts", "tenant_id", "event_id", "api_key_id", "model", "endpoint",
                 "input_tokens", "output_tokens", "latency_ms", "status", "has_prompt",
                 "has_embedding", "prompt", "cell", "novel", "score", "drift"]
ALERT_COLUMNS = ["alert_id", "ts", "emitted_at", "tenant_id", "severity", "detector", "score",
                 "threshold", "events_seen", "related_tenants", "summary", "evidence",
                 "detector_version", "version"]

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def connect(dsn: str, *, shared: bool = True):
    """A client for ``dsn``; embedded engines are opened once per process and shared.

    ``shared=False`` gives a client of its own on the same embedded engine (it must be
    opened first): its queries run concurrently with the shared client's inserts.
    """
    if dsn.startswith("chdb://") and not shared:
        return clickhouse_connect.get_client(dsn=dsn)
    if dsn.startswith("chdb://"):
        with _clients_lock:
            if dsn not in _clients:
                Path(dsn[len("chdb://"):]).mkdir(parents=True, exist_ok=True)
                _clients[dsn] = clickhouse_connect.get_client(dsn=dsn)
            return _clients[dsn]
    return clickhouse_connect.get_client(dsn=dsn, settings={"async_insert": 0})


def _statements(sql: str) -> list[str]:
    sql = re.sub(r"--[^\n]*", "", sql)
    return [s.strip() for s in sql.split(";") if s.strip()]


def apply_migrations(client, schema_dir: Path = SCHEMA_DIR) -> list[int]:
    """Apply every ``NNN_name.sql`` not yet recorded; returns the versions applied now."""
    applied_now = []
    files = sorted(schema_dir.glob("[0-9][0-9][0-9]_*.sql"))
    done: set[int] = set()
    try:
        done = {r[0] for r in client.query(
            "SELECT version FROM coverwatch.schema_migrations FINAL").result_rows}
    except Exception:  # first start: the table does not exist yet
        pass
    for f in files:
        version = int(f.name[:3])
        if version in done:
            continue
        for stmt in _statements(f.read_text()):
            client.command(stmt)
        client.insert("coverwatch.schema_migrations", [[version, f.stem]],
                      column_names=["version", "name"])
        applied_now.append(version)
    return applied_now


def token(*parts: Any) -> str:
    """A dedup token from what identifies a batch (e.g. topic, partition, first, last offset)."""
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).hexdigest()


def _iso_dt(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def prompt_column(prompt: str | None, mode: str, salt: str) -> str:
    """What the events table keeps of a prompt: nothing by default, a salted hash, or text."""
    if not prompt or mode == "none":
        return ""
    if mode == "hash":
        return hashlib.blake2b(prompt.encode(), key=salt.encode()[:64], digest_size=16).hexdigest()
    return prompt


def event_columns(events: Sequence[Event], scored: Sequence[Scored], *,
                  store_prompts: str = "none", prompt_salt: str = "") -> list[list]:
    """The events table's columns (EVENT_COLUMNS order) for one batch.

    Column-oriented with ``ts`` as epoch-ms integers (DateTime64(3) ticks): no datetime
    object and no 17-element row list per event.
    """
    cells, novel, scores, drifts = scored_columns(scored)
    return [
        [e.ts_ms for e in events],
        [e.tenant_id for e in events],
        [e.event_id for e in events],
        [e.api_key_id or "" for e in events],
        [e.model or "" for e in events],
        [e.endpoint or "" for e in events],
        [e.input_tokens or 0 for e in events],
        [e.output_tokens or 0 for e in events],
        [e.latency_ms or 0.0 for e in events],
        [e.status or 0 for e in events],
        [int(bool(e.prompt)) for e in events],
        [int(e.extra.get("provided_embedding", False)) for e in events],
        [e.extra["prompt_column"] if "prompt_column" in e.extra
         else prompt_column(e.prompt, store_prompts, prompt_salt) for e in events],
        list(cells),
        [int(n) for n in novel],
        [float(x) for x in scores],
        [float(x) for x in drifts],
    ]


def alert_rows(alerts: Iterable[Alert]) -> list[list]:
    rows = []
    for a in alerts:
        emitted = _iso_dt(a.emitted_at) if a.emitted_at else datetime.now(timezone.utc)
        rows.append([a.alert_id, _iso_dt(a.ts), emitted, a.tenant_id, a.severity, a.detector,
                     a.score, a.threshold, a.events_seen, list(a.related_tenants),
                     a.evidence.get("summary", ""), orjson.dumps(a.evidence).decode(),
                     a.detector_version, a.events_seen * 1000 + len(a.related_tenants)])
    return rows


class ClickHouseSink:
    """Writes event and alert batches; retries a failed insert with the same token.

    ``write`` blocks until the batch is stored (or ``max_wait_s`` passes), which is the
    backpressure: the caller does not take the next batch, and so does not commit offsets,
    while ClickHouse is down. ``behind_s`` and ``failures`` feed the worker's metrics.
    """

    def __init__(self, dsn: str, *, store_prompts: str = "none", prompt_salt: str = "",
                 retry_s: float = 1.0, max_retry_s: float = 10.0, fault_file: str = ""):
        self.dsn = dsn
        self.store_prompts = store_prompts
        self.prompt_salt = prompt_salt
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.failures = 0
        self.rows_written = 0
        self.behind_since: float | None = None
        self.fault_file = fault_file
        self._client = None
        self._query_clients = threading.local()
        self._lock = threading.Lock()

    @property
    def client(self):
        """The sink's client, published only once migrated: the query thread may ask for it
        while the sink's thread is still migrating."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    c = connect(self.dsn)
                    apply_migrations(c)
                    self._client = c
        return self._client

    @property
    def query_client(self):
        """A client of its own for analyst queries, one per query thread. On the embedded
        engine a second client runs beside the sink's (measured: an insert during a 3 s
        query returned in 0.3 s), so a query never holds the thread that stores batches.
        Per thread because two queries on one client mix their results: with a 10M-row
        query beside it, ``SELECT uniqExact(...)`` got 65,410 of the other query's rows
        (found by the hostile-queries fault scenario; tests/test_sink.py)."""
        client = getattr(self._query_clients, "client", None)
        if client is None:
            self.client   # opened and migrated first
            client = self._query_clients.client = connect(self.dsn, shared=False)
        return client

    @property
    def behind_s(self) -> float:
        return 0.0 if self.behind_since is None else time.monotonic() - self.behind_since

    def _insert(self, table: str, data: list[list], columns: list[str], dedup: str,
                column_oriented: bool = False) -> None:
        if self.fault_file and os.path.exists(self.fault_file):
            raise ConnectionError(f"fault injected: {self.fault_file} exists")
        self.client.insert(table, data, column_names=columns, column_oriented=column_oriented,
                           settings={"insert_deduplication_token": dedup, "async_insert": 0})

    def _retrying(self, fn, *args, max_wait_s: float | None = None) -> None:
        delay = self.retry_s
        start = time.monotonic()
        while True:
            try:
                fn(*args)
                if self.behind_since is not None:
                    log.warning("clickhouse sink caught up after %.1f s", self.behind_s)
                self.behind_since = None
                return
            except Exception as exc:  # noqa: BLE001 - any failure is retried, never dropped
                self.failures += 1
                if self.behind_since is None:
                    self.behind_since = time.monotonic()
                log.warning("clickhouse sink behind (%.1f s, %d failures): %s",
                            self.behind_s, self.failures, str(exc)[:300])
                if self._client is not None and not self.dsn.startswith("chdb://"):
                    self._client = None  # reconnect to a server on the next try
                if max_wait_s is not None and time.monotonic() - start > max_wait_s:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, self.max_retry_s)

    def write(self, events: Sequence[Event], scored: Sequence[Scored], alerts: Sequence[Alert],
              dedup: str, *, max_wait_s: float | None = None) -> None:
        """Store one batch (events and the alerts it raised) under one dedup token."""
        if events:
            cols = event_columns(events, scored, store_prompts=self.store_prompts,
                                 prompt_salt=self.prompt_salt)
            self._retrying(self._insert, "coverwatch.events", cols, EVENT_COLUMNS,
                           f"{dedup}:e", True, max_wait_s=max_wait_s)
            self.rows_written += len(events)
        if alerts:
            self._retrying(self._insert, "coverwatch.alerts", alert_rows(alerts),
                           ALERT_COLUMNS, f"{dedup}:a", max_wait_s=max_wait_s)

    def query(self, sql: str, parameters: dict | None = None, *,
              limits: dict | None = None):
        """Run one analyst query; returns (column_names, rows).

        :func:`readonly_sql.check` refuses it first (one read-only statement, no
        ``INTO OUTFILE``, no file or URL table functions, no ``system`` tables beyond the
        catalogue), then the engine runs it under ``limits`` (``readonly=1`` with time,
        memory and result caps: :func:`readonly_sql.limits`).
        """
        sql = readonly_sql.check(sql)
        r = self.query_client.query(sql, parameters=parameters,
                                    settings=limits or readonly_sql.limits())
        return list(r.column_names), [list(row) for row in r.result_rows]
