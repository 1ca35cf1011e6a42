"""The worker's web port is safe by default: loopback only, /query read-only and bounded.

Every check runs against a real worker (real Kafka, the real embedded ClickHouse): what the
issue's probe did from outside, done again here.
"""
from __future__ import annotations

import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from pipeline.sinks import readonly_sql
from tests.conftest import make_worker

pytestmark = pytest.mark.integration


def post(url: str, body: bytes, headers: dict | None = None, timeout: float = 90):
    """(status, decoded JSON body) of a POST, error statuses included."""
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"{}")


def ask(w, sql: str, **kw):
    return post(f"{w.url}/query", orjson.dumps({"sql": sql}), **kw)


def non_loopback_address() -> str | None:
    """An address of this host that is not loopback (None when there is none)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.123", 9))   # no packet is sent: this only picks a route
        addr = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if addr.startswith("127.") else addr


def listen_addresses(port: int) -> set[str]:
    """Local addresses listening on ``port`` (IPv4), from /proc/net/tcp."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        ip_hex, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            out.add(socket.inet_ntoa(bytes.fromhex(ip_hex)[::-1]))
    return out


@pytest.fixture(scope="module")
def worker(kafka, tmp_path_factory):
    """A worker with default web settings; at most one query at a time, 20 s per query."""
    w = make_worker(kafka, tmp_path_factory.mktemp("web"), COVERWATCH_DETECTOR="burst",
                    COVERWATCH_EMBEDDER="none", COVERWATCH_QUERY_CONCURRENCY="1",
                    COVERWATCH_QUERY_TIMEOUT_S="20").start()
    yield w
    w.stop(signal.SIGKILL)


def test_parser_refuses_writes_files_kills_and_system_tables():
    refused = [
        "SELECT 1 INTO OUTFILE '/tmp/x' TRUNCATE", "select 1 into  outfile '/tmp/x' APPEND",
        "KILL QUERY WHERE 1", "SELECT 1; DROP TABLE coverwatch.events",
        "INSERT INTO coverwatch.events SELECT * FROM coverwatch.events",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')", "SELECT file('/etc/passwd')",
        "SELECT * FROM url('http://127.0.0.1/', 'LineAsString')",
        "SELECT * FROM remote('127.0.0.1', system.one)", "SELECT * FROM s3('http://x/y')",
        "SELECT * FROM system.processes", 'SELECT * FROM "system"."query_log"',
        "SELECT * FROM system /* hidden */ . settings", "SELECT * FROM merge('system', '.*')",
        "SET readonly = 0", "SELECT 1 /* unterminated", "", "WITH 1 AS x SELECT x; SELECT 2",
    ]
    for sql in refused:
        with pytest.raises(readonly_sql.Refused):
            readonly_sql.check(sql)
    allowed = [
        "SELECT tenant_id, count() FROM coverwatch.events GROUP BY 1;",
        "WITH 1 AS x SELECT x", "SELECT name FROM system.tables WHERE database = 'coverwatch'",
        "SELECT 'kill; into outfile; system.processes' AS s -- a comment: DROP",
        "DESCRIBE TABLE coverwatch.alerts", "SELECT count() FROM numbers(10)",
    ]
    for sql in allowed:
        assert readonly_sql.check(sql)


def test_web_port_binds_loopback_only(worker):
    assert listen_addresses(worker.settings.web_port) == {"127.0.0.1"}
    addr = non_loopback_address()
    if addr is not None:
        with pytest.raises(OSError):
            socket.create_connection((addr, worker.settings.web_port), timeout=5).close()


def test_hostile_queries_are_refused_and_write_nothing(worker, tmp_path):
    assert ask(worker, "SELECT 1") == (200, {"columns": ["1"], "rows": [[1]]})
    target = tmp_path / "written.txt"
    for sql in (f"SELECT 1 INTO OUTFILE '{target}'", "KILL QUERY WHERE 1",
                "SELECT * FROM system.processes", f"SELECT * FROM file('{target}')",
                "DROP TABLE coverwatch.events"):
        status, body = ask(worker, sql)
        assert status == 400 and "readonly" in body["error"].lower(), (sql, body)
    assert not target.exists()
    status, body = ask(worker, "SELECT count() FROM system.tables WHERE database = 'coverwatch'")
    assert status == 200 and body["rows"][0][0] >= 3


def test_bad_requests_get_a_short_400(worker):
    for raw in (b"{not json", b"[1, 2]", b'{"sql": 5}', b""):
        status, body = post(f"{worker.url}/query", raw)
        assert status == 400, raw
        assert "Traceback" not in body["error"] and len(body["error"]) < 200


def test_engine_limits_stop_runaway_queries(worker):
    status, body = ask(worker, "SELECT number FROM numbers(10000000)")
    assert status == 400 and "limit for result exceeded" in body["error"].lower()
    # readonly=1: a query cannot lift its own limits
    status, body = ask(worker, "SELECT sleep(1) SETTINGS max_execution_time = 1000")
    assert status == 400 and "readonly" in body["error"].lower()


def test_a_runaway_query_neither_stalls_detection_nor_blocks_the_endpoint(worker):
    from kafka import KafkaProducer

    from pipeline.kafka_options import kafka_python_options
    results = {}
    hog = threading.Thread(target=lambda: results.update(
        hog=ask(worker, "SELECT count() FROM numbers(1e13)")))
    hog.start()
    time.sleep(1.0)
    # the endpoint runs one query at a time here: the next caller is told so at once
    assert ask(worker, "SELECT 1", timeout=10)[0] == 429
    before = worker.detected()
    p = KafkaProducer(**kafka_python_options(worker.settings))
    for i in range(200):
        p.send(worker.settings.topic_logs, orjson.dumps(
            {"event_id": f"hog-{i}", "ts": 1767225600000 + i, "tenant_id": f"t{i % 5}"}))
    p.flush()
    p.close()
    worker.wait_for(lambda m: m.get("coverwatch_events_detected_total", 0) >= before + 200,
                    timeout=60, what="events detected while a query runs")
    assert hog.is_alive(), "the runaway query ended before the events were stored"
    hog.join(120)
    status, body = results["hog"]
    assert status == 400 and "timeout" in body["error"].lower()


def test_query_needs_the_token_before_the_body_is_read(kafka, tmp_path):
    w = make_worker(kafka, tmp_path, COVERWATCH_DETECTOR="burst", COVERWATCH_EMBEDDER="none",
                    COVERWATCH_QUERY_TOKEN="s3cret", COVERWATCH_WEB_HOST="0.0.0.0").start()
    try:
        url = f"{w.url}/query"
        assert post(url, b"{not json")[0] == 401                       # no token, bad body
        assert post(url, b"{not json", {"Authorization": "Bearer s3cre"})[0] == 401
        assert post(url, b"{not json", {"Authorization": "Bearer s3cret"})[0] == 400
        ok = post(url, orjson.dumps({"sql": "SELECT 2"}), {"Authorization": "Bearer s3cret"})
        assert ok == (200, {"columns": ["2"], "rows": [[2]]})
        assert listen_addresses(w.settings.web_port) == {"0.0.0.0"}
    finally:
        w.stop(signal.SIGKILL)


def test_without_a_token_only_loopback_peers_may_query(kafka, tmp_path):
    addr = non_loopback_address()
    if addr is None:
        pytest.skip("this host has no non-loopback address")
    w = make_worker(kafka, tmp_path, COVERWATCH_DETECTOR="burst", COVERWATCH_EMBEDDER="none",
                    COVERWATCH_WEB_HOST="0.0.0.0").start()
    try:
        body = orjson.dumps({"sql": "SELECT 1"})
        status, err = post(f"http://{addr}:{w.settings.web_port}/query", body)
        assert status == 403 and "COVERWATCH_QUERY_TOKEN" in err["error"]
        assert post(f"{w.url}/query", body)[0] == 200
        assert w.metrics()["coverwatch_queries_refused_total"] >= 1
    finally:
        w.stop(signal.SIGKILL)


def self_signed(tmp: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, made by the openssl command line."""
    import shutil
    import subprocess
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test certificate")
    cert, key = tmp / "web.pem", tmp / "web.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


def test_with_a_certificate_the_port_serves_https_only(kafka, tmp_path):
    """Published beyond loopback, a token and query results would cross the network in
    clear: with COVERWATCH_WEB_TLS_CERT/_KEY the port speaks TLS (1.2+) and nothing else,
    and `coverwatch query` reaches it through the same certificate."""
    import ssl
    cert, key = self_signed(tmp_path)
    w = make_worker(kafka, tmp_path, COVERWATCH_DETECTOR="burst", COVERWATCH_EMBEDDER="none",
                    COVERWATCH_QUERY_TOKEN="s3cret", COVERWATCH_WEB_TLS_CERT=cert,
                    COVERWATCH_WEB_TLS_KEY=key).start()
    try:
        assert w.url.startswith("https://")
        auth = {"Authorization": "Bearer s3cret"}
        body = orjson.dumps({"sql": "SELECT 1"})
        ctx = ssl.create_default_context(cafile=cert)
        req = urllib.request.Request(f"{w.url}/query", data=body, headers=auth)
        with urllib.request.urlopen(req, timeout=60, context=ctx) as r:
            assert orjson.loads(r.read())["rows"] == [[1]]
        plain = f"http://127.0.0.1:{w.settings.web_port}/query"
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(urllib.request.Request(plain, data=body, headers=auth),
                                   timeout=10)
        old = ssl.create_default_context(cafile=cert)          # TLS 1.1 is refused
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, urllib.error.URLError)):
            urllib.request.urlopen(f"{w.url}/metrics", timeout=10, context=old)
        from dataclasses import replace

        from pipeline.analyst import _via_worker
        s = replace(w.settings, query_token="s3cret", web_tls_cert=cert, web_tls_key=key)
        assert _via_worker(s, "SELECT 2", None)[1] == [[2]]
    finally:
        w.stop(signal.SIGKILL)


def test_a_certificate_without_its_key_stops_the_worker_with_a_clear_message(tmp_path):
    from pipeline.settings import Settings
    cert, key = self_signed(tmp_path)
    with pytest.raises(SystemExit, match="go together"):
        Settings.from_env({"COVERWATCH_WEB_TLS_CERT": cert})
    from pipeline.web_tls import server_context
    s = Settings.from_env({"COVERWATCH_WEB_TLS_CERT": cert,
                           "COVERWATCH_WEB_TLS_KEY": str(tmp_path / "missing.key")})
    with pytest.raises(SystemExit, match="cannot load"):
        server_context(s)
    assert server_context(Settings.from_env({})) is None
