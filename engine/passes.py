"""Compiler passes: each maps a program's outputs to new ones, most by a small rule applied by
one rewriting driver.

A rule sees a node whose inputs were already rewritten and returns a replacement node
or None. Nodes are never mutated: a node whose inputs changed is cloned with the new
inputs (the clone keeps op, attrs, shape, name and scope, so graphs stay readable).
A pass that needs a fact of the whole graph (how many nodes read a value) gathers it
first and then rewrites (lean_silu).
"""

from __future__ import annotations

import collections
import math

import numpy as np

from .backend import to_numpy
from .graph import Node, topo_order
from .ops import OPS
from .ops.elementwise import dense_bias

FOLD_LIMIT = 1 << 16  # fold constants up to this many elements; bigger ones stay computed


def rebuild(node: Node, op: str, inputs, attrs) -> Node:
    """A new node in node's place: another op, inputs and attrs, node's shape, dtype, name, scope, origin."""
    g = node.graph
    return Node(g, next(g._ids), op, tuple(inputs), attrs, node.shape, node.dtype, node.name, node.scope, node.origin)


def derive(like: Node, op: str, inputs, attrs) -> Node:
    """A new node of another shape beside `like` (its name, scope and origin), shaped by op's
    rule; like rebuild, it is not registered in the graph (recompiling does not grow it)."""
    shape, dtype = OPS[op].shape(*inputs, **attrs)
    return Node(like.graph, next(like.graph._ids), op, tuple(inputs), attrs, tuple(shape), np.dtype(dtype), like.name,
                like.scope, like.origin)


def clone(node: Node, inputs) -> Node:
    return rebuild(node, node.op, inputs, node.attrs)


def rewrite(outputs, rule, originals=False):
    """Apply `rule` bottom-up over everything the outputs need; returns the new outputs. The rule
    gets each node with its inputs already rewritten (None: keep it), and with originals=True
    also the node it came from (whose id facts gathered on the graph before the pass know)."""
    new: dict[int, Node] = {}
    for n in topo_order(outputs):
        ins = tuple(new[id(i)] for i in n.inputs)
        m = n if all(a is b for a, b in zip(ins, n.inputs)) else clone(n, ins)
        r = rule(m, n) if originals else rule(m)
        new[id(n)] = m if r is None else r
    return [new[id(o)] for o in outputs]


def _attrs_key(attrs, memo):
    """A hashable key equal for equal attrs: each value by its repr, spelled out once per object.
    A pack's `shapes` (one entry per packed tensor) is an attribute of every unpack view of it:
    re-spelling it for each view made CSE quadratic in the number of parameters."""
    return tuple((k, _value_key(v, memo)) for k, v in sorted(attrs.items()))


def _value_key(value, memo):
    hit = memo.get(id(value))
    if hit is None or hit[0] is not value:  # memo keeps value alive, so its id is not reused meanwhile
        text = repr(value)
        # NumPy abbreviates the repr of arrays over 1000 elements ("..."), which made CSE merge two
        # different index arrays: then spell them out (repr stays the fast path for the rest)
        key = text if "..." not in text else repr(_exact(value))  # a str: _exact may hold slices (unhashable)
        hit = memo[id(value)] = (value, memo.setdefault(("key", key), len(memo)))
    return hit[1]


def _exact(value):
    """`value` as a key that tells every two different values apart (arrays by their bytes)."""
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (tuple, list)):
        return (type(value).__name__,) + tuple(_exact(v) for v in value)
    if isinstance(value, dict):
        return ("dict",) + tuple(sorted((k, _exact(v)) for k, v in value.items()))
    return value


def _const(n: Node):
    return to_numpy(n.graph.values[n.id]) if n.op == "constant" else None


def _is_scalar_const(n: Node, value) -> bool:
    v = _const(n)
    return v is not None and v.size == 1 and v.dtype.kind in "fiu" and float(v.reshape(-1)[0]) == value


def _is_negative_zero(n: Node) -> bool:
    v = _const(n)
    return v is not None and v.size == 1 and v.dtype.kind == "f" and bool(np.signbit(v.reshape(-1)[0])) \
        and float(v.reshape(-1)[0]) == 0.0


def _scalar_spread(n: Node) -> bool:
    """n broadcasts a scalar over every axis of its result: a reduction's VJP of a full reduction."""
    return (n.op in ("unreduce", "unreduce_to") and n.inputs[0].shape == () and not n.attrs.get("keepdims")
            and len(n.attrs["axis"]) == len(n.shape))


def _last_axis_range(n: Node):
    """(start, stop) of a scatter_index whose index is x[..., start:stop] of a static last axis, else None."""
    index, size = n.attrs.get("index"), n.shape[-1] if n.shape else None
    if n.op != "scatter_index" or size is None or not isinstance(index, tuple) or len(index) != 2 \
            or index[0] is not Ellipsis or not isinstance(index[1], slice) or index[1].step not in (None, 1):
        return None
    start, stop, _ = index[1].indices(size)
    return (start, stop) if start < stop else None


_SPREADS = ("unreduce", "unreduce_to", "expand_dims", "reshape", "reshape_like", "broadcast_to", "broadcast_like",
            "neg")


def _uniform_value(n: Node, depth: int = 0):
    """A 0-d node equal to every element of n when n only spreads one scalar (a mean loss's
    seed broadcast back through reductions, reshapes and negations), else None."""
    if n.shape == ():
        return n
    if depth > 16 or n.op not in _SPREADS:
        return None
    s = _uniform_value(n.inputs[0], depth + 1)
    if s is None:
        return None
    if n.op == "neg":
        return derive(n, "neg", (s,), {})
    if n.op in ("unreduce", "unreduce_to") and n.attrs.get("mean"):
        if n.op == "unreduce":  # a dynamic axis: its count at run time
            total = derive(n, "count", (n.inputs[1],), {"axis": tuple(n.attrs["axis"])})
        else:
            total = n.graph.shared_constant(np.asarray(np.prod(n.attrs["sizes"]), dtype=s.dtype))
        return derive(n, "div", (s, total), {})
    return s


# --- rules --------------------------------------------------------------------------
def cse():
    """Common-subexpression elimination: one node per (op, inputs, attrs); equal small constants merge."""
    seen: dict = {}
    memo: dict = {}  # attribute value -> key token (_value_key)

    def rule(n: Node):
        if n.op in ("input", "param", "state") or OPS.get(n.op) is not None and OPS[n.op].random:
            return None
        if n.op == "constant":
            v = _const(n)
            if v.size > 64:
                return None
            key = ("constant", str(v.dtype), v.shape, v.tobytes())
        else:
            key = (n.op, tuple(i.id for i in n.inputs), _attrs_key(n.attrs, memo))
        return seen.setdefault(key, n) if seen.get(key) is not n else None

    return rule


def constant_folding():
    """Evaluate, once and with NumPy, every op whose inputs are all constants."""

    def rule(n: Node):
        if n.is_leaf or not n.inputs or OPS[n.op].random or any(i.op != "constant" for i in n.inputs):
            return None
        if np.prod([d or 0 for d in n.shape]) > FOLD_LIMIT:
            return None
        with np.errstate(all="ignore"):
            value = OPS[n.op].forward(np, *(_const(i) for i in n.inputs), **n.attrs)
        return n.graph.shared_constant(np.array(value, dtype=n.dtype), name=n.name)

    return rule


def simplify():
    """Algebraic identities: x*1, 1*x, x+0, 0+x, x-0, x/1, --x, transpose chains, reshape chains, stop_gradient,
    sums and means over axes of size 1, a product with a spread scalar as a product with the scalar."""

    def same(a: Node, like: Node):
        return a if a.shape == like.shape and a.dtype == like.dtype else None

    def rule(n: Node):
        op, ins = n.op, n.inputs
        if op == "stop_gradient":  # only gradients care; by compile time they exist
            return ins[0]
        if op == "mul":
            if _is_scalar_const(ins[1], 1.0):
                return same(ins[0], n)
            if _is_scalar_const(ins[0], 1.0):
                return same(ins[1], n)
        if op == "add":  # x + (-0.0) is x; x + 0.0 is not (-0.0 + 0.0 = +0.0, and 1 / that is +inf)
            if _is_negative_zero(ins[1]):
                return same(ins[0], n)
            if _is_negative_zero(ins[0]):
                return same(ins[1], n)
        if op in ("sub",) and _is_scalar_const(ins[1], 0.0):
            return same(ins[0], n)
        if op == "div" and _is_scalar_const(ins[1], 1.0):
            return same(ins[0], n)
        if op == "neg" and ins[0].op == "neg":
            return ins[0].inputs[0]
        if op in ("sum", "mean") and n.attrs["axis"] and ins[0].dtype == n.dtype \
                and all(ins[0].shape[a] == 1 for a in n.attrs["axis"]):
            # reducing axes of size 1 (a one-sample axis) adds or divides nothing: a view
            if n.attrs.get("keepdims"):
                return same(ins[0], n)
            if n.shape.count(None) <= 1:
                return rebuild(n, "reshape", (ins[0],), {"shape": tuple(-1 if d is None else d for d in n.shape)})
        if op == "unreduce_to" and all(k == 1 for k in n.attrs["sizes"]):
            # putting back axes of size 1 (a one-sample axis) copies nothing: a view
            if n.attrs.get("keepdims"):
                return same(ins[0], n)
            return rebuild(n, "expand_dims", (ins[0],), {"axis": tuple(n.attrs["axis"])})
        if op == "add" and ins[0].op == ins[1].op == "scatter_index" and ins[0].inputs[1] is ins[1].inputs[1]:
            # the gradients of x[..., :k] and x[..., k:] (a head split into two): one concat instead of
            # two zero-filled scatters and their sum
            ranges = sorted((r, k) for k, r in enumerate(map(_last_axis_range, ins)) if r)
            if len(ranges) == 2 and ranges[0][0][0] == 0 and ranges[0][0][1] == ranges[1][0][0] \
                    and ranges[1][0][1] == n.shape[-1]:
                lo, hi = (ins[k].inputs[0] for _, k in ranges)
                if lo.dtype == hi.dtype == n.dtype:
                    sizes = (lo.shape[-1], hi.shape[-1])
                    return rebuild(n, "concat", (lo, hi), {"axis": len(n.shape) - 1, "sizes": sizes})
        if op == "mul" and n.shape != ():
            # a factor that only spreads one scalar (the seed of a mean loss through the VJPs of
            # its reductions): a multiply by that scalar, not by an array built to hold it
            for a, b in ((ins[0], ins[1]), (ins[1], ins[0])):
                if a.shape != () and a.op in _SPREADS and b.shape == n.shape and b.dtype == n.dtype:
                    value = _uniform_value(a)
                    if value is not None and value.dtype == n.dtype:
                        return rebuild(n, "mul", (b, value), {})
        if op == "softmax_ce_backward" and not n.attrs.get("broadcast") and _scalar_spread(ins[0]):
            # the seed of mean(cross-entropy) spread over the rows: one scalar multiply inside the
            # VJP instead of a row vector built (unreduce) and broadcast in
            u = ins[0]
            spread = "mean" if u.attrs.get("mean") else "sum"
            return rebuild(n, op, (u.inputs[0],) + ins[1:], {**n.attrs, "broadcast": spread})
        if op == "transpose" and ins[0].op == "transpose":
            inner, outer = ins[0].attrs["axes"], n.attrs["axes"]
            axes = tuple(inner[a] for a in outer)
            if axes == tuple(range(len(axes))):
                return ins[0].inputs[0]
            return rebuild(n, "transpose", (ins[0].inputs[0],), {"axes": axes})
        if op == "matmul" and len(ins[0].shape) == len(ins[1].shape) == 3 and ins[0].shape[0] == ins[1].shape[0] == 1 \
                and all(i.shape[1:].count(None) <= 1 for i in ins):
            # one pair of matrices in a batch of one (a one-sample axis, and its weight gradients): a 2-D
            # product, which BLAS can write straight into its target (a flat gradient view) unbatched
            flat = tuple(derive(i, "reshape", (i,), {"shape": tuple(-1 if d is None else d for d in i.shape[1:])})
                         for i in ins)
            return rebuild(n, "expand_dims", (derive(n, "matmul", flat, {}),), {"axis": (0,)})
        if op in ("reshape", "reshape_like") and ins[0].op in ("reshape", "reshape_like", "expand_dims"):
            inner = ins[0].inputs[0]
            if op == "reshape_like" and inner.shape == ins[1].shape and None not in inner.shape \
                    and inner.dtype == n.dtype:
                return inner
            return clone(n, (inner,) + ins[1:])
        if op in ("reshape_like", "broadcast_like") and ins[0].shape == ins[1].shape and None not in ins[0].shape:
            return ins[0]
        # values fixed by static shapes alone become constants (then fold further)
        if op in ("ones_like", "zeros_like") and None not in n.shape:
            return n.graph.shared_constant((np.ones if op == "ones_like" else np.zeros)(n.shape, n.dtype))
        if op == "count" and all(ins[0].shape[a] is not None for a in n.attrs["axis"]):
            return n.graph.shared_constant(np.prod([ins[0].shape[a] for a in n.attrs["axis"]]), dtype=n.dtype)
        return None

    return rule


def eval_mode():
    """Evaluation programs: ops flagged `train_only_identity` (dropout) become their first input."""

    def rule(n: Node):
        op = OPS.get(n.op)
        return n.inputs[0] if op is not None and op.train_only_identity else None

    return rule


_BINARY = ("add", "sub", "mul", "div")
INNER_BROADCAST_MAX = 1 << 22  # elements of the materialized operand


def inner_broadcasts():
    """An elementwise operand broadcast along inner axes (a conv bias or a norm's scale,
    (C, 1, 1) against (N, C, H, W)) is first materialized over those axes (C, H, W) by an
    `unreduce_to`, so the op broadcasts it only along the leading batch axis: NumPy's inner
    loop then runs over C*H*W contiguous elements instead of H*W at a time (float32, one
    thread, (64, 32, H, W) * (1, 32, 1, 1): 363 -> 186 us at 28x28, 8.5 -> 4.9 us at 4x4).
    The values are the same: every product or sum is the same operation on the same numbers."""

    made: dict = {}  # one materialization per (operand, axes): its other uses share it

    def rule(n: Node):
        if n.op not in _BINARY or len(n.inputs) != 2:
            return None
        for k, b in enumerate(n.inputs):
            off = len(n.shape) - len(b.shape)
            if off < 0 or b.shape == n.shape[off:]:
                continue
            first = next((a for a, d in enumerate(b.shape) if d != 1), None)
            if first is None:  # a scalar in disguise: NumPy's scalar loop is fast
                continue
            tail = n.shape[off + first:]  # b's shape from its first real axis on, once materialized
            axes = tuple(a for a in range(first, len(b.shape)) if b.shape[a] == 1 and tail[a - first] != 1)
            if not axes or None in tail or math.prod(tail) > INNER_BROADCAST_MAX:
                continue
            sizes = tuple(tail[a - first] for a in axes)
            full = made.get((b.id, axes, sizes))
            if full is None and b.op == "constant":  # materialized once, at compile time
                value = np.broadcast_to(_const(b), b.shape[:first] + tail).copy()
                full = n.graph.shared_constant(value, dtype=b.dtype)
            elif full is None:
                full = derive(b, "unreduce_to", (b,), {"axis": axes, "sizes": sizes, "keepdims": True,
                                                       "mean": False})
            made[(b.id, axes, sizes)] = full
            ins = list(n.inputs)
            ins[k] = full
            return clone(n, ins)
        return None

    return rule


def lean_silu(outputs):
    """A dense SiLU (s = sigmoid(x), then x * s) whose sigmoid nothing else reads -- no gradient
    of it in this program: sampling, evaluation -- becomes one silu_lean node: one loop and no
    array for s, the same bits; where x is a dense layer's sum x' + b that nothing else reads, one
    silu_bias(x', b) node, which adds the bias in the same pass. Training programs keep s for the
    gradient (and compute the two nodes in one loop: the silu_pair fusion, ops/elementwise.py)."""
    order = topo_order(outputs)
    readers = collections.Counter(i.id for n in order for i in n.inputs)
    readers.update(o.id for o in outputs)
    lean = {n.id for n in order if n.op == "silu" and n.inputs[1].op == "sigmoid"
            and n.inputs[1].inputs[0] is n.inputs[0] and readers[n.inputs[1].id] == 1}
    if not lean:
        return outputs

    def rule(m, n):
        if n.id not in lean:
            return None
        xb = dense_bias(m.inputs[0]) if readers[n.inputs[0].id] == 2 else None  # the sum only s and x * s read
        return rebuild(m, "silu_lean", m.inputs[:1], {}) if xb is None else rebuild(m, "silu_bias", xb, {})

    return rewrite(outputs, rule, originals=True)


def _by_rule(make_rule):
    """The pass that applies make_rule()'s rule over the whole graph."""
    return lambda outputs: rewrite(outputs, make_rule())


# a pass maps a program's outputs to new ones
EVAL_PASSES = (("eval_mode", _by_rule(eval_mode)),)  # run first when a program is compiled with training=False

DEFAULT_PASSES = (("simplify", _by_rule(simplify)), ("constant_folding", _by_rule(constant_folding)),
                  ("cse", _by_rule(cse)), ("simplify_again", _by_rule(simplify)), ("cse_again", _by_rule(cse)),
                  ("inner_broadcasts", _by_rule(inner_broadcasts)), ("lean_silu", lean_silu))


def run_passes(outputs, passes=DEFAULT_PASSES):
    """Apply passes in order; returns (new outputs, [(pass name, nodes before, nodes after)])."""
    stats = []
    count = len(topo_order(outputs))
    for name, run in passes:
        outputs = run(outputs)
        after = len(topo_order(outputs))  # the next pass's "before": one sort per pass for the stats, not two
        stats.append((name, count, after))
        count = after
    return outputs, stats
