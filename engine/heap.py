"""Keep freed heap memory for the next step instead of handing it back to the kernel.

A training step allocates and frees the same arrays every time it runs. glibc's malloc
serves arrays above its mmap threshold (128 KiB at start, raised as such blocks are freed,
32 MiB at most) with fresh mmaps and returns the top of its heap to the kernel whenever more
than its trim threshold lies free there; either way the next step faults the pages back in,
each zeroed by the kernel. On the DDPM bench step (256x128 float32 activations, 1 thread)
that was 45 % of the step (1.17 -> 0.64 ms), on the conv-VAE step 10 % (84.8 -> 75.9 ms);
hand-written NumPy in the same process alike: it is the process's malloc, not the program.

Compiling a NumPy program therefore fixes the thresholds once per process (`tune_heap`):
the mmap threshold at glibc's own maximum (32 MiB: arrays up to that come from the heap) and
the trim threshold at 64 MiB (the heap keeps up to that much freed memory for the next
step). glibc only; never when the user tunes malloc (any MALLOC_*_ variable of glibc's) and
not when GENGRAPH_MALLOC_TUNING=0. Measured by `python bench/microbench.py` ("heap").
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 64 << 20))
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                  "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")

_done: list = []  # [result] once tried: one attempt per process


def should_tune(env: dict, libc_name: str) -> bool:
    return (libc_name == "glibc" and not any(v in env for v in USER_VARIABLES)
            and env.get("GENGRAPH_MALLOC_TUNING") != "0")


def tune_heap(libc=None) -> bool:
    """Set glibc's mmap and trim thresholds (SETTINGS), once per process; True if both were set."""
    if _done:
        return _done[0]
    ok = False
    if should_tune(dict(os.environ), platform.libc_ver()[0]):
        try:
            libc = libc if libc is not None else ctypes.CDLL(None)
            ok = all(libc.mallopt(param, value) == 1 for param, value in SETTINGS)  # 1: accepted
        except (OSError, AttributeError):  # no mallopt in this process's C library
            ok = False
    _done.append(ok)
    return ok
