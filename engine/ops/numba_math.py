"""Float32 sigmoid, SiLU, softplus and binary cross-entropy as Numba loops with an exp and a
log1p of their own, which LLVM vectorises.

NumPy's float32 tanh, log1p and expm1 are SIMD code only where SVML is (AVX-512 CPUs); on an
AVX2 CPU its tanh takes ~2.6 ns a value and its log1p ~14 ns, so the sigmoid as NumPy passes
(0.5 + 0.5 tanh(x / 2)) took 2.9 ns a value and the softplus 9.3 (AMD EPYC Zen 3, one thread,
64 k values); these loops take 0.9 and 2.6. Numba calls libm for math.exp (one value at a
time), so exp and log are written here in float32 arithmetic and integer bit moves:

- exp(x) for x <= 0: Cephes' expf (x = n ln2 + r, |r| <= ln2 / 2, ln2 split in two so n ln2 is
  exact, a degree-7 polynomial for e^r), 2^n made from its exponent bits; n is rounded with
  the 1.5 * 2^23 trick (floor and int casts stop the vectoriser). Flushes to 0 below -87.34,
  where e^x is subnormal.
- log1p(e) for e in [0, 1]: log(u) of u = 1 + e by Cephes' logf (the exponent, and a degree-9
  polynomial of the mantissa around 1), then Goldberg's correction log(u) * e / (u - 1), which
  gives back the rounding of 1 + e (log1p(e) ~ e for tiny e, where log(u) is 0).
- Both polynomials (and the reductions' n ln2 terms) as fused multiply-adds (_fma): Numba
  contracts nothing, and a product and a sum per coefficient made the exp compute-bound (AVX-512
  Xeon, 32 k values: the sigmoid 21.8 -> 13.0 us, SiLU 22.9 -> 13.4 us). On a CPU without FMA,
  the product and the sum, so the bits may differ between such CPUs, within the same bounds.

sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) below, with e = exp(-|x|): no overflow, and in
the negative tail it keeps its relative accuracy where the tanh form loses it and rounds to 0 (from x = -20).
Errors against float64 (measured over 10^6 values: exp 0.99 ulps, sigmoid 2.3, softplus 2.7; NumPy's
softplus form 2.7): the sigmoid and softplus within 3 float32 ulps plus the smallest normal float32
(the flush), SiLU within 4 ulps plus |x| times it; tests/test_numba_math.py states each bound,
the gradient's and the cross-entropy's with their cancellation. NaN stays NaN, +-inf give the
limits. Not NumPy's bits: with Numba the float32 forms of these ops take these loops at every
size (cpu_loops.FLOAT32_ONLY), so a dense SiLU (sigmoid node, then x * s) and the image SiLU
(one node, its gradient recomputing s) still agree to the bit. Float64 keeps the NumPy forms.

Imported with numba_loops (cpu_loops.load_loops), on first use; compiled code kept on disk.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# Numba keys its disk cache by source file: only the package's own name reads and writes it
CACHED = __name__ == "gengraph.engine.ops.numba_math"
_jit = numba.njit(cache=CACHED, nogil=True, error_model="numpy")
_inline = numba.njit(inline="always")

f32, i32 = np.float32, np.int32


@intrinsic
def _bits_to_float(typingctx, v):
    """The float32 whose bits are the int32 v (a register move, which LLVM vectorises)."""
    return types.float32(types.int32), lambda context, builder, sig, args: builder.bitcast(args[0], ir.FloatType())


@intrinsic
def _float_to_bits(typingctx, v):
    """The bits of the float32 v as an int32."""
    return types.int32(types.float32), lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(32))


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c for float32: one fused multiply-add where the CPU has one (llvm.fmuladd; every
    x86-64 CPU since 2013 and every 64-bit ARM), else a product and a sum. Numba contracts
    nothing itself (no fast-math); the polynomials below ask for it, and nothing else does."""
    def codegen(context, builder, sig, args):
        f = ir.FloatType()
        return builder.call(cgutils.get_or_insert_function(builder.module, ir.FunctionType(f, (f, f, f)),
                                                           "llvm.fmuladd.f32"), args)

    return types.float32(types.float32, types.float32, types.float32), codegen


_ONE, _HALF, _ZERO = f32(1.0), f32(0.5), f32(0.0)
_ROUND = f32(12582912.0)  # 1.5 * 2^23: x + _ROUND - _ROUND rounds x to an integer (|x| < 2^22)
_ROUND_BITS = i32(np.array([12582912.0], np.float32).view(np.int32)[0])
_EXP_MIN = f32(-87.3365)  # log of the smallest normal float32: below, e^x is subnormal (flushed to 0)
_LOG2E = f32(1.4426950408889634)
_LN2_HI, _LN2_LO = f32(0.693359375), f32(-2.12194440e-4)  # ln 2 = HI + LO, HI with 9 bits
_E = tuple(f32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                            1.6666665459e-1, 5.0000001201e-1))
_L = tuple(f32(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                            1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                            3.3333331174e-1))
_SQRT2 = f32(1.41421356)
_MANTISSA, _ONE_BITS = i32(0x007FFFFF), i32(0x3F800000)


@_inline
def _exp_neg(x):
    """e^x for float32 x <= 0 (0 below -87.34; NaN stays NaN)."""
    xc = _EXP_MIN if x < _EXP_MIN else x
    t = _fma(xc, _LOG2E, _ROUND)
    n = t - _ROUND
    r = _fma(n, -_LN2_HI, xc)
    r = _fma(n, -_LN2_LO, r)
    p = _fma(_fma(_fma(_fma(_fma(_E[0], r, _E[1]), r, _E[2]), r, _E[3]), r, _E[4]), r, _E[5])
    p = _fma(p, r * r, r) + _ONE
    e = p * _bits_to_float((_float_to_bits(t) - _ROUND_BITS + i32(127)) << i32(23))
    return _ZERO if x < _EXP_MIN else e


@_inline
def _log_normal(u):
    """log(u) for a positive normal float32 u; NaN stays NaN (others outside: not for these callers)."""
    b = _float_to_bits(u)
    m = _bits_to_float((b & _MANTISSA) | _ONE_BITS)  # u = 2^k m, m in [1, 2)
    k = f32((b >> i32(23)) - i32(127))
    big = m > _SQRT2  # m in [sqrt(1/2), sqrt(2)) keeps the polynomial's argument small
    m = m * _HALF if big else m
    k = k + _ONE if big else k
    z = m - _ONE
    zz = z * z
    p = _L[0]
    for c in _L[1:]:  # unrolled by Numba: _L is a tuple of constants
        p = _fma(p, z, c)
    y = _fma(k, _LN2_LO, p * z * zz) - _HALF * zz
    lg = _fma(k, _LN2_HI, z + y)
    return lg if u == u else u


@_inline
def _log1p_unit(e):
    """log(1 + e) for float32 e in [0, 1]."""
    u = _ONE + e
    d = u - _ONE  # the e that 1 + e kept: log(u) / d is the slope to apply to the true e
    return _log_normal(u) * (e / d) if d != _ZERO else e


@_inline
def _sigmoid(x):
    e = _exp_neg(-abs(x))
    return (_ONE if x >= _ZERO else e) / (_ONE + e)


@_inline
def _softplus(x):
    return (x if x > _ZERO else _ZERO) + _log1p_unit(_exp_neg(-abs(x)))


@_inline
def _silu_grad(g, x, s, one):
    """SiLU's gradient from s = sigmoid(x); `one` in the loop's dtype (numba_loops.silu_grad
    shares it)."""
    d = one - s  # elementwise._silu_grad_forward's passes, in its order
    d = d * x
    d = d + one
    d = d * s
    return d * g


# --- the loops: into out, or in place into the first input (numba_loops says why two) ---------
@_jit
def sigmoid32(x, out):
    for i in range(out.size):
        out[i] = _sigmoid(x[i])


@_jit
def sigmoid32_inplace(x):
    for i in range(x.size):
        x[i] = _sigmoid(x[i])


@_jit
def silu32(x, out):
    for i in range(out.size):
        v = x[i]
        out[i] = v * _sigmoid(v)


@_jit
def silu32_inplace(x):
    for i in range(x.size):
        v = x[i]
        x[i] = v * _sigmoid(v)


# the dense SiLU's two nodes, s = sigmoid(x) and x * s, in one pass (elementwise.silu_pair): the
# bits of sigmoid32 and then NumPy's product, without reading x and s again
@_jit
def silu_pair32(x, s, y):
    for i in range(x.size):
        v = x[i]
        t = _sigmoid(v)
        s[i] = t
        y[i] = v * t


# a dense layer's bias and SiLU in one pass over (rows, units) arrays (elementwise.silu_bias and
# silu_pair with a bias): v = x + b is NumPy's float32 sum, then the loops above
@_jit
def silu_bias32(x, b, out):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[i, j] + b[j]
            out[i, j] = v * _sigmoid(v)


@_jit
def silu_bias32_inplace(x, b):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[i, j] + b[j]
            x[i, j] = v * _sigmoid(v)


@_jit
def silu_pair_bias32(x, b, h, s, y):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[i, j] + b[j]
            t = _sigmoid(v)
            h[i, j] = v
            s[i, j] = t
            y[i, j] = v * t


@_jit
def silu_grad_x32(g, x, out):
    for i in range(out.size):
        v = x[i]
        out[i] = _silu_grad(g[i], v, _sigmoid(v), _ONE)


@_jit
def silu_grad_x32_inplace(g, x):
    for i in range(g.size):
        v = x[i]
        g[i] = _silu_grad(g[i], v, _sigmoid(v), _ONE)


# the gradient into x's own buffer (out is x, a dead input): x read and written by one loop, which
# LLVM vectorises where an out that is another input fails its overlap check (the scalar loop)
@_jit
def silu_grad_x32_xg_inplace(x, g):
    for i in range(x.size):
        v = x[i]
        x[i] = _silu_grad(g[i], v, _sigmoid(v), _ONE)


@_jit
def softplus32(x, out):
    for i in range(out.size):
        out[i] = _softplus(x[i])


@_jit
def softplus32_inplace(x):
    for i in range(x.size):
        x[i] = _softplus(x[i])


@_jit
def bce32(z, y, out):
    for i in range(out.size):
        v = z[i]
        out[i] = _softplus(v) - v * y[i]


@_jit
def bce32_inplace(z, y):
    for i in range(z.size):
        v = z[i]
        z[i] = _softplus(v) - v * y[i]


# --- the classifier head: softmax rows, their cross-entropy and hits (nn.softmax_head) ------------
_SAFE32 = f32(1e-30)  # nn._SAFE["f"]: p[label] above it, -log p[label] is the loss


@numba.njit(cache=CACHED, nogil=True)
def first_bad_label(labels, c):
    """The first row whose label is outside 0..c-1, or -1."""
    for i in range(labels.size):
        if labels[i] < 0 or labels[i] >= c:
            return i
    return -1


@_inline
def _softmax_row(z, p, i, c):
    """p[i] = softmax(z[i]) (z - max, exp, sum, divide: the NumPy form's passes; the sum in
    float32 in order, where NumPy's is a BLAS product); returns the row's max. A NaN makes the
    max, and so the row of p, NaN, as NumPy's argmax pick does."""
    m = z[i, 0]
    nan = m != m
    for j in range(1, c):
        v = z[i, j]
        nan = nan or v != v
        m = v if v > m else m
    if nan:
        m = np.float32(np.nan)
    for j in range(c):  # apart from the sum, which would keep LLVM from vectorising the exp
        p[i, j] = _exp_neg(z[i, j] - m)
    s = _ZERO
    for j in range(c):
        s += p[i, j]
    for j in range(c):
        p[i, j] = p[i, j] / s
    return m


@_inline
def _cross_entropy(z, p, i, c, label, m):
    """-log p[i, label], or -log max(p[i]) - (z[i, label] - m) where p[label] is within 1e30 of
    underflow (nn._softmax_ce_forward's two formulas, chosen per row)."""
    pl = p[i, label]
    if pl > _SAFE32:
        return -_log_normal(pl)
    top = p[i, 0]
    for j in range(1, c):
        top = p[i, j] if p[i, j] > top else top
    return -_log_normal(top) - (z[i, label] - m)


@_jit
def softmax_rows32(z, p):
    """p = softmax over the rows of 2-D float32 z (nn._softmax_forward's classifier path)."""
    n, c = z.shape
    for i in range(n):
        _softmax_row(z, p, i, c)


@_jit
def cross_entropy_rows32(z, p, labels, loss):
    """loss[i] = the cross-entropy of row i from z and p = softmax_rows32(z) (nn._softmax_ce_forward).
    Returns the first row with a label outside 0..c-1 (nothing written), else -1."""
    n, c = z.shape
    bad = first_bad_label(labels, c)
    if bad >= 0:
        return bad
    for i in range(n):
        m = z[i, 0]
        nan = m != m
        for j in range(1, c):
            v = z[i, j]
            nan = nan or v != v
            m = v if v > m else m
        loss[i] = _cross_entropy(z, p, i, c, labels[i], np.float32(np.nan) if nan else m)
    return -1


@_jit
def softmax_head32(z, labels, p, loss, hit):
    """softmax_rows32, cross_entropy_rows32 and correct (1 where z[label] is the row's largest)
    in one pass over the rows: the same values as those loops and nn._correct_forward, to the
    bit. Returns the first row with a label outside 0..c-1 (nothing written), else -1."""
    n, c = z.shape
    bad = first_bad_label(labels, c)
    if bad >= 0:
        return bad
    for i in range(n):
        m = _softmax_row(z, p, i, c)
        label = labels[i]
        loss[i] = _cross_entropy(z, p, i, c, label, m)
        hit[i] = _ONE if z[i, label] >= m else _ZERO
    return -1


# (arrays, scalars) each loop takes before its out, as numba_loops.SIGNATURES
SIGNATURES = {"sigmoid32": (1, 0), "silu32": (1, 0), "silu_grad_x32": (2, 0), "softplus32": (1, 0), "bce32": (2, 0)}


def warm(dtype) -> None:
    """Compile every loop (or load it from Numba's cache); float32 only."""
    if np.dtype(dtype) != np.float32:
        return
    for name, (arrays, _) in SIGNATURES.items():
        args = [np.ones(1, np.float32) for _ in range(arrays)]
        globals()[name](*args, np.ones(1, np.float32))
        globals()[name + "_inplace"](*args)
    silu_grad_x32_xg_inplace(np.ones(1, np.float32), np.ones(1, np.float32))
    silu_pair32(np.ones(1, np.float32), np.ones(1, np.float32), np.ones(1, np.float32))
    row, b = np.ones((1, 1), np.float32), np.ones(1, np.float32)
    silu_bias32(row, b, row.copy())
    silu_bias32_inplace(row, b)
    silu_pair_bias32(row, b, row.copy(), row.copy(), row.copy())
    z, labels = np.zeros((1, 2), np.float32), np.zeros(1, np.int64)  # int64: what the data sources feed
    softmax_head32(z, labels, z.copy(), np.ones(1, np.float32), np.ones(1, np.float32))
    softmax_rows32(z, z.copy())
    cross_entropy_rows32(z, z.copy(), labels, np.ones(1, np.float32))
