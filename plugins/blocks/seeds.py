"""Every random stream of a run, derived from `run.seed` by name, in one place.

``stream(seed, name, *more)`` is a ``numpy.random.SeedSequence([seed, key(name), *more])``:
independent of every other named stream, reproducible across processes and machines,
and extensible (``more`` numbers a family such as one replay draw per training step).
``rng(seed, name, *more)`` is a Generator on it.

The keys of the streams that existed before names did keep their numbers, so every
figure those runs report is unchanged; a new name needs no number: its key is the
CRC-32 of the name. The engine's in-graph random ops draw from the graph's own streams
(``Graph(seed=run.seed)``), not from these.
"""

from __future__ import annotations

import contextlib
import zlib

import numpy as np

KEYS = {
    "data": 0xDA7A,             # generators' examples; the test split is its first spawned child
    "init": 0x1417,             # parameter initialisation
    "shuffle": 0x5EED,          # mini-batch order
    "ebm.replay": 0xEB3,        # replay-buffer initialisation and restarts (one child per step)
    "ebm.report": 0xEB4,        # the report's Langevin chains
    "rbm.report": 0x5A4,        # Gibbs sample chains; AIS runs use ("rbm.report", 1)
    "latent.report": 0x5A3B1E,  # VAE/HVAE prior draws and IW bounds
    "diffusion.samples": 0x5A3D,
    "diffusion.bound": 0xB0D,
    "diffusion.baseline": 0xBA5E,
    "vdm.bound": 0xB0D5,
    "vdm.samples": 0x5A3E,
    "quality": 0x0FD,                 # the extra samples a digits report draws for test_fd
    "quality.permutation": 0x9E73,    # two-sample permutation tests
    "quality.baseline": 0xBA5E,       # training rows drawn as the data-vs-data baseline
    "score.samples": 0x5C0E,          # annealed Langevin chains of the score model
    "conditional": 0xC0D,             # labels of a conditional model's report samples
    # new streams need no number here: "quality.classifier" (the digit classifier's batch order) is its CRC-32
}


def key(name: str) -> int:
    """The number a stream name stands for (listed above, else the name's CRC-32)."""
    return KEYS.get(name, zlib.crc32(name.encode()))


def stream(seed: int, name: str, *more: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), key(name), *map(int, more)])


def derived_seed(seed: int, name: str) -> int:
    """One integer from the named stream: a new run seed for a derived draw (e.g. the extra
    samples of a quality report), independent of the draws made with `seed` itself."""
    return int(stream(seed, name).generate_state(1)[0])


def rng(seed: int, name: str, *more: int) -> np.random.Generator:
    """A Generator on the named stream of run seed `seed`."""
    return np.random.default_rng(stream(seed, name, *more))


@contextlib.contextmanager
def seeded_streams(graph, seed: int, name: str):
    """The graph's in-graph random streams drawn afresh from the named stream inside the block,
    their previous state back afterwards: sampling from a finished model then sees the same
    numbers whatever its programs drew before (training, bounds). Compile the programs
    first: a graph gets its streams with its first compiled program."""
    streams = graph.streams
    if streams is None:
        yield
        return
    with streams.reseeded(derived_seed(seed, name)):
        yield
