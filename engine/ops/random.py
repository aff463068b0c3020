"""Random draws from the program's seeded streams.

Each random node names a `stream` (an int): the program draws from the generator of
that stream, derived from the graph seed with numpy.random.SeedSequence, so two nodes
never share numbers by accident and a checkpoint can save every stream's state. The
shape is static, or that of a reference input `like` (batch size known at run time).
"""

from __future__ import annotations

import contextlib

import numpy as np

from .registry import defop


def _size(like, shape):
    return like.shape if like is not None else shape


def _shape(*inputs, shape=None, stream=0, **kw):
    if inputs:
        return inputs[0].shape, inputs[0].dtype if inputs[0].dtype.kind == "f" else inputs[0].graph.dtype
    return tuple(shape), None


def _normal_forward(xp, *like, shape=None, stream=0, ctx=None):
    return ctx.rng(stream).normal(_size(like[0] if like else None, shape), ctx.dtype)


def _uniform_forward(xp, *like, shape=None, stream=0, ctx=None):
    return ctx.rng(stream).uniform(_size(like[0] if like else None, shape), ctx.dtype)


def _bernoulli_forward(xp, p, *, stream=0, ctx):
    return (ctx.rng(stream).uniform(p.shape, p.dtype) < p).astype(p.dtype)


_normal = defop("random_normal", _normal_forward, _shape, (None,), random=True, doc="standard normal draws")
_uniform = defop("random_uniform", _uniform_forward, _shape, (None,), random=True, doc="uniform draws in [0, 1)")
bernoulli = defop("bernoulli", _bernoulli_forward, lambda p, stream=0: (p.shape, p.dtype), (None,), random=True,
                  doc="0/1 draws with probabilities p (not differentiated)")


def random_normal(like=None, *, shape=None, stream=0, graph=None):
    """N(0,1) draws shaped like `like` (a node) or a static `shape` (then pass graph)."""
    if like is not None:
        return _normal(like, stream=stream)
    return _static(_normal, graph, shape, stream)


def random_uniform(like=None, *, shape=None, stream=0, graph=None):
    if like is not None:
        return _uniform(like, stream=stream)
    return _static(_uniform, graph, shape, stream)


def _static(build, graph, shape, stream):
    # a static-shape draw has no inputs: anchor it on a scalar constant of the graph
    from .registry import OPS

    op = OPS[build.__name__]
    node = graph.add_node(op.name, (), {"shape": tuple(shape), "stream": stream}, tuple(shape), graph.dtype)
    return node


class RandomStreams:
    """Generators by stream number, derived from one seed; state can be saved and restored."""

    def __init__(self, seed: int, xp=np):
        self.seed, self.xp = seed, xp
        self._gens: dict[int, object] = {}

    def rng(self, stream: int):
        gen = self._gens.get(stream)
        if gen is None:
            gen = self._gens[stream] = _Generator(self.xp, np.random.SeedSequence([self.seed, stream]))
        return gen

    def state(self) -> dict:
        return {str(k): g.state() for k, g in self._gens.items()}

    def set_state(self, state: dict) -> None:
        for k, s in state.items():
            self.rng(int(k)).set_state(s)

    @contextlib.contextmanager
    def reseeded(self, seed: int):
        """Every stream drawn afresh from `seed` inside the block; the old state comes back after.

        Sampling from a finished model uses it, so the same seed gives the same samples
        whatever the programs drew before (training, likelihood estimates)."""
        saved = self.seed, self._gens
        self.seed, self._gens = seed, {}
        try:
            yield self
        finally:
            self.seed, self._gens = saved


class _Generator:
    """NumPy's PCG64 Generator, or CuPy's generator on GPU, behind one small interface."""

    def __init__(self, xp, seq):
        self.xp = xp
        if xp is np:
            self.gen = np.random.Generator(np.random.PCG64(seq))
        else:
            self.gen = xp.random.RandomState(int(seq.generate_state(1)[0]))

    def normal(self, size, dtype):
        if self.xp is np:
            return self.gen.standard_normal(size, dtype=dtype)
        return self.gen.standard_normal(size, dtype=dtype)

    def uniform(self, size, dtype):
        if self.xp is np:
            return self.gen.random(size, dtype=dtype)
        return self.gen.random_sample(size, dtype=dtype)

    def state(self):
        return self.gen.bit_generator.state if self.xp is np else None

    def set_state(self, s):
        if self.xp is np and s is not None:
            self.gen.bit_generator.state = s
