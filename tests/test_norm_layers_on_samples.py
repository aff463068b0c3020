"""Normalisation layers see one example at a time also when a stack is fed (samples, batch,
features), as VAE decoders and HVAE upper encoders are: layer_norm mixed the batch's examples there,
and group_norm could not be built."""

from __future__ import annotations

import numpy as np
import pytest

from gengraph.engine import Graph, compile
from gengraph.plugins.blocks.layers import Network

DENSE = {"type": "dense", "units": 8, "activation": "identity", "init": "auto", "bias": True}


@pytest.mark.parametrize("norm", [{"type": "layer_norm", "eps": 1e-5, "affine": True, "activation": "identity"},
                                  {"type": "group_norm", "groups": 4, "eps": 1e-5, "affine": True,
                                   "activation": "identity"},
                                  {"type": "dropout", "p": 0.1}])
def test_each_sample_is_normalised_as_a_batch_of_its_own(norm):
    g = Graph(dtype="float64")
    net = Network(g, 4, [DENSE, norm], np.random.default_rng(0), "dec")
    h3, h2 = g.input("h3", (3, None, 4)), g.input("h2", (None, 4))
    prog = compile(g, {"y3": net(h3), "y2": net(h2)}, training=False)
    h = np.random.default_rng(1).normal(size=(3, 5, 4))
    for s in range(3):
        out = prog.run(h3=h, h2=h[s])
        np.testing.assert_allclose(out["y3"][s], out["y2"], rtol=1e-12, atol=1e-12)
