"""Keeping freed memory in the process for reuse (glibc's malloc).

The pitfall: glibc gives every block above its mmap threshold (at most 32 MB) its own
mapping, returns it to the kernel on free, and the next allocation of that size
page-faults every page back in, zeroed. A chunk of an exhaustive sweep is numpy arrays
of 4M points, 16 to 32 MB each, dozens per chunk: measured, 40% of a chunk's time went
to those page faults (system time). :func:`keep_freed_memory` raises the threshold and
stops the heap's trimming, so freed arrays are reused; the process then keeps its peak
memory (about 1 GB for an exhaustive sweep) until it exits. Elsewhere (another C
library) it does nothing.
"""

from __future__ import annotations

import contextlib
import functools

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
"""mallopt's parameters (malloc.h)."""


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks of up to 1 GB for reuse, once per process; whether
    it agreed."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return all(libc.mallopt(k, v) == 1 for k, v in ((M_MMAP_THRESHOLD, 1 << 30), (M_TRIM_THRESHOLD, 1 << 31), (M_TOP_PAD, 1 << 28)))
    return False
