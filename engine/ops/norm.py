"""Normalisation without affine parameters (a layer applies its own scale and shift).

    layer_norm(x, eps)          normalises each example over all non-batch axes 1..n
    group_norm(x, groups, eps)  normalises each example's channel groups over (C/groups, H, W, ...)

Both are `_normalize` over trailing axes: two nodes, r = inv_std(x) (1 / sqrt(var + eps)) and
y = normalized(x, r), whose VJP is one `normalize_grad` kernel, r * (g - mean(g) - y * mean(g * y)),
instead of the dozen passes the chain rule takes through a composition of mean/square/sqrt.
normalize_grad's and inv_std's own VJPs are graph code, so gradients of gradients work. On the
CPU with Numba, each of the three kernels is one loop over the rows (numba_norm.py); elsewhere
(CuPy, or no Numba) a few whole-array passes of functions NumPy and CuPy share.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .cpu_loops import load_loops, takes
from .reduce import mean, reshape_like
from .reduce import sum as reduce_sum
from .registry import (ZERO, ShapeError, _fmt, check_known, defop, either_keyword, expression_function, float_dtype,
                       size_of)
from .shape import reshape


def _trailing(a, start):
    return tuple(range(start, a.ndim))


def _row_length(a, start):
    """K, the values of one normalised slice (the axes from `start` on)."""
    return math.prod(a.shape[start:])


def _rows(a, start):
    """a as (rows, K): one row per normalised slice (the axes from `start` on)."""
    return a.reshape(-1, _row_length(a, start))


def _row_loops(arrays, r, out, start):
    """numba_loops, whose row loops (numba_norm.py) then run over these arrays, or None (NumPy's
    passes): Numba loaded, arrays (of one shape) contiguous NumPy arrays of one native float dtype
    that cpu_loops.takes accepts with out (None, the first array, or one of its own), and r (None
    for the statistics' loop) a contiguous array of that dtype holding one value a row."""
    if not takes(arrays, out):
        return None
    if r is not None and (r.__class__ is not np.ndarray or r.dtype != arrays[0].dtype or not r.flags.c_contiguous
                          or r.size * _row_length(arrays[0], start) != arrays[0].size):
        return None
    return load_loops()


def _inv_std_forward(xp, x, start, eps):
    loops = _row_loops((x,), None, None, start) if xp is np and x.ndim else None
    if loops:
        r = np.empty(x.shape[:start] + (1,) * (x.ndim - start), x.dtype)
        loops.norm_inv_std(x.reshape(-1), _row_length(x, start), float(eps), r.reshape(-1))
        return r
    axes = _trailing(x, start)
    centred = xp.subtract(x, x.mean(axis=axes, keepdims=True))
    var = xp.square(centred, out=centred).mean(axis=axes, keepdims=True)
    var += float(eps)  # a Python float keeps the dtype
    return xp.divide(1.0, xp.sqrt(var, out=var), out=var)


def _inv_std_vjp(g, r, x, start, eps):
    # r = (var + eps)^(-1/2), var = mean((x - mean(x))^2): dr/dx_i = -r^3 (x_i - mean(x)) / K
    axes = _trailing(x, start)
    return (mean(x, axis=axes, keepdims=True) - x) * (g * (r * r * r) * (1.0 / size_of(x.shape[start:])))


inv_std = defop(
    "inv_std", _inv_std_forward,
    lambda x, start, eps: (tuple(x.shape[:start]) + (1,) * (len(x.shape) - start), float_dtype(x)),
    (_inv_std_vjp,),
    doc="1 / sqrt(var + eps) over the axes from `start` (biased variance, kept as size-1 axes)")


def _normalized_forward(xp, x, r, start, out=None):
    if out is r:  # a dead r's buffer (one value a row): r must be read whole, so not written into
        out = None
    loops = _row_loops((x,), r, out, start) if xp is np and x.ndim else None
    if loops:
        if out is None:
            out = np.empty_like(x)
        loops.norm_normalized(x.reshape(-1), r.reshape(-1), _row_length(x, start), out.reshape(-1))
        return out
    centred = xp.subtract(x, x.mean(axis=_trailing(x, start), keepdims=True), out=out)
    return xp.multiply(centred, r, out=centred)


# y = normalized(x, r) is (x - mean(x)) * r with r = inv_std(x), both over the axes from `start`.
# Its VJP gives x the whole derivative (through the mean and r as well), so r gets ZERO: the same
# split as silu_grad's (g, x, s), and exact because only _normalize builds it.
normalized = defop(
    "normalized", _normalized_forward, lambda x, r, start: (x.shape, float_dtype(x)),
    (lambda g, y, x, r, start: normalize_grad(g, y, r, start=start), ZERO), writes_into_out=True,
    doc="(x - mean(x)) * r over the axes from `start`, r = inv_std(x) (built by layer_norm/group_norm): "
        "x gets the whole VJP")


def _normalize_grad_forward(xp, g, y, r, start, out=None):
    if out is r:  # as in _normalized_forward
        out = None
    loops = _row_loops((g, y), r, out, start) if xp is np and g.ndim else None
    if loops:
        if out is None:
            out = np.empty_like(g)
        loops.norm_grad(g.reshape(-1), y.reshape(-1), r.reshape(-1), _row_length(g, start), out.reshape(-1))
        return out
    g2, y2 = _rows(g, start), _rows(y, start)
    k = g2.shape[1]
    m1 = g2.mean(axis=1, keepdims=True)
    m2 = xp.matmul(g2[:, None, :], y2[:, :, None])[:, 0] / k  # one BLAS dot a row: no (g * y) temporary
    t = xp.multiply(y2, m2)
    t += m1
    # every input is read before out is written; an out whose rows are not a view is written whole
    rows_of_out = _rows(out, start) if out is not None and out.flags.c_contiguous else None
    res = xp.subtract(g2, t, out=t if rows_of_out is None else rows_of_out)
    res *= r.reshape(-1, 1)
    if out is None:
        return res.reshape(g.shape)
    if rows_of_out is None:
        out[...] = res.reshape(g.shape)
    return out


def _normalize_grad_vjps():
    # partial derivatives of r * (g - mean(g) - y * a), a = mean(g * y), with g, y, r independent
    def dg(gg, out, g, y, r, start):
        return normalize_grad(gg, y, r, start=start)

    def dy(gg, out, g, y, r, start):
        axes = _trailing(g, start)
        return -r * (mean(g * y, axis=axes, keepdims=True) * gg + mean(gg * y, axis=axes, keepdims=True) * g)

    def dr(gg, out, g, y, r, start):
        axes = _trailing(g, start)
        h = g - mean(g, axis=axes, keepdims=True) - y * mean(g * y, axis=axes, keepdims=True)
        return reduce_sum(gg * h, axis=axes, keepdims=True)

    return dg, dy, dr


normalize_grad = defop(
    "normalize_grad", _normalize_grad_forward, lambda g, y, r, start: (g.shape, float_dtype(g)),
    _normalize_grad_vjps(), writes_into_out=True,
    doc="r * (g - mean(g) - y * mean(g * y)) over the axes from `start`: the VJP of `normalized`")


def _normalize(x, start, eps):
    """x normalised over its axes from `start` on (biased variance, eps inside the root)."""
    return normalized(x, inv_std(x, start=start, eps=float(eps)), start=start)


def _check_eps(eps, name) -> float:
    # NumPy scalars count (np.float32(1e-5)), as conv2d's and the pools' int arguments take np.int64
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real) or not eps >= 0:
        raise ShapeError(f"{name}: eps must be a number >= 0, not {eps!r}")
    return float(eps)


@expression_function
def layer_norm(x, eps=1e-5):
    """(x - mean) / sqrt(var + eps), statistics per example over axes 1..n (biased variance)."""
    eps = _check_eps(eps, "layer_norm")
    if x.ndim < 2:
        raise ShapeError(f"layer_norm: input needs a batch axis and at least one more, got shape {_fmt(x.shape)}")
    return _normalize(x, 1, eps)


@expression_function
def group_norm(x, groups=None, eps=1e-5, *, num_groups=None):
    """torch.nn.functional.group_norm without weight and bias: x (N, C, *), C divisible by groups
    (num_groups=, PyTorch's keyword, is groups= too)."""
    groups = either_keyword(groups, num_groups, "groups", "num_groups")
    eps = _check_eps(eps, "group_norm")
    if x.ndim < 2:
        raise ShapeError(f"group_norm: input must be (N, C, ...), got shape {_fmt(x.shape)}")
    if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ShapeError(f"group_norm: groups must be a positive int, not {groups!r}")
    groups = int(groups)
    c = x.shape[1]
    check_known("group_norm: input", x)
    if c % groups:
        raise ShapeError(f"group_norm: groups={groups} does not divide the {c} channels of {_fmt(x.shape)}")
    grouped = reshape(x, (None, groups, (c // groups) * size_of(x.shape[2:])))
    return reshape_like(_normalize(grouped, 2, eps), x)


# static (non-graph) arguments, for the expression language
group_norm.static_args = ("groups", "eps", "num_groups")
group_norm.aliases = ("num_groups",)  # another name for groups
layer_norm.static_args = ("eps",)
