"""Analyst commands: read-only SQL, ``top`` and ``tenant``.

The embedded engine can be opened by one process at a time, so while a worker runs these go
through its read-only ``/query`` endpoint; otherwise (or with a ClickHouse server) they
query directly. Either way the query runs with ``readonly=1``: nothing can be dropped.
"""
from __future__ import annotations

import re
import sys
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path

import orjson

from pipeline import web_tls
from pipeline.settings import Settings


def _via_worker(s: Settings, sql: str, parameters: dict | None):
    req = urllib.request.Request(
        f"{web_tls.local_url(s)}/query",
        data=orjson.dumps({"sql": sql, "parameters": parameters or {}, "dsn": s.clickhouse_dsn}),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {s.query_token}"} if s.query_token else {})})
    try:
        with urllib.request.urlopen(req, timeout=60, context=web_tls.client_context(s)) as resp:
            body = orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 409:
            raise ConnectionError("the worker on that port serves another ClickHouse") from None
        body = orjson.loads(exc.read() or b"{}")
        raise SystemExit(f"query failed: {body.get('error', exc)}") from None
    return body["columns"], body["rows"]


def run_query(s: Settings, sql: str, parameters: dict | None = None):
    """(columns, rows) of one read-only query, through the worker when it holds the engine."""
    if s.embedded_clickhouse:
        try:
            return _via_worker(s, sql, parameters)
        except (urllib.error.URLError, ConnectionError):
            pass  # no worker running: open the embedded engine ourselves
    from pipeline import build
    try:
        return build.sink(s).query(sql, parameters)
    except Exception as exc:  # noqa: BLE001 - show the analyst ClickHouse's own message
        raise SystemExit(f"query failed: {str(exc)[:2000]}") from None


def print_table(columns, rows, fmt: str = "table", out=sys.stdout) -> None:
    if fmt == "json":
        for r in rows:
            out.write(orjson.dumps(dict(zip(columns, r)), default=str).decode() + "\n")
        return
    cells = [[str(c) for c in columns]] + [[_fmt(v) for v in r] for r in rows]
    if fmt == "tsv":
        for r in cells:
            out.write("\t".join(r) + "\n")
        return
    widths = [min(max(len(r[i]) for r in cells), 80) for i in range(len(columns))]
    for j, r in enumerate(cells):
        out.write("  ".join(v[:80].ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")
        if j == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


QUERIES_DOC = Path(__file__).resolve().parents[1] / "docs" / "queries.md"


@lru_cache(maxsize=1)
def doc_queries() -> dict[str, str]:
    """The named queries of docs/queries.md (```sql name=... blocks): one source of truth."""
    text = QUERIES_DOC.read_text()
    return {m.group(1): m.group(2).strip()
            for m in re.finditer(r"```sql name=(\w+)\n(.*?)```", text, re.S)}


TOP_SQL = """
SELECT tenant_id, count() AS alerts, max(score) AS max_score,
       argMax(severity, score) AS severity, argMax(detector, score) AS detector,
       argMax(summary, score) AS why, max(ts) AS last_alert
FROM coverwatch.alerts FINAL
WHERE ts >= (SELECT max(ts) FROM coverwatch.alerts) - INTERVAL {hours:UInt32} HOUR
GROUP BY tenant_id
ORDER BY severity = 'critical' DESC, max_score DESC
LIMIT {limit:UInt32}
"""

def add_top_arguments(p) -> None:
    p.add_argument("--hours", type=int, default=24, help="window before the newest alert")
    p.add_argument("--limit", type=int, default=20)


def run_top(args) -> int:
    s = Settings.from_env()
    columns, rows = run_query(s, TOP_SQL, {"hours": args.hours, "limit": args.limit})
    if not rows:
        # The window ends at the newest alert, so an empty answer means no alert at all.
        print(f"no alerts yet: coverwatch.alerts is empty (top lists the {args.hours} h of "
              f"event time before the newest alert; --hours changes it)")
        return 0
    print_table(columns, rows)
    return 0


def add_tenant_arguments(p) -> None:
    p.add_argument("tenant_id")
    p.add_argument("--plot", help="write its coverage-growth curve to this PNG")


TENANT_ALERTS_SQL = """
SELECT ts, severity, detector, round(score, 2) AS score, summary
FROM coverwatch.alerts FINAL WHERE tenant_id = {tenant:String} ORDER BY ts
"""


def run_tenant(args) -> int:
    s = Settings.from_env()
    q = doc_queries()
    params = {"tenant": args.tenant_id}
    columns, rows = run_query(s, q["tenant_hourly"], params)
    if not rows:
        print(f"no events for tenant {args.tenant_id!r}", file=sys.stderr)
        return 1
    print_table(columns, rows)
    print()
    print_table(*run_query(s, TENANT_ALERTS_SQL, params))
    if args.plot:
        curve = run_query(s, q["tenant_coverage_curve"], params)[1]
        band = run_query(s, q["population_coverage_band"])[1]
        plot_coverage(args.tenant_id, curve, band, args.plot)
        print(f"\ncoverage curve written to {args.plot}")
    return 0


def plot_coverage(tenant: str, curve, band, out: str) -> None:
    """The tenant's distinct-regions-vs-queries curve over the population's band
    (interquartile range shaded, median and p90 drawn)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    if band:
        n, p25, p50, p75, p90 = ([r[i] for r in band] for i in range(5))
        ax.fill_between(n, p25, p75, color="tab:blue", alpha=0.2,
                        label="population, middle 50% of tenants")
        ax.plot(n, p50, color="tab:blue", lw=1, label="population median")
        ax.plot(n, p90, color="tab:blue", lw=1, ls="--", label="population p90")
    ax.plot([r[0] for r in curve], [r[1] for r in curve], color="tab:red", lw=2, label=tenant)
    ax.set_xlabel("queries sent")
    ax.set_ylabel("distinct embedding regions reached")
    ax.set_title(f"coverage growth: {tenant}")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
