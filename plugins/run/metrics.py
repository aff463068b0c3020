"""Which metric names a run logs and reports, known before it runs, and which end of a metric is best.

A metrics line holds ``train_``/``test_`` + ``loss`` and the model's ``metrics`` (its named graph
nodes), plus what the plugin's ``epoch_metrics`` adds; summary.json holds the last line's ``test_``
values plus what ``report`` adds. A plugin that overrides those hooks declares the names they may
add in ``epoch_metric_names`` / ``summary_metric_names``; where it declares nothing, names outside
the known ones are not refused (they may still appear).
"""

from __future__ import annotations

from gengraph.plugins.model import ModelPlugin
from gengraph.plugins.registry import suggest

ALWAYS_IN_SUMMARY = ("epochs", "steps", "seconds")
_LOWER = ("neg_", "nll", "bpd", "mse", "mae", "loss", "error", "mmd", "kl", "energy", "violation", "seconds")
_HIGHER = ("accuracy", "r2", "loglik", "_ll", "elbo", "auc", "precision", "recall", "f1")


def metric_mode(name: str) -> str:
    """"max" for metrics where higher is better (accuracy, r2, log-likelihoods, elbo), else "min"
    (mse, loss, bpd, nll, negative elbo, ...)."""
    low = name.lower()
    if any(w in low for w in _LOWER):
        return "min"
    if any(w in low for w in _HIGHER) or low.endswith("_ll"):
        return "max"
    return "min"


def resolved_mode(metric: str, mode) -> str:
    """"min" or "max": a mode as given (sweep.mode, train.early_stopping.mode), "auto" read from the
    metric's name."""
    return metric_mode(metric) if mode in ("auto", "", None) else mode


def stopping_mode(early_stopping: dict) -> str:
    """train.early_stopping's "min" or "max"."""
    return resolved_mode(early_stopping.get("metric", "test_loss"), early_stopping.get("mode", "auto"))


def train_names(plugin, model) -> tuple[set[str], bool]:
    """(train_ names every metrics line has, whether that list is complete): the training step's
    loss, metrics and gradient norm, unless the plugin steps or fits by itself."""
    names = {"train_loss", "train_grad_norm"} | {f"train_{k}" for k in model.metrics}
    names |= {n for n in getattr(plugin, "epoch_metric_names", None) or () if n.startswith("train_")}
    complete = (plugin.trains_by_gradient and not _overrides(plugin, "train_batch")
                and not _overrides(plugin, "fit") and (getattr(plugin, "epoch_metric_names", None) is not None
                                                       or not _overrides(plugin, "epoch_metrics")))
    return names, complete


def default_metric(task: str) -> str:
    """The metric a sweep ranks by when the spec names none."""
    return {"classification": "test_accuracy", "regression": "test_mse"}.get(task, "test_loss")


def _overrides(plugin, hook: str) -> bool:
    return getattr(type(plugin), hook) is not getattr(ModelPlugin, hook)


def logged_names(plugin, model) -> tuple[set[str], bool]:
    """(test_ names every metrics line has, whether that list is complete for test_ names)."""
    names = {"test_loss"} | {f"test_{k}" for k in model.metrics}
    declared = getattr(plugin, "epoch_metric_names", None)
    names |= set(declared or ())
    return names, declared is not None or not _overrides(plugin, "epoch_metrics")


def summary_names(plugin, model) -> tuple[set[str], bool]:
    """(names summary.json will have, whether the list is complete)."""
    names, complete = logged_names(plugin, model)
    names |= set(ALWAYS_IN_SUMMARY)
    declared = getattr(plugin, "summary_metric_names", None)
    names |= set(declared or ())
    return names, complete and (declared is not None or not _overrides(plugin, "report"))


def unknown_metric(metric: str, names: set[str], complete: bool, verb: str = "reported") -> str | None:
    """A message when `metric` is surely not among `names`, else None."""
    if metric in names or not complete:
        return None

    hint = suggest(metric, sorted(names))
    return (f'"{metric}" is not {verb} by this model'
            + (f'; did you mean "{hint}"?' if hint else "")
            + f" ({verb}: {', '.join(sorted(names))})")
