"""Elementwise arithmetic, math functions, activations and comparisons.

Each op is one `defop` line group: forward (or the ufunc that is its forward), shape
rule, one VJP per input (ZERO where the derivative is zero). VJPs are graph code, so
``grad`` of a gradient works. Broadcasting in VJPs is undone by the
gradient engine (sum back to the input's shape), not here.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from .cpu_loops import bias_rows, cpu_loop, pair_loop, run_loop, takes, unary_loop
from .fastpaths import relu_forward
from .registry import ZERO, Fused, deffusion, defop, elementwise, ewise_flops, expression_function, same_shape


def _compare(relation):
    def forward(xp, a, b):
        # the mask's dtype is the one the shape rule (float_dtype) records: float32 with float64
        # is float64, and a Python-float constant keeps the array's precision
        arrays = [x.dtype for x in (a, b) if getattr(x, "ndim", 0) and x.dtype.kind == "f"]
        if not arrays:
            arrays = [x.dtype for x in (a, b) if hasattr(x, "dtype") and x.dtype.kind == "f"] or [b.dtype]
        return relation(a, b).astype(arrays[0] if len(arrays) == 1 else xp.result_type(*arrays))

    return forward


# comparisons give 0/1 masks in the float dtype: handy as multipliers; piecewise constant,
# so their derivative is zero (ZERO) wherever it is defined
gt = defop("gt", _compare(operator.gt), elementwise, (ZERO, ZERO), doc="1 where a > b else 0")
ge = defop("ge", _compare(operator.ge), elementwise, (ZERO, ZERO), doc="1 where a >= b else 0")
lt = defop("lt", _compare(operator.lt), elementwise, (ZERO, ZERO), doc="1 where a < b else 0")
le = defop("le", _compare(operator.le), elementwise, (ZERO, ZERO), doc="1 where a <= b else 0")
eq = defop("eq", _compare(operator.eq), elementwise, (ZERO, ZERO), doc="1 where a == b else 0")
sign = defop("sign", None, same_shape, (ZERO,), ufunc="sign", doc="-1, 0 or 1; its gradient is zero")
floor = defop("floor", None, same_shape, (ZERO,), ufunc="floor",
              doc="largest integer <= x; its gradient is zero (piecewise constant)")

# --- arithmetic (forward: the ufunc) -------------------------------------------------
add = defop("add", None, elementwise, (lambda g, y, a, b: g, lambda g, y, a, b: g), ufunc="add", flops=ewise_flops)
sub = defop("sub", None, elementwise, (lambda g, y, a, b: g, lambda g, y, a, b: -g), ufunc="subtract",
            flops=ewise_flops)
mul = defop("mul", None, elementwise, (lambda g, y, a, b: g * b, lambda g, y, a, b: g * a), ufunc="multiply",
            flops=ewise_flops)
div = defop("div", None, elementwise, (lambda g, y, a, b: g / b, lambda g, y, a, b: -g * y / b), ufunc="divide",
            flops=ewise_flops)
neg = defop("neg", None, same_shape, (lambda g, y, x: -g,), ufunc="negative", flops=ewise_flops)
# a tie splits the gradient in halves, as the max / min reductions and PyTorch's maximum do
maximum = defop("maximum", None, elementwise, (lambda g, y, a, b: g * (gt(a, b) + 0.5 * eq(a, b)),
                                               lambda g, y, a, b: g * (lt(a, b) + 0.5 * eq(a, b))),
                ufunc="maximum", in_expressions=True, doc="elementwise max; a tie's gradient is split evenly")
minimum = defop("minimum", None, elementwise, (lambda g, y, a, b: g * (lt(a, b) + 0.5 * eq(a, b)),
                                               lambda g, y, a, b: g * (gt(a, b) + 0.5 * eq(a, b))),
                ufunc="minimum", in_expressions=True, doc="elementwise min; a tie's gradient is split evenly")
where = defop("where", lambda xp, c, a, b: xp.where(c, a, b), lambda c, a, b: elementwise(a, b, c),
              (ZERO, lambda g, y, c, a, b: where(c, g, 0.0), lambda g, y, c, a, b: where(c, 0.0, g)),
              float_inputs=(1, 2), in_expressions=True, doc="a where the condition (a 0/1 mask) is nonzero, else b")
# clip is min(max(x, lo), hi), also when lo > hi (then hi everywhere, as np.clip and torch.clamp):
# the gradient goes to the argument the value is, hi's mask covering lo > hi too
clip = defop("clip", lambda xp, x, lo, hi: xp.clip(x, lo, hi), elementwise,
             (lambda g, y, x, lo, hi: g * ge(x, lo) * le(x, hi), lambda g, y, x, lo, hi: g * lt(x, lo) * le(lo, hi),
              lambda g, y, x, lo, hi: g * gt(maximum(x, lo), hi)), in_expressions=True,
             doc="x limited to [lo, hi] (hi where lo > hi); gradient passes to x where lo <= x <= hi, else to "
                 "the bound")


def _known(node, test) -> bool:
    """Whether `node` is a constant all of whose values pass `test` (decided when the graph is built)."""
    return node.op == "constant" and bool(test(node.graph.value(node)).all())


def _pow_vjp_a(g, y, a, b):
    # b a^(b-1), taken as 0 where b == 0 and a == 0 (0 * inf otherwise, which made the third
    # derivative of x**2 at 0 NaN). There the base is replaced by 1 before the power, not after:
    # a where() after it would zero the value but not the next derivative, which multiplied its
    # zero by the inf of 0^(b-2) (d^2/dx^2 x**0, d^3/dx^3 x**1, d^4/dx^4 x**2 at 0 were NaN)
    if _known(b, lambda v: v != 0):
        return g * b * a ** (b - 1)
    at_zero = eq(b, 0.0) * eq(a, 0.0)
    return where(at_zero, 0.0, g * b * where(at_zero, 1.0, a) ** (b - 1))


def _pow_vjp_b(g, y, a, b):
    # a^b log(a), taken as 0 where a == 0 and b >= 0 (the limit of a^b log a; PyTorch's convention)
    d = g * y * log(a)
    return d if _known(a, lambda v: v != 0) else where(eq(a, 0.0) * ge(b, 0.0), 0.0, d)


pow = defop("pow", None, elementwise, (_pow_vjp_a, _pow_vjp_b), ufunc="power", flops=ewise_flops)

# --- math functions ---------------------------------------------------------------
exp = defop("exp", None, same_shape, (lambda g, y, x: g * y,), ufunc="exp", flops=ewise_flops, in_expressions=True)
log = defop("log", None, same_shape, (lambda g, y, x: g / x,), ufunc="log", flops=ewise_flops, in_expressions=True)
sqrt = defop("sqrt", None, same_shape, (lambda g, y, x: g * 0.5 / y,), ufunc="sqrt", in_expressions=True)
square = defop("square", None, same_shape, (lambda g, y, x: g * 2.0 * x,), ufunc="square", in_expressions=True)
abs = defop("abs", None, same_shape, (lambda g, y, x: g * sign(x),), ufunc="abs", in_expressions=True)
log1p = defop("log1p", None, same_shape, (lambda g, y, x: g / (x + 1.0),), ufunc="log1p", in_expressions=True)
expm1 = defop("expm1", None, same_shape, (lambda g, y, x: g * (y + 1.0),), ufunc="expm1", in_expressions=True)
sin = defop("sin", None, same_shape, (lambda g, y, x: g * cos(x),), ufunc="sin", in_expressions=True)
cos = defop("cos", None, same_shape, (lambda g, y, x: -g * sin(x),), ufunc="cos", in_expressions=True)

# --- activations (numerically stable forms) ------------------------------------------
tanh = defop("tanh", None, same_shape, (lambda g, y, x: g * (1.0 - y * y),), ufunc="tanh", in_expressions=True)
# 0.5 (1 + tanh(x/2)) never overflows, unlike 1 / (1 + exp(-x))
def _sigmoid_forward(xp, x, out=None):
    half = x.dtype.type(0.5)
    if x.ndim == 0:  # NumPy returns scalars here, which cannot be written into
        return half + half * xp.tanh(half * x)
    if xp is np and x.dtype.char == "f":  # float32 with Numba: one loop, exp of its own (numba_math.py)
        r = unary_loop("sigmoid32", x, out)
        if r is not None:
            return r
    t = xp.multiply(x, half, out=out)
    xp.tanh(t, out=t)
    t *= half
    t += half
    return t


sigmoid = defop("sigmoid", _sigmoid_forward, same_shape, (lambda g, y, x: g * y * (1.0 - y),),
                writes_into_out=True, in_expressions=True)


def _relu_grad_forward(xp, g, y, out=None):
    if xp is np and g.ndim:  # one compiled loop where Numba is installed (cpu_loops.cpu_loop)
        r = cpu_loop("relu_grad", (g, y), (1.0, 0.0), out)
        if r is not None:
            return r
    # two passes: the boolean mask is cast inside the multiply, no float mask array
    return xp.multiply(g, y > 0, out=out)


relu_grad = defop("relu_grad", _relu_grad_forward, elementwise,
                  (lambda gg, out, g, y: relu_grad(gg, y), ZERO), writes_into_out=True,
                  doc="g where y > 0 else 0: relu's VJP from its output y in one kernel")
relu = defop("relu", relu_forward, same_shape,
             (lambda g, y, x: relu_grad(g, y),), writes_into_out=True, in_expressions=True)
leaky_relu = defop("leaky_relu", lambda xp, x, slope=0.01: xp.where(x > 0, x, x * x.dtype.type(slope)), same_shape,
                   (lambda g, y, x, slope=0.01: g * where(gt(x, 0.0), 1.0, slope),), in_expressions=True)
elu = defop("elu", lambda xp, x, alpha=1.0: xp.where(x > 0, x, x.dtype.type(alpha) * xp.expm1(xp.minimum(x, 0))),
            same_shape, (lambda g, y, x, alpha=1.0: g * where(gt(x, 0.0), 1.0, y + alpha),), in_expressions=True)
def softplus_forward(xp, x):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|): never overflows, and ~10x faster than
    NumPy's float32 logaddexp. Two buffers, the passes in place."""
    if not getattr(x, "ndim", 0):  # NumPy scalars cannot be written into
        return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))
    if xp is np and x.dtype.char == "f":  # float32 with Numba: one loop (numba_math.py)
        r = unary_loop("softplus32", x, None)
        if r is not None:
            return r
    t = xp.abs(x)
    xp.negative(t, out=t)
    xp.exp(t, out=t)
    xp.log1p(t, out=t)
    r = relu_forward(xp, x)
    r += t
    return r


softplus = defop("softplus", softplus_forward, same_shape, (lambda g, y, x: g * sigmoid(x),), in_expressions=True)

_GELU_C = math.sqrt(2.0 / math.pi)


@expression_function
def gelu(x):
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + tanh(_GELU_C * (x + 0.044715 * x * x * x)))


@expression_function
def silu(x):
    """x * sigmoid(x) (swish). Dense activations: two nodes, s = sigmoid(x) and x * s, whose VJP
    reuses s (a float32 NumPy program computes both in one loop, silu_pair; one without the
    gradient has one node, passes.lean_silu). Image activations (4-D and up, where a step's
    memory is the activations'): one node whose VJP recomputes s from x, so s is not kept from
    the forward to the backward pass (the U-Net step's peak drops by a fifth for one more sigmoid
    pass per SiLU; the values are the same to the bit)."""
    if len(x.shape) >= 4:
        return _silu_lean(x)
    return _silu(x, sigmoid(x))


def _silu_grad_forward(xp, g, x, s, out=None):
    if xp is np and g.ndim:  # one compiled loop where Numba is installed (cpu_loops.cpu_loop)
        r = cpu_loop("silu_grad", (g, x, s), (1.0,), out)
        if r is not None:
            return r
    # g * s * (1 + x (1 - s)): one temporary, five passes; `out` (possibly the buffer of a dead
    # input: g, x or s) is written only by the last pass, after every input has been read
    d = xp.subtract(s.dtype.type(1), s)
    if d.ndim == 0:  # NumPy scalars cannot be written into
        return g * s * (1 + x * d)
    d *= x
    d += d.dtype.type(1)
    d *= s
    return xp.multiply(d, g, out=d if out is None else out)


def _silu_grad_vjp_x(gg, out, g, x, s):
    # d/dx of s (1 + x (1 - s)), through s = sigmoid(x) too: s (1 - s) (2 + x (1 - 2 s))
    return gg * g * s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))


# s = sigmoid(x) is a function of x alone: the whole derivative is given for x, ZERO for s
# (the same convention as softmax_cross_entropy's p)
silu_grad = defop("silu_grad", _silu_grad_forward, elementwise,
                  (lambda gg, out, g, x, s: silu_grad(gg, x, s), _silu_grad_vjp_x, ZERO), writes_into_out=True,
                  doc="g * s * (1 + x (1 - s)) with s = sigmoid(x): silu's VJP in one kernel")
_silu = defop("silu", lambda xp, x, s, out=None: xp.multiply(x, s, out=out), lambda x, s: elementwise(x, s),
              (lambda g, y, x, s: silu_grad(g, x, s), ZERO), writes_into_out=True,
              doc="x * s with s = sigmoid(x) (built by `silu`)")


def silu_pair(xp, x, b=None):
    """(s, x * s) with s = sigmoid(x): a dense SiLU's two kernels in one call, their bits; with a
    bias b, (h, s, h * s) of h = x + b, the bias's kernel too. Float32 with Numba: one loop
    (numba_math.silu_pair32, silu_pair_bias32) that reads x once, where the kernels read it
    twice and s once more (256 x 128: 25.5 -> 19.9 us)."""
    if b is not None:
        r = bias_rows(x, b) if xp is np else None
        if r is None:
            h = xp.add(x, b)
            return (h, *silu_pair(xp, h))
        loops, rows = r
        out = tuple(np.empty(x.shape, x.dtype) for _ in range(3))
        loops.silu_pair_bias32(rows, b, *(a.reshape(rows.shape) for a in out))
        return out
    if xp is np and x.ndim and x.dtype.char == "f":
        r = pair_loop("silu_pair32", x)
        if r is not None:
            return r
    s = _sigmoid_forward(xp, x)
    return s, xp.multiply(x, s)


def dense_bias(h):
    """(x, b) where node h = x + b adds a bias b (1-D, h's last axis) to x of h's shape, else None:
    a dense layer's pre-activations, whose bias a SiLU's loop can add in the same pass."""
    if h.op != "add" or len(h.inputs) != 2:
        return None
    for x, b in (h.inputs, h.inputs[::-1]):  # IEEE sums commute: either order gives add's bits
        if len(b.shape) == 1 and b.shape == h.shape[-1:] and x.shape == h.shape and x.dtype == b.dtype == h.dtype:
            return x, b
    return None


def _silu_pair_groups(nodes, xp):
    """Each float32 dense SiLU of a NumPy program, sigmoid node and product, as one silu_pair
    call, with the bias sum before it where the layer adds one (where nothing but the gradient
    reads s: a program without it has one silu_lean or silu_bias node, passes.lean_silu)."""
    if xp is not np:
        return []
    groups = []
    for y in nodes:
        h, s = y.inputs if y.op == "silu" else (None, None)
        if h is None or y.dtype != np.float32 or s.op != "sigmoid" or s.inputs[0] is not h:
            continue
        xb = dense_bias(h)
        groups.append(Fused([s, y], silu_pair, [h], {}) if xb is None else Fused([h, s, y], silu_pair, list(xb), {}))
    return groups


deffusion("silu_pair", _silu_pair_groups)


def _half_tanh(x, out=None):
    """tanh(x / 2) into out, or a new array: _sigmoid_forward's first two passes (s = t / 2 + 1/2)."""
    t = np.multiply(x, x.dtype.type(0.5), out=out)
    return np.tanh(t, out=t)


def _silu_lean_forward(xp, x, out=None):
    if xp is np and x.ndim and x.dtype.char == "f":  # float32 with Numba: one loop (numba_math.py)
        r = unary_loop("silu32", x, out)
        if r is not None:
            return r
    elif xp is np and x.ndim and out is not x and takes((x,), out, "silu_t"):
        # NumPy's SIMD tanh, then one loop for the sigmoid's last passes and the product, in place
        # in the tanh's array: out where given (a new array of activations' size costs its page
        # faults, 1.3 of 5.3 ms at 64x96x28x28), else a new one; an out that is x itself is left to
        # NumPy's passes (the loop would overlap it)
        t = _half_tanh(x, out)
        return run_loop("silu_t", (t, x), (0.5,), t)
    s = _sigmoid_forward(xp, x)
    if s.ndim == 0:  # NumPy scalars cannot be written into
        return x * s
    return xp.multiply(x, s, out=s if out is None else out)


def _silu_grad_x_forward(xp, g, x, out=None):
    # s recomputed exactly as the forward computed it; out is written by the last pass only
    if xp is np and g.ndim and g.dtype.char == "f":  # float32 with Numba: one loop (numba_math.py)
        if out is x and out is not g:  # into x's buffer: the loop that writes its own input
            r = out if takes((x, g), None, "silu_grad_x32") else None
            if r is not None:
                run_loop("silu_grad_x32_xg", (x, g), (), x)
        else:
            r = cpu_loop("silu_grad_x32", (g, x), (), out)
        if r is not None:
            return r
    elif xp is np and g.ndim and takes((g, x), out, "silu_grad_t"):  # the tanh's new array can only fit
        return run_loop("silu_grad_t", (g, x, _half_tanh(x)), (0.5, 1.0), out)
    return _silu_grad_forward(xp, g, x, _sigmoid_forward(xp, x), out=out)


def _silu_bias_forward(xp, x, b, out=None):
    # float32 with Numba: one loop (numba_math.silu_bias32); else add's kernel, then silu_lean's
    if xp is np:
        r = bias_rows(x, b)
        if r is not None and out is x and x.flags.writeable:
            r[0].silu_bias32_inplace(r[1], b)
            return x
        if r is not None and (out is None or out.__class__ is np.ndarray and out.shape == x.shape
                              and out.dtype == x.dtype and out.flags.c_contiguous and out.flags.writeable
                              and not np.may_share_memory(out, x) and not np.may_share_memory(out, b)):
            out = np.empty(x.shape, x.dtype) if out is None else out
            r[0].silu_bias32(r[1], b, out.reshape(r[1].shape))
            return out
    h = xp.add(x, b, out=out)
    return _silu_lean_forward(xp, h, out=h)


silu_grad_x = defop("silu_grad_x", _silu_grad_x_forward, elementwise,
                    (lambda gg, out, g, x: silu_grad_x(gg, x),
                     lambda gg, out, g, x: _silu_grad_vjp_x(gg, out, g, x, sigmoid(x))), writes_into_out=True,
                    doc="g * s * (1 + x (1 - s)) with s = sigmoid(x) recomputed: the VJP of `silu` on image "
                        "activations, which keeps no sigmoid from the forward pass")
_silu_lean = defop("silu_lean", _silu_lean_forward, same_shape, (lambda g, y, x: silu_grad_x(g, x),),
                   writes_into_out=True, doc="x * sigmoid(x) in one node (built by `silu` for image activations)")
# the engine sums b's gradient back to its shape
silu_bias = defop("silu_bias", _silu_bias_forward, lambda x, b: elementwise(x, b),
                  (lambda g, y, x, b: silu_grad_x(g, x + b), lambda g, y, x, b: silu_grad_x(g, x + b)),
                  writes_into_out=True, doc="silu(x + b) of a dense layer's bias b in one node (passes.lean_silu)")
