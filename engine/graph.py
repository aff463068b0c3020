"""The graph IR: a Graph owns Nodes; leaves are inputs, params, state and constants.

Nodes are immutable records once built. Arithmetic operators on nodes build new nodes
through the op registry, so ``x @ w + b`` reads like NumPy and yields graph. This module
does not import the ops (they import it): the registry installs its ``apply`` as
``Node._apply`` when gengraph.engine.ops is imported, which importing gengraph.engine does.
"""

from __future__ import annotations

import contextlib
import itertools

import numpy as np

from .backend import on_device_of, to_numpy
from .errors import GraphTooLarge

LEAF_OPS = ("input", "param", "state", "constant")


class Node:
    __slots__ = ("graph", "id", "op", "inputs", "attrs", "shape", "dtype", "name", "scope", "origin")
    __array_priority__ = 1000  # so ndarray (op) Node defers to Node's reflected operators

    def __init__(self, graph, id, op, inputs, attrs, shape, dtype, name, scope, origin):
        self.graph, self.id, self.op = graph, id, op
        self.inputs, self.attrs = tuple(inputs), attrs
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.name, self.scope, self.origin = name, scope, origin

    # --- description -------------------------------------------------------------
    @property
    def is_leaf(self) -> bool:
        return self.op in LEAF_OPS

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def label(self) -> str:
        """A readable name: the user's name, or op#id, prefixed by the scope."""
        base = self.name or f"{self.op}#{self.id}"
        return f"{self.scope}/{base}" if self.scope and not base.startswith(self.scope + "/") else base

    def __repr__(self) -> str:
        shape = "x".join("?" if d is None else str(d) for d in self.shape) or "scalar"
        return f"<Node {self.label} {shape} {self.dtype}>"

    def __hash__(self):
        return id(self)

    def __bool__(self):
        raise TypeError("a graph Node has no truth value; compare values after running a program")

    # --- operator sugar (resolved through the op registry) ------------------------
    _apply = None  # set by gengraph.engine.ops.registry: apply(op name, *inputs, **attrs) -> Node

    def _op(self, name, *args, **attrs):
        return self._apply(name, *args, **attrs)

    def __add__(self, o): return self._op("add", self, o)
    def __radd__(self, o): return self._op("add", o, self)
    def __sub__(self, o): return self._op("sub", self, o)
    def __rsub__(self, o): return self._op("sub", o, self)
    def __mul__(self, o): return self._op("mul", self, o)
    def __rmul__(self, o): return self._op("mul", o, self)
    def __truediv__(self, o): return self._op("div", self, o)
    def __rtruediv__(self, o): return self._op("div", o, self)
    def __pow__(self, o): return self._op("pow", self, o)
    def __rpow__(self, o): return self._op("pow", o, self)
    def __matmul__(self, o): return self._op("matmul", self, o)
    def __rmatmul__(self, o): return self._op("matmul", o, self)
    def __neg__(self): return self._op("neg", self)
    def __getitem__(self, index): return self._op("getitem", self, index=index)

    @property
    def T(self):
        """All axes reversed (ops.transpose with the default permutation)."""
        return self._op("transpose", self, axes=tuple(reversed(range(self.ndim))))


def _address(a) -> int:
    """Where a NumPy or CuPy array's data start."""
    return a.__array_interface__["data"][0] if isinstance(a, np.ndarray) else a.data.ptr


class Graph:
    """Owns nodes, the values of params/state/constants, and the name scopes."""

    # ~240x the largest shipped model's graph (a U-Net's 4 194 nodes with its gradients): a count
    # that unrolls into the graph (CD-k's Gibbs sweeps, residual blocks) built until memory ran out
    MAX_NODES = 1_000_000

    def __init__(self, dtype="float32", seed: int = 0):
        self.dtype = np.dtype(dtype)
        self.seed = seed
        self.nodes: list[Node] = []
        self.values: dict[int, np.ndarray] = {}  # param/state/constant values by node id
        self._ids = itertools.count()
        self._scopes: list[str] = []
        self._origin = None
        self._names: dict[str, Node] = {}
        self._shared_constants: dict[tuple, Node] = {}  # see shared_constant
        self.streams = None  # the random streams of compiled programs (made by the first compile)
        self._stream_ids = itertools.count(1 << 20)  # new_stream's numbers: above those plugins pick by hand
        # input id -> class count, for inputs that are class labels (softmax_cross_entropy): on CuPy,
        # programs check their range on the host before the upload (the kernels check on NumPy)
        self.class_labels: dict[int, int] = {}

    # --- scopes ------------------------------------------------------------------
    @contextlib.contextmanager
    def scope(self, name: str, origin=None):
        """Group nodes built inside under a name scope (e.g. a layer); origin is spec provenance."""
        self._scopes.append(name)
        prev, self._origin = self._origin, origin if origin is not None else self._origin
        try:
            yield
        finally:
            self._scopes.pop()
            self._origin = prev

    @property
    def current_scope(self) -> str:
        return "/".join(self._scopes)

    # --- node creation -----------------------------------------------------------
    def add_node(self, op, inputs=(), attrs=None, shape=(), dtype=None, name=None) -> Node:
        if len(self.nodes) >= self.MAX_NODES:
            raise GraphTooLarge(f"the graph grew past {self.MAX_NODES:,} nodes while it was built (in "
                                f"{self.current_scope or 'the top scope'}): a count in the model (layers, blocks, "
                                "unrolled sampling steps) is too large")
        for n in inputs:
            if n.graph is not self:
                raise ValueError(f"node {n!r} belongs to another graph")
        node = Node(self, next(self._ids), op, inputs, attrs or {}, shape, dtype or self.dtype,
                    name, self.current_scope, self._origin)
        self.nodes.append(node)
        if name is not None:
            full = node.label
            if full in self._names and node.is_leaf:
                raise ValueError(f'a leaf named "{full}" already exists in this graph')
            self._names.setdefault(full, node)
        return node

    def input(self, name: str, shape, dtype=None) -> Node:
        """A value fed per run; shape may start with None (batch size unknown)."""
        return self.add_node("input", shape=tuple(shape), dtype=dtype or self.dtype, name=name)

    def param(self, name: str, value) -> Node:
        """A trainable parameter with its initial value (cast to the graph's dtype)."""
        return self._leaf_with_value("param", name, value, self.dtype)

    def state(self, name: str, value, dtype=None) -> Node:
        """Non-trainable state updated by programs (optimizer moments, chains, counters)."""
        return self._leaf_with_value("state", name, value, dtype or self.dtype)

    def constant(self, value, dtype=None, name=None) -> Node:
        arr = np.asarray(value)
        if dtype is None:
            dtype = self.dtype if arr.dtype.kind in "fc" or arr.dtype.kind in "iub" and arr.ndim == 0 else arr.dtype
        return self._leaf_with_value("constant", name, arr, dtype)

    def shared_constant(self, value, dtype=None, name=None) -> Node:
        """A constant equal to `value`, made once per graph (same dtype, shape, bytes, name).

        Compiler passes make their constants here, so compiling the same outputs again does
        not grow the graph.
        """
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes(), name)
        node = self._shared_constants.get(key)
        if node is None:
            node = self._shared_constants[key] = self.constant(arr, dtype=arr.dtype, name=name)
        return node

    def _leaf_with_value(self, op, name, value, dtype) -> Node:
        arr = np.array(value, dtype=dtype)
        node = self.add_node(op, shape=arr.shape, dtype=arr.dtype, name=name)
        self.values[node.id] = arr
        return node

    def new_stream(self, prefix: str = "stream") -> str:
        """A random-stream name no other `new_stream` call of this graph returns ("stream#0", ...).

        Streams are named; gengraph.engine.ops.random.RandomStreams says how a name and the
        graph's seed give the generator.
        """
        return f"{prefix}#{next(self._stream_ids)}"

    def move_to(self, xp) -> None:
        """Keep param/state values on the backend `xp` (NumPy or CuPy), converting once."""
        moved = {}  # id(flat buffer) -> (buffer, its copy on xp): views stay views of one buffer
        convert = to_numpy if xp is np else xp.asarray  # back from the device: CuPy refuses np.asarray
        for k, v in self.values.items():
            if isinstance(v, xp.ndarray):
                continue
            base = getattr(v, "base", None)
            if (base is not None and type(base) is type(v) and base.ndim == 1 and base.dtype == v.dtype
                    and base.flags.c_contiguous and v.flags.c_contiguous):
                if id(base) not in moved:
                    moved[id(base)] = (base, convert(base))
                off = (_address(v) - _address(base)) // v.dtype.itemsize
                self.values[k] = moved[id(base)][1][off:off + v.size].reshape(v.shape)
            else:
                self.values[k] = convert(v)

    def value(self, node: Node):
        """The current value of a param, state or constant, as a NumPy array."""
        return to_numpy(self.values[node.id])

    def set_value(self, node: Node, value) -> None:
        """Overwrite a param/state value in place (compiled programs see the change); a host
        value is uploaded when the graph's values are on a GPU (resume, L-BFGS, weight averages)."""
        target = self.values[node.id]
        target[...] = on_device_of(target, value)

    # --- queries -----------------------------------------------------------------
    def params(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "param"]

    def states(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "state"]

    def find(self, label: str) -> Node:
        try:
            return self._names[label]
        except KeyError:
            raise KeyError(f'no node named "{label}"') from None

    def to_networkx(self, nodes=None):
        """A networkx.DiGraph with one vertex per node (attributes: op, shape, dtype, ...)."""
        import networkx as nx

        nodes = self.nodes if nodes is None else nodes
        keep = {n.id for n in nodes}
        g = nx.DiGraph()
        for n in nodes:
            g.add_node(n.id, op=n.op, label=n.label, name=n.name or "", scope=n.scope,
                       shape="x".join("?" if d is None else str(d) for d in n.shape),
                       dtype=str(n.dtype))
            for i, src in enumerate(n.inputs):
                if src.id in keep:
                    g.add_edge(src.id, n.id, index=i)
        return g


def topo_order(outputs) -> list[Node]:
    """Nodes reachable from outputs, inputs before users (iterative DFS, no recursion limit)."""
    order, seen = [], set()
    for out in outputs:
        if id(out) in seen:
            continue
        stack = [(out, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for src in reversed(node.inputs):
                if id(src) not in seen:
                    stack.append((src, False))
    return order
