"""Supervised losses (with the output head each implies), a registry plugins share.

A loss declares how many output units it needs, the target input it feeds, the
per-batch objective, the metrics logged with it, and whether predictions are
values ("regression"), one logit ("binary") or class logits ("multiclass").
"""

from __future__ import annotations

import numpy as np

from gengraph.engine import ops

from gengraph.plugins.registry import PLUGIN_GROUP, Registry

LOSSES = Registry("loss", PLUGIN_GROUP, part=True)


class MSE:
    help = "mean squared error (regression)"
    head = "regression"

    def build(self, graph, z, units):
        y = graph.input("y", (None, units))
        loss = ops.mse(z, y)
        return y, loss, {"mse": loss}, _as_columns


class MAE:
    help = "mean absolute error (regression, robust to outliers)"
    head = "regression"

    def build(self, graph, z, units):
        y = graph.input("y", (None, units))
        loss = ops.mean(ops.abs(z - y))
        return y, loss, {"mae": loss, "mse": ops.mse(z, y)}, _as_columns


class BCE:
    help = "binary cross-entropy with a single logit (two classes)"
    head = "binary"

    def build(self, graph, z, units):
        y = graph.input("y", (None,))
        logit = z[:, 0]
        loss = ops.mean(ops.bce_with_logits(logit, y))
        return y, loss, {"accuracy": ops.mean(ops.eq(ops.gt(logit, 0.0), y))}, _as_float


class CrossEntropy:
    help = "softmax cross-entropy over class logits, integer labels"
    head = "multiclass"

    def build(self, graph, z, units):
        y = graph.input("y", (None,), dtype="int64")
        return y, ops.mean(ops.softmax_cross_entropy(z, y)), {"accuracy": ops.mean(ops.correct(z, y))}, None


def _as_columns(x, y):
    return {"x": x, "y": y.reshape(len(y), -1)}


def _as_float(x, y):
    return {"x": x, "y": y.astype(np.float64)}


for _name, _loss in {"mse": MSE(), "mae": MAE(), "bce": BCE(), "cross_entropy": CrossEntropy()}.items():
    LOSSES.register(_name, _loss)


def default_loss(data) -> str:
    return "mse" if data.task == "regression" else "cross_entropy"
