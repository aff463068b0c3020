"""NumPy fast paths the ops share: cached constant arrays and slice adds that put slow NumPy
calls on fast loops.

Measured with one BLAS thread on float32 (bench/microbench.py, "fast paths"):
- ``np.maximum(x, 0)`` broadcasts the scalar through a slow loop, about 4x an add; against a
  zero array of x's own shape it takes the SIMD loop (128x128: 5.6 -> 1.4 us; 64x32x28x28:
  500 -> 180 us). The zeros come from ``np.zeros`` (calloc): pages never written map the
  kernel's shared zero page, so a large cached zero array costs no resident memory.
- ``x.sum(axis=0)`` of a C-contiguous matrix is a strided reduction; ``ones . x`` is one
  BLAS gemv and 2-7x faster from 16 rows up (128x128: 3.0 -> 1.0 us). Row sums likewise:
  ``x.sum(axis=1)`` of short rows is slow (128x10: 2.6 us, 1024x10: 15 us), ``x . ones``
  is not (0.8, 2.3 us). The rounding differs from NumPy's pairwise sum only in the order
  of additions (gemv accumulates in SIMD lanes).
- Sums over short interior axes (an upsampling's 2x2 blocks) reduce one short inner loop at
  a time; adds of whole slices do not (`sum_short_axes`).
CuPy keeps the plain calls (its elementwise kernels and reductions have no such gap).
"""

from __future__ import annotations

import math

import numpy as np

_CACHE: dict = {}
_MAX_ENTRIES = 256  # shapes seen by one process's programs; cleared beyond (rare: varying batch sizes)
_BLAS = frozenset("fd")  # dtypes BLAS sums (float16 would fall back to a slow matmul loop)


def _cached(key, make):
    a = _CACHE.get(key)
    if a is None:
        if len(_CACHE) >= _MAX_ENTRIES:
            _CACHE.clear()
        a = _CACHE[key] = make()
        if isinstance(a, np.ndarray):  # shared by every kernel: a write would corrupt them all
            a.flags.writeable = False
    return a


def zeros_of(x):
    """A read-only zero array of x's shape and dtype (cached; NumPy only)."""
    key = ("zeros", x.shape, x.dtype)
    a = _CACHE.get(key)  # the hit inline (these lookups run several times a step): ~0.2 us less
    return a if a is not None else _cached(key, lambda: np.zeros(x.shape, x.dtype))


def ones_vector(n, dtype):
    """A read-only vector of n ones (cached; NumPy only). Keyed by the dtype as given: a
    np.dtype() per call cost 0.3 us of a 0.5 us bias-gradient sum."""
    key = ("ones", n, dtype)
    a = _CACHE.get(key)
    return a if a is not None else _cached(key, lambda: np.ones(n, dtype))


def arange_of(xp, n):
    """arange(n) (cached per backend and length; read-only on NumPy): the row index of every pick."""
    key = ("arange", xp, n)
    a = _CACHE.get(key)
    return a if a is not None else _cached(key, lambda: xp.arange(n))


def row_offsets(n, c):
    """arange(n) * c (cached, read-only, NumPy): where each row of a C-contiguous (n, c) array
    starts in its flat view; + labels is every row's label entry, for 1-D picks (~3x faster than
    NumPy's 2-D fancy indexing)."""
    key = ("row_offsets", n, c)
    a = _CACHE.get(key)
    return a if a is not None else _cached(key, lambda: np.arange(n) * c)


def relu_forward(xp, x, out=None):
    """max(x, 0), on NumPy against a cached zero array (the SIMD loop)."""
    if xp is np and x.ndim:
        return np.maximum(x, zeros_of(x), out=out)
    return xp.maximum(x, 0, out=out)


def sum_leading(xp, g, lead, out=None):
    """g summed over its first `lead` axes; on NumPy, for float32/64, as one BLAS product
    ones . g (rows x rest) instead of a strided reduction. (np.dot copies a non-contiguous g
    itself and refuses an unsuitable out=, then the plain reduction runs.)"""
    if xp is np and g.ndim > lead and g.dtype.char in _BLAS:
        if lead == 1 and g.ndim == 2:  # the usual case (bias gradients): no reshapes
            n, rows = g.shape[0], g
        else:
            n = math.prod(g.shape[:lead])
            rows = g.reshape(n, math.prod(g.shape[lead:]))
        if n == 1:  # a size-1 sample axis: a copy, not a reduction (128 floats: 0.4 us instead of 3)
            r = g.reshape(g.shape[lead:])
            if out is None:
                return r.copy()
            out[...] = r
            return out
        if n > 1:
            ones = ones_vector(n, g.dtype)
            if out is None:
                return np.dot(ones, rows).reshape(g.shape[lead:])
            try:
                np.dot(ones, rows, out=out if out.ndim == 1 else out.reshape(-1))
                return out
            except ValueError:  # out not contiguous or of another dtype
                pass
    return g.sum(axis=tuple(range(lead)), out=out)


def sum_trailing(xp, g, k, keepdims=False):
    """g summed over its last `k` axes; on NumPy, for a contiguous float32/64 g, as one BLAS
    product g (rest x cols) . ones instead of a reduction along short rows."""
    if xp is np and 0 < k < g.ndim and g.dtype.char in _BLAS and g.flags.c_contiguous:
        m = math.prod(g.shape[g.ndim - k:])
        if m > 1:
            r = np.dot(g.reshape(math.prod(g.shape[:g.ndim - k]), m), ones_vector(m, g.dtype))
            return r.reshape(g.shape[:g.ndim - k] + ((1,) * k if keepdims else ()))
    return g.sum(axis=tuple(range(g.ndim - k, g.ndim)), keepdims=keepdims)


SHORT_AXIS = 8  # reduced axes this short are summed slice by slice
SHORT_AXES_MIN_OUT = 4096  # result size from which the slice adds beat the reduction's overhead


def sum_short_axes(xp, x, axis, keepdims=False):
    """x summed over short interior axes (each <= SHORT_AXIS long, e.g. the 2x2 blocks of an
    upsampling's gradient, (N, C, H, 2, W, 2) over axes 3 and 5) as adds of whole slices, the
    outermost axis first. NumPy reduces such axes one short inner loop at a time: 64x64x28x28
    float32 over (3, 5) 19.3 -> 1.1 ms. None when the fast path does not apply."""
    if (xp is not np or x.dtype.char not in _BLAS or len(axis) == x.ndim or x.size == 0
            or any(x.shape[a] > SHORT_AXIS for a in axis) or all(x.shape[a] == 1 for a in axis)
            or x.size < SHORT_AXES_MIN_OUT * math.prod(x.shape[a] for a in axis)):
        return None
    r = x
    for done, a in enumerate(axis):  # axes are sorted: earlier reductions shift later axes left by one
        at = (slice(None),) * (a - done)
        parts = [r[at + (i,)] for i in range(x.shape[a])]
        if len(parts) == 1:
            r = parts[0]
            continue
        r = np.add(parts[0], parts[1])
        for p in parts[2:]:
            r += p
    return r.reshape(tuple(1 if i in axis else d for i, d in enumerate(x.shape))) if keepdims else r

