"""The worker's memory bounds (issue 15): their settings, and the allocator cap on this libc."""
import pytest

from pipeline.settings import Settings
from pipeline.stream.malloc import cap_mmap_threshold


def test_memory_bounds_default_and_parse():
    d = Settings.from_env({})
    assert (d.stream_buffer, d.changelog_pending, d.malloc_mmap_threshold) == (16, 2000, 1 << 20)
    s = Settings.from_env({"COVERWATCH_STREAM_BUFFER": "4", "COVERWATCH_CHANGELOG_PENDING": "50",
                           "COVERWATCH_MALLOC_MMAP_THRESHOLD": "0"})
    assert (s.stream_buffer, s.changelog_pending, s.malloc_mmap_threshold) == (4, 50, 0)


@pytest.mark.parametrize("name,value", [("COVERWATCH_STREAM_BUFFER", "0"),
                                        ("COVERWATCH_CHANGELOG_PENDING", "0"),
                                        ("COVERWATCH_MALLOC_MMAP_THRESHOLD", "-1")])
def test_a_bound_that_would_stall_or_break_the_worker_is_refused(name, value):
    with pytest.raises(SystemExit, match=name):
        Settings.from_env({name: value})


def test_the_mmap_threshold_is_fixed_on_glibc_and_zero_leaves_it():
    import platform
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert cap_mmap_threshold(1 << 20) is True
    assert cap_mmap_threshold(0) is False


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
