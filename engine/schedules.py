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
class's ``schema`` maps a hyper-parameter to a ``Hyper`` row: ``(type, default, help)`` (the
default is ``REQUIRED`` where there is none) and the values it takes (``bounds``, ``choices``).
The engine checks a value against its row (``resolve_hyper``); the spec layer turns the same
rows into its schema's fields, so `gengraph validate` reports a value out of range with every
other mistake of a spec. Only checks that relate two values stay in a class's ``_check``.
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


def _number(text: str):
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return float(text)  # "inf" too


class Bounds:
    """The numbers a hyper-parameter takes, written as mathematics writes them: ">= 0", "> 0",
    "<= 1", "< 1", or an interval "[0, 1)", "(0, 1]", "[0, 1]", "(0, 1)"."""

    def __init__(self, text: str):
        self.source = text = text.strip()
        self.lo = self.hi = None  # None: unbounded on that side
        self.lo_open = self.hi_open = False
        try:
            if text[:2] in (">=", "<=") or text[:1] in (">", "<"):
                op = text[:2] if text[1:2] == "=" else text[:1]
                value = _number(text[len(op):])
                if op[0] == ">":
                    self.lo, self.lo_open = value, op == ">"
                else:
                    self.hi, self.hi_open = value, op == "<"
            elif text[:1] in "[(" and text[-1:] in "])" and text.count(",") == 1:
                lo, hi = text[1:-1].split(",")
                self.lo, self.hi = _number(lo), _number(hi)
                self.lo_open, self.hi_open = text[0] == "(", text[-1] == ")"
            else:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(f'bounds must be written ">= a", "> a", "<= b", "< b" or as an interval "[a, b)", '
                             f"not {text!r}") from None

    def __contains__(self, v) -> bool:
        if self.lo is not None and not (v > self.lo if self.lo_open else v >= self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    @property
    def text(self) -> str:
        """">= 0" or "in [0, 1)": what a message says a value must be."""
        return self.source if self.lo is None or self.hi is None else f"in {self.source}"

    def limits(self) -> dict:
        """The bounds as the spec schema's Field takes them (min/max inclusive, above/below exclusive)."""
        out = {}
        if self.lo is not None:
            out["above" if self.lo_open else "min"] = self.lo
        if self.hi is not None:
            out["below" if self.hi_open else "max"] = self.hi
        return out

    def __repr__(self) -> str:
        return f"Bounds({self.source!r})"


class Hyper(tuple):
    """One row of a hyper-parameter table. It unpacks as ``(type, default, help)``; ``bounds``
    (a Bounds, from text such as ``"[0, 1)"``) and ``choices`` say which values it takes.
    ``resolve_hyper`` checks them for the engine's callers, and the spec layer gives them to the
    schema's fields (plugins/run/spec_schema.py), one declaration for both."""

    def __new__(cls, typ, default, help="", *, bounds=None, choices=None):
        row = super().__new__(cls, (typ, default, help))
        row.bounds = bounds if isinstance(bounds, Bounds) or bounds is None else Bounds(bounds)
        row.choices = tuple(choices) if choices is not None else None
        return row

    def __getnewargs_ex__(self):  # copy and pickle: the row with its bounds and choices
        return tuple(self), {"bounds": self.bounds, "choices": self.choices}

    def limits(self) -> dict:
        """The row's bounds and choices as keywords of the spec schema's Field."""
        out = self.bounds.limits() if self.bounds is not None else {}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        return out


def row_limits(row) -> dict:
    """A schema row's limits as Field keywords: {} for a plain (type, default, help) tuple."""
    return row.limits() if isinstance(row, Hyper) else {}


def out_of_range(key: str, row, value) -> str | None:
    """Why `value` is not a value of the row `key` (its bounds, its choices), else None."""
    if not isinstance(row, Hyper):
        return None
    if row.choices is not None and value not in row.choices:
        allowed = ", ".join(f'"{c}"' if isinstance(c, str) else repr(c) for c in row.choices)
        return f"{key} must be one of {allowed}, not {value!r}"
    if isinstance(value, float) and not math.isfinite(value):  # as the spec schema: inf passed ">= 0"
        return f"{key} must be a finite number, not {value}"
    if row.bounds is not None and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and value not in row.bounds:
        return f"{key} must be {row.bounds.text}, not {value}"
    return None


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


def resolve_hyper(owner: str, schema: dict, hyper: dict, aliases: dict | None = None,
                  owners: dict | None = None) -> dict:
    """Hyper-parameters with aliases renamed, names checked (did-you-mean), types coerced, values
    checked against their rows' bounds and choices (out_of_range), defaults filled. `owners`: who a
    key's range error is said of, where not `owner` ({"lr": "learning rate"})."""
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
            if (why := out_of_range(key, schema[key], out[key])) is not None:
                raise ValueError(f"{(owners or {}).get(key, owner)}: {why}")
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
        # lr, the optimizer's, which every schedule scales: not blamed on a schedule the user may not have set
        self.hyper = resolve_hyper(f'schedule "{self.kind}"', self.schema, hyper, owners={"lr": "learning rate"})
        self._check()

    def _check(self):
        """Checks that relate two hyper-parameters (each one's range is in its row)."""

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


_LR = Hyper(float, REQUIRED, "base (peak) learning rate", bounds=">= 0")


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
              "step_size": Hyper(int, REQUIRED, "steps between two decays", bounds=">= 1"),
              "gamma": Hyper(float, 0.1, "factor applied every step_size steps", bounds="> 0")}

    def node(self, step):
        h = self.hyper
        return h["lr"] * h["gamma"] ** floor(step / float(h["step_size"]))

    def value(self, step):
        h = self.hyper
        return h["lr"] * h["gamma"] ** (int(step) // h["step_size"])


class Exponential(Schedule):
    kind = "exponential"
    schema = {"lr": _LR, "gamma": Hyper(float, REQUIRED, "factor applied every step", bounds="> 0")}

    def node(self, step):
        h = self.hyper
        return h["lr"] * h["gamma"] ** step

    def value(self, step):
        h = self.hyper
        return h["lr"] * h["gamma"] ** step


class Cosine(Schedule):
    kind = "cosine"
    schema = {"lr": _LR,
              "total_steps": Hyper(int, REQUIRED, "steps until the lr reaches min_lr (warm-up included)",
                                   bounds=">= 1"),
              "min_lr": Hyper(float, 0.0, "final learning rate", bounds=">= 0"),
              "warmup_steps": Hyper(int, 0, "steps of linear warm-up from lr/warmup_steps to lr", bounds=">= 0")}

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
