"""The worker's memory bounds (issue 15): their settings, and the allocator cap on this libc."""
import pytest

from pipeline.settings import Settings
from pipeline.stream.malloc import cap_arenas, cap_mmap_threshold


def test_memory_bounds_default_and_parse():
    d = Settings.from_env({})
    assert (d.stream_buffer, d.changelog_pending, d.malloc_mmap_threshold,
            d.malloc_arena_max) == (16, 2000, 1 << 20, 2)
    s = Settings.from_env({"COVERWATCH_STREAM_BUFFER": "4", "COVERWATCH_CHANGELOG_PENDING": "50",
                           "COVERWATCH_MALLOC_MMAP_THRESHOLD": "0",
                           "COVERWATCH_MALLOC_ARENA_MAX": "0"})
    assert (s.stream_buffer, s.changelog_pending, s.malloc_mmap_threshold,
            s.malloc_arena_max) == (4, 50, 0, 0)


@pytest.mark.parametrize("name,value", [("COVERWATCH_STREAM_BUFFER", "0"),
                                        ("COVERWATCH_CHANGELOG_PENDING", "0"),
                                        ("COVERWATCH_MALLOC_MMAP_THRESHOLD", "-1"),
                                        ("COVERWATCH_MALLOC_ARENA_MAX", "-1")])
def test_a_bound_that_would_stall_or_break_the_worker_is_refused(name, value):
    with pytest.raises(SystemExit, match=name):
        Settings.from_env({name: value})


def test_the_mmap_threshold_and_arenas_are_capped_on_glibc_and_zero_leaves_them():
    import platform
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert cap_mmap_threshold(1 << 20) is True
    assert cap_mmap_threshold(0) is False
    assert cap_arenas(2) is True
    assert cap_arenas(0) is False


def test_sixteen_threads_share_the_capped_arenas():
    """A process with sixteen allocating threads makes no more arenas than the cap (each
    thread arena is a 64 MiB-aligned heap; ``malloc_info`` counts them)."""
    import platform
    import subprocess
    import sys
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    code = """
import ctypes, os, sys, tempfile, threading
from pipeline.stream.malloc import cap_arenas
cap_arenas(int(sys.argv[1]))
def work():
    bufs = [bytearray(4096) for _ in range(2000)]
    del bufs
ts = [threading.Thread(target=work) for _ in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
libc = ctypes.CDLL("libc.so.6")
libc.fdopen.restype = ctypes.c_void_p
libc.fflush.argtypes = (ctypes.c_void_p,)
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
f = tempfile.TemporaryFile()
fp = libc.fdopen(os.dup(f.fileno()), b"w"); libc.malloc_info(0, fp); libc.fflush(fp)
f.seek(0); print(f.read().decode().count('<heap nr='))
"""
    def arenas(cap: int) -> int:
        out = subprocess.run([sys.executable, "-c", code, str(cap)], capture_output=True,
                             text=True, check=True)
        return int(out.stdout.split()[-1])
    assert arenas(2) <= 2
    assert arenas(0) > 2       # without the cap, sixteen threads get arenas of their own


def test_ebb_waits_until_at_most_the_limit_is_queued():
    """:func:`pipeline.stream.changelog.ebb` against a stand-in for Faust's ProducerBuffer
    (``size``, ``flush_atmost``) whose sender drains one message per flush call."""
    import asyncio

    from pipeline.stream.changelog import ebb

    class Buffer:
        size, calls = 25, 0

        async def flush_atmost(self, n):
            self.calls += 1
            self.size -= 1          # a slow broker: one message sent per call
            return 1

    b = Buffer()
    assert asyncio.run(ebb(b, 20)) == 25 and b.size == 20 and b.calls == 5
    assert asyncio.run(ebb(b, 100)) == 20 and b.calls == 5     # under the limit: no wait
