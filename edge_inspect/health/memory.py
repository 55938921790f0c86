"""Give freed memory back to the operating system after a large release (a model swapped out by ``reload``).

glibc's allocator keeps freed memory in its arenas (one per thread that allocated) and rarely returns it:
each reload loads a new ONNX Runtime session (hundreds of MiB of graph, weights and arena, allocated by
the loading thread and by the session's own threads) and closes the old one, and the resident memory
grew by the old session's size each time until the arenas were full of holes (measured: 280 → 586 MiB
after 60 reloads of a 25 MB model). ``malloc_trim(0)`` hands the free pages of every arena back.
Elsewhere (musl, macOS) it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys
from functools import lru_cache

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Collect garbage cycles, then return free heap pages to the OS (glibc). True when trimmed."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    try:
        return bool(trim(0))
    except OSError:  # pragma: no cover - a libc that refuses
        log.debug("malloc_trim failed", exc_info=True)
        return False
