"""Keep freed memory in the process (glibc malloc), so large CPU tensors do not page-fault anew.

glibc hands every allocation over its mmap threshold (32 MB at most) its own fresh pages and returns
them to the OS when freed, so each large temporary of an update (a batch of frames as floats, a
convolution's output: tens of MB each at batch 256) costs one page fault per 4 KB every time it is
allocated. With mmap off for malloc and trimming off, freed blocks stay in the heap and the next
update reuses them: on a 2-core CPU a TACO update at batch 256 went from ~950k page faults and 3.5 s
to ~500 faults and 2.55 s (`taco bench ... cpu_malloc=system|keep` reports `page_faults_per_round`).
The numbers computed do not change. The process keeps its peak heap
(reported as `peak_rss_mb`); explicit mappings (replay memmaps, CUDA memory) are unaffected.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
# mallopt takes a C int; -1 disables trimming altogether (mallopt(3)). A larger value would wrap
# (2**40 became 0: trim on every free) and INT_MAX would still trim a heap whose free top passes 2 GB.
NO_TRIM = -1
MODES = ("keep", "system")
_applied: str | None = None


def set_cpu_malloc(mode: str) -> bool:
    """`keep`: malloc without mmap and without trimming; `system`: leave glibc's defaults.

    Returns whether the setting took effect (False where the C library is not glibc). Process-wide;
    `system` after `keep` does not undo it.
    """
    global _applied
    if mode not in MODES:
        raise ValueError(f"cpu_malloc={mode!r}: expected one of {', '.join(MODES)}")
    if mode == "system" or _applied == "keep":
        return _applied == mode
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):
        return False
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, NO_TRIM) == 1
    if ok:
        _applied = "keep"
    return ok
