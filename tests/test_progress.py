"""Progress bars: drawn on a terminal, absent from redirected output (logs, CI)."""
from __future__ import annotations

import fcntl
import io
import os
import select
import struct
import termios
import subprocess
import sys

import orjson

from pipeline.progress import progress, progress_callback


def test_bar_draws_on_a_terminal_and_writes_nothing_elsewhere():
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    try:
        with open(slave, "w", closefd=False) as tty:
            with progress(total=3, desc="replay", unit="ev", file=tty) as bar:
                bar.update(3)
        drawn = b""
        while select.select([master], [], [], 0)[0]:   # written already: drain the buffer
            drawn += os.read(master, 65536)
    finally:
        os.close(master)
        os.close(slave)
    assert b"replay" in drawn and b"3/3" in drawn
    buf = io.StringIO()
    with progress(total=3, desc="replay", file=buf) as bar:
        bar.update(3)
    step = progress_callback(file=buf)
    step(5, 5, "report/text")
    assert buf.getvalue() == ""


def test_replay_writes_no_carriage_returns_into_a_redirected_log(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"".join(orjson.dumps({"event_id": f"e{i}", "ts": 1_780_000_000_000 + i,
                                           "tenant_id": "t", "prompt": "hi"}) + b"\n"
                             for i in range(50)))
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "replay", str(log),
                           "--no-clickhouse"], capture_output=True, check=True)
    assert b"replayed 50 events" in done.stdout + done.stderr
    assert b"\r" not in done.stdout + done.stderr
