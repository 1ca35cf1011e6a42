"""Cap glibc malloc's dynamic mmap threshold, so big freed buffers go back to the OS.

glibc serves allocations above ``M_MMAP_THRESHOLD`` with their own mmap, unmapped on free;
smaller ones come from the heap arenas, which rarely shrink. The threshold starts at 128 KiB
but *rises* to the size of every mmapped block freed (up to 32 MiB), so once the worker has
freed a few multi-megabyte buffers (internal messages, insert blocks, fetch responses),
later ones of that size live in the arenas and their memory stays with the process. Fixing
the threshold (``mallopt`` also turns the rise off) keeps big buffers returnable: at a
million long-tail tenants the worker's RSS kept creeping without it (issue 15).
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3     # glibc <malloc.h>


def cap_mmap_threshold(nbytes: int) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` (0: leave glibc's own); False where there is
    no glibc ``mallopt`` (musl, macOS) or it refused."""
    if nbytes <= 0:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, min(nbytes, 1 << 30)) == 1
