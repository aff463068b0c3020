"""Reductions with axis/keepdims, and the broadcast/sum-to pair their gradients use.

Axes are normalized at build time to a sorted tuple of non-negative ints, so two
spellings of one reduction are the same node for CSE.
"""

from __future__ import annotations

import math

import numpy as np

from .elementwise import eq, maximum
from .fastpaths import sum_leading, sum_short_axes, sum_trailing
from .registry import ZERO, ShapeError, broadcast_shapes, defop, expression_function, float_dtype, normalize_axes, reduced_shape, size_of


def _reduction(x, axis=None, keepdims=False):
    return reduced_shape(x.shape, axis, keepdims), float_dtype(x)


def keep_axes(g, x, axis, keepdims):
    """g of a reduction, reshaped so it broadcasts against x."""
    return g if keepdims else expand_dims(g, axis=axis)


def _sum_vjp(g, y, x, axis, keepdims=False):
    return broadcast_back(g, x, axis, keepdims)


def broadcast_back(g, x, axis, keepdims=False, mean=False):
    """A reduction's VJP: g broadcast back to x's shape (/ count). When every reduced axis of x
    has a static size the result needs only g and those sizes (`unreduce_to`): it must not
    reference x, or x (a full activation) would stay alive from the forward pass to the
    backward pass just for its shape. x itself (`unreduce`) only for a dynamic reduced axis."""
    sizes = tuple(x.shape[a] for a in axis)
    if None in sizes:
        return unreduce(g, x, axis=axis, keepdims=keepdims, mean=mean)
    return unreduce_to(g, axis=axis, sizes=sizes, keepdims=keepdims, mean=mean)


def _unreduce_forward(xp, g, x, axis, keepdims=False, mean=False):
    # one kernel for a reduction's VJP: g with the reduced axes put back, broadcast to x's shape
    # (divided by the count for a mean); x is read for its run-time sizes only
    return _unreduce_to_forward(xp, g, axis, tuple(x.shape[a] for a in axis), keepdims, mean)


def _unreduce_vjp_g(gg, y, g, *rest, axis, keepdims=False, mean=False, **_):
    return (_mean if mean else _sum)(gg, axis=axis, keepdims=keepdims)


unreduce = defop("unreduce", _unreduce_forward, lambda g, x, axis, keepdims=False, mean=False: (x.shape, g.dtype),
                 (_unreduce_vjp_g, ZERO),
                 doc="the VJP of sum (or, mean=True, of mean) over axis: g broadcast back to x's shape (/ count)")


def _full_shape(g_shape, axis, sizes, keepdims):
    """g's shape with the reduced axes (at `axis` of the full shape) of the given sizes."""
    shape = list(g_shape)
    for a, n in zip(axis, sizes):
        if keepdims:
            shape[a] = n
        else:
            shape.insert(a, n)
    return tuple(shape)


def _unreduce_to_forward(xp, g, axis, sizes, keepdims=False, mean=False):
    # a fresh buffer that later kernels may write into (a broadcast view would save the copy,
    # but np.broadcast_to's Python wrapper costs more than the copy at these sizes)
    full = _full_shape(g.shape, axis, sizes, keepdims)
    if not keepdims:
        g = g.reshape(_full_shape(g.shape, axis, (1,) * len(axis), False))
    out = xp.empty(full, dtype=g.dtype)
    if out.size == 0:  # an empty input: nothing to spread (a mean over it would divide by 0)
        return out
    if xp is np and g.size == 1:  # a scalar seed (the gradient of a mean loss): one fill
        value = float(g.reshape(()))  # Python-float arithmetic: no 0-d array ops; rounded once by fill
        out.fill(value / math.prod(sizes) if mean else value)
    elif mean:
        xp.divide(g, g.dtype.type(math.prod(sizes)), out=out)
    else:
        out[...] = g
    return out


unreduce_to = defop("unreduce_to", _unreduce_to_forward,
                    lambda g, axis, sizes, keepdims=False, mean=False: (_full_shape(g.shape, axis, sizes, keepdims),
                                                                         g.dtype),
                    (_unreduce_vjp_g,),
                    doc="unreduce when the reduced axes' sizes are static: g broadcast to g's shape with those "
                        "axes (of `sizes`) put back (/ their count); needs no reference to the reduction's input")


# reductions call the array's own methods: the same on NumPy and CuPy, and they skip
# NumPy's Python-level dispatch (np.mean of a short vector costs 3x sum()/n)
def _sum_forward(xp, x, axis, keepdims=False):
    # leading axes (a batch) or trailing ones (per example) of a partial reduction: one BLAS
    # product on NumPy (axes are sorted and unique, so the ends tell)
    k = len(axis)
    if 0 < k < x.ndim:
        if not keepdims and axis[-1] == k - 1:
            return sum_leading(xp, x, k)
        if axis[0] == x.ndim - k:
            return sum_trailing(xp, x, k, keepdims)
        r = sum_short_axes(xp, x, axis, keepdims)
        if r is not None:
            return r
    return x.sum(axis=axis, keepdims=keepdims)


def _mean_forward(xp, x, axis, keepdims=False):
    n = 1
    for a in axis:
        n *= x.shape[a]
    return _sum_forward(xp, x, axis, keepdims) / n  # a Python int keeps x's float dtype (NEP 50)


_sum = defop("sum", _sum_forward, _reduction,
             (_sum_vjp,), flops=lambda out, x, **a: size_of(x))


def _mean_source(x, axis, keepdims=False, ndims=()):
    """A mean over every axis (a loss, an accuracy) as the program's own line: what _mean_forward
    computes then (x.sum over them, / the count as a Python int), ~1 us less than its call."""
    if len(axis) != ndims[0]:
        return ""
    return f"{x}.sum(axis={axis!r}{', keepdims=True' if keepdims else ''}) / {x}.size"


_mean = defop("mean", _mean_forward, _reduction,
              (lambda g, y, x, axis, keepdims=False: broadcast_back(g, x, axis, keepdims, mean=True),),
              flops=lambda out, x, **a: size_of(x), source=_mean_source)
_max = defop("max", lambda xp, x, axis, keepdims=False: x.max(axis=axis, keepdims=keepdims), _reduction,
             (lambda g, y, x, axis, keepdims=False: _extreme_vjp(g, y, x, axis, keepdims),))
_min = defop("min", lambda xp, x, axis, keepdims=False: x.min(axis=axis, keepdims=keepdims), _reduction,
             (lambda g, y, x, axis, keepdims=False: _extreme_vjp(g, y, x, axis, keepdims),))


def _extreme_vjp(g, y, x, axis, keepdims):
    # ties share the gradient equally, as the subgradient of max/min
    mask = eq(x, broadcast_like(keep_axes(y, x, axis, keepdims), x))
    share = mask / _sum(mask, axis=axis, keepdims=True)
    return broadcast_like(keep_axes(g, x, axis, keepdims), x) * share


def wrap_reduction(build, name):
    """The public reduction: any axis spelling (None, int, tuple, negative) -> normalized axes."""
    def reducer(x, axis=None, keepdims=False):
        return build(x, axis=normalize_axes(axis, x.ndim), keepdims=bool(keepdims))

    reducer.__name__ = name
    reducer.__doc__ = build.__doc__
    return expression_function(reducer)


sum = wrap_reduction(_sum, "sum")
mean = wrap_reduction(_mean, "mean")
max = wrap_reduction(_max, "max")
min = wrap_reduction(_min, "min")


def _sum_squares_forward(xp, x):
    flat = x.reshape(-1)
    return xp.dot(flat, flat)  # one BLAS call, no temporary


sum_squares = defop("sum_squares", _sum_squares_forward, lambda x: ((), float_dtype(x)),
                    (lambda g, y, x: 2.0 * g * x,), flops=lambda out, x, **a: 2 * size_of(x),
                    doc="sum(x**2) over all elements")


_TINY: dict = {}


def _tiny(dtype) -> float:
    """The smallest normal number of a float dtype (the scale floor of a zero vector's norm);
    cached: np.finfo costs 0.2 us a call, on every step's gradient norm."""
    t = _TINY.get(dtype)
    if t is None:
        t = _TINY[dtype] = float(np.finfo(dtype).tiny) if dtype.kind == "f" else 1e-300
    return t


def _l2_norm_forward(xp, x):
    flat = x.reshape(-1)
    tiny = _tiny(x.dtype)
    if xp is np:
        s = np.dot(flat, flat)
        # the usual case: one pass (math's test and sqrt: no ufunc dispatch); a sum below the
        # normal range may have lost its squares to underflow (entries ~1e-200 gave a norm of 0)
        if math.isfinite(s) and (s >= tiny or not flat.any()):
            return (x.dtype.type if x.dtype.kind == "f" else np.sqrt(s).dtype.type)(math.sqrt(s))
        # an overflowing or underflowing sum of finite squares, or a non-finite entry
        big = float(np.max(np.abs(flat)))
        if not math.isfinite(big):  # inf (not NaN: inf / inf) when an entry is inf; NaN stays NaN
            return x.dtype.type(big)
        big = big if not big < tiny else tiny
        scaled = flat / x.dtype.type(big)
        return x.dtype.type(big) * np.sqrt(np.dot(scaled, scaled))
    # CuPy: no host round trip to test; always scaled (one more pass on the device)
    if flat.size == 0:  # CuPy's max of nothing raises
        return xp.zeros((), dtype=x.dtype)
    big = xp.maximum(xp.max(xp.abs(flat)), tiny)
    scaled = flat / big
    return xp.where(xp.isinf(big), big, big * xp.sqrt(xp.dot(scaled, scaled)))


l2_norm = defop("l2_norm", _l2_norm_forward, lambda x: ((), float_dtype(x)),
                # x / |x|, and 0 at x = 0 (PyTorch's subgradient; 0 / 0 otherwise)
                (lambda g, y, x: g * x / maximum(y, _tiny(y.dtype)),), flops=lambda out, x, **a: 2 * size_of(x),
                doc="sqrt(sum(x**2)) over all elements, without overflow for finite x (scaled when the "
                    "plain sum of squares overflows); non-finite iff some entry is")


def _count_forward(xp, x, axis):
    n = 1
    for a in axis:
        n *= x.shape[a]
    return xp.asarray(n, dtype=x.dtype)


count = defop("count", _count_forward, lambda x, axis: ((), float_dtype(x)), (ZERO,),
              doc="number of elements of x along the axes (a runtime value when the batch size is unknown)")


# --- broadcasting and its adjoint ---------------------------------------------------
def _expand_forward(xp, x, axis):
    shape = list(x.shape)  # a reshape: np.expand_dims' own argument checks cost more than the op
    for a in axis:
        shape.insert(a, 1)
    return x.reshape(shape)


def _expand_shape(x, axis):
    shape = list(x.shape)
    for a in axis:
        shape.insert(a, 1)
    return tuple(shape), x.dtype


expand_dims = defop("expand_dims", _expand_forward, _expand_shape,
                    (lambda g, y, x, axis: reshape_like(g, x),), returns_view_of_input=True,
                    doc="insert size-1 axes at the given (output) positions")


def _broadcast_like_shape(x, ref):
    return broadcast_shapes(x.shape, ref.shape), x.dtype


def _broadcast_like_forward(xp, x, ref):
    if x.shape == ref.shape:
        return x
    # filling a new array is cheaper than np.broadcast_to's Python-level checks, and the
    # result is an ordinary writable buffer that later kernels may reuse
    out = xp.empty(ref.shape, dtype=x.dtype)
    out[...] = x
    return out


broadcast_like = defop("broadcast_like", _broadcast_like_forward, _broadcast_like_shape,
                       (lambda g, y, x, ref: sum_to(g, x), ZERO), returns_view_of_input=True,
                       doc="x broadcast to the (runtime) shape of ref")


def _reshape_like_shape(x, ref):
    return ref.shape, x.dtype


reshape_like = defop("reshape_like", lambda xp, x, ref: x.reshape(ref.shape), _reshape_like_shape,
                     (lambda g, y, x, ref: reshape_like(g, x), ZERO), returns_view_of_input=True,
                     doc="x reshaped to the (runtime) shape of ref")


def _sum_to_forward(xp, g, lead, keep, out=None):
    if keep and keep == tuple(range(g.ndim - len(keep), g.ndim)) and lead:
        # trailing axes (a conv bias's gradient: (N, C, H, W) -> (C, 1, 1)): one gemv each way
        # on NumPy instead of a reduction over two strided axes (64x32x8x8: 46 -> 8 us)
        g = sum_trailing(xp, g, len(keep), keepdims=True)
    elif keep:
        g = g.sum(axis=keep, keepdims=True, out=None if lead else out)
    if lead:
        g = sum_leading(xp, g, lead, out=out)
    elif out is not None and not keep:  # nothing to sum: a copy into out
        out[...] = g
        return out
    return g


def _sum_to_shape(g, lead, keep):
    shape = tuple(1 if i in keep else d for i, d in enumerate(g.shape))
    return shape[lead:], g.dtype


_sum_to = defop("sum_to", _sum_to_forward, _sum_to_shape,
                (lambda gg, y, g, lead, keep: broadcast_like(gg, g),), writes_into_out=True,
                doc="sum a broadcast gradient back to an input's shape")


def broadcast_axes(from_shape, to_shape):
    """(lead, keep) such that summing `from_shape` over them gives `to_shape`, or None if equal.

    Unknown (None) dimensions are assumed to match each other (the batch size).
    """
    lead = len(from_shape) - len(to_shape)
    if lead < 0:
        raise ShapeError(f"cannot sum shape {from_shape} to the larger shape {to_shape}")
    keep = tuple(lead + i for i, (f, t) in enumerate(zip(from_shape[lead:], to_shape))
                 if t == 1 and f != 1)
    if lead == 0 and not keep:
        return None
    return lead, keep


def sum_to(g, like):
    """g summed over the axes along which `like` was broadcast (identity when none)."""
    axes = broadcast_axes(g.shape, like.shape)
    if axes is None:
        return g
    lead, keep = axes
    if all(g.shape[a] == 1 for a in range(lead)) and all(g.shape[a] == 1 for a in keep):
        # every summed axis has (static) length 1: nothing to add up, a reshape (a view) will do
        return reshape_like(g, like)
    return _sum_to(g, lead=lead, keep=keep)
