"""Normalisation without affine parameters (a layer applies its own scale and shift).

    layer_norm(x, eps)          normalises each example over all non-batch axes 1..n
    group_norm(x, groups, eps)  normalises each example's channel groups over (C/groups, H, W, ...)

Both are `_normalize` over trailing axes: the statistics are a short composition of
mean/square/sqrt, and the normalised output is one `normalized` node whose VJP is one
`normalize_grad` kernel, r * (g - mean(g) - y * mean(g * y)), instead of the dozen passes the
chain rule takes through the composition. normalize_grad's own VJPs are graph code, so
gradients of gradients work.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .elementwise import sqrt, square
from .reduce import mean, reshape_like
from .reduce import sum as reduce_sum
from .registry import (ZERO, ShapeError, _fmt, check_known, defop, either_keyword, expression_function, float_dtype,
                       size_of)
from .shape import reshape


def _trailing(a, start):
    return tuple(range(start, a.ndim))


def _rows(a, start):
    """a as (rows, K): one row per normalised slice (the axes from `start` on)."""
    return a.reshape(-1, math.prod(a.shape[start:]))


def _normalized_forward(xp, centred, r, x, start, out=None):
    return xp.multiply(centred, r, out=out)


# y = normalized(centred, r, x) is (x - mean) * r with r = 1 / sqrt(var + eps), both built from
# x. Its VJP gives x the whole derivative (through the mean and r as well), so centred and r
# get ZERO: the same split as silu_grad's (g, x, s), and exact because only _normalize builds it.
normalized = defop(
    "normalized", _normalized_forward, lambda centred, r, x, start: (centred.shape, float_dtype(centred)),
    (ZERO, ZERO, lambda g, y, centred, r, x, start: normalize_grad(g, y, r, start=start)), writes_into_out=True,
    doc="(x - mean) * r over the axes from `start` (built by layer_norm/group_norm): x gets the whole VJP")


def _normalize_grad_forward(xp, g, y, r, start):
    g2, y2 = _rows(g, start), _rows(y, start)
    k = g2.shape[1]
    m1 = g2.mean(axis=1, keepdims=True)
    m2 = xp.matmul(g2[:, None, :], y2[:, :, None])[:, 0] / k  # one BLAS dot a row: no (g * y) temporary
    out = xp.multiply(y2, m2)
    out += m1
    xp.subtract(g2, out, out=out)
    out *= r.reshape(-1, 1)
    return out.reshape(g.shape)


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
    _normalize_grad_vjps(),
    doc="r * (g - mean(g) - y * mean(g * y)) over the axes from `start`: the VJP of `normalized`")


def _normalize(x, start, eps):
    """x normalised over its axes from `start` on (biased variance, eps inside the root)."""
    axes = _trailing(x, start)
    centred = x - mean(x, axis=axes, keepdims=True)
    r = 1.0 / sqrt(mean(square(centred), axis=axes, keepdims=True) + float(eps))
    return normalized(centred, r, x, start=start)


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
