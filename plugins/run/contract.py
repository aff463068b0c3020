"""What a model plugin's hooks must give back, checked where the runner calls them.

A plugin author's ordinary slip (build returning a tuple, a metric that is a float or a vector,
report returning a list) would otherwise surface as an AttributeError or TypeError deep inside
the runner or the engine, naming neither the plugin nor what was expected. Each check raises
PluginError naming the kind, the plugin's file (or module) and the hook.
"""

from __future__ import annotations

import inspect
import sys
from contextlib import contextmanager
from collections.abc import Mapping

from gengraph.engine import Node, to_numpy
from gengraph.engine.errors import UserError
from gengraph.engine.ops.registry import _fmt
from gengraph.plugins.model import Model, ModelConfigError
from gengraph.plugins.registry import UnknownKind
from gengraph.plugins.run.loading import deepest_line, plugin_source
from gengraph.plugins.spec.errors import with_article


class PluginError(UserError, TypeError):
    """A model plugin that broke its contract with the runner (a programming error in the plugin)."""


class PluginCrash(RuntimeError):
    """An exception a plugin's own code raised in one of its hooks: a bug of the plugin's (not a
    mistake in the spec), so the run failed; the message names the hook and the plugin's line,
    the original exception is its __cause__ (`--debug` shows its traceback)."""


@contextmanager
def plugin_code(plugin, kind: str, hook: str, after: str = "", passes=()):
    """Run a plugin hook; an exception raised in the plugin's own file (not a user mistake it
    reports on purpose: ModelConfigError, UserError, a registry's UnknownKind for a kind the spec
    names; nor one of `passes`, which the caller reports itself) becomes PluginCrash. It printed
    a 50-line traceback through gengraph's internals without a word on which plugin or hook."""
    try:
        yield
    except (UserError, ModelConfigError, UnknownKind, MemoryError, OSError, *passes):
        raise
    except Exception as exc:
        where = plugin_frame(exc, plugin)
        if where is None:  # gengraph's own code: its traceback is the report
            raise
        raise PluginCrash(f"{_who(plugin, kind)}: its {hook} raised {type(exc).__name__}: {exc} (at {where}){after}") \
            from exc


def _who(plugin, kind: str) -> str:
    return f'the "{kind}" plugin ({plugin_source(plugin)})'


def _shown(value) -> str:
    return type(value).__name__ if not isinstance(value, (int, float, str)) else f"{type(value).__name__} {value!r}"


def call_build(plugin, kind: str, cfg, graph, data, rng) -> Model:
    """plugin.build(cfg, graph, data, rng), refusing a signature that cannot take those and a result
    that is not a Model whose loss, metrics and params the trainer can use."""
    try:
        # the method's own signature: a functools.wraps decorator's wrapper is what gets called
        inspect.signature(plugin.build, follow_wrapped=False).bind(cfg, graph, data, rng)
    except TypeError as exc:
        raise PluginError(f"{_who(plugin, kind)}: build must take (cfg, graph, data, rng): {exc}") from None
    except ValueError:  # no signature to read (a builtin): let the call say
        pass
    # ValueError and OverflowError: build_checked says "does not fit in memory" or names the spec for them
    with plugin_code(plugin, kind, "build", passes=(ValueError, OverflowError)):
        model = plugin.build(cfg, graph, data, rng)
    check_model(model, plugin, kind)
    return model


def check_model(model, plugin, kind: str) -> None:
    who = _who(plugin, kind)
    if not isinstance(model, Model):
        raise PluginError(f"{who}: build returned {_shown(model)}, not a gengraph.plugins.model.Model")
    if model.loss is not None:
        if not isinstance(model.loss, Node):
            raise PluginError(f"{who}: Model.loss is {_shown(model.loss)}, not a graph node (build it with ops on "
                              "the graph's nodes)")
        if model.loss.shape != ():
            raise PluginError(f"{who}: built a loss of shape {_fmt(model.loss.shape)}; a loss is one number per "
                              "batch: reduce it, e.g. ops.mean(...) of per-example losses such as "
                              "softmax_cross_entropy")
    if not isinstance(model.metrics, Mapping):
        raise PluginError(f"{who}: Model.metrics is {_shown(model.metrics)}, not a dict of name -> scalar node")
    for name, node in model.metrics.items():
        if not isinstance(node, Node):
            raise PluginError(f"{who}: metric {name!r} is {_shown(node)}, not a graph node")
        if node.shape != ():
            raise PluginError(f"{who}: metric {name!r} has shape {_fmt(node.shape)}; a metric is one number per "
                              "batch (reduce it, e.g. ops.mean)")
    for p in model.params:
        if not isinstance(p, Node) or p.op not in ("param", "state"):
            what = f"{with_article(p.op)} node ({p.name or p.op})" if isinstance(p, Node) else _shown(p)
            raise PluginError(f"{who}: Model.params lists {what}; it lists the trainable parameters, "
                              "graph.param(name, value) nodes")


def checked_mapping(result, plugin, kind: str, hook: str) -> dict:
    """The dict a hook (report, epoch_metrics) returned, or PluginError."""
    if not isinstance(result, Mapping) or not all(isinstance(k, str) for k in result):
        raise PluginError(f"{_who(plugin, kind)}: {hook} returned {_shown(result)}, not a dict of "
                          "name -> value")
    return dict(result)


def checked_samples(result, plugin, kind: str, n: int, data):
    """The array a `sample` hook returned: n rows of the data's features (or of its images), or
    PluginError (3 rows for 5 asked, or a list, came out as the user's samples)."""
    try:  # a NumPy or CuPy array (or a nested list of numbers)
        a = None if isinstance(result, (Mapping, str, bytes)) else to_numpy(result)
    except Exception:  # noqa: BLE001 -- ragged or object values: whatever it is, it is not the samples
        a = None
    want = (n, data.n_features)
    image = (n,) + tuple(data.image_shape) if data.image_shape is not None else None
    if a is None or a.dtype.kind not in "fiub" or a.shape not in (want, image):
        found = _shown(result) if a is None or a.dtype.kind not in "fiub" else f"an array of shape {a.shape}"
        raise PluginError(f"{_who(plugin, kind)}: sample returned {found} for n = {n}, not n rows of the "
                          f"data's {data.n_features} features (an array of shape {want})")
    return a


def plugin_frame(exc: BaseException, plugin) -> str | None:
    """FILE:LINE of the deepest frame of the plugin's own file in exc's traceback (None: built in)."""
    module = sys.modules.get(type(plugin).__module__)
    source = getattr(module, "__file__", None)
    if source is None or type(plugin).__module__.startswith("gengraph."):
        return None
    line = deepest_line(exc, source)
    return None if line is None else f"{source}:{line}"
