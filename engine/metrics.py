"""Facts about graph nodes and node lists: FLOPs, bytes, parameter counts, kinds, groups, totals.

Works on plain node lists (and on anything with ``nodes``, ``outputs`` and ``updates``,
like a views.GraphView), so it serves any program of any plugin. Unknown (batch)
dimensions count as `batch`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .graph import Node
from .ops import OPS

DEFAULT_BATCH = 128


def fmt_shape(shape, scalar="scalar") -> str:
    """(None, 64) -> "?x64"; () -> "scalar" (or the `scalar` argument)."""
    return "x".join("?" if d is None else str(d) for d in shape) if len(shape) else scalar


def concrete(shape, batch: int) -> tuple:
    return tuple(batch if d is None else d for d in shape)


def n_elements(shape, batch: int) -> int:
    return int(np.prod(concrete(shape, batch), dtype=np.int64))


def param_count(node: Node) -> int:
    return int(np.prod(node.shape, dtype=np.int64)) if node.op == "param" else 0


def node_flops(node: Node, batch: int = DEFAULT_BATCH) -> int:
    """Estimated floating-point operations: the op's `flops` rule, else one per output element.

    Leaves and views (reshape, transpose, stop_gradient, ...) cost nothing; unknown
    (batch) dimensions count as `batch`.
    """
    if node.is_leaf:
        return 0
    op = OPS.get(node.op)
    if op is not None and op.returns_view_of_input:
        return 0
    out = concrete(node.shape, batch)
    if op is not None and op.flops is not None:
        return int(op.flops(out, *(concrete(i.shape, batch) for i in node.inputs), **node.attrs))
    return int(np.prod(out, dtype=np.int64))


def node_bytes(node: Node, batch: int = DEFAULT_BATCH) -> int:
    return n_elements(node.shape, batch) * node.dtype.itemsize


def is_backward(node: Node) -> bool:
    return node.scope == "grad" or node.scope.startswith("grad/")


def classify(nodes) -> dict[int, str]:
    """node id -> "input" | "param" | "state" | "constant" | "forward" | "backward" | "update".

    backward: built by `grad` (scope grad/...); update: any other op computed from a
    gradient (optimizer steps, gradient-norm monitors); forward: everything else.
    """
    kinds: dict[int, str] = {}
    for n in nodes:
        if n.is_leaf:
            kinds[n.id] = n.op
        elif is_backward(n):
            kinds[n.id] = "backward"
        elif any(kinds.get(i.id) in ("backward", "update") for i in n.inputs):
            kinds[n.id] = "update"
        else:
            kinds[n.id] = "forward"
    return kinds


UNSCOPED_UPDATES, UNSCOPED = "(optimizer/updates)", "(no scope)"


def collapse_groups(nodes, depth: int | None) -> dict[int, str | None]:
    """node id -> its group with --collapse DEPTH (None: the node stays on its own).

    Scoped nodes group by the first `depth` components of their scope; unscoped inputs
    stay nodes; other unscoped nodes go to "(optimizer/updates)" when they are update ops
    or state, or feed only such nodes (learning rates, bias corrections), else "(no scope)".
    """
    if not depth:
        return {n.id: None for n in nodes}
    kinds = classify(nodes)
    users: dict[int, list] = {}
    for n in nodes:
        for i in n.inputs:
            users.setdefault(i.id, []).append(n.id)
    key: dict[int, str | None] = {}
    for n in reversed(nodes):
        if n.scope:
            key[n.id] = "/".join(n.scope.split("/")[:depth])
        elif n.op == "input":
            key[n.id] = None
        elif kinds[n.id] in ("update", "state") or (
                users.get(n.id) and all(key.get(u) == UNSCOPED_UPDATES for u in users[n.id])):
            key[n.id] = UNSCOPED_UPDATES
        else:
            key[n.id] = UNSCOPED
    return key


def group_kind(members, kinds) -> str:
    """A collapsed group's kind: the most common of its ops' kinds (forward on a tie)."""
    count = Counter(kinds[n.id] for n in members if kinds[n.id] in ("forward", "backward", "update"))
    if not count:
        return "forward"
    best = max(count.values())
    return next(k for k in ("forward", "backward", "update") if count.get(k) == best)


@dataclass
class Totals:
    """Counts and sizes of one stage of one program (see totals_of)."""

    nodes: int
    leaves: int
    by_op: dict
    params: int
    param_tensors: int
    state: int
    flops: int
    activation_bytes: int
    peak_bytes: int
    backward_nodes: int


def totals_of(view, batch: int = DEFAULT_BATCH) -> Totals:
    nodes = view.nodes
    kinds = classify(nodes)
    params = [n for n in nodes if n.op == "param"]
    return Totals(
        nodes=len(nodes), leaves=sum(n.is_leaf for n in nodes),
        by_op=dict(sorted(Counter(n.op for n in nodes).items(), key=lambda kv: (-kv[1], kv[0]))),
        params=sum(param_count(n) for n in params), param_tensors=len(params),
        state=sum(int(np.prod(n.shape, dtype=np.int64)) for n in nodes if n.op == "state"),
        flops=sum(node_flops(n, batch) for n in nodes),
        activation_bytes=sum(node_bytes(n, batch) for n in nodes if not n.is_leaf),
        peak_bytes=peak_live_bytes(view, batch),
        backward_nodes=sum(k == "backward" for k in kinds.values()))


def peak_live_bytes(view, batch: int = DEFAULT_BATCH) -> int:
    """Most bytes of non-leaf values alive at once when the nodes run in this order.

    A value dies after its last use unless it is an output or an update; views are free.
    """
    keep = {o.id for o in view.outputs.values()} | {v.id for _, v in view.updates}
    ops_ = [n for n in view.nodes if not n.is_leaf]
    last = {}
    for step, n in enumerate(ops_):
        for i in n.inputs:
            last[i.id] = step
    live, peak, size = 0, 0, {}
    for step, n in enumerate(ops_):
        op = OPS.get(n.op)
        size[n.id] = 0 if op is not None and op.returns_view_of_input else node_bytes(n, batch)
        live += size[n.id]
        peak = max(peak, live)
        for i in {i.id for i in n.inputs}:
            if last.get(i) == step and i in size and i not in keep:
                live -= size[i]
    return peak
