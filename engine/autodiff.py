"""Symbolic reverse mode: `grad` adds the gradient's nodes to the same graph.

Walks the nodes between `y` and `wrt` in reverse topological order, calls each op's
per-input VJP, sums fan-in and sums broadcast gradients back to each input's shape. An
input the op declares ZERO gets no gradient from it; a float input with no VJP at all is
a GradientError (never a silent zero), and so is a VJP whose result does not have its
input's shape.
The result is ordinary graph, so it can be compiled, inspected or differentiated again.
"""

from __future__ import annotations

from .graph import Node, topo_order
from .ops import OPS, ZERO, ShapeError
from .ops import add, ones_like, sum_to, zeros_like


class GradientError(ValueError):
    """An op cannot be differentiated with respect to an input, or its VJP is wrong."""


def grad(y: Node, wrt, seed: Node | None = None):
    """Gradients of scalar `y` (or of sum(seed * y)) with respect to each node of `wrt`.

    `wrt` may be a node or a list of nodes; the result has the same form. Nodes that `y`
    does not depend on get zeros.
    """
    single = isinstance(wrt, Node)
    targets = [wrt] if single else list(wrt)
    if seed is None:
        if y.shape != ():
            raise ValueError(f"grad needs a scalar output or a seed; {y!r} has shape {y.shape}")
        with y.graph.scope("grad"):
            seed = ones_like(y)
    order = topo_order([y])
    # only nodes that depend on a target carry gradient
    live = {id(t) for t in targets}
    for node in order:
        if id(node) not in live and any(id(i) in live for i in node.inputs):
            live.add(id(node))
    grads: dict[int, Node] = {id(y): seed}
    for node in reversed(order):
        g = grads.get(id(node))
        if g is None or node.is_leaf:
            continue
        op = OPS[node.op]
        for i, inp in enumerate(node.inputs):
            if id(inp) not in live or inp.dtype.kind != "f":
                continue
            vjp = op.vjp_for(i)
            if vjp is ZERO:
                continue
            if vjp is None:
                raise GradientError(f'op "{node.op}" has no VJP for its input {i} ({inp.label}, {inp.dtype}) at '
                                    f"{node.label}; declare one, or ZERO if its derivative is zero")
            with node.graph.scope(_grad_scope(node)):
                raw = vjp(g, node, *node.inputs, **node.attrs)
                try:
                    gi = sum_to(raw, inp)
                except ShapeError:  # smaller than the input (the VJP reduced it) or not broadcastable
                    gi = raw
                if not _same_shape(gi.shape, inp.shape):
                    raise GradientError(f'the VJP of op "{node.op}" for its input {i} ({inp.label}) returned shape '
                                        f"{gi.shape}, not the input's shape {inp.shape}")
                prev = grads.get(id(inp))
                grads[id(inp)] = gi if prev is None else add(prev, gi)
    out = [grads.get(id(t)) if id(t) in grads else zeros_like(t) for t in targets]
    return out[0] if single else out


def _same_shape(a, b) -> bool:
    """Equal shapes, an unknown (None) dimension matching any size."""
    return len(a) == len(b) and all(x == y or x is None or y is None for x, y in zip(a, b))


def _grad_scope(node: Node) -> str:
    # gradient nodes live under grad/<forward scope>, so graphs show forward vs backward
    return "grad" + ("/" + node.scope if node.scope and not node.scope.startswith("grad") else "")
