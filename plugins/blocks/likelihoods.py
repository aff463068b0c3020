"""Discrete likelihoods on a grid of data values: a proper pmf over the levels.

``categorical``: every feature x_d lies on `levels` equally spaced values v_k = k / (levels - 1)
in [0, 1] (the digits: 17 grey levels 0/16..16/16 after ``scale = "minmax_global"``); the
decoder outputs `levels` logits per feature and

    p(x_d = v_k | out) = softmax(out_d)_k,   sum_k p(x_d = v_k | out) = 1,

so -log p(x|h) is the number of nats needed to code the image (no density, no grey-level
cross-entropy), and bits/dim = nats / (D ln 2) compares with every other discrete model
of the same data: the diffusion models' discretized decoders and the per-pixel histogram.
The mean E[x_d | out] = sum_k v_k softmax(out_d)_k is what samples and reconstructions show.

``categorical_logpmf`` and ``categorical_pmf`` are the NumPy references the tests use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from gengraph.engine import ops
from gengraph.plugins.spec.schema import Field, Table


@dataclass
class BoundLikelihood:
    """A likelihood attached to a graph: elementwise log-probability and the mean of x."""

    log_prob: Callable  # (x, out) -> elementwise log p(x | out)
    mean: Callable  # out -> E[x | out]
    params: list = field(default_factory=list)


def level_index(x, levels: int):
    """Graph: the int64 index round(x (levels - 1)) of data x in [0, 1] on the grid."""
    return ops.cast(ops.floor(x * float(levels - 1) + 0.5), dtype="int64")


def split_levels(out, dim: int, levels: int):
    """(..., dim * levels) -> (..., dim, levels); at most one unknown (batch) dimension."""
    return ops.reshape(out, tuple(-1 if d is None else d for d in out.shape[:-1]) + (dim, levels))


def values_last(out, shape, k: int):
    """(..., C * k * H * W) flattened from images (C * k, H, W) -> (..., C * H * W * k): the k values
    of every pixel next to each other (channel c * k + j holds value j of channel c), the layout
    `split_levels` and a flat network's output have. For conv decoders and U-Nets."""
    c, h, w = int(shape[0]) // k, int(shape[1]), int(shape[2])
    lead = tuple(-1 if d is None else d for d in out.shape[:-1])
    v = ops.reshape(out, (-1, c, k, h, w))
    v = ops.transpose(v, (0, 1, 3, 4, 2))
    return ops.reshape(v, lead + (c * h * w * k,))


def categorical_log_prob(x, out, dim: int, levels: int):
    """Graph: elementwise log p(x_d | out) (..., dim) for logits out (..., dim * levels)."""
    logp = ops.log_softmax(split_levels(out, dim, levels), axis=-1)
    onehot = ops.one_hot(level_index(x, levels), depth=levels, dtype=str(out.dtype))
    return ops.sum(logp * onehot, axis=-1)


def categorical_mean(out, dim: int, levels: int, graph):
    values = graph.constant(np.linspace(0.0, 1.0, levels))
    return ops.sum(ops.softmax(split_levels(out, dim, levels), axis=-1) * values, axis=-1)


def categorical_pmf(logits) -> np.ndarray:
    """NumPy: softmax over the last axis (the levels)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def categorical_logpmf(x, logits, levels: int) -> np.ndarray:
    """NumPy reference: log p(x_d) for x (..., D) on the grid and logits (..., D, levels)."""
    k = np.rint(np.asarray(x, np.float64) * (levels - 1)).astype(np.int64)
    p = categorical_pmf(logits)
    return np.log(np.take_along_axis(p, k[..., None], axis=-1)[..., 0])


class Categorical:
    help = ("a categorical distribution per feature over `levels` equally spaced values in [0, 1] "
            "(17 grey levels for the digits); the decoder outputs `levels` logits per feature")
    schema = Table({
        "levels": Field(int, 17, "number of data values 0, 1/(levels-1), ..., 1 (the data must lie on them)",
                        min=2),
    }, help=help)
    discrete = True

    def units(self, dim: int, cfg: dict) -> int:
        return dim * int(cfg.get("levels", 17))

    def levels(self, cfg: dict) -> int:
        return int(cfg.get("levels", 17))

    def build(self, graph, dim, cfg, rng):
        L = int(cfg.get("levels", 17))
        return BoundLikelihood(lambda x, out: categorical_log_prob(x, out, dim, L),
                               lambda out: categorical_mean(out, dim, L, graph))
