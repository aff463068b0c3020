"""Keep freed heap memory for the next step instead of handing it back to the kernel.

A training step allocates and frees the same arrays every time it runs. glibc's malloc
returns the top of its heap to the kernel as soon as more than its trim threshold lies
free there, and the next step's allocations fault those pages back in, each zeroed by the
kernel. On the DDPM bench step (256x128 float32 activations, 1 thread) that was 40 % of
the step: 1.12 ms, 0.66 ms with a top pad (hand-written NumPy alike: it is the process's
malloc, not the program). A top pad of a few MiB (M_TOP_PAD: kept on every trim, added on
every growth) removes it; the peak stays the same, the process keeps at most the pad more.

Compiling a NumPy program sets it once per process (`tune_heap`), on glibc only, never
when the user set MALLOC_TOP_PAD_ (glibc's own variable) and not when
GENGRAPH_MALLOC_TUNING=0. Measured by `python bench/microbench.py` ("heap_pad").
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TOP_PAD = -2  # glibc's mallopt parameter number
TOP_PAD_BYTES = 16 << 20

_done: list = []  # [result] once tried: one attempt per process


def should_tune(env: dict, libc_name: str) -> bool:
    return libc_name == "glibc" and "MALLOC_TOP_PAD_" not in env and env.get("GENGRAPH_MALLOC_TUNING") != "0"


def tune_heap(libc=None) -> bool:
    """Set glibc's M_TOP_PAD to TOP_PAD_BYTES (once per process); True if it was set."""
    if _done:
        return _done[0]
    ok = False
    if should_tune(dict(os.environ), platform.libc_ver()[0]):
        try:
            libc = libc if libc is not None else ctypes.CDLL(None)
            ok = libc.mallopt(M_TOP_PAD, TOP_PAD_BYTES) == 1  # mallopt returns 1 on success
        except (OSError, AttributeError):  # no mallopt in this process's C library
            ok = False
    _done.append(ok)
    return ok
