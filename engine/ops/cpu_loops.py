"""Where Numba is installed, elementwise kernels on NumPy run as one compiled loop each.

`cpu_loop` is the one entry: a kernel's NumPy forward asks it first, and runs its NumPy form
when it answers None (no Numba, GENGRAPH_NUMBA=0, or arrays the loops do not take). The loops
themselves are in numba_loops.py, imported on first use.
"""

from __future__ import annotations

import importlib
import os

import numpy as np

_LOOPS = None  # the numba_loops module, False where Numba is absent or GENGRAPH_NUMBA=0


def load_loops():
    """The numba_loops module (imported on the first call), or False where Numba is not installed
    or GENGRAPH_NUMBA=0. A process that wants Numba's fixed cost (~0.2 s, ~150 MB of LLVM) paid
    before its first training step, a benchmark say, calls this first."""
    global _LOOPS
    if _LOOPS is None:
        _LOOPS = False
        if os.environ.get("GENGRAPH_NUMBA", "").strip() != "0":
            try:  # imported here, not at the top: Numba's import costs ~0.2 s
                _LOOPS = importlib.import_module(".numba_loops", __package__)
            except ImportError:
                pass
    return _LOOPS


def cpu_loop(name, arrays, scalars, out):
    """Run numba_loops.<name>(*arrays, *scalars, out) and return out, when Numba is there and the
    arrays are alike (NumPy arrays of one float dtype and one shape, C-contiguous, so flat views
    are free; the scalars Python floats or of that dtype, so the loop rounds as the NumPy form
    does); None otherwise, and the caller runs its NumPy form. Checked in a few attribute
    reads: the call costs ~1 us beside Numba's own ~2 us dispatch."""
    loops = _LOOPS if _LOOPS is not None else load_loops()
    if not loops:
        return None
    first = arrays[0]
    dt, shape = first.dtype, first.shape
    if dt.char not in "fd" or (out is not None and not _alike(out, dt, shape)):
        return None
    for a in arrays:
        if not _alike(a, dt, shape):
            return None
    t = dt.type
    for s in scalars:
        if s.__class__ is not float and s.dtype != dt:
            return None
    if out is None:
        out = np.empty(shape, dt)
    scalars = [t(s) for s in scalars]  # Python floats rounded to the dtype, as NumPy does with them
    flat = arrays if len(shape) == 1 else [a.reshape(-1) for a in arrays]
    if out is first:  # in place: a loop of its own (see numba_loops)
        getattr(loops, name + "_inplace")(*flat, *scalars)
    else:
        getattr(loops, name)(*flat, *scalars, out if len(shape) == 1 else out.reshape(-1))
    return out


def _alike(a, dt, shape):
    return a.__class__ is np.ndarray and a.shape == shape and a.dtype == dt and a.flags.c_contiguous
