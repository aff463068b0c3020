"""`compile_graph`: outputs (+ updates) of a graph -> an optimized, scheduled Program.

Exported from gengraph.engine as ``compile`` too (the public name the README uses);
engine code says ``compile_graph`` so the builtin ``compile`` is never shadowed.
"""

from __future__ import annotations

import numpy as np

from .backend import get_backend
from .codegen import generate
from .graph import Graph, Node, topo_order
from .heap import tune_heap
from .ops import OPS, RandomStreams
from .ops.registry import _fmt
from .passes import DEFAULT_PASSES, EVAL_PASSES, run_passes
from .program import Program


class KernelContext:
    """What kernels may need at run time: random streams and the compute dtype."""

    def __init__(self, graph: Graph, xp):
        self.dtype = graph.dtype
        streams = graph.streams
        if streams is None or streams.xp is not xp:
            streams = graph.streams = RandomStreams(graph.seed, xp)
        self.streams = streams

    def rng(self, stream):
        return self.streams.rng(stream)


def compile_graph(graph: Graph, outputs, updates=None, *, backend="numpy", passes=DEFAULT_PASSES, debug=False,
                  count_calls=False, reuse_buffers=True, direct_updates=True, fuse=True, training=None) -> Program:
    """Compile outputs (a node, list or dict of nodes) and in-place `updates` {leaf: new value}.

    Updates are computed from the values before the run and written after it, so
    every output sees the old parameters. The backend is "numpy" or "cupy".

    `training` keeps training-only ops such as dropout; an evaluation program
    (training=False) replaces them by the identity. The default is whether the program
    updates a parameter: a sampler that only advances state (Langevin or PCD chains) is
    not training. ``fuse`` lets one call compute a declared group of nodes (ops.registry.FUSIONS,
    e.g. the classifier head's softmax, loss and accuracy). ``passes=(), reuse_buffers=False,
    direct_updates=False, fuse=False`` gives the unoptimized program: the same values, computed
    node by node as built.
    """
    xp = get_backend(backend)
    graph.move_to(xp)
    if xp is np:
        tune_heap()  # steps free and re-allocate the same arrays: keep the pages (engine/heap.py)
    if isinstance(outputs, Node):
        keys, outs = "single", [outputs]
    elif isinstance(outputs, dict):
        keys, outs = list(outputs), list(outputs.values())
    else:
        keys, outs = None, list(outputs)
    updates = dict(updates or {})
    for target, value in updates.items():
        if target.op not in ("param", "state"):
            raise ValueError(f"only params and state can be updated, not {target!r}")
        if value.shape != target.shape:  # an unknown (None) axis too: a batch of 1 would broadcast silently
            raise ValueError(f"update of {target.label}: shape {_fmt(value.shape)} != {_fmt(target.shape)}"
                             + (" (the value's unknown axis may take any size at run time)"
                                if None in value.shape else ""))
    targets = list(updates)
    everything = outs + [updates[t] for t in targets]
    built_order = topo_order(everything)
    built = len(built_order)
    training = any(t.op == "param" for t in updates) if training is None else bool(training)
    if not training and any(OPS[n.op].train_only_identity for n in built_order if n.op in OPS):
        passes = tuple(EVAL_PASSES) + tuple(passes)  # semantics, not optimization: runs even with passes=()
    everything, stats = run_passes(everything, passes)
    outs, values = everything[:len(outs)], everything[len(outs):]
    order = topo_order(everything + targets)
    feeds = [n for n in order if n.op == "input"]
    for n in feeds:
        if not n.name:
            raise ValueError("every input node needs a name")
    ctx = KernelContext(graph, xp)
    program = Program(graph, order, feeds, outs, keys, list(zip(targets, values)), xp, ctx, pass_stats=stats,
                      built_nodes=built)
    program.training = training
    generate(program, debug=debug, count=count_calls, reuse_buffers=reuse_buffers, direct_updates=direct_updates,
             fuse=fuse)
    return program
