"""Analyst SQL: what the engine enforces, and a parser-level check in front of it.

The engine is the real barrier: every analyst query runs with :func:`limits` (``readonly=1``,
so no write, no ``SET`` and no ``SETTINGS`` clause can raise a limit; a time, memory and
result cap, ``result_overflow_mode='throw'``). Measured on the embedded engine (chdb 26.9):
``SELECT sleep(3)`` and ``SELECT count() FROM numbers(1e13)`` stop at ``max_execution_time``,
a 10M-row result stops at ``max_result_rows``, ``file()``/``url()`` are refused as writes.

``readonly=1`` does not stop ``SELECT ... INTO OUTFILE`` (it wrote, appended to and truncated
files) nor ``KILL QUERY``, and it lets every ``system.*`` table be read. :func:`check` refuses
those before the engine sees them: one ``SELECT``/``WITH``/``DESCRIBE`` statement, no
``INTO OUTFILE``, no write or admin keyword, no table function that reaches files, URLs,
other servers or processes, and only the ``system`` tables analysts need to find their way.

>>> check("SELECT tenant_id, count() FROM coverwatch.events GROUP BY 1;")
'SELECT tenant_id, count() FROM coverwatch.events GROUP BY 1'
>>> for sql in ("SELECT 1 INTO OUTFILE '/tmp/x'", "select * from `system`.processes",
...             "SELECT 'kill' AS word", "KILL QUERY WHERE 1"):
...     try:
...         print(check(sql))
...     except Refused as r:
...         print(r)
readonly: INTO OUTFILE is not allowed
readonly: system.processes is not readable here
SELECT 'kill' AS word
readonly: only SELECT, WITH or DESCRIBE queries are allowed
"""
from __future__ import annotations

import re

# system tables an analyst needs to find tables and columns, and how they are stored
# (parts: row counts and merges, which the raw-duplicate checks read); paths in
# system.tables and system.parts are the only file-system detail left, and name no secret
SYSTEM_TABLES = frozenset({"one", "numbers", "numbers_mt", "zeros", "databases", "tables",
                           "columns", "functions", "table_functions", "data_type_families",
                           "parts"})
_FIRST = ("select", "with", "describe", "desc")
_FORBIDDEN = re.compile(
    r"\b(insert|alter|drop|truncate|create|attach|detach|rename|optimize|kill|grant|revoke|"
    r"set|system\s+(?!\.)\w+|exchange|undrop|backup|restore|move|delete|update|use)\b")
_TABLE_FUNCTIONS = re.compile(
    r"\b(file|filecluster|url|urlcluster|s3|s3cluster|gcs|azureblobstorage|azureblobstoragecluster|"
    r"hdfs|hdfscluster|remote|remotesecure|cluster|clusterallreplicas|mysql|postgresql|"
    r"mongodb|redis|sqlite|jdbc|odbc|executable|executablepool|input|merge|deltalake|hudi|"
    r"iceberg|icebergs3|icebergazure|iceberghdfs|iceberglocal|dictionary)\s*\(")
_SYSTEM = re.compile(r"\b(system|information_schema)\s*\.\s*(\w+)")


class Refused(ValueError):
    """A query the analyst endpoint does not run; the message says why."""


def _skeleton(sql: str) -> str:
    """The query with comments and string literals blanked and identifier quotes removed,
    lower-cased: what the keyword checks read (so ``'kill'`` in a string is not a KILL)."""
    out, i, n = [], 0, len(sql)
    while i < n:
        c = sql[i]
        if sql.startswith("--", i) or c == "#":
            j = sql.find("\n", i)
            i = n if j < 0 else j
            out.append(" ")
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            if j < 0:
                raise Refused("readonly: unterminated comment")
            i = j + 2
            out.append(" ")
        elif c == "'":
            j = i + 1
            while j < n and sql[j] != "'":
                j += 2 if sql[j] == "\\" else 1
            if j >= n:
                raise Refused("readonly: unterminated string")
            i = j + 1
            out.append("''")
        elif c in '`"':
            j = sql.find(c, i + 1)
            if j < 0:
                raise Refused("readonly: unterminated identifier")
            out.append(sql[i + 1:j])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out).lower()


def check(sql: str) -> str:
    """The statement to run (trailing ``;`` removed), or :class:`Refused` with the reason."""
    if not isinstance(sql, str) or not sql.strip():
        raise Refused("readonly: no SQL given")
    sql = sql.strip().rstrip(";").rstrip()
    sk = _skeleton(sql)
    if ";" in sk:
        raise Refused("readonly: one SQL statement per query")
    first = re.search(r"\w+", sk)
    if first is None or first.group() not in _FIRST:
        raise Refused("readonly: only SELECT, WITH or DESCRIBE queries are allowed")
    if re.search(r"\binto\s+outfile\b", sk):
        raise Refused("readonly: INTO OUTFILE is not allowed")
    m = _FORBIDDEN.search(sk)
    if m:
        raise Refused(f"readonly: {m.group(1).split()[0].upper()} is not allowed")
    m = _TABLE_FUNCTIONS.search(sk)
    if m:
        raise Refused(f"readonly: table function {m.group(1)}() is not allowed")
    for db, table in _SYSTEM.findall(sk):
        if db == "system" and table not in SYSTEM_TABLES:
            raise Refused(f"readonly: system.{table} is not readable here")
    return sql


def limits(timeout_s: int = 30, max_rows: int = 100_000, max_memory_mb: int = 1024) -> dict:
    """Per-query settings the engine enforces for analyst queries."""
    return {"readonly": 1, "max_execution_time": timeout_s,
            "max_memory_usage": max_memory_mb * 2**20, "max_result_rows": max_rows,
            "max_result_bytes": 256 * 2**20, "result_overflow_mode": "throw"}
