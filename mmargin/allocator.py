"""glibc's allocator told to keep freed memory: for the ``mmargin`` command's own process.

On CPU a search step frees and allocates batch-sized tensors (megabytes at batch 500)
every step. glibc's default ``malloc`` hands freed memory at the top of its heap back to
the operating system once it passes a trim threshold, and the next step faults the same
pages in again; ``bench/overhead.py`` measured an L1 step at batch 500 25–40 % over the
bare forward + backward this way, and a few percent with the trim threshold raised.

:func:`keep_freed_memory` raises glibc's trim threshold, top pad and mmap threshold
(``mallopt``), so freed blocks stay in the process for the next step. Only the
command-line entry point calls it — importing the library never changes the allocator
of a program that embeds it. It does nothing off Linux/glibc, and nothing
when ``MMARGIN_KEEP_FREED_MEMORY=0`` (or when ``MALLOC_TRIM_THRESHOLD_`` is set: the
user's own setting wins).
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["ENV", "keep_freed_memory"]

ENV = "MMARGIN_KEEP_FREED_MEMORY"
"""Set to ``0`` to leave glibc's allocator as it is."""

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

TRIM_THRESHOLD = 1 << 30
"""Free memory kept at the top of the heap before any goes back to the system (1 GiB)."""
TOP_PAD = 256 << 20
"""Extra heap asked for at each growth (256 MiB of address space; untouched pages cost no
memory)."""
MMAP_THRESHOLD = 1 << 30
"""Blocks from this size up get their own mapping, unmapped (and faulted in again) at
every free: 1 GiB, so that a batch's activations stay in the heap too (an older glibc
may refuse values over 32 MiB: then only this one is not taken)."""


def keep_freed_memory() -> bool:
    """Set the thresholds above in this process; True when glibc took them."""
    if os.environ.get(ENV, "1").strip() in ("0", "false", "no", "off"):
        return False
    if "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = [
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        mallopt(_M_TOP_PAD, TOP_PAD),
    ]
    return all(done)
