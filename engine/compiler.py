"""`compile`: outputs (+ updates) of a graph -> an optimized, scheduled Program."""

from __future__ import annotations

from .backend import get_backend
from .graph import Graph, Node, topo_order
from .ops import RandomStreams
from .passes import DEFAULT_PASSES, EVAL_PASSES, run_passes
from .program import Program


class RunContext:
    """What kernels may need at run time: random streams and the compute dtype."""

    def __init__(self, graph: Graph, xp):
        self.dtype = graph.dtype
        streams = graph.streams
        if streams is None or streams.xp is not xp:
            streams = graph.streams = RandomStreams(graph.seed, xp)
        self.streams = streams

    def rng(self, stream):
        return self.streams.rng(stream)


def compile(graph: Graph, outputs, updates=None, *, backend="numpy", passes=DEFAULT_PASSES, debug=False,
            count_calls=False, training=None) -> Program:
    """Compile outputs (a node, list or dict of nodes) and in-place `updates` {leaf: new value}.

    Updates are computed from the values before the run and written after it, so
    every output sees the old parameters. The backend is "numpy" or "cupy".

    `training` keeps training-only ops such as dropout; an evaluation program
    (training=False) replaces them by the identity. The default is whether the program
    updates a parameter: a sampler that only advances state (Langevin or PCD chains) is
    not training.
    """
    xp = get_backend(backend)
    graph.move_to(xp)
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
        if value.shape != target.shape and None not in value.shape:
            raise ValueError(f"update of {target.label}: shape {value.shape} != {target.shape}")
    targets = list(updates)
    everything = outs + [updates[t] for t in targets]
    built = len(topo_order(everything))
    training = any(t.op == "param" for t in updates) if training is None else bool(training)
    if not training:
        passes = tuple(EVAL_PASSES) + tuple(passes)
    everything, stats = run_passes(everything, passes)
    outs, values = everything[:len(outs)], everything[len(outs):]
    order = topo_order(everything + targets)
    feeds = [n for n in order if n.op == "input"]
    for n in feeds:
        if not n.name:
            raise ValueError("every input node needs a name")
    ctx = RunContext(graph, xp)
    program = Program(graph, order, feeds, outs, keys, list(zip(targets, values)), xp, ctx, debug=debug,
                      count=count_calls, pass_stats=stats, built_nodes=built)
    program.training = training
    return program
