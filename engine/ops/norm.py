"""Normalisation without affine parameters (a layer applies its own scale and shift).

Short compositions of mean/square/sqrt, so their gradients (and gradients of those)
come from the ops they are built of:

    layer_norm(x, eps)          normalises each example over all non-batch axes 1..n
    group_norm(x, groups, eps)  normalises each example's channel groups over (C/groups, H, W, ...)
"""

from __future__ import annotations

from .elementwise import sqrt, square
from .reduce import mean, reshape_like
from .registry import ShapeError, _fmt, expression_function, size_of
from .shape import reshape


def _normalize(x, axes, eps):
    centred = x - mean(x, axis=axes, keepdims=True)
    return centred / sqrt(mean(square(centred), axis=axes, keepdims=True) + float(eps))


def _check_eps(eps, name):
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ShapeError(f"{name}: eps must be a number >= 0, not {eps!r}")


@expression_function
def layer_norm(x, eps=1e-5):
    """(x - mean) / sqrt(var + eps), statistics per example over axes 1..n (biased variance)."""
    _check_eps(eps, "layer_norm")
    if x.ndim < 2:
        raise ShapeError(f"layer_norm: input needs a batch axis and at least one more, got shape {_fmt(x.shape)}")
    return _normalize(x, tuple(range(1, x.ndim)), eps)


@expression_function
def group_norm(x, groups, eps=1e-5):
    """torch.nn.functional.group_norm without weight and bias: x (N, C, *), C divisible by groups."""
    _check_eps(eps, "group_norm")
    if x.ndim < 2:
        raise ShapeError(f"group_norm: input must be (N, C, ...), got shape {_fmt(x.shape)}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ShapeError(f"group_norm: groups must be a positive int, not {groups!r}")
    c = x.shape[1]
    if c is None or c % groups or None in x.shape[2:]:
        raise ShapeError(f"group_norm: groups={groups} does not divide the {c} channels of {_fmt(x.shape)}")
    grouped = reshape(x, (None, groups, (c // groups) * size_of(x.shape[2:])))
    return reshape_like(_normalize(grouped, (2,), eps), x)


# static (non-graph) arguments, for the expression language
group_norm.static_args = ("groups", "eps")
layer_norm.static_args = ("eps",)
