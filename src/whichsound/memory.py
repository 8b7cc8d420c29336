"""Process memory: keep the memory a search frees for its next arrays instead of handing it back.

A search allocates and frees arrays of tens of MB again and again (a stem's STFT, a scan block). glibc
serves each one above 32 MB (and, by its dynamic threshold, many smaller ones) with a fresh mmap and
returns it on free, so the next one faults its pages in again: on the feature-length bench a warm
`locate` took about 56 000 page faults and `batch` of 100 notes 570 000 (3.2 s of system time). Kept in
one heap, the same work takes 26 000-29 000 and 71 000-74 000 (0.7-1.1 s). The heap stays at the run's
peak, which the searches already bound (DECOMPOSE_BLOCK_BYTES, the scans' blocks).
"""

from __future__ import annotations

import ctypes
import sys

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_DONE: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve every size from one heap and keep what is freed (mallopt: no mmap'd
    chunks, no trimming, one arena: each thread's own arena would hold its own peak). Call once, early
    in a process whichsound runs itself (the CLI, a worker); a library caller's process is left alone.
    Returns True when the settings took (glibc), False elsewhere (other C libraries keep their ways)."""
    global _DONE
    if _DONE is not None:
        return _DONE
    _DONE = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on (find_library forks)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))
    _DONE = ok
    return ok
