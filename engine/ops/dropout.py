"""Inverted dropout, present only in training programs.

dropout(x, p) = x * mask, mask = (u >= p) / (1 - p) with u uniform from the graph's
random streams (its own stream, so the mask is reproducible per graph seed). The
`dropout` op carries the flag `train_only_identity`: when a program is compiled for
evaluation (`compile(..., training=False)`, the default when it updates no parameter),
the compiler's eval pass replaces each such node by its first input, and the unused mask
draw is pruned.
The VJP is the same op on the gradient (g * mask), so it disappears along with it and an
evaluation program's gradients are those of the identity.
"""

from __future__ import annotations

import numbers

import numpy as np

from .registry import ZERO, ShapeError, defop, expression_function


def _mask_forward(xp, x, *, p, stream, ctx):
    keep = ctx.rng(stream).uniform(x.shape, x.dtype) >= x.dtype.type(p)
    return keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))


def _mask_shape(x, p, stream):
    return x.shape, x.dtype


def _dropout_shape(x, mask):
    if x.shape != mask.shape:
        raise ShapeError("dropout's mask must be shaped like its input")
    return x.shape, x.dtype


dropout_mask = defop("dropout_mask", _mask_forward, _mask_shape, (ZERO,), random=True,
                     doc="0 with probability p, else 1/(1-p), shaped like x")
_dropout = defop("dropout", lambda xp, x, mask: x * mask, _dropout_shape,
                 (lambda g, y, x, mask: _dropout(g, mask), ZERO), train_only_identity=True,
                 doc="x * mask in training programs; the identity in evaluation programs")


@expression_function
def dropout(x, p=0.5, stream=None):
    """Inverted dropout (torch.nn.functional.dropout in training mode); identity when not training."""
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
        raise ShapeError(f"dropout: p must be a probability in [0, 1), not {p!r}")
    if p == 0:
        return x
    stream = x.graph.new_stream() if stream is None else stream
    return _dropout(x, dropout_mask(x, p=float(p), stream=stream))


# static (non-graph) arguments, for the expression language (stream is the graph's business)
dropout.static_args = ("p",)
dropout.hidden_args = ("stream",)
