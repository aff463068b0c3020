"""A compiled Program: the runtime of straight-line Python over preassigned slots.

gengraph.engine.codegen writes the program's source (one line per kernel call, e.g.
``v12 = k12(f0, c3)``) and attaches it; running it is one Python call: no graph walk, no
name look-up per node, no shape inference (NumPy/CuPy handle a changed batch size
themselves).
"""

from __future__ import annotations

import difflib

import numpy as np

from .backend import to_numpy
from .graph import Node
from .ops.nn import check_host_labels
from .ops.registry import ShapeError, _fmt
from .tables import program_summary


class NonFiniteError(FloatingPointError):
    """A debug-mode run met a NaN or inf; names the first node that produced one."""

    def __init__(self, node: Node):
        self.node = node
        where = f" ({node.origin})" if node.origin else ""
        super().__init__(f"non-finite value first produced by {node.label} [{node.op}]{where}")


def _cast(value, node):
    """value (NumPy or CuPy) in the node's dtype, refused if a cast to integers would truncate it."""
    if value.dtype != node.dtype:
        if node.dtype.kind in "iu" and value.dtype.kind in "fc" and bool((value != value.round()).any()):
            raise TypeError(f"input {node.name!r} takes integers ({node.dtype}); the array fed has "
                            f"fractional values, which a cast would truncate")
        value = value.astype(node.dtype)
    return value


def _closest(name, names) -> str | None:
    """The input name a misspelt feed name most likely meant (case ignored), else None."""
    folded = {str(n).lower(): n for n in names}
    hits = difflib.get_close_matches(str(name).lower(), list(folded), n=1, cutoff=0.6)
    return folded[hits[0]] if hits else None


class Program:
    """What compile_graph returns: the scheduled nodes, feeds, outputs and updates, and the
    generated function that runs them (codegen.generate attaches it)."""

    def __init__(self, graph, order, feeds, outputs, out_keys, updates, xp, ctx, *, pass_stats=(), built_nodes=0):
        self.graph, self.nodes, self.xp, self.ctx = graph, order, xp, ctx
        self.feed_nodes = feeds
        self.feed_names = [n.name for n in feeds]
        self._feed_set = frozenset(self.feed_names)
        self._graph_input_names, self._graph_inputs_at = set(), -1  # _graph_inputs' cache
        # what a fed array's shape must match: exactly, or past an unknown batch axis, or per axis
        self._feed_rules = [(n.shape, "exact" if None not in n.shape else
                             "batch" if None not in n.shape[1:] else "axes") for n in feeds]
        # run()'s fast path: an array of the node's dtype whose shape passes the rule in two compares
        self._feed_fast = [(n.name, n.dtype, len(n.shape), n.shape if kind == "exact" else None,
                            n.shape[1:] if kind == "batch" else None, n, (shape, kind))
                           for n, (shape, kind) in zip(feeds, self._feed_rules)]
        # class-label inputs of a program not on NumPy, checked on the host (the kernels check on NumPy)
        self._label_feeds = {n.name: graph.class_labels[n.id] for n in feeds
                             if n.id in graph.class_labels} if xp is not np else {}
        self.output_nodes, self._out_keys = outputs, out_keys
        self.updates = updates  # [(target leaf, value node)]
        self.pass_stats, self.built_nodes = list(pass_stats), built_nodes
        self.kernel_calls = 0  # counted only when compiled with count_calls=True
        self.source, self._fn, self.n_kernels = "", None, 0  # set by codegen.generate
        self.no_kernel: set = set()  # ids of scheduled nodes computed without a kernel call (codegen)

    # --- running -------------------------------------------------------------------------
    def run(self, feeds: dict | None = None, **kw):
        """Run once with inputs by name; returns outputs in the form they were given to compile."""
        if kw or feeds is None:
            feeds = {**(feeds or {}), **kw}
        # equal counts mean exactly the inputs (each is looked up below): only other feeds are checked
        if len(feeds) != len(self._feed_fast) and self._unknown(feeds):
            raise self._feeds_error(feeds)
        args, array = [], self.xp.ndarray
        for name, dtype, ndim, exact, tail, node, rule in self._feed_fast:
            try:
                value = feeds[name]
            except KeyError:
                raise self._feeds_error(feeds) from None
            if self._label_feeds and name in self._label_feeds and not hasattr(value, "__cuda_array_interface__"):
                value = np.asarray(value)  # a list or tuple of labels is checked too (device arrays cannot be)
                check_host_labels(value, self._label_feeds[name], name)
            if not (type(value) is array and value.dtype == dtype and value.ndim == ndim
                    and (value.shape == exact if exact is not None else tail is not None and value.shape[1:] == tail)):
                value = self._as_input(value, node, rule)  # converts, or checks an "axes" rule, or says what is wrong
            args.append(value)
        return self._shape_result(self._fn(*args))

    def _graph_inputs(self) -> set:
        """The names of the graph's input nodes (the graph may have grown since the compile)."""
        if self._graph_inputs_at != len(self.graph.nodes):
            self._graph_input_names = {n.name for n in self.graph.nodes if n.op == "input"}
            self._graph_inputs_at = len(self.graph.nodes)
        return self._graph_input_names

    def _unknown(self, feeds) -> list:
        """Fed names that are no input of the graph at all (misspelt ones). An input of the graph that
        this program does not use is passed over: one feed dict serves a model's several programs,
        and a gradient program may not need the input it is the gradient for (d(2x)/dx)."""
        taken, graph = self._feed_set, self._graph_inputs()
        return [n for n in feeds if n not in taken and n not in graph]

    def _feeds_error(self, feeds) -> KeyError:
        """The KeyError for feeds that miss an input or name an unknown one (with the input it
        probably meant), naming the inputs the program needs."""
        missing = [n for n in self.feed_names if n not in feeds]
        unknown = self._unknown(feeds)
        parts = [f"missing input{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))}"] if missing else []
        if unknown:
            named = []
            for n in unknown:
                close = _closest(n, missing) or _closest(n, self.feed_names) or _closest(n, self._graph_inputs())
                hint = "" if close is None else f" (did you mean {close!r}?)" if close in self._feed_set else \
                    f" (did you mean {close!r}? an input of the graph that this program does not use)"
                named.append(repr(n) + hint)
            parts.append(f"unknown input{'s' * (len(unknown) > 1)} {', '.join(named)}")
        return KeyError(f"{'; '.join(parts)}; this program needs {self.feed_names}")

    def run_positional(self, *arrays):
        """Fast path: inputs in `feed_names` order, already of the right dtype and device."""
        return self._shape_result(self._fn(*arrays))

    def _as_input(self, value, node, rule):
        if type(value) is not self.xp.ndarray or value.dtype != node.dtype:
            if self.xp is not np and hasattr(value, "get"):  # already on the device
                value = _cast(value, node)
            else:  # host data: checked and cast on the host, then uploaded (a device check would wait for it)
                value = self.xp.asarray(_cast(np.asarray(value), node))
        # the kernels and buffers are laid out for the declared shape: another one would give
        # wrong shapes (broadcasting) or a NumPy error that names no input
        shape, kind = rule
        if not (value.shape == shape if kind == "exact" else
                value.ndim == len(shape) and value.shape[1:] == shape[1:] if kind == "batch" else
                value.ndim == len(shape) and all(d is None or d == a for d, a in zip(shape, value.shape))):
            raise ShapeError(f"input {node.name!r}: declared shape {_fmt(shape)}, fed an array of shape "
                             f"{tuple(value.shape)}")
        return value

    def _shape_result(self, values):
        if self._out_keys is None:
            return list(values)
        if isinstance(self._out_keys, str):
            return values[0]
        return dict(zip(self._out_keys, values))

    def numpy(self, feeds=None, **kw):
        """Like run, with NumPy arrays in the result (copies back from the GPU)."""
        out = self.run(feeds, **kw)
        if isinstance(out, dict):
            return {k: to_numpy(v) for k, v in out.items()}
        if isinstance(out, list):
            return [to_numpy(v) for v in out]
        return to_numpy(out)

    def summary(self, batch: int = 128, collapse: int | None = None) -> str:
        """A text table of the scheduled nodes (op, inputs, shape, scope, params, FLOPs, origin)
        and totals: nodes by op, parameters, FLOPs and activation memory at `batch`, and what
        each compiler pass removed. See gengraph.engine.tables."""
        return program_summary(self, batch=batch, collapse=collapse)

    def __repr__(self):
        return f"<Program {self.n_kernels} kernels, inputs {self.feed_names}, {len(self.updates)} updates>"

