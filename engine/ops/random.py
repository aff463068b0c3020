"""Random draws from the program's seeded streams (named streams: see `RandomStreams`).

Each random node names its `stream`; the program draws from that stream's generator, so
two nodes never share numbers by accident and a checkpoint can save every stream's
state. The shape is static, or that of a reference input `like` (batch size known at
run time).
"""

from __future__ import annotations

import contextlib
import zlib

import numpy as np

from .registry import OPS, ZERO, defop


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


# the optional input only gives the shape (ZERO); bernoulli's draws are piecewise constant in p
# (a score-function estimator is the model's job, not the op's), so its derivative is ZERO too
_normal = defop("random_normal", _normal_forward, _shape, (ZERO,), random=True, doc="standard normal draws")
_uniform = defop("random_uniform", _uniform_forward, _shape, (ZERO,), random=True, doc="uniform draws in [0, 1)")
bernoulli = defop("bernoulli", _bernoulli_forward, lambda p, stream=0: (p.shape, p.dtype), (ZERO,), random=True,
                  doc="0/1 draws with probabilities p (zero gradient: piecewise constant in p)")


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
    op = OPS[build.__name__]
    node = graph.add_node(op.name, (), {"shape": tuple(shape), "stream": stream}, tuple(shape), graph.dtype)
    return node


def stream_name(stream) -> str:
    """The name of a stream: a string as given; an int n (a plugin's fixed stream) is "n"."""
    return stream if isinstance(stream, str) else str(int(stream))


def _number(name: str) -> int | None:
    """N for a numbered stream ("N" or "stream#N"), else None."""
    digits = name[len("stream#"):] if name.startswith("stream#") else name
    return int(digits) if digits.isdigit() else None


def stream_seed(seed: int, stream) -> np.random.SeedSequence:
    """The SeedSequence of `stream` in a graph seeded `seed` (see RandomStreams)."""
    name = stream_name(stream)
    number = _number(name)
    if number is not None:  # numbered streams keep the numbers they drew before streams had names
        return np.random.SeedSequence([int(seed), number])
    return np.random.SeedSequence(int(seed), spawn_key=(zlib.crc32(name.encode()),))


class RandomStreams:
    """The random streams of a graph: one generator per stream name, derived from the graph's seed.

    This is the one numbering scheme of the engine. A stream is a name: a string (what
    ``Graph.new_stream()`` returns, e.g. "stream#3", or a name a plugin picks), or an
    int n, which names the stream "n". The generator of stream NAME in a graph seeded
    SEED is PCG64 seeded with ``SeedSequence(SEED, spawn_key=(crc32(NAME),))`` (CuPy:
    RandomState seeded with that sequence's first 32-bit word); a numbered stream ("n",
    or "stream#n" from new_stream, n >= 2**20) keeps ``SeedSequence([SEED, n])``, the
    numbers it drew before streams had names, so trained figures do not move. Either way
    the numbers depend on the seed and the name only, not on the order in which programs
    are compiled or streams first used. Two names with the same key in one graph are an
    error. ``state()`` is {name: bit-generator state} (checkpoints), ``set_state``
    restores it.
    """

    def __init__(self, seed: int, xp=np):
        self.seed, self.xp = seed, xp
        self._gens: dict[str, object] = {}
        self._keys: dict[int, str] = {}

    def rng(self, stream):
        name = stream_name(stream)
        gen = self._gens.get(name)
        if gen is None:
            key = _number(name) if _number(name) is not None else zlib.crc32(name.encode())
            if self._keys.setdefault(key, name) != name:
                raise ValueError(f'random streams "{name}" and "{self._keys[key]}" share a seed key; rename one')
            gen = self._gens[name] = _Generator(self.xp, stream_seed(self.seed, name))
        return gen

    def state(self) -> dict:
        return {k: g.state() for k, g in self._gens.items()}

    def set_state(self, state: dict) -> None:
        for k, s in state.items():
            self.rng(k).set_state(s)

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
        self.xp, self.seq, self.draws = xp, seq, 0
        if xp is np:
            self.gen = np.random.Generator(np.random.PCG64(seq))
        else:
            self.gen = xp.random.RandomState(int(seq.generate_state(1)[0]))

    def normal(self, size, dtype):
        if self.xp is not np:
            self.draws += 1  # CuPy's state cannot be saved: the count stands for it (state())
        return self.gen.standard_normal(size, dtype=dtype)

    def uniform(self, size, dtype):
        if self.xp is np:
            return self.gen.random(size, dtype=dtype)
        self.draws += 1
        return self.gen.random_sample(size, dtype=dtype)

    def state(self):
        # CuPy's generator state cannot be saved: the number of draws stands for it, and a resumed
        # stream is reseeded from it (fresh numbers, the same on every resume from this checkpoint,
        # not the first epoch's again; a resumed CUDA run is not bit-identical to an unbroken one)
        return self.gen.bit_generator.state if self.xp is np else {"cupy_draws": self.draws}

    def set_state(self, s):
        if isinstance(s, dict) and isinstance(s.get("cupy_draws"), int):
            # a CUDA run's stream (on the GPU again, or resumed on the CPU): reseeded from its draw count
            self.draws = s["cupy_draws"]
            self._reseed(self.draws)
        elif self.xp is np and s is not None:
            self.gen.bit_generator.state = s
        elif isinstance(s, dict) and isinstance(s.get("state"), dict) and "state" in s["state"]:
            # a CPU run's PCG64 stream resumed on the GPU, where its position cannot be carried over:
            # reseeded from that state (fresh numbers, the same on every resume), not from the seed again
            self._reseed(int(s["state"]["state"]) % (1 << 63))

    def _reseed(self, key: int) -> None:
        """A generator of this backend on the stream's seed sequence extended by `key`."""
        child = np.random.SeedSequence(self.seq.entropy, spawn_key=tuple(self.seq.spawn_key) + (key,))
        if self.xp is np:
            self.gen = np.random.Generator(np.random.PCG64(child))
        else:
            self.gen = self.xp.random.RandomState(int(child.generate_state(1)[0]))
