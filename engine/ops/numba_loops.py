"""One-pass CPU loops for elementwise kernels, compiled by Numba: Adam's (fused.py) and ReLU's
and SiLU's gradients and the image SiLU (elementwise.py). The loops of Winograd F(4x4, 3x3)
(numba_winograd.py), of group_norm / layer_norm (numba_norm.py) and the float32 sigmoid,
SiLU, softplus and cross-entropy with an exp and log1p of their own (numba_math.py) load with
these; those files say how their results relate to the NumPy forms'.

Their NumPy forms are three to thirteen whole-array passes; each loop here reads every array
once and writes its output once. Every loop does the NumPy form's float operations in the same
order and in the arrays' dtype (Numba's default: no fast-math, so no FMA contraction and exact
sqrt and division), hence the same bits; tests/test_numba_loops.py checks it.
``error_model="numpy"`` drops Python's zero-division checks, which stop LLVM from
vectorizing the loops (division by zero gives inf/nan, as in NumPy).

Imported on first use by cpu_loops.cpu_loop (importing Numba takes about 0.2 s, which a
`gengraph validate` should not pay); the compiled code is kept on disk (CACHED).
"""

from __future__ import annotations

import numba
import numpy as np

from . import numba_math, numba_norm, numba_winograd
from .numba_math import bce32, sigmoid32, silu32, silu_grad_x32, softplus32  # noqa: F401 (loaded with these)
from .numba_math import bce32_inplace, sigmoid32_inplace, silu32_inplace, silu_grad_x32_inplace, softplus32_inplace  # noqa: F401
from .numba_math import _silu_grad  # the pass order SiLU's float32 loops share
from .numba_math import cross_entropy_rows32, first_bad_label, silu_grad_x32_xg_inplace, silu_pair32, softmax_head32, softmax_rows32  # noqa: F401
from .numba_math import silu_bias32, silu_bias32_inplace, silu_pair_bias32  # noqa: F401
from .numba_norm import norm_grad, norm_inv_std, norm_normalized  # noqa: F401 (norm.py's loops, loaded with these)
from .numba_winograd import f43_grad, f43_input, f43_output  # noqa: F401 (winograd43's loops, loaded with these)

# Numba keys its disk cache by source file, not by module name: a process that imported this file
# under another name (`engine.ops.numba_loops`, from a checkout's root on sys.path) wrote entries
# whose globals the package could not rebuild, a ModuleNotFoundError at its first call of a loop.
# Only the package's own name reads and writes the cache; any other compiles in memory.
CACHED = __name__ == "gengraph.engine.ops.numba_loops"
_jit = numba.njit(cache=CACHED, nogil=True, error_model="numpy")
_inline = numba.njit(inline="always")


# --- one element of each rule ------------------------------------------------------------
@_inline
def _ema(m, x, d, c):
    return m * d + x * c  # c = 1 - d, rounded to the dtype once, as NumPy does with a Python float


@_inline
def _ema_square(m, x, d, c):
    return m * d + (x * x) * c


@_inline
def _adam_step(p, m, v, step, scale, eps):
    return p - m / (np.sqrt(v) / scale + eps) * step


# --- the loops: into a new array, or in place into the first input ---------------------------
# An output that is an input would fail LLVM's run-time overlap check and run the scalar loop
# (8x slower); written in place, the first input's loop is vectorized.
@_jit
def ema(m, x, d, c, out):
    for i in range(out.size):
        out[i] = _ema(m[i], x[i], d, c)


@_jit
def ema_inplace(m, x, d, c):
    for i in range(m.size):
        m[i] = _ema(m[i], x[i], d, c)


@_jit
def ema_square(m, x, d, c, out):
    for i in range(out.size):
        out[i] = _ema_square(m[i], x[i], d, c)


@_jit
def ema_square_inplace(m, x, d, c):
    for i in range(m.size):
        m[i] = _ema_square(m[i], x[i], d, c)


@_jit
def adam_step(p, m, v, step, scale, eps, out):
    for i in range(out.size):
        out[i] = _adam_step(p[i], m[i], v[i], step, scale, eps)


@_jit
def adam_step_inplace(p, m, v, step, scale, eps):
    for i in range(p.size):
        p[i] = _adam_step(p[i], m[i], v[i], step, scale, eps)


@_inline
def _relu_grad(g, y, one, zero):
    return g * (one if y > 0 else zero)  # NumPy's g * (y > 0): the mask as 1 or 0 times g, signs kept


@_jit
def relu_grad(g, y, one, zero, out):
    for i in range(out.size):
        out[i] = _relu_grad(g[i], y[i], one, zero)


@_jit
def relu_grad_inplace(g, y, one, zero):
    for i in range(g.size):
        g[i] = _relu_grad(g[i], y[i], one, zero)


@_jit
def silu_grad(g, x, s, one, out):
    for i in range(out.size):
        out[i] = _silu_grad(g[i], x[i], s[i], one)


@_jit
def silu_grad_inplace(g, x, s, one):
    for i in range(g.size):
        g[i] = _silu_grad(g[i], x[i], s[i], one)


# t = tanh(x / 2), which NumPy computes (its SIMD tanh; Numba's would be scalar libm calls):
# the sigmoid's last two passes, s = t / 2 + 1/2, happen inside the loops
@_jit
def silu_grad_t(g, x, t, half, one, out):
    for i in range(out.size):
        out[i] = _silu_grad(g[i], x[i], t[i] * half + half, one)


@_jit
def silu_grad_t_inplace(g, x, t, half, one):
    for i in range(g.size):
        g[i] = _silu_grad(g[i], x[i], t[i] * half + half, one)


@_jit
def silu_t(t, x, half, out):
    for i in range(out.size):
        out[i] = x[i] * (t[i] * half + half)


@_jit
def silu_t_inplace(t, x, half):
    for i in range(t.size):
        t[i] = x[i] * (t[i] * half + half)


# Adam's three kernels in one loop (fused.adam_update, which the compiler calls for an ema, an
# ema of squares and the adam_step that reads them): m and v are written in place, the
# parameters into out or in place; the same operations as the three loops above, in their order
@_inline
def _adam_update(p, m, v, g, d1, c1, d2, c2, step, scale, eps):
    mi = _ema(m, g, d1, c1)
    vi = _ema_square(v, g, d2, c2)
    return mi, vi, _adam_step(p, mi, vi, step, scale, eps)


@_jit
def adam_update(p, m, v, g, d1, c1, d2, c2, step, scale, eps, out):
    for i in range(out.size):
        m[i], v[i], out[i] = _adam_update(p[i], m[i], v[i], g[i], d1, c1, d2, c2, step, scale, eps)


@_jit
def adam_update_inplace(p, m, v, g, d1, c1, d2, c2, step, scale, eps):
    for i in range(p.size):
        m[i], v[i], p[i] = _adam_update(p[i], m[i], v[i], g[i], d1, c1, d2, c2, step, scale, eps)


# the softmax cross-entropy's gradient (nn._softmax_ce_backward_forward's broadcast form): its two
# passes, the same operations, on 2-D arrays
@_jit
def softmax_ce_backward(p, labels, g, out):
    """out = p * g, minus g at each row's label; out may be p. Returns the first row whose label
    is outside 0..c-1 (nothing written), else -1."""
    n, c = p.shape
    bad = first_bad_label(labels, c)
    if bad >= 0:
        return bad
    for i in range(n):
        for j in range(c):
            out[i, j] = p[i, j] * g
        lab = labels[i]
        out[i, lab] = out[i, lab] - g
    return -1


# (arrays, scalars) each loop takes before its out; the _inplace loops take the same minus out
SIGNATURES = {"ema": (2, 2), "ema_square": (2, 2), "adam_step": (3, 3), "relu_grad": (2, 2), "silu_grad": (3, 1),
              "silu_grad_t": (3, 2), "silu_t": (2, 1), "adam_update": (4, 7)}


def warm(dtype) -> None:
    """Compile every loop for 1-D arrays of `dtype` (or load it from Numba's cache), as the
    first calls would."""
    t = np.dtype(dtype).type
    for name, (arrays, scalars) in SIGNATURES.items():
        args = [np.ones(1, dtype) for _ in range(arrays)] + [t(1) for _ in range(scalars)]
        globals()[name](*args, np.ones(1, dtype))
        globals()[name + "_inplace"](*args)
    z, labels = np.zeros((1, 2), dtype), np.zeros(1, np.int64)  # int64 labels: what the data sources feed
    softmax_ce_backward(z, labels, t(1), z)
    numba_winograd.warm(dtype)
    numba_norm.warm(dtype)
    numba_math.warm(dtype)
