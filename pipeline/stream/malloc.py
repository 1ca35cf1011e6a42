"""Bound glibc malloc's hold on freed memory: a fixed mmap threshold and few arenas.

glibc serves allocations above ``M_MMAP_THRESHOLD`` with their own mmap, unmapped on free;
smaller ones come from the heap arenas, which rarely shrink. The threshold starts at 128 KiB
but *rises* to the size of every mmapped block freed (up to 32 MiB), so once the worker has
freed a few multi-megabyte buffers (internal messages, insert blocks, fetch responses),
later ones of that size live in the arenas and their memory stays with the process. Fixing
the threshold (``mallopt`` also turns the rise off) keeps big buffers returnable: at a
million long-tail tenants the worker's RSS kept creeping without it (issue 15).

glibc also gives threads arenas of their own (up to 8 per core), and memory freed in one
arena serves only allocations made there. The worker's threads (event loop, detector,
sink, engine, query and Kafka threads) each fragment their own, so RSS crept further as
tenants churned through the state: capping the arenas at 2 took the million-tenant
scenario's peak from 1,707 to 1,329 MB (``bench/README.md``, "1M tenants").
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3     # glibc <malloc.h>
M_ARENA_MAX = -8


def _mallopt(param: int, value: int) -> bool:
    """glibc's ``mallopt``; False where there is none (musl, macOS) or it refused."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(param, value) == 1


def cap_mmap_threshold(nbytes: int) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` (0: leave glibc's own)."""
    return nbytes > 0 and _mallopt(M_MMAP_THRESHOLD, min(nbytes, 1 << 30))


def cap_arenas(n: int) -> bool:
    """At most ``n`` glibc malloc arenas (0: glibc's own, 8 per core). Call it before the
    worker starts its threads: arenas made before it stay."""
    return n > 0 and _mallopt(M_ARENA_MAX, n)
