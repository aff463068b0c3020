"""A compiled Program: the runtime of straight-line Python over preassigned slots.

gengraph.engine.codegen writes the program's source (one line per kernel call, e.g.
``v12 = k12(f0, c3)``) and attaches it; running it is one Python call: no graph walk, no
name look-up per node, no shape inference (NumPy/CuPy handle a changed batch size
themselves).
"""

from __future__ import annotations

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


class Program:
    """What compile_graph returns: the scheduled nodes, feeds, outputs and updates, and the
    generated function that runs them (codegen.generate attaches it)."""

    def __init__(self, graph, order, feeds, outputs, out_keys, updates, xp, ctx, *, pass_stats=(), built_nodes=0):
        self.graph, self.nodes, self.xp, self.ctx = graph, order, xp, ctx
        self.feed_nodes = feeds
        self.feed_names = [n.name for n in feeds]
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
        args, array = [], self.xp.ndarray
        for name, dtype, ndim, exact, tail, node, rule in self._feed_fast:
            try:
                value = feeds[name]
            except KeyError:
                raise KeyError(f"missing input {name!r}; this program needs {self.feed_names}") from None
            if self._label_feeds and name in self._label_feeds and not hasattr(value, "__cuda_array_interface__"):
                value = np.asarray(value)  # a list or tuple of labels is checked too (device arrays cannot be)
                check_host_labels(value, self._label_feeds[name], name)
            if not (type(value) is array and value.dtype == dtype and value.ndim == ndim
                    and (value.shape == exact if exact is not None else tail is not None and value.shape[1:] == tail)):
                value = self._as_input(value, node, rule)  # converts, or checks an "axes" rule, or says what is wrong
            args.append(value)
        return self._shape_result(self._fn(*args))

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

