"""Hyper-parameter sweeps: a spec's ``[sweep]`` table -> trials -> ordinary run directories.

A sweep is a base spec plus, for every trial, a few overrides in the ``--set`` syntax
(``model.lam=0.001``). ``plan_sweep`` reads the ``[sweep]`` table (and ``--axis``
options), expands it into trials and validates every trial's spec before anything
runs; ``run_sweep`` runs the trials -- in this process, in a local process pool or on
a Dask distributed cluster -- and writes, under ``output.dir/NAME/``:

* ``TRIAL/``       one ordinary run directory per trial (spec.toml, summary.json, ...)
* ``sweep.jsonl``  one line per finished trial: overrides, status, error, metrics
* ``summary.txt``  the trials ranked by the sweep's metric, as a table
* ``sweep.json``   the same, machine-readable, with the best trial
* ``heatmap.png`` (2-axis grids), ``curve.png`` (1 axis) or ``axes.png`` (otherwise)
* ``gengraph.lock`` while the sweep runs (the run directories' lock, see run/rundir.py)

A folder holds one sweep: a sweep into a folder that holds another one is refused unless
``resume`` (continue it, keeping what is recorded) or ``overwrite`` (remove its files and
the files it wrote into its trial folders, never a file of the user's), and a second process
is refused while the first holds the folder's lock. A sweep replaces only trial folders it made
itself (each holds a mark listing the files it wrote): one that holds another run (running or
not) or only files of the user's is refused before any trial runs. SIGINT and SIGTERM stop
the sweep: the pool's workers are terminated, and a trial folder is published only
together with its line in sweep.jsonl, so ``resume`` continues where it stopped.

``[sweep]`` keys (all optional but ``axes``)::
    [sweep]
    method = "grid"            # or "random"
    metric = "test_mse"        # a key of the trials' summary.json (default: by the task)
    mode = "min"               # or "max" (default: by the metric)
    name = "ridge_grid"        # default: the spec file's name
    trials = 20                # random only
    seed = 0                   # random only: draws the axis values
    [sweep.axes]
    "model.degree" = [1, 2, 3]                              # a list of values
    "model.lam" = { low = 1e-6, high = 1e-1, num = 6, log = true }  # grid: num values
    "train.optimizer.lr" = { low = 1e-4, high = 1e-1, log = true }   # random: drawn

Every trial uses the spec's own ``run.seed``, so a trial's result depends only on its
overrides, never on the executor or the order the trials finish in.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import re
import signal
import sys
import threading
import time
import tomllib
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.run.trainer import optimizer_from_spec
from gengraph.plugins.spec.errors import SpecError, SpecIssue
from gengraph.plugins.spec.overrides import ORIGIN
from gengraph.plugins.spec.schema import is_number
from gengraph.plugins.spec.toml_positions import build_path, join_key, read_path, split_path
from gengraph.plugins.spec.toml_writer import format_value
from gengraph.plugins.blocks.files import atomic_write, dumps_json, sha256_file
from gengraph.plugins.run.loading import load
from gengraph.plugins.spec.document import spec_from_text
from gengraph.plugins.run.spec_schema import top_schema
from gengraph.plugins.run import loading
from gengraph.plugins.run.runner import RunInterrupted, execute
from gengraph.plugins.sweep import plots as sweep_plots
from gengraph.plugins.run.runner import build_checked
from gengraph.plugins.run.metrics import default_metric, resolved_mode, summary_names, unknown_metric
from gengraph.plugins.run.rundir import (LOCK_NAME, RUN_FILES, RunDirError, clear_run_files, clear_temporaries,
                                         listed, open_run_dir, run_files)
from gengraph.plugins.run.signals import SignalGuard, Stop, exit_code, signal_name

AXIS_ORIGIN = "--axis"
RANGE_KEYS = ("low", "high", "log", "num")
MAX_TRIALS = 100_000  # trials a sweep may expand to: each is validated before any runs
DASK_HINT = "pip install 'gengraph[dask]'"
PLOT_NAMES = ("heatmap.png", "curve.png", "axes.png")


class DaskUnavailable(ImportError):
    """--scheduler was given but dask.distributed is not installed."""


class SchedulerError(RuntimeError):
    """The Dask scheduler could not be reached."""


class SweepInterrupted(Exception):
    """SIGINT or SIGTERM during a sweep: finished trials are recorded; --resume continues.
    exit_code: 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, out_dir, signum: int = signal.SIGINT):
        self.out_dir, self.signum, self.exit_code = out_dir, int(signum), exit_code(signum)
        super().__init__(f"sweep interrupted by {signal_name(signum)}; finished trials are in "
                         f"{Path(out_dir) / 'sweep.jsonl'}")


# --- plan: axes, trials, validation -----------------------------------------------------


@dataclass
class Axis:
    """One swept key: a list of values, or a range {low, high, log[, num]}."""

    key: str  # as written, e.g. "model.lam"
    path: str  # normalised dotted path (build_path of its tokens)
    values: list | None
    range: dict | None
    where: tuple  # (file, line, col) of its definition
    label_path: str  # how messages name it: sweep.axes."model.lam" or --axis model.lam
    short: str = ""  # its name inside trial names

    @property
    def log(self) -> bool:
        return bool(self.range and self.range.get("log"))

    def describe(self) -> dict:
        return {"key": self.key, "values": self.values} if self.range is None else {"key": self.key,
                                                                                       "range": self.range}


@dataclass
class Trial:
    index: int
    name: str
    values: dict  # axis key -> value
    sets: list  # override texts, e.g. ["model.lam=0.001"]
    spec_sha: str = ""  # of the trial's resolved spec: --resume reruns a trial whose spec changed


@dataclass
class SweepPlan:
    name: str
    method: str
    metric: str
    mode: str
    axes: list
    trials: list
    spec_file: str
    spec_text: str
    base_dir: str
    base_overrides: list
    out_dir: Path
    plugin_files: list = field(default_factory=list)
    seed: int = 0


def _issue(where, path, message) -> SpecError:
    return SpecError(SpecIssue(*where, path, message))


def _printable_number(v) -> bool:
    """A number the summary can format: a finite float, or a 64-bit int (a larger one overflows .6g)."""
    return is_number(v) and (math.isfinite(v) if isinstance(v, float) else abs(v) < 2 ** 63)


def _is_range(v) -> bool:
    return isinstance(v, dict) and "low" in v and "high" in v and set(v) <= set(RANGE_KEYS)


def _clean_float(v: float) -> float:
    """12 significant digits: 10**-4 is written 0.0001, not 9.999999999999999e-05."""
    return float(f"{v:.12g}")


def _check_range(rng: dict, method: str, where, label) -> dict:
    extra = [k for k in rng if k not in RANGE_KEYS]
    if extra:
        raise _issue(where, label, f"unknown range key {extra[0]!r} (a range takes {', '.join(RANGE_KEYS)})")
    low, high, log = rng.get("low"), rng.get("high"), rng.get("log", False)
    if not (is_number(low) and is_number(high)):
        raise _issue(where, label, "a range needs numbers low and high, e.g. { low = 1e-4, high = 1e-1, log = true }")
    if not isinstance(log, bool):
        raise _issue(where, label, f"range key log must be true or false, found {format_value(log)}")
    if not low < high:
        raise _issue(where, label, f"range low must be below high, found low = {low}, high = {high}")
    if log and low <= 0:
        raise _issue(where, label, f"a log range needs low > 0, found low = {low}")
    if method == "grid":
        num = rng.get("num")
        if not (isinstance(num, int) and not isinstance(num, bool) and num >= 2):
            raise _issue(where, label, "a range in a grid sweep needs num >= 2 (how many values), "
                                       "e.g. { low = 1e-6, high = 1e-1, num = 6, log = true }")
        if num > MAX_TRIALS:
            raise _issue(where, label, f"range num = {num:,} is more values than a sweep runs (at most "
                                       f"{MAX_TRIALS:,} trials)")
    elif "num" in rng:
        raise _issue(where, label, 'num is for grid sweeps; a random sweep draws `trials` values from the range')
    return {"low": low, "high": high, "log": log, **({"num": rng["num"]} if "num" in rng else {})}


def _grid_values(rng: dict) -> list:
    import numpy as np

    low, high, num = rng["low"], rng["high"], rng["num"]
    xs = np.geomspace(low, high, num) if rng["log"] else np.linspace(low, high, num)
    values = [_clean_float(float(x)) for x in xs]
    if isinstance(low, int) and isinstance(high, int) and all(float(v).is_integer() for v in values):
        values = [int(v) for v in values]
    return values


def _make_axis(key, value, method, where, label_path) -> Axis:
    try:
        path = build_path(split_path(key))
    except ValueError as exc:
        raise _issue(where, label_path, f"malformed key path ({exc}); write it as for --set, "
                                        'e.g. "model.lam" or "model.layers[0].units"') from None
    root = split_path(key)[0]
    if root in ("sweep", "spec_version"):
        raise _issue(where, label_path, f"an axis cannot change {root}; sweep over keys of "
                                        "[run], [data], [model], [train] or [output]")
    if isinstance(value, dict):
        if not ("low" in value or "high" in value):
            raise _issue(where, label_path, "expected a list of values or a range { low, high, log, num }, "
                                            f"found table {format_value(value)}")
        rng = _check_range(value, method, where, label_path)
        values = _grid_values(rng) if method == "grid" else None
        return Axis(key, path, values, rng, where, label_path)
    if not isinstance(value, list):
        why = f", which is not valid TOML: {value.toml_error}" if getattr(value, "toml_error", None) else ""
        raise _issue(where, label_path, f"expected a list of values or a range {{ low, high, log }}, "
                                        f"found {format_value(value)}{why}")
    if not value:
        raise _issue(where, label_path, "an axis needs at least one value")
    return Axis(key, path, list(value), None, where, label_path)


def parse_axis_option(text: str) -> tuple[str, object]:
    """``KEY=V1,V2,...`` (each V a TOML literal, else text) or ``KEY={ low=.., high=.., log=true }``."""
    label = f"{AXIS_ORIGIN} {text.partition('=')[0].strip()}"
    try:
        tokens, end = read_path(text)
    except ValueError as exc:
        raise _issue((None, None, None), label, f"malformed key path ({exc}); expected KEY=V1,V2,...") from None
    if not text.startswith("=", end) or not text[end + 1:].strip():
        raise _issue((None, None, None), label, "expected KEY=V1,V2,..., e.g. --axis model.lam=1e-4,1e-3,1e-2")
    key, rhs = text[:end].strip(), text[end + 1:].strip()
    try:
        doc = tomllib.loads(f"v = [{rhs}]")
        values = doc["v"] if list(doc) == ["v"] else None
    except tomllib.TOMLDecodeError:
        values = None
    if values is None:
        values = []
        for part in rhs.split(","):
            part = part.strip()
            try:
                values.append(tomllib.loads(f"v = {part}")["v"])
            except (tomllib.TOMLDecodeError, KeyError):
                values.append(part)
    if len(values) == 1 and _is_range(values[0]):
        return key, values[0]
    return key, values


def _short_names(axes: list[Axis]) -> None:
    last = [str(next(t for t in reversed(split_path(a.key)) if isinstance(t, str))) for a in axes]
    for a, s in zip(axes, last):
        a.short = s if last.count(s) == 1 else a.path


def _fmt(v) -> str:
    """A value as it appears in trial names and tables."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return v
    return format_value(v)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", text).strip("-.") or "trial"


def trial_name(axes: list[Axis], values: dict, sets: list[str], prefix: str = "") -> str:
    """Filesystem-safe and deterministic: ``degree=3_lam=1e-06`` (random: ``007_lr=0.00123``)."""
    name = _safe(prefix + "_".join(f"{a.short}={_fmt(values[a.key])}" for a in axes))
    if len(name) > 100:
        name = name[:90].rstrip("-._") + "-" + hashlib.sha1("\n".join(sets).encode()).hexdigest()[:8]
    return name


def _override(axis: Axis, value) -> str:
    return f"{axis.path}={format_value(value)}"


def expand(axes: list[Axis], method: str, trials: int = 10, seed: int = 0) -> list[Trial]:
    """Grid: every combination, first axis outermost. Random: `trials` draws seeded by `seed`."""
    _short_names(axes)
    combos = []
    if method == "grid":
        combos = [dict(zip([a.key for a in axes], vs)) for vs in itertools.product(*(a.values for a in axes))]
    else:
        import numpy as np

        rng = np.random.default_rng(seed)
        for _ in range(trials):
            combo = {}
            for a in axes:
                if a.range is None:
                    combo[a.key] = a.values[int(rng.integers(len(a.values)))]
                    continue
                low, high = a.range["low"], a.range["high"]
                both_int = isinstance(low, int) and isinstance(high, int)
                if a.log:
                    x = math.exp(rng.uniform(math.log(low), math.log(high + (1 if both_int else 0))))
                    combo[a.key] = min(int(x), high) if both_int else _clean_float(x)
                else:
                    combo[a.key] = int(rng.integers(low, high + 1)) if both_int else _clean_float(rng.uniform(low, high))
            combos.append(combo)
    width = len(str(max(len(combos) - 1, 0)))
    out, seen = [], set()
    for i, combo in enumerate(combos):
        sets = [_override(a, combo[a.key]) for a in axes]
        name = trial_name(axes, combo, sets, prefix=f"{i:0{width}d}_" if method == "random" else "")
        if name in seen:  # values that print alike (1.0000001 vs 1.0000002, or repeated values)
            digest = hashlib.sha1(("\n".join(sets) + f"#{i}").encode()).hexdigest()[:6]
            name = f"{name}-{digest}"
        seen.add(name)
        out.append(Trial(i, name, combo, sets))
    return out


def _retarget(exc: SpecError, axes: list[Axis]) -> list[SpecIssue]:
    """Issues about an axis's override point at the axis (file:line of [sweep.axes] or --axis)."""
    out = []
    for issue in exc.issues:
        path = issue.path
        if path.startswith(ORIGIN + " "):
            path = path[len(ORIGIN) + 1:]
        # at the axis, below it, or above it: a table the override created ("mdoel" of "mdoel.degree")
        axis = next((a for a in axes if issue.file == ORIGIN
                     and (path == a.path or path.startswith((a.path + ".", a.path + "["))
                          or a.path.startswith((path + ".", path + "[")))), None)
        if axis is None:
            out.append(issue)
            continue
        message = issue.message if path == axis.path else f"{path}: {issue.message}"
        out.append(SpecIssue(*axis.where, axis.label_path, message))
    return out


def _axes(spec, method, axis_options) -> list[Axis]:
    """The [sweep.axes] in order, each replaced in place by an --axis of the same key; new ones after."""
    cli = []
    for option in axis_options:
        key, value = parse_axis_option(option)
        cli.append(_make_axis(key, value, method, (None, None, None), f"{AXIS_ORIGIN} {key}"))
    by_path = {a.path: a for a in cli}  # the last --axis of a key wins
    axes, used = [], set()
    for key, value in (spec.data.get("sweep") or {}).get("axes", {}).items():
        try:
            path = build_path(split_path(key))
        except ValueError:
            path = None
        if path in by_path:
            axes.append(by_path[path])
            used.add(path)
            continue
        label = join_key("sweep.axes", key)
        axes.append(_make_axis(key, value, method, spec.position(label), label))
    for a in cli:
        if a.path not in used and by_path[a.path] is a:
            axes.append(a)
            used.add(a.path)
    return axes


def _load_base(spec_path: Path, overrides, axis_options):
    """The sweep's spec with its overrides; where that is refused because of a key the axes give (a
    required hyper-parameter swept by --axis or [sweep.axes]: "train.schedule.gamma: missing
    required key"), the spec with every axis at its first value too. Else the first refusal."""
    try:
        return load(spec_path, list(overrides))
    except SpecError as refused:
        firsts = _first_values(spec_path, axis_options)
        try:
            if firsts:
                return load(spec_path, list(overrides) + firsts)
        except SpecError:
            pass
        raise refused from None


def _first_values(spec_path: Path, axis_options) -> list[str]:
    """--set texts putting each axis ([sweep.axes], then --axis, which wins) at its first value (a
    range at its low end); axes that cannot be read are left to the sweep's own checks."""
    given = []
    try:
        given += list((tomllib.loads(spec_path.read_text(encoding="utf-8")).get("sweep") or {}).get("axes", {}).items())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        pass
    for option in axis_options:
        try:
            given.append(parse_axis_option(option))
        except SpecError:
            pass
    sets = []
    for key, value in given:
        first = value.get("low") if isinstance(value, dict) else value[0] if isinstance(value, list) and value else None
        try:
            if first is not None:
                sets.append(f"{build_path(split_path(key))}={format_value(first)}")
        except ValueError:
            pass
    return sets


def plan_sweep(spec_path, overrides=(), axis_options=(), *, out_dir=None, plugin_files=()) -> SweepPlan:
    """Read, expand and validate a sweep; raises SpecError (every trial checked) before anything runs."""
    spec_path = Path(spec_path)
    base = _load_base(spec_path, overrides, axis_options)
    text = spec_path.read_text(encoding="utf-8")
    cfg = base.data.get("sweep") or {}
    method = cfg.get("method", "grid")
    axes = _axes(base, method, axis_options)
    if not axes:
        raise _issue((str(spec_path), None, None), "sweep.axes", "nothing to sweep: add a [sweep] table with axes, "
                     'e.g. [sweep.axes] "model.lam" = [1e-4, 1e-3], or pass --axis KEY=V1,V2,...')
    count = math.prod(len(a.values) for a in axes) if method == "grid" else cfg.get("trials", 10)
    if count > MAX_TRIALS:  # each trial is checked (and run); a grid of 10^19 filled the memory first
        key = "sweep.axes" if method == "grid" else "sweep.trials"
        raise _issue(base.position(key), key,
                     f"the sweep has {count:,} trials, more than {MAX_TRIALS:,}; use fewer values (or a random "
                     "sweep with fewer trials)")
    trials = expand(axes, method, cfg.get("trials", 10), cfg.get("seed", 0))
    name = cfg.get("name") or spec_path.stem
    schema = top_schema()
    issues, seen = [], set()
    for t in trials:
        try:
            trial_spec = spec_from_text(text, str(spec_path), list(overrides) + t.sets, schema)
            _check_optimizer(trial_spec)
            t.spec_sha = _fingerprint(trial_spec, f"{name}/{t.name}")
        except SpecError as exc:
            for issue in _retarget(exc, axes):
                if str(issue) not in seen:
                    seen.add(str(issue))
                    issues.append(issue)
    if issues:
        raise SpecError(issues)
    _check_largest_trial(trials, axes, text, spec_path, overrides, schema)
    metric, mode = _metric_and_mode(base, spec_path, cfg)
    out = Path(out_dir) if out_dir else Path(base.data["output"]["dir"]) / (cfg.get("name") or f"{name}-sweep")
    return SweepPlan(name=name, method=method, metric=metric, mode=mode,
                     axes=axes, trials=trials, spec_file=str(spec_path), spec_text=text,
                     base_dir=str(spec_path.resolve().parent), base_overrides=list(overrides), out_dir=out,
                     plugin_files=[str(Path(p).resolve()) for p in plugin_files], seed=cfg.get("seed", 0))


def _check_optimizer(spec) -> None:
    """The optimizer and schedule checks a run makes first (lr = -1, a schedule's own ranges), as a
    SpecError: --axis train.optimizer.lr=-1,0.01 ran its trials and failed one of them."""
    try:
        optimizer_from_spec(spec.data["train"])
    except ModelConfigError as exc:
        raise SpecError([SpecIssue(*spec.position(exc.path), exc.path, exc.message)]) from None


def _check_largest_trial(trials, axes, text, spec_path, overrides, schema) -> None:
    """Build a trial with every numeric axis at its largest value among the trials (sizes, sample
    counts; a grid has that trial, a random sweep may not) before any trial runs, so a range that
    cannot fit in memory is refused up front, naming its axis."""
    numeric = [a for a in axes if any(is_number(t.values.get(a.key)) for t in trials)]
    if not numeric or len(trials) < 2:
        return
    values = dict(trials[0].values)
    for a in numeric:
        values[a.key] = max(t.values[a.key] for t in trials if is_number(t.values.get(a.key)))
    sets = [_override(a, values[a.key]) for a in axes]
    spec = spec_from_text(text, str(spec_path), list(overrides) + sets, schema)
    try:
        build_checked(spec, base_dir=spec_path.resolve().parent)
    except SpecError as exc:
        raise SpecError(_retarget(exc, axes)) from None


def _metric_and_mode(base, spec_path, cfg) -> tuple[str, str]:
    """sweep.metric (default: by the data's task) and sweep.mode (auto: by the metric's name),
    refusing a metric the model surely does not report before any trial runs."""
    data, plugin, _graph, model = build_checked(base, base_dir=spec_path.resolve().parent)
    names, complete = summary_names(plugin, model)
    metric = cfg.get("metric") or default_metric(data.task)
    if not cfg.get("metric") and metric not in names:  # a VAE on labelled digits reports no test_accuracy:
        metric = "test_loss"                           # every trial ran before the sweep refused it
    data_names = set(getattr(plugin, "summary_data_names", ()))
    if metric in data_names:
        numbers = ", ".join(sorted(names - data_names))
        why = f'"{metric}" is not a number in summary.json (a list, table or flag): nothing to rank trials by (numbers: {numbers})'
    else:
        why = unknown_metric(metric, names - data_names, complete)
    if why is not None:
        where = base.position("sweep.metric") if cfg.get("metric") else (str(spec_path), None, None)
        raise _issue(where, "sweep.metric", why)
    return metric, resolved_mode(metric, cfg.get("mode", "auto"))


def trial_spec_data(spec, run_name: str) -> None:
    """A trial is an ordinary run: no [sweep] table (its spec.toml runs with `gengraph run`), its own name."""
    spec.data.pop("sweep", None)
    spec.data["run"]["name"] = run_name


def _fingerprint(spec, run_name: str) -> str:
    trial_spec_data(spec, run_name)
    return hashlib.sha256(spec.to_toml().encode()).hexdigest()[:16]


# --- one trial (runs in a worker: a plain function of plain data) ------------------------


def _scalar_metrics(summary: dict) -> dict:
    out = {}
    for k, v in summary.items():
        if k == "seconds" or isinstance(v, bool):
            continue
        if isinstance(v, (int, float)) or type(v).__module__ == "numpy" and getattr(v, "ndim", 1) == 0:
            v = float(v) if not isinstance(v, int) else v
            out[k] = v if not isinstance(v, float) or math.isfinite(v) else None
    return out


def run_trial(payload: dict) -> dict:
    """Run one trial into its run directory; never raises: a failure is a record with its error."""
    t0 = time.perf_counter()
    final = Path(payload["run_dir"])
    # the trial runs in a temporary sibling folder and is moved in whole when it is done, so a
    # duplicate (a Dask task recomputed after a lost worker) never truncates finished files
    run_dir = final.parent / f".{final.name}{_TMP}{os.getpid()}-{os.urandom(3).hex()}"
    record = {"trial": payload["trial"], "index": payload["index"], "overrides": payload["values"],
              "set": payload["set"], "status": "failed", "error": None, "metrics": {}, "run_dir": str(final),
              "spec_sha": payload["spec_sha"]}
    logged = []
    try:
        run_dir.mkdir(parents=True)
        # the plugin files for this trial only: with workers=1 trials run in the caller's process
        # (a notebook kernel), where a kind registered for good would replace a built-in in later runs
        with loading.plugin_files(payload["plugin_files"]):
            spec = spec_from_text(payload["spec_text"], payload["spec_file"], payload["overrides"], top_schema())
            trial_spec_data(spec, payload["run_name"])
            # the sweep owns its trial directories and decides which trials to rerun: overwrite=True
            summary = execute(spec, run_dir, log=lambda *a, **k: logged.append(" ".join(map(str, a))),
                              base_dir=payload["base_dir"], overwrite=True)
        record["metrics"] = _scalar_metrics(summary)
        record["status"] = "ok"
    except (KeyboardInterrupt, RunInterrupted) as exc:
        record["status"], record["error"] = "interrupted", "interrupted (Ctrl-C)"
        record["signal"] = int(getattr(exc, "signum", signal.SIGINT))
    except Exception as exc:  # noqa: BLE001 -- any failure of a trial is recorded, the sweep goes on
        record["error"] = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError):
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(run_dir / "error.txt", traceback.format_exc())
    if logged:
        with contextlib.suppress(OSError):
            atomic_write(run_dir / "log.txt", "\n".join(logged) + "\n")
    record["seconds"] = round(time.perf_counter() - t0, 3)
    if record["status"] != "interrupted" and not payload.get("publish", True):
        record["_tmp"] = str(run_dir)  # the sweep's process publishes it as it records it (publish_record)
        return record
    if record["status"] != "interrupted":
        publish_record(record, run_dir, payload.get("attempt", ""))
    _remove_tree(run_dir)
    return record


def publish_record(record: dict, tmp: Path, attempt: str) -> None:
    """Move a finished trial's folder into place; a failure to move it fails the trial."""
    final = Path(record["run_dir"])
    try:
        _publish(Path(tmp), final, attempt, record["status"] == "ok")
    except (OSError, TrialFolderTaken) as exc:
        record["status"], record["error"] = "failed", f"cannot move the trial's files into {final}: {exc}"
    finally:
        _remove_tree(Path(tmp))


_TMP = ".tmp-"  # temporary trial folders: .TRIAL.tmp-PID-RANDOM (and .TRIAL.old-... while replacing)
_MARK = ".sweep-attempt"  # inside a published trial folder: which sweep invocation wrote it, and its files


class TrialFolderTaken(Exception):
    """A trial's folder holds what the sweep did not write (another run, a lock, the user's files)."""


def _remove_tree(path: Path) -> None:
    import shutil

    if path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _write_mark(tmp: Path, attempt: str, ok: bool) -> None:
    """The mark lists every file the trial wrote with its SHA-256: what the sweep may later replace
    is exactly what it wrote (a run started there afterwards changes them, a user's file is not listed)."""
    files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    atomic_write(tmp / _MARK, json.dumps({"attempt": attempt, "status": "ok" if ok else "failed",
                                          "files": files}, indent=1) + "\n")


def _read_mark(trial_dir: Path) -> dict | None:
    """A trial folder's mark as {"attempt", "status", "files"}; None: no mark (not published by a
    sweep). An older mark ("ATTEMPT\\nSTATUS") lists no files: "files" is None."""
    try:
        text = (trial_dir / _MARK).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    with contextlib.suppress(ValueError):
        mark = json.loads(text)
        if isinstance(mark, dict) and isinstance(mark.get("files"), dict):
            return {"attempt": str(mark.get("attempt")), "status": str(mark.get("status")), "files": mark["files"]}
    words = text.split()
    return {"attempt": words[0] if words else "", "status": words[1] if len(words) > 1 else "", "files": None}


def _publish(tmp: Path, final: Path, attempt: str, ok: bool) -> None:
    """Move a trial's temporary folder to its place (one rename). A folder that this sweep
    invocation already finished there is never replaced; an older or failed trial of the sweep's
    is (the user's files in it are kept); anything else there fails the trial (TrialFolderTaken)."""
    if not tmp.exists():
        return
    _write_mark(tmp, attempt, ok)
    try:
        os.rename(tmp, final)  # final absent (or an empty folder): atomic
        return
    except OSError:
        if not final.exists():
            raise
    mark = _read_mark(final)
    if attempt and mark is not None and (mark["attempt"], mark["status"]) == (attempt, "ok"):
        return  # a duplicate of a finished trial: keep the finished files untouched
    # checked up front (_refuse_taken_trials); again here, as a run may have started there since
    if (why := _why_taken(final, mark)) is not None:
        raise TrialFolderTaken(f"it holds {why}")
    carried = _carry_user_files(final, tmp)
    old = final.parent / f".{final.name}.old-{os.getpid()}-{os.urandom(3).hex()}"
    try:
        os.rename(final, old)
    except OSError:
        _move_back(carried, tmp, final)
        raise
    try:
        os.rename(tmp, final)
    except OSError:
        os.rename(old, final)  # the earlier trial stays, with the user's files
        _move_back(carried, tmp, final)
        raise
    _remove_tree(old)


_TRIAL_FILES = ("error.txt", "log.txt", _MARK)  # what run_trial itself writes into a trial folder


def _trial_owned(trial_dir: Path) -> set:
    """The names in a trial folder that the sweep wrote (the rest is the user's): those its mark
    lists; for an older mark, the run's files and the sweep's; none without a mark."""
    mark = _read_mark(trial_dir)
    if mark is None:
        return set()
    if mark["files"] is None:
        return set(RUN_FILES) | set(run_files(trial_dir)) | set(_TRIAL_FILES) | {LOCK_NAME}
    return set(mark["files"]) | {_MARK}


def _run_named(trial_dir: Path) -> list[str]:
    """The files in a folder named as a run writes them (RUN_FILES and those its manifest lists)."""
    names = dict.fromkeys([*RUN_FILES, *run_files(trial_dir)])
    return [n for n in names if (trial_dir / n).is_file()]


def _lock_pid(trial_dir: Path) -> str:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return f", PID {int(json.loads((trial_dir / LOCK_NAME).read_text())['pid'])}"
    return ""


def _why_taken(trial_dir: Path, mark: dict | None) -> str | None:
    """What in an existing trial folder belongs to a run that is not this sweep's trial (a lock,
    or a run's files the sweep did not write, by name and content), or None."""
    if (trial_dir / LOCK_NAME).exists():
        return f"a gengraph run that is running or was stopped there ({LOCK_NAME}{_lock_pid(trial_dir)})"
    if mark is None:
        found = run_files(trial_dir)
        return f"a gengraph run that this sweep did not make ({listed(found)})" if found else None
    if mark["files"] is None:  # an older mark: its files are not known
        return None
    foreign = [n for n in _run_named(trial_dir) if mark["files"].get(n) != sha256_file(trial_dir / n)]
    return f"{listed(foreign)}, which this sweep did not write" if foreign else None


def _trial_conflict(trial_dir: Path) -> str | None:
    """Why the sweep may not write a trial into trial_dir ("holds ...", "is ..."), or None: it is
    absent, empty, or a trial folder the sweep made (a user's extra files there are carried over)."""
    if trial_dir.is_symlink() or (trial_dir.exists() and not trial_dir.is_dir()):
        return "is a file or link, not a trial folder of this sweep"
    try:
        entries = sorted(p.name for p in trial_dir.iterdir()) if trial_dir.is_dir() else []
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not entries:
        return None
    mark = _read_mark(trial_dir)
    why = _why_taken(trial_dir, mark)
    if why is None and mark is None:
        why = f"files this sweep did not write ({listed(entries)})"
    return None if why is None else f"holds {why}"


def _carry_user_files(final: Path, tmp: Path) -> list[str]:
    """Before a trial folder is replaced: move the user's own files (anything the sweep did not
    write) from the old folder into the new one, so replacing a trial never deletes them. A user's
    file named like one the trial wrote fails the trial (TrialFolderTaken). Returns the names
    moved; on a failure, moves them back and raises."""
    owned = _trial_owned(final)
    names = [e.name for e in sorted(final.iterdir())
             if e.name not in owned and not (e.name.startswith(".") and e.name.endswith(".tmp"))]
    clash = [n for n in names if (tmp / n).exists()]
    if clash:
        raise TrialFolderTaken(f"it holds {listed(clash)}, which this sweep did not write")
    moved = []
    try:
        for name in names:
            os.rename(final / name, tmp / name)
            moved.append(name)
    except OSError:
        _move_back(moved, tmp, final)
        raise
    return moved


def _move_back(names, tmp: Path, final: Path) -> None:
    for name in names:
        with contextlib.suppress(OSError):
            os.rename(tmp / name, final / name)


def _remove_leftovers(out: Path) -> None:
    """Temporary trial folders left by killed workers or duplicates stopped at shutdown."""
    if out.is_dir():
        for p in out.iterdir():
            if p.name.startswith(".") and (_TMP in p.name or ".old-" in p.name) and p.is_dir():
                _remove_tree(p)


# --- the sweep folder: one sweep per folder, refused, resumed or overwritten --------------

SWEEP_FILES = ("sweep.jsonl", "sweep.json", "summary.txt", *PLOT_NAMES)
SWEEP_MARKERS = ("sweep.jsonl", "sweep.json")  # either one makes a folder "hold a sweep"


def _trial_dirs(out: Path) -> list[str]:
    """The trial folders of the sweep in `out`: those its sweep.jsonl records, and any folder
    that a sweep published (it holds the .sweep-attempt mark)."""
    # a damaged record still names a folder the sweep made
    named = (rec.get("trial") for _, rec, _ in _record_lines(out / "sweep.jsonl") if isinstance(rec, dict))
    names = [n for n in named if isinstance(n, str) and n and Path(n).name == n and n not in (".", "..")]
    with contextlib.suppress(OSError):
        names += sorted(p.name for p in out.iterdir() if p.is_dir() and (p / _MARK).is_file())
    return [n for n in dict.fromkeys(names) if (out / n).is_dir()]


def sweep_files(out) -> list[str]:
    """What a sweep left in `out`: its own files, then its trial folders as NAME/ (empty: no sweep)."""
    out = Path(out)
    if not out.is_dir():
        return []
    trials = _trial_dirs(out)
    if not trials and not any((out / n).is_file() for n in SWEEP_MARKERS):
        return []
    return [n for n in SWEEP_FILES if (out / n).is_file()] + [f"{n}/" for n in trials]


def clear_sweep_files(out: Path) -> list[str]:
    """Remove an earlier sweep: its own files, and in each of its trial folders the files the
    sweep wrote there (the folder goes when nothing of the user's is left in it)."""
    found = sweep_files(out)
    for name in found:
        path = out / name.rstrip("/")
        if not name.endswith("/"):
            path.unlink(missing_ok=True)
            continue
        owned = _trial_owned(path)  # none in a recorded folder without the sweep's mark
        for n in owned:
            with contextlib.suppress(IsADirectoryError, PermissionError):
                (path / n).unlink(missing_ok=True)
        if owned:
            clear_temporaries(path, owned)
        with contextlib.suppress(OSError):
            path.rmdir()  # only if empty: the user's files keep it
    for tmp in out.glob(".*.tmp"):
        if any(tmp.name.startswith(f".{n}.") for n in SWEEP_FILES):
            tmp.unlink(missing_ok=True)
    return found


def _shown(names: list[str]) -> str:
    files = [n for n in names if not n.endswith("/")]
    trials = len(names) - len(files)
    parts = [listed(files)] if files else []
    if trials:
        parts.append(f"{trials} trial folder{'s' if trials != 1 else ''}")
    return ", ".join(parts)


def _claim(plan: SweepPlan, resume: bool, overwrite: bool, log) -> tuple[dict, bool]:
    """With the lock held: refuse a folder that holds another sweep (or a run) unless resume or
    overwrite, and a trial folder the sweep did not make; clear it for overwrite; start
    sweep.jsonl. Returns the records to resume from and whether the folder held a sweep before."""
    out = Path(plan.out_dir)
    jsonl = out / "sweep.jsonl"
    found = sweep_files(out)
    if found and not resume and not overwrite:
        raise RunDirError(f"{out} holds a sweep ({_shown(found)}); pass --resume to continue it, or --overwrite "
                          f"to replace it (its files and trial folders only), or choose another --out")
    taken = [] if found else run_files(out)
    if taken and not overwrite:
        raise RunDirError(f"{out} holds a gengraph run ({listed(taken)}), not a sweep; choose another --out, "
                          f"or pass --overwrite to replace it (its files only)")
    previous = read_records(jsonl, log) if resume else {}
    to_run = [t.name for t in plan.trials if not _reusable(t, previous, out)]
    _refuse_taken_trials(out, to_run, [n.rstrip("/") for n in found if n.endswith("/")] if overwrite else [])
    if taken:
        names, aside = clear_run_files(out)
        log(f"note: --overwrite removed the run's files from {out}: {', '.join(names)}"
            + (f" (its report files moved into {aside}: no record says which it wrote)" if aside else ""))
    if found and overwrite:
        clear_sweep_files(out)
        log(f"note: --overwrite removed the earlier sweep from {out}: {_shown(found)}")
    # a clean file to append to (a torn last line of an interrupted write, or any damaged one, is dropped)
    atomic_write(jsonl, "".join(dumps_json(r, default=str) + "\n" for r in previous.values()))
    return previous, bool(found)


def _reusable(trial: Trial, previous: dict, out: Path) -> bool:
    """--resume keeps a trial recorded ok for the same spec whose folder is still there."""
    old = previous.get(trial.name)
    return _recorded_ok(trial, old) and (out / trial.name).is_dir()


def _recorded_ok(trial: Trial, old: dict | None) -> bool:
    return old is not None and old.get("status") == "ok" and old.get("spec_sha") == trial.spec_sha


def _refuse_taken_trials(out: Path, to_run: list[str], to_clear: list[str]) -> None:
    """Before anything is written or removed: refuse a sweep that would replace a trial folder
    (to_run) or clear one of the earlier sweep's (to_clear, --overwrite) holding what this sweep
    did not write -- another run, running or not, or the user's own files."""
    taken = [(n, why) for n in to_run if (why := _trial_conflict(out / n))]
    taken += [(n, f"holds {why}") for n in to_clear
              if n not in to_run and (why := _why_taken(out / n, _read_mark(out / n)))]
    if not taken:
        return
    shown = "; ".join(f"{out / n} {why}" for n, why in taken[:3])
    more = f"; and {len(taken) - 3} more trial folders" if len(taken) > 3 else ""
    raise RunDirError(f"{shown}{more}; a sweep writes only into trial folders it made itself: choose another "
                      f"--out, or move {'them' if len(taken) > 1 else 'it'} away")


def _payload(plan: SweepPlan, trial: Trial) -> dict:
    run_dir = (plan.out_dir / trial.name).resolve()
    return {"trial": trial.name, "index": trial.index, "values": trial.values, "set": trial.sets,
            "overrides": plan.base_overrides + trial.sets, "spec_text": plan.spec_text, "spec_file": plan.spec_file,
            "base_dir": plan.base_dir, "run_dir": str(run_dir), "run_name": f"{plan.name}/{trial.name}",
            "plugin_files": plan.plugin_files, "spec_sha": trial.spec_sha}


# --- executors ---------------------------------------------------------------------------


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


@contextlib.contextmanager
def _single_blas_thread():
    """Pool workers start with one BLAS thread each (as Dask's do): no oversubscription, same sums."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {n: os.environ.get(n) for n in names}
    for n in names:
        os.environ.setdefault(n, "1")
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


@contextlib.contextmanager
def _signals_blocked():
    """SIGINT/SIGTERM wait for the block's end (blocked in this thread, and for good in the helper
    threads a pool starts inside it, so that they reach the main thread): a signal never finds a
    pool half made or half stopped."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def _spawning_workers():
    """Pool workers started in this block begin with SIGINT ignored (exec keeps an ignored signal
    ignored), so a Ctrl-C to the process group while they import is no KeyboardInterrupt traceback
    in each; this process's own SIGINT/SIGTERM wait (blocked, not ignored) for the block's end."""
    import threading

    with _signals_blocked():
        if (threading.current_thread() is not threading.main_thread() or not hasattr(signal, "sigpending")
                or signal.SIGINT in signal.sigpending()):  # a pending Ctrl-C must not be discarded
            yield
            return
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old)  # a Ctrl-C that came meanwhile is still pending: delivered now


def _pool_worker_init():
    """A pool worker: Ctrl-C (sent to the whole process group) is the sweep's process's to handle,
    which terminates the workers; SIGTERM ends an idle worker at once; the sweep's death (kill -9)
    ends the worker too (see _exit_with_parent)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    _exit_with_parent(os.getppid())


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    """A daemon thread that ends this process when its parent is gone: after a kill -9 of the
    sweep, its workers were reparented and waited forever for tasks, holding the sweep's
    stdout/stderr open (a caller waiting on them hung). A worker only ever writes its trial's
    temporary folder, which `--resume` removes."""
    def watch():
        while True:
            time.sleep(every)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _stop_pool(pool, grace: float = 3.0) -> None:
    """Terminate the pool's workers (SIGTERM, then SIGKILL after `grace` seconds) and shut it down.
    A worker only ever writes its trial's temporary folder, which the sweep removes."""
    with _signals_blocked():  # a second Ctrl-C must not leave workers running
        procs = list((getattr(pool, "_processes", None) or {}).values())
        for p in procs:
            with contextlib.suppress(Exception):
                p.terminate()
        deadline = time.monotonic() + grace
        for p in procs:
            with contextlib.suppress(Exception):
                p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            with contextlib.suppress(Exception):
                if p.is_alive():
                    p.kill()
                    p.join(5)
        pool.shutdown(wait=True, cancel_futures=True)


def _run_inline(payloads, emit):
    for p in payloads:
        if emit(run_trial(p)):
            return


def _drain(completed, futures, emit, release=None) -> bool:
    """Record finished trials as they complete (a worker that died counts as a failed trial)
    until `emit` asks to stop (then True). Each recorded future leaves `futures` and is released."""
    for fut in completed:
        payload = futures.pop(fut)
        try:
            record = fut.result()
        except Exception as exc:  # noqa: BLE001 -- KilledWorker, ...
            record = _failed_record(payload, exc)
        if release is not None:
            release(fut)
        if emit(record):
            return True
    return False


def _failed_record(payload, exc) -> dict:
    from concurrent.futures.process import BrokenProcessPool

    error = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, BrokenProcessPool):
        error = ("the worker process died while running this trial (out of memory, a crash or os._exit in "
                 "the model, or a script that calls run_sweep without `if __name__ == \"__main__\":`)")
    return {"trial": payload["trial"], "index": payload["index"], "overrides": payload["values"],
            "set": payload["set"], "status": "failed", "error": error, "metrics": {},
            "run_dir": payload["run_dir"], "spec_sha": payload["spec_sha"], "seconds": None}


def _pool_trial(payload: dict, flight_dir: str) -> dict:
    """run_trial in a pool worker, leaving a marker while it runs: a worker that dies (os._exit,
    a crash, the OOM killer) leaves the marker of the trial it was running."""
    mark = Path(flight_dir) / str(payload["index"])
    mark.write_text(str(os.getpid()))
    record = run_trial(payload)
    if record["status"] == "interrupted":  # a signal stopped the trial: this worker ends (nothing published)
        os._exit(exit_code(record.get("signal", signal.SIGINT)))
    mark.unlink(missing_ok=True)
    return record


def _pool_round(payloads, workers, emit):
    """Run payloads in one process pool. Returns (stopped, unfinished payloads, those among them
    that were running when a worker died); unfinished is empty unless the pool broke."""
    import multiprocessing
    import shutil
    import tempfile
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    flight = tempfile.mkdtemp(prefix="gengraph-sweep-")
    unfinished = []
    pool = None
    try:
        # a signal waits here until every worker of this round is started and known (to _stop_pool)
        with _single_blas_thread(), _spawning_workers():
            pool = ProcessPoolExecutor(max_workers=min(workers, len(payloads)),
                                       mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_pool_worker_init)
            futures = {pool.submit(_pool_trial, p, flight): p for p in payloads}
        for fut in as_completed(futures):
            payload = futures.pop(fut)
            try:
                record = fut.result()
            except BrokenProcessPool:
                unfinished.append(payload)
                continue
            except Exception as exc:  # noqa: BLE001 -- recorded, the sweep goes on
                record = _failed_record(payload, exc)
            if emit(record):
                _stop_pool(pool)
                pool = None
                return True, [], []
        pool.shutdown(wait=True, cancel_futures=True)
        pool = None
        running = {int(p.name) for p in Path(flight).iterdir() if p.name.isdigit()}
    except BaseException:  # SIGINT/SIGTERM (Stop, KeyboardInterrupt): no worker outlives the sweep
        if pool is not None:
            _stop_pool(pool)
            pool = None
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(flight, ignore_errors=True)
    unfinished.sort(key=lambda p: p["index"])
    return False, unfinished, [p for p in unfinished if p["index"] in running]


def _run_pool(payloads, workers, emit):
    """A process pool; when a worker dies (BrokenProcessPool) the trials it may have been running
    are rerun one at a time in a fresh one-worker pool (the one that kills its worker again is
    recorded as failed), and the rest go on in a new pool."""
    from concurrent.futures.process import BrokenProcessPool

    pending = list(payloads)
    while pending:
        stopped, unfinished, suspects = _pool_round(pending, workers, emit)
        if stopped or not unfinished:
            return
        suspects = suspects or unfinished[:1]  # none marked (died at start-up): try the first alone
        for p in suspects:
            stopped, again, _ = _pool_round([p], 1, emit)
            if stopped:
                return
            if again and emit(_failed_record(p, BrokenProcessPool())):
                return
        pending = [p for p in unfinished if p not in suspects]


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise DaskUnavailable(f"--scheduler needs Dask's distributed scheduler, which is not installed "
                              f"({exc.name or exc}); install it with: {DASK_HINT}") from None
    return distributed


@contextlib.contextmanager
def dask_client(scheduler: str, workers: int):
    """A distributed.Client: to a running scheduler (tcp://HOST:PORT), or to a fresh LocalCluster on
    loopback (local-dask, `workers` single-threaded worker processes) that is closed afterwards."""
    distributed = _import_distributed()
    cluster = None
    try:
        if scheduler == "local-dask":
            cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                               host="127.0.0.1", dashboard_address=None)
            client = distributed.Client(cluster)
        else:
            try:
                client = distributed.Client(scheduler, timeout="15s")
            except (OSError, TimeoutError) as exc:
                raise SchedulerError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        try:
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def _run_dask(payloads, client, emit):
    """Submit every trial; each future is released as soon as its record is written, so a worker
    lost later cannot make Dask recompute (and rerun) a finished trial."""
    distributed = _import_distributed()
    futures = {}
    for p in payloads:
        fut = client.submit(run_trial, p, pure=False, key=f"gengraph-trial-{p['index']}-{os.urandom(4).hex()}")
        futures[fut] = p
    try:
        _drain(distributed.as_completed(list(futures)), futures, emit, release=lambda f: f.release())
    finally:
        left = list(futures)
        futures.clear()
        if left:
            client.cancel(left)


# --- records, summary, resume ------------------------------------------------------------


def read_records(path, log=None) -> dict:
    """Trial name -> its latest record in a sweep.jsonl. A line that is not a whole record (torn
    by a kill, edited by hand) is left out, with a note to log: its trial counts as not done."""
    out = {}
    for i, rec, why in _record_lines(Path(path)):
        why = why or _record_problem(rec)
        if why is None:
            out[rec["trial"]] = rec
            continue
        name = rec.get("trial") if isinstance(rec, dict) and isinstance(rec.get("trial"), str) else None
        out.pop(name, None)  # its latest record is the damaged one: an earlier one is out of date
        if log is not None:
            log(f"note: {path}:{i}: ignored a damaged record ({why}); "
                f"{'trial ' + repr(name) if name else 'its trial'} counts as not done")
    return out


def _record_lines(path: Path) -> list[tuple[int, object, str | None]]:
    """(line number, the line's JSON value or None, why it cannot be read or None) for each
    non-blank line of a sweep.jsonl ([] when there is none)."""
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            out.append((i, json.loads(line.decode("utf-8")), None))
        except (ValueError, RecursionError):  # bad UTF-8 or JSON, or nested past the parser's depth
            out.append((i, None, "not JSON"))
    return out


# what summaries, plots and --resume read from a record
_RECORD_FIELDS = {"trial": str, "index": int, "status": str, "overrides": dict, "set": list, "metrics": dict,
                  "run_dir": str, "spec_sha": str}


def _record_problem(rec) -> str | None:
    """Why a parsed line is not a trial record, or None."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    for key, typ in _RECORD_FIELDS.items():
        if not isinstance(rec.get(key), typ) or isinstance(rec.get(key), bool):
            return f'"{key}" missing or not a {typ.__name__}'
    if not rec["trial"]:
        return '"trial" is empty'
    if not all(isinstance(s, str) for s in rec["set"]):
        return '"set" is not a list of overrides'
    if not all(v is None or _printable_number(v) for v in rec["metrics"].values()):
        return '"metrics" is not a table of numbers'
    if not isinstance(rec.get("error"), (str, type(None))):
        return '"error" is not text'
    return None


def rank(records: list[dict], metric: str, mode: str) -> list[dict]:
    """Ok trials with the metric, best first; then ok trials without it; then failed ones (by index)."""
    by_index = sorted(records, key=lambda r: r.get("index", 0))
    scored = [r for r in by_index if r["status"] == "ok" and is_number(r["metrics"].get(metric))]
    scored.sort(key=lambda r: r["metrics"][metric], reverse=(mode == "max"))
    ids = {id(r) for r in scored}
    rest = [r for r in by_index if id(r) not in ids]
    rest.sort(key=lambda r: r["status"] != "ok")
    return scored + rest


def _columns(plan: SweepPlan, records: list[dict]) -> list[str]:
    ok = [r for r in records if r["status"] == "ok"]
    common = set.intersection(*(set(r["metrics"]) for r in ok)) if ok else set()
    others = sorted(k for k in common if k.startswith("test_") and k != plan.metric)
    return [plan.metric, *others[:2]]


def summary_table(plan: SweepPlan, ranked: list[dict], limit: int | None = None) -> str:
    """The ranked trials as an aligned text table; with limit, the best `limit` and every failed one."""
    metrics = _columns(plan, ranked)
    head = ["rank", *(a.key for a in plan.axes), *metrics, "trial", "status"]
    numbered = list(enumerate(ranked, 1))
    shown = numbered if limit is None or len(ranked) <= limit else \
        numbered[:limit] + [(i, r) for i, r in numbered[limit:] if r["status"] != "ok"]
    rows = []
    for i, r in shown:
        vals = [_fmt(r["overrides"][a.key]) if a.key in r["overrides"] else "-" for a in plan.axes]
        ms = ["-" if r["metrics"].get(m) is None else f"{r['metrics'][m]:.6g}" for m in metrics]
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {(r.get('error') or '')[:80]}"
        rows.append([str(i), *vals, *ms, r["trial"], status])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in [head, *rows]]
    if len(shown) < len(ranked):
        lines.append(f"... and {len(ranked) - len(shown)} more (all in summary.txt)")
    return "\n".join(lines)


def _axes_text(plan: SweepPlan) -> str:
    return " x ".join(f"{a.key} ({len(a.values)})" if a.values is not None and plan.method == "grid"
                      else f"{a.key} ({'log ' if a.log else ''}{a.range['low']:g}..{a.range['high']:g})"
                      if a.range else f"{a.key} ({len(a.values)} choices)" for a in plan.axes)


def header(plan: SweepPlan) -> str:
    return f"sweep {plan.name}: {plan.method}, {len(plan.trials)} trials over {_axes_text(plan)}"


def summarize(plan: SweepPlan, records: list[dict], plots: list[str]) -> dict:
    ranked = rank(records, plan.metric, plan.mode)
    best = ranked[0] if ranked and ranked[0]["status"] == "ok" and is_number(
        ranked[0]["metrics"].get(plan.metric)) else None
    ok = [r for r in records if r["status"] == "ok"]
    available = sorted({k for r in ok for k in r["metrics"]})
    return {
        "name": plan.name, "spec": plan.spec_file, "set": plan.base_overrides, "method": plan.method,
        "metric": plan.metric, "mode": plan.mode, "axes": [a.describe() for a in plan.axes],
        "out_dir": str(plan.out_dir), "n_trials": len(records), "n_ok": len(ok),
        "n_failed": sum(r["status"] != "ok" for r in records),
        "metric_found": best is not None or not ok, "metrics_available": available,
        "best": best, "plots": plots, "trials": ranked,
    }


def summary_text(plan: SweepPlan, result: dict, limit: int | None = None) -> str:
    lines = [header(plan), f"ranked by {plan.metric} ({plan.mode}); {result['n_ok']} ok, "
                           f"{result['n_failed']} failed", "", summary_table(plan, result["trials"], limit)]
    best = result["best"]
    if best is not None:
        lines += ["", f"best: {best['trial']}  {plan.metric} = {best['metrics'][plan.metric]:.6g}  "
                      f"({' '.join(best['set'])})", f"      {best['run_dir']}"]
    elif result["n_ok"]:
        lines += ["", f"no trial reports {plan.metric!r}; available: {', '.join(result['metrics_available'])}"]
    return "\n".join(lines) + "\n"


def _write_plots(plan: SweepPlan, records: list[dict], log) -> list[str]:
    for name in PLOT_NAMES:
        (plan.out_dir / name).unlink(missing_ok=True)
    title = f"{plan.name}: {plan.metric} ({plan.mode})"
    if plan.method == "grid" and len(plan.axes) == 2:
        name, draw = "heatmap.png", lambda p: sweep_plots.heatmap(plan.axes, records, plan.metric, plan.mode, p, title)
    elif len(plan.axes) == 1:
        name, draw = "curve.png", lambda p: sweep_plots.curve(plan.axes[0], records, plan.metric, plan.mode, p, title)
    else:
        name, draw = "axes.png", lambda p: sweep_plots.panels(plan.axes, records, plan.metric, plan.mode, p, title)
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            draw(plan.out_dir / name)
    except Exception as exc:  # noqa: BLE001 -- a figure must never cost the sweep its records
        # a note, not a RuntimeWarning: the CLI silences those (NumPy's), and the plot went missing unsaid
        log(f"note: sweep plot {name} not written: {type(exc).__name__}: {exc}")
        return []
    return [name]


def _log_stderr(*args, **_kw) -> None:
    print(*args, file=sys.stderr)


def run_sweep(plan: SweepPlan, *, workers: int | None = None, scheduler=None, resume: bool = False,
              overwrite: bool = False, on_result=None, plots: bool = True, on_start=None, log=None) -> dict:
    """Run the trials (skipping those recorded ok with --resume) and write the sweep's files.

    scheduler: None (process pool; workers=1 runs in this process), "local-dask", a scheduler
    address such as "tcp://127.0.0.1:8786", or a distributed.Client. on_result(record, done, total)
    is called in this process as each trial finishes (skipped ones come with record["skipped"]).
    The sweep folder is locked while the sweep runs (RunDirError if another process holds it);
    a folder that holds another sweep is refused (RunDirError) unless resume (continue it) or
    overwrite (replace it; the user's own files stay). on_start() is called once the folder is
    claimed, before any trial runs; log(message) gets notes (a stale lock taken over, ...).
    SIGINT/SIGTERM stop the sweep (SweepInterrupted, exit code 130/143) with the finished trials
    recorded. Returns the summary (as sweep.json holds it).
    """
    if resume and overwrite:
        raise RunDirError("--resume continues a sweep and --overwrite replaces it: pass one of them")
    log = log or _log_stderr
    workers = workers or default_workers()
    out = Path(plan.out_dir)
    with SignalGuard() as guard:
        lock = None
        try:
            if isinstance(scheduler, str):  # a missing Dask is said before the folder is claimed
                _import_distributed()
            with guard.deferred():  # a signal waits until the lock is held (and released again below)
                lock = open_run_dir(out, log)
                previous, held_a_sweep = _claim(plan, resume, overwrite, log)
            if on_start is not None:
                on_start()
            try:
                return _run_claimed(plan, guard, previous, workers=workers, scheduler=scheduler,
                                    on_result=on_result, plots=plots, log=log)
            except SchedulerError:  # no trial ran: a sweep file started here would refuse the retry
                if not held_a_sweep:
                    (out / "sweep.jsonl").unlink(missing_ok=True)
                raise
        except Stop as stop:  # before any trial ran
            raise SweepInterrupted(out, stop.signum) from None
        finally:
            guard.raising = False  # from here on a signal only waits: the lock is released whatever comes
            if lock is not None:
                lock.release()


def _run_claimed(plan: SweepPlan, guard: SignalGuard, previous: dict, *, workers, scheduler, on_result,
                 plots, log) -> dict:
    out = Path(plan.out_dir)
    jsonl = out / "sweep.jsonl"
    records, todo = {}, []
    for t in plan.trials:
        old = previous.get(t.name)
        if _reusable(t, previous, out):
            # what the trial is comes from the plan (the same spec); only its results from the record
            records[t.name] = {**old, "index": t.index, "overrides": t.values, "set": t.sets}
            continue
        if _recorded_ok(t, old):  # sweep.json must not point at a folder that is gone
            log(f"note: trial {t.name} is recorded in sweep.jsonl but its folder {out / t.name} is missing; "
                "running it again")
        todo.append(t)
    total, interrupted = len(plan.trials), []
    attempt = f"{os.getpid()}-{time.time_ns()}-{os.urandom(4).hex()}"

    def emit(record) -> bool:
        """Publish and record one finished trial; True asks the executor to stop (a signal reached a trial)."""
        if record["status"] == "interrupted":
            interrupted.append(record.get("signal", signal.SIGINT))
            return True
        tmp = record.pop("_tmp", None)
        with guard.deferred():  # the trial's folder appears only together with its line in sweep.jsonl
            if tmp is not None:
                publish_record(record, Path(tmp), attempt)
            records[record["trial"]] = record
            with open(jsonl, "a", encoding="utf-8") as fh:
                fh.write(dumps_json(record, default=str) + "\n")
        if on_result is not None:
            on_result(record, len(records), total)
        return False

    # local executors leave publishing to emit (this process); Dask workers publish on their own file system
    local = scheduler is None
    payloads = [{**_payload(plan, t), "attempt": attempt, "publish": not local} for t in todo]
    try:
        if on_result is not None:
            for i, name in enumerate(records):
                on_result({**records[name], "skipped": True}, i + 1, total)
        _remove_leftovers(out)
        if not payloads:
            pass
        elif scheduler is not None and not isinstance(scheduler, str):
            _run_dask(payloads, scheduler, emit)
        elif scheduler is not None:  # connected only when there are trials to run (not to re-rank a finished sweep)
            with dask_client(scheduler, workers) as client:
                _run_dask(payloads, client, emit)
        elif workers == 1 or len(payloads) == 1:
            _run_inline(payloads, emit)
        else:
            _run_pool(payloads, workers, emit)
    except Stop as stop:
        guard.raising = False
        interrupted.append(stop.signum)
    except KeyboardInterrupt:  # outside the main thread's handlers (no SignalGuard there)
        interrupted.append(signal.SIGINT)
    guard.raising = False  # the records are written whatever signal comes now; it sets the exit code
    _remove_leftovers(out)
    # one line per trial, in trial order; records of trials no longer in the plan are kept after them
    order = {t.name: t.index for t in plan.trials}
    kept = [records[t.name] for t in plan.trials if t.name in records]
    stale = [r for n, r in previous.items() if n not in order]
    atomic_write(jsonl, "".join(dumps_json(r, default=str) + "\n" for r in kept + stale))
    plot_files = _write_plots(plan, kept, log) if plots and kept else []
    result = summarize(plan, kept, plot_files)
    result["complete"] = len(kept) == total
    atomic_write(out / "sweep.json", dumps_json(result, indent=1, default=str))
    atomic_write(out / "summary.txt", summary_text(plan, result))
    if not interrupted and guard.received is not None:
        interrupted.append(guard.received)
    if interrupted:
        raise SweepInterrupted(out, interrupted[0])
    return result
