"""group_norm's and layer_norm's kernels (norm.py) as loops compiled by Numba, one row at a time.

A row is one normalised slice (an example's channel group, or a whole example), contiguous in
memory. Each loop reads a row once from memory to sum it and once more from cache to write
it, where the NumPy forms take four to six whole-array passes and a temporary each (float32,
one thread, 64 x 8 groups x 3136: statistics and output 3.0 ms as NumPy passes, 0.26 ms
here; the gradient 1.18 ms, 0.20 ms). The sums accumulate in float64, so the values agree
with the NumPy forms' to rounding, not to the bit (tests/test_norm_loops.py); "reassoc" lets
LLVM vectorise the sums, which changes their rounding only.

Imported with numba_loops (cpu_loops.load_loops), on first use; the compiled code is kept on
disk (CACHED, as in numba_loops).
"""

from __future__ import annotations

import numba
import numpy as np

# Numba keys its disk cache by source file: only the package's own name reads and writes it
CACHED = __name__ == "gengraph.engine.ops.numba_norm"
_jit = numba.njit(cache=CACHED, nogil=True, error_model="numpy", fastmath={"reassoc"})


@numba.njit(inline="always", fastmath={"reassoc"})
def _row_mean(x, b, k):
    """The mean of x[b:b + k], summed in float64."""
    s = 0.0
    for j in range(k):
        s += np.float64(x[b + j])
    return s / k


@_jit
def norm_inv_std(x, k, eps, r):
    """r[i] = 1 / sqrt(var + eps) of row i of x (flat, rows of k values; biased variance)."""
    for i in range(r.size):
        b = i * k
        m = _row_mean(x, b, k)
        q = 0.0
        for j in range(k):
            d = np.float64(x[b + j]) - m
            q += d * d
        r[i] = 1.0 / np.sqrt(q / k + eps)


@_jit
def norm_normalized(x, r, k, out):
    """out = (x - mean) * r, row by row; out may be x itself (a row is summed before it is written)."""
    for i in range(r.size):
        b = i * k
        m = x.dtype.type(_row_mean(x, b, k))
        ri = r[i]
        for j in range(k):
            out[b + j] = (x[b + j] - m) * ri


@_jit
def norm_grad(g, y, r, k, out):
    """out = r * (g - mean(g) - y * mean(g * y)), row by row; out may be g or y itself."""
    for i in range(r.size):
        b = i * k
        s1 = 0.0
        s2 = 0.0
        for j in range(k):
            gj = np.float64(g[b + j])
            s1 += gj
            s2 += gj * np.float64(y[b + j])
        m1 = g.dtype.type(s1 / k)
        m2 = g.dtype.type(s2 / k)
        ri = r[i]
        for j in range(k):
            out[b + j] = (g[b + j] - (y[b + j] * m2 + m1)) * ri


def warm(dtype) -> None:
    """Compile the three loops for `dtype` (or load them from Numba's cache), as a first call would."""
    x, r = np.ones(2, dtype), np.ones(1, dtype)
    norm_inv_std(x, 2, 1e-5, r)
    norm_normalized(x, r, 2, np.empty(2, dtype))
    norm_grad(x, x, r, 2, np.empty(2, dtype))
