"""Classifier-free guidance for the diffusion kind (Ho & Salimans 2022): the null label,
label dropout and the guided output. What every class-conditional kind shares (the
condition key, label counts, one-hots, cond_accuracy) is in `class_condition`.

* `model.condition = "label"`: the denoiser gets a one-hot of the class label next to
  [x_t, emb(t)]; index n_labels is the null label "no condition" (all classes).
* training: each example's label is replaced by the null label with probability
  `model.label_dropout` (p_uncond), drawn inside the graph from a seeded stream, so one
  network learns eps(x, c) and eps(x, null);
* sampling: eps~ = (1 + w) eps(x, c) - w eps(x, null), w = `guidance`. The combination is
  taken on the network outputs, which is the same thing for epsilon, v and x0 prediction
  (each is an affine function of eps_hat at fixed x_t); w = 0 is the plain conditional model.
* the report draws samples of every class K = 0..n_labels-1 and gives `cond_accuracy`
  (class_condition.cond_accuracy).
"""

from __future__ import annotations

from gengraph.engine import ops

from gengraph.plugins.models.class_condition import condition_field, one_hot
from gengraph.plugins.spec.schema import Field

LABEL_STREAM = 3  # random stream of the label dropout (diffusion's training graph uses 1, 2)


def condition_fields() -> dict:
    return {
        "condition": condition_field(),
        "label_dropout": Field(float, 0.1, "probability p_uncond that a training label is replaced by the null "
                               "label (classifier-free guidance needs > 0)", min=0.0, max=1.0),
        "guidance": Field(float, 0.0, "classifier-free guidance weight w of the report's conditional samples: "
                          "eps = (1 + w) eps(x, c) - w eps(x, null)", min=0.0),
    }


def one_hot_or_null(graph, labels, n: int):
    """(batch, n + 1) one-hot of integer labels 0..n (n: the null label)."""
    return one_hot(graph, labels, n + 1)


def dropped_labels(graph, y, n: int, p: float):
    """y with each entry replaced by the null label n with probability p (seeded stream)."""
    if p <= 0:
        return y
    yf = ops.cast(y, dtype=str(graph.dtype))
    keep = ops.bernoulli(ops.zeros_like(yf) + (1.0 - p), stream=LABEL_STREAM)
    return ops.cast(keep * yf + (1.0 - keep) * float(n), dtype="int64")


def null_labels(graph, like, n: int):
    """The null label n, one per row of `like` (an int64 label node)."""
    return ops.cast(ops.zeros_like(ops.cast(like, dtype=str(graph.dtype))) + float(n), dtype="int64")


def guided(f_cond, f_null, w):
    """(1 + w) f(x, c) - w f(x, null)."""
    return f_cond + w * (f_cond - f_null)
