"""What every class-conditional kind shares (diffusion with classifier-free guidance, the
conditional VAE): the `model.condition` key, the number of labels the data give, one-hot
label inputs, the labels of the report's conditional samples and `cond_accuracy`.

`cond_accuracy` is the fraction of the samples drawn at label K that the digit classifier
of `digit_quality` reads as K, averaged over K = 0..n_labels-1 (chance: 1/n_labels), with
a binomial standard error (classes independent) and `cond_accuracy_by_label`.
"""

from __future__ import annotations

import numpy as np

from gengraph.engine import ops

from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.models.digit_quality import digit_classifier, digits_intensity
from gengraph.plugins.spec.schema import Field


def condition_field() -> Field:
    return Field(str, "none", "none, or label: class-conditional (the data's class labels)", choices=["none", "label"])


def n_labels_of(cfg, data) -> int:
    """The number of classes a `condition = "label"` model takes (0 when unconditional)."""
    if cfg.get("condition", "none") != "label":
        return 0
    if data.task != "classification" or not data.n_classes or data.y_train is None:
        raise ModelConfigError("model.condition", '"label" needs class labels; the data has none '
                               f"(task {data.task})")
    return int(data.n_classes)


def one_hot(graph, labels, depth: int):
    """(batch, depth) one-hot of integer labels 0..depth-1 in the graph's float dtype."""
    return ops.one_hot(labels, depth=depth, dtype=str(graph.dtype))


def class_labels(n_labels: int, per_class: int) -> np.ndarray:
    """per_class copies of each label 0..n_labels-1, in order: the report's conditional draws."""
    return np.repeat(np.arange(n_labels, dtype=np.int64), per_class)


def report_per_class(data, n_labels: int) -> int:
    """Conditional samples per label in a report: as many in all as held-out rows."""
    return max(1, data.n_test // n_labels)


def cond_accuracy(samples, labels, n_labels: int, data, spec, seed) -> dict:
    """cond_accuracy (+ _se, _by_label, cond_samples_per_label) of samples in data units drawn
    at `labels` (class_labels(n_labels, per_class)), read by the run's digit classifier."""
    labels = np.asarray(labels, np.int64)
    per_class = len(labels) // n_labels
    pred = digit_classifier((spec or {}).get("data"), seed).predict(digits_intensity(data, samples, units="data"))
    # label c is the c-th of the data's classes: the digit itself, or classes[c] with data.classes = [7, 3]
    digit = list(data.meta.get("classes") or range(n_labels))
    by = [float(np.mean(pred[labels == c] == int(digit[c]))) for c in range(n_labels)]
    se = float(np.sqrt(np.sum([b * (1 - b) / per_class for b in by])) / n_labels)  # binomial, classes independent
    return {"cond_accuracy": float(np.mean(by)), "cond_accuracy_se": se, "cond_accuracy_by_label": by,
            "cond_samples_per_label": int(per_class)}
