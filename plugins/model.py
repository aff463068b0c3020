"""What a model plugin is and what its `build` returns.

A plugin is an object registered under a kind name (entry-point group
``gengraph.plugins``). It declares `schema` (a Table of its [model] keys), a one-line
`help`, and `build(cfg, graph, data, rng) -> Model`. Optional hooks let it fit in
closed form (`fit`), replace the per-batch step (`train_batch`), and report final
metrics, plots and samples (`report`). The trainer does the rest.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from gengraph.engine import Graph, Node

from .registry import PLUGIN_GROUP, Registry
from gengraph.engine import compile
from gengraph.plugins.spec.schema import Table

MODELS = Registry("model kind", entry_point_group=PLUGIN_GROUP)


class ModelConfigError(ValueError):
    """A plugin's complaint about the spec (e.g. layer sizes that don't fit the data).

    `path` is the dotted spec key at fault ("model.n_visible"); the runner turns it into
    a SpecError with the file and line. `also`: other keys the check is about (a U-Net's groups
    against its channels), so that the error points at the one the user gave (runner.blamed_key).
    """

    def __init__(self, path: str, message: str, also: tuple = ()):
        self.path, self.message, self.also = path, message, tuple(also)
        self.more: tuple = ()  # further complaints about other keys, reported with this one (`together`)
        super().__init__(f"{path}: {message}")

    @classmethod
    def together(cls, errors: list) -> "ModelConfigError":
        """The first of `errors` carrying the others: independent parts of a model (an encoder and a
        decoder) checked one after the other are reported in one pass, as the spec's key errors are."""
        first = errors[0]
        first.more = tuple(first.more) + tuple(e for err in errors[1:] for e in (err, *err.more))
        return first

    def all(self) -> list:
        """This complaint and those it carries."""
        return [self, *self.more]


@dataclass
class Model:
    graph: Graph
    params: list[Node]
    loss: Node  # scalar training objective for a batch
    inputs: dict[str, Node]  # fed per run, by name
    metrics: dict[str, Node] = field(default_factory=dict)  # batch means, logged per epoch (loss included)
    train_updates: dict = field(default_factory=dict)  # extra state updates each step (chains, buffers)
    programs: dict = field(default_factory=dict)  # name -> (outputs dict, updates dict) for other programs
    program_rows: dict = field(default_factory=dict)  # name -> the rows a program runs at, where not output.samples
    extras: dict = field(default_factory=dict)  # plugin-specific nodes or values
    feeds: Callable | None = None  # (x, y) arrays -> {input name: array}
    prediction: Node | None = None  # a supervised model's output (what `predict` programs return)
    n_labels: int = 0  # > 0: class-conditional; `sample` takes label = 0..n_labels-1
    _compiled: dict = field(default_factory=dict, init=False, repr=False)  # program() cache

    def program(self, name: str, ctx=None):
        """The compiled program `name` of `programs`: the trainer's copy when a run has one,
        else compiled here once (e.g. in tests) on the run's backend."""
        if ctx is not None and name in ctx.programs:
            return ctx.programs[name]
        cache = self._compiled
        if name not in cache:
            outputs, updates = self.programs[name]
            cache[name] = compile(self.graph, outputs, updates, backend=getattr(ctx, "backend", "numpy"))
        return cache[name]

    def feed(self, x, y):
        if self.feeds is not None:
            return self.feeds(x, y)
        out = {"x": x}
        if "y" in self.inputs and y is not None:
            out["y"] = y
        return out


class ModelPlugin:
    """Base class with the optional hooks' defaults; subclasses set kind, help, schema, build."""
    kind = ""
    help = ""
    schema = None
    tasks = ("regression", "classification", "unsupervised")
    trains_by_gradient = True  # False: `fit` does everything (closed-form solvers)
    # names that an overridden `epoch_metrics` / `report` may add (None: not declared), so that
    # validate can check train.early_stopping.metric and sweep.metric before anything runs
    epoch_metric_names: tuple[str, ...] | None = None
    summary_metric_names: tuple[str, ...] | None = None
    # names among those whose summary.json values are lists, tables or flags (coefficients), not numbers to rank by
    summary_data_names: tuple[str, ...] = ()

    def build(self, cfg: dict, graph: Graph, data, rng: np.random.Generator) -> Model:
        raise NotImplementedError

    def fit(self, model: Model, data, ctx) -> bool:
        """Fit without the gradient trainer (e.g. closed form); return True if done."""
        return False

    def fits_without_gradients(self, model: Model) -> bool:
        """Whether `fit` will do everything for this model (its config chose a closed form): then
        `gengraph graph` shows the evaluate program by default, not a train_step that never runs."""
        return not self.trains_by_gradient

    def train_batch(self, model: Model, programs: dict, feeds: dict, ctx) -> dict:
        """One optimisation step on a batch; returns the batch's logged values."""
        return programs["train_step"].run(feeds)

    def epoch_metrics(self, model: Model, data, ctx, epoch: int) -> dict:
        """Extra values for this epoch's metrics line (e.g. an AIS log-likelihood); default none."""
        return {}

    def loss_label(self, cfg: dict) -> str:
        """What the training loss is, for the title of loss.png (default: just "loss")."""
        return "loss"

    def report(self, model: Model, data, ctx) -> dict:
        """Final metrics under stable names (test_mse, test_accuracy, ...); may write plots."""
        return {}

    # Generative kinds override `sample`; `gengraph sample` and `Run.sample` call it on a
    # model rebuilt from a finished run's spec and checkpoint.
    n_labels = 0  # > 0: the model is class-conditional and `sample` takes label=0..n_labels-1

    def sample(self, model: Model, data, ctx, n: int, *, label: int | None = None, **options) -> np.ndarray:
        """n new examples in data units (image kinds: N x C x H x W or N x D as the data).

        `label` conditions a class-conditional model; `options` are kind-specific
        (e.g. sampler, steps, guidance). Kinds that cannot generate keep this default.
        """
        raise ModelConfigError("model.kind", f'a "{self.kind}" model does not generate samples')


# the data tasks (datasets.base.TASKS, whose package imports this module's importers: not imported here)
TASKS = ("regression", "classification", "unsupervised")


# the hooks the runner calls on a plugin (the base class's methods)
HOOKS = tuple(name for name, value in vars(ModelPlugin).items() if callable(value) and not name.startswith("_"))


def resembled_hook(name: str) -> str | None:
    """The hook that a method name looks like a slip of the keyboard for, else None.

    Close by difflib (cutoff 0.8: "reprot", "smaple", "buidl", "trainbatch" are; "train_step",
    "fitted", "build_net" are not), and not a word of its own: a name that contains the hook extends
    it ("sampler", "resample", "reports"), and one that changes a letter rather than swapping, dropping
    or doubling one is mostly another word ("simple", "built", "export", "retort")."""
    low = name.lower()
    for hook in difflib.get_close_matches(low, HOOKS, n=3, cutoff=0.8):
        if low != hook and hook in low:
            continue
        a, b = Counter(low), Counter(hook)
        if sum(((a - b) + (b - a)).values()) <= 1:
            return hook
    return None


def misspelt_hooks(plugin) -> list[tuple[type, str, str]]:
    """(class, method, hook) for each public method of the plugin's own classes (not the base
    class's) whose name resembles a hook that the plugin does not override: the hook never runs."""
    found, seen = [], set()
    for cls in type(plugin).__mro__:
        if cls in ModelPlugin.__mro__:
            continue
        for name, value in vars(cls).items():
            if name.startswith("_") or name in seen or name in HOOKS:
                continue
            seen.add(name)
            if not (callable(value) or isinstance(value, (staticmethod, classmethod, property))):
                continue
            hook = resembled_hook(name)
            if hook is not None and getattr(type(plugin), hook, None) in (None, getattr(ModelPlugin, hook)):
                found.append((cls, name, hook))
    return found


def _warn_misspelt(plugin, cls, name, hook) -> None:
    """A warning at the method's own line: a helper may resemble a hook on purpose, so it is not refused."""
    value = vars(cls)[name]
    fn = getattr(value, "fget", None) or getattr(value, "__func__", None) or value
    code = getattr(fn, "__code__", None)
    warnings.warn_explicit(
        f'plugin {cls.__qualname__} (kind "{plugin.kind}"): its method {name}() looks like a misspelling of '
        f"the hook {hook}(), which it does not define, so {name}() is never called; rename it {hook}, or give "
        f"a helper a name that does not resemble a hook (e.g. _{name})", UserWarning,
        code.co_filename if code else cls.__module__, code.co_firstlineno if code else 0, module=cls.__module__,
        registry=_WARNED)


_WARNED: dict = {}  # warn_explicit's registry: one warning per method and process, as warnings.warn


def plugin_contract_issue(plugin) -> str | None:
    """What a plugin object declares wrongly (checked as its file registers it), else None. A method
    whose name looks like a misspelt hook is warned about (UserWarning) when nothing is wrong."""
    slips = misspelt_hooks(plugin)
    why = _declaration_issue(plugin, slips)
    if why is None:
        for cls, name, hook in slips:
            _warn_misspelt(plugin, cls, name, hook)
    return why


def _declaration_issue(plugin, slips) -> str | None:
    kind = plugin.kind
    if not isinstance(kind, str) or not kind.isprintable() or re.search(r"\s", kind):
        return f"kind must be a name without spaces or control characters (a spec writes it as model.kind), " \
               f"found {kind!r}"
    if type(plugin).build is ModelPlugin.build:
        return "the plugin defines no build(cfg, graph, data, rng) method" + "".join(
            f"; its method {name}() looks like a misspelling of build" for _, name, hook in slips if hook == "build")
    try:
        schema = plugin.schema
    except Exception as exc:  # a property that fails
        return f"reading its schema raised {type(exc).__name__}: {exc}"
    if not isinstance(schema, Table):
        return (f"schema must be a gengraph.plugins.spec.schema.Table of Fields (the [model] keys), "
                f"found {type(schema).__name__}")
    if "kind" in schema.fields:
        return "its schema declares \"kind\", which is the spec's own key (model.kind); name the field otherwise"
    tasks = plugin.tasks
    if not _names(tasks) or not tasks or any(t not in TASKS for t in tasks):
        return f"tasks must be a tuple of some of {', '.join(TASKS)}, found {tasks!r}"
    for name in ("epoch_metric_names", "summary_metric_names", "summary_data_names"):
        names = getattr(plugin, name, None)
        if names is not None and not _names(names):
            return f"{name} must be a tuple of metric names (strings), found {names!r}"
    return None


def _names(value) -> bool:
    """A collection of strings (a tuple, list or set), not one string (whose letters it would be)."""
    return isinstance(value, (tuple, list, set, frozenset)) and all(isinstance(n, str) for n in value)


# installed (entry-point) plugins are held to the same declarations as --plugin files
MODELS.check = plugin_contract_issue
