"""Learning-rate schedules: the lr as a function of the optimizer's step counter.

Each schedule builds its lr in the graph from the step counter (``node(step)``), so the
lr is an inspectable node of the training program, and computes the same number in
plain Python (``value(step)``) for tests and plots. ``step`` counts the updates already
taken: it is 0 for the first update, as PyTorch's ``scheduler.last_epoch`` when
``scheduler.step()`` is called once per optimizer step.

| kind          | lr at step t                                                                   |
| ------------- | ------------------------------------------------------------------------------ |
| `constant`    | lr                                                                             |
| `step`        | lr * gamma ** floor(t / step_size)                         (PyTorch's StepLR)  |
| `exponential` | lr * gamma ** t                                            (ExponentialLR)     |
| `cosine`      | t < w: lr * (t + 1) / w  (linear warm-up over w = warmup_steps)                |
|               | else:  min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2,                         |
|               |        p = min(t - w, T - w) / (T - w), T = total_steps  (CosineAnnealingLR    |
|               |        for w = 0 and t <= T; stays at min_lr after T)                          |

``make_schedule(kind, **hyper)`` checks names, types and ranges and fills defaults; each
class's ``schema`` maps a hyper-parameter to ``(type, default, help)`` for the spec layer
(the default is ``REQUIRED`` where there is none).
"""

from __future__ import annotations

import difflib
import math
from typing import ClassVar

import numpy as np

from .graph import Node
from .ops import cos, floor, lt, maximum, minimum, where


class _Required:
    def __repr__(self):
        return "REQUIRED"


REQUIRED = _Required()  # schema default of a hyper-parameter that has none


# --- shared by schedules and optimizers ------------------------------------------------
def did_you_mean(name: str, choices) -> str:
    """' did you mean "x"?' for a likely typo of one of `choices`, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def unknown_kind(what: str, kind, registry) -> ValueError:
    known = ", ".join(sorted(registry))
    return ValueError(f'unknown {what} "{kind}"{did_you_mean(str(kind), registry)} (known: {known})')


def coerce(owner: str, key: str, typ: type, value):
    """value checked against a schema type: ints pass as floats, integral floats as ints, bools only as bools.
    NumPy scalars count as the Python numbers they hold (lr = np.float32(0.01) from an array)."""
    if isinstance(value, np.generic):
        value = value.item()
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if typ is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if typ is bool and isinstance(value, bool):
        return value
    if typ not in (float, int, bool) and isinstance(value, typ):
        return value
    raise ValueError(f"{owner}: {key} must be {typ.__name__}, not {value!r}")


def resolve_hyper(owner: str, schema: dict, hyper: dict, aliases: dict | None = None) -> dict:
    """Hyper-parameters with aliases renamed, names checked (did-you-mean), types coerced, defaults filled."""
    aliases = aliases or {}
    given: dict = {}
    for key, value in hyper.items():
        canon = aliases.get(key, key)
        if canon not in schema:
            names = list(schema) + list(aliases)
            raise ValueError(f'{owner}: unknown hyper-parameter "{key}"{did_you_mean(key, names)} '
                             f'(known: {", ".join(schema)})')
        if canon in given:
            raise ValueError(f'{owner}: "{key}" and "{canon}" name the same hyper-parameter; give one')
        given[canon] = value
    out = {}
    for key, (typ, default, _help) in schema.items():
        if key in given:
            out[key] = coerce(owner, key, typ, given[key])
        elif default is REQUIRED:
            raise ValueError(f'{owner}: missing required hyper-parameter "{key}"')
        else:
            out[key] = default
    return out


def check(owner: str, ok: bool, message: str):
    if not ok:
        raise ValueError(f"{owner}: {message}")


# --- schedules ----------------------------------------------------------------------------
class Schedule:
    """Base class: `hyper` holds resolved hyper-parameters; subclasses define node and value."""

    kind: ClassVar[str] = ""
    schema: ClassVar[dict] = {}

    def __init__(self, **hyper):
        self.hyper = resolve_hyper(f'schedule "{self.kind}"', self.schema, hyper)
        self._check()

    def _check(self):
        # the optimizer's lr, which every schedule scales: not blamed on a schedule the user may not have set
        check("learning rate", self.hyper["lr"] >= 0, f'lr must be >= 0, not {self.hyper["lr"]}')

    @property
    def lr(self) -> float:
        """The base (peak) learning rate."""
        return self.hyper["lr"]

    def node(self, step: Node) -> Node:
        """The lr as a graph node computed from the step counter node (a float scalar)."""
        raise NotImplementedError

    def value(self, step: int) -> float:
        """The lr at `step` (0 for the first update), in plain Python."""
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyper.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(other) is type(self) and other.hyper == self.hyper

    __hash__ = None


_LR = (float, REQUIRED, "base (peak) learning rate")


class Constant(Schedule):
    kind = "constant"
    schema = {"lr": _LR}

    def node(self, step):
        return step.graph.constant(self.lr, dtype=step.dtype)

    def value(self, step):
        return self.lr


class StepDecay(Schedule):
    kind = "step"
    schema = {"lr": _LR,
              "step_size": (int, REQUIRED, "steps between two decays"),
              "gamma": (float, 0.1, "factor applied every step_size steps")}

    def _check(self):
        super()._check()
        check('schedule "step"', self.hyper["step_size"] >= 1, "step_size must be >= 1")
        check('schedule "step"', self.hyper["gamma"] > 0, "gamma must be > 0")

    def node(self, step):
        h = self.hyper
        return h["lr"] * h["gamma"] ** floor(step / float(h["step_size"]))

    def value(self, step):
        h = self.hyper
        return h["lr"] * h["gamma"] ** (int(step) // h["step_size"])


class Exponential(Schedule):
    kind = "exponential"
    schema = {"lr": _LR, "gamma": (float, REQUIRED, "factor applied every step")}

    def _check(self):
        super()._check()
        check('schedule "exponential"', self.hyper["gamma"] > 0, "gamma must be > 0")

    def node(self, step):
        h = self.hyper
        return h["lr"] * h["gamma"] ** step

    def value(self, step):
        h = self.hyper
        return h["lr"] * h["gamma"] ** step


class Cosine(Schedule):
    kind = "cosine"
    schema = {"lr": _LR,
              "total_steps": (int, REQUIRED, "steps until the lr reaches min_lr (warm-up included)"),
              "min_lr": (float, 0.0, "final learning rate"),
              "warmup_steps": (int, 0, "steps of linear warm-up from lr/warmup_steps to lr")}

    def _check(self):
        super()._check()
        h = self.hyper
        check('schedule "cosine"', 0 <= h["warmup_steps"] < h["total_steps"],
              f'need 0 <= warmup_steps < total_steps, got {h["warmup_steps"]} and {h["total_steps"]}')
        check('schedule "cosine"', 0 <= h["min_lr"] <= h["lr"], "need 0 <= min_lr <= lr")

    def node(self, step):
        h = self.hyper
        lr, lo, w, span = h["lr"], h["min_lr"], h["warmup_steps"], h["total_steps"] - h["warmup_steps"]
        progress = minimum(maximum(step - float(w), 0.0), float(span)) / float(span) if w else \
            minimum(step, float(span)) / float(span)
        decayed = lo + (lr - lo) * 0.5 * (1.0 + cos(math.pi * progress))
        if not w:
            return decayed
        return where(lt(step, float(w)), lr * (step + 1.0) / float(w), decayed)

    def value(self, step):
        h = self.hyper
        lr, lo, w, span = h["lr"], h["min_lr"], h["warmup_steps"], h["total_steps"] - h["warmup_steps"]
        if step < w:
            return lr * (step + 1) / w
        progress = min(max(step - w, 0), span) / span
        return lo + (lr - lo) * 0.5 * (1.0 + math.cos(math.pi * progress))


SCHEDULES: dict[str, type[Schedule]] = {
    "constant": Constant,
    "step": StepDecay,
    "exponential": Exponential,
    "cosine": Cosine,
}


def make_schedule(kind: str, **hyper) -> Schedule:
    """A schedule by kind name; ValueError with a did-you-mean for unknown kinds or hyper names."""
    try:
        cls = SCHEDULES[kind]
    except (KeyError, TypeError):
        raise unknown_kind("schedule", kind, SCHEDULES) from None
    return cls(**hyper)


def as_schedule(lr) -> Schedule:
    """A Schedule from a float (constant), a Schedule, or a dict {"kind": ..., hyper...}."""
    if isinstance(lr, Schedule):
        return lr
    if isinstance(lr, dict):
        spec = dict(lr)
        if "kind" not in spec:
            raise ValueError(f'a schedule given as a table needs a "kind" (one of {", ".join(SCHEDULES)})')
        return make_schedule(spec.pop("kind"), **spec)
    return Constant(lr=lr)
