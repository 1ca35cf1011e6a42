"""The worker's ``/query`` endpoint: who may ask, how many at once, and what a bad ask gets.

The embedded engine can be opened by one process at a time, so analysts query through the
worker. That must not open the worker to the network: without ``COVERWATCH_QUERY_TOKEN``
only loopback peers may query (the port binds 127.0.0.1 by default anyway); with one,
every caller must send ``Authorization: Bearer <token>``, compared in constant time before
the body is read. Queries run on threads and a ClickHouse client of their own, at most
``query_concurrency`` at a time (the rest get 429), under the engine limits of
:mod:`pipeline.sinks.readonly_sql`, so they cannot hold the thread that stores batches.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
from concurrent.futures import ThreadPoolExecutor

import orjson

from pipeline.settings import Settings
from pipeline.sinks import readonly_sql


def is_loopback(peer: str | None) -> bool:
    """Is the peer address a loopback one (127.0.0.0/8, ::1)? ``None`` (unknown) is not."""
    try:
        return ipaddress.ip_address(peer or "").is_loopback
    except ValueError:
        return False


def bearer_ok(header: str | None, token: str) -> bool:
    """``Authorization`` header matches ``Bearer <token>``, compared in constant time."""
    return hmac.compare_digest((header or "").encode(), f"Bearer {token}".encode())


class QueryEndpoint:
    """Serves ``/query`` for a sink (whose :meth:`query` checks and limits the SQL)."""

    def __init__(self, s: Settings, sink):
        self.s = s
        self.sink = sink
        self.limits = readonly_sql.limits(s.query_timeout_s, s.query_max_rows,
                                          s.query_max_memory_mb)
        self.pool = ThreadPoolExecutor(max(1, s.query_concurrency), thread_name_prefix="query")
        self.running = 0
        self.refused = 0

    def _gate(self, request) -> tuple[int, str] | None:
        """(status, reason) when the caller may not query; checked before the body is read."""
        if self.s.query_token:
            if not bearer_ok(request.headers.get("Authorization"), self.s.query_token):
                return 401, "unauthorized"
        elif not is_loopback(request.remote):
            return 403, "query endpoint: set COVERWATCH_QUERY_TOKEN to query from other hosts"
        if self.running >= max(1, self.s.query_concurrency):
            return 429, "too many queries running; retry later"
        return None

    async def _body(self, request) -> dict:
        if request.method == "GET":
            return dict(request.query)
        try:
            raw = await request.read()   # aiohttp refuses bodies over its 1 MiB default
        except Exception:  # noqa: BLE001 - too large or cut off
            raise ValueError("body too large or unreadable") from None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ValueError("body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ValueError('body must be a JSON object: {"sql": "...", "parameters": {...}}')
        return body

    async def handle(self, web, request):
        refused = self._gate(request)
        if refused is not None:
            self.refused += 1
            return web.json({"error": refused[1]}, status=refused[0])
        self.running += 1
        try:
            try:
                body = await self._body(request)
            except ValueError as exc:
                return web.json({"error": str(exc)}, status=400)
            if body.get("dsn") and body["dsn"] != self.s.clickhouse_dsn:
                # the caller means another database than this worker's: let it go direct
                return web.json({"error": "this worker serves another ClickHouse"}, status=409)
            sql, params = body.get("sql"), body.get("parameters") or None
            if not isinstance(sql, str) or (params is not None and not isinstance(params, dict)):
                return web.json({"error": "sql must be a string, parameters an object"},
                                status=400)
            try:
                columns, rows = await asyncio.get_running_loop().run_in_executor(
                    self.pool, lambda: self.sink.query(sql, params, limits=self.limits))
            except Exception as exc:  # noqa: BLE001 - the analyst's error, never a traceback
                return web.json({"error": str(exc).strip()[:2000]}, status=400)
        finally:
            self.running -= 1
        return web.bytes(orjson.dumps({"columns": columns, "rows": rows},
                                      option=orjson.OPT_NON_STR_KEYS, default=str),
                         content_type="application/json")
