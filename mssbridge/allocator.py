"""The C allocator's setting for large blocks: given back to the system as soon as freed."""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
LARGE_BLOCK = 256 * 1024
THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"


def return_large_blocks() -> bool:
    """Serve blocks of LARGE_BLOCK bytes and more from their own mappings; True when set.

    By default glibc raises this threshold each time such a block is freed, up to 32 MiB:
    once a 10 MB mail has been freed, the copies of the next ones are carved out of the heaps
    of the threads that parse and encode them, and those keep their pages. A fixed threshold
    keeps the daemon's resident memory close to what it holds (the peak with ten large mails
    in flight each way: about half). An operator's own MALLOC_MMAP_THRESHOLD_ is left alone;
    elsewhere than Linux, and with a C library without mallopt, nothing is changed.
    """
    if not sys.platform.startswith("linux") or THRESHOLD_ENV in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK))
