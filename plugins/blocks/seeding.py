"""Seeded random streams for drawing samples from a finished model.

A model's programs draw from the graph's random streams (Gibbs sweeps, Langevin noise,
ancestral sampling). Their state after training depends on everything that ran before,
so a run's report and a later `gengraph sample` would not see the same numbers. Sampling
code runs inside `seeded_streams(graph, seed, tag)`: every stream starts afresh from
(seed, tag), and the streams' previous state comes back afterwards.
"""

from __future__ import annotations

import contextlib

import numpy as np


def derived_seed(seed: int, tag: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(tag)]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_streams(graph, seed: int, tag: int):
    """Graph streams reseeded from (seed, tag) in the block; compile the programs first
    (a graph gets its streams with its first compiled program)."""
    streams = graph.streams
    if streams is None:
        yield
        return
    with streams.reseeded(derived_seed(seed, tag)):
        yield
