"""Image layer lists in every model kind that takes layers: a conditional VAE's decoder may end in
images of the data's size (its encoder input [x, one-hot] stays flat), and an EBM's energy layers see
image rows as images, as an mlp's do."""

from __future__ import annotations

import gengraph

CVAE = {"data": {"source": "digits", "scale": "minmax_global"},
        "model": {"kind": "vae", "latent": 4, "condition": "label", "encoder": [{"units": 32}],
                  "decoder": [{"units": 128}, {"type": "reshape", "shape": [8, 4, 4]},
                              {"type": "conv_transpose2d", "channels": 4, "kernel": 4, "stride": 2, "padding": 1}],
                  "likelihood": {"kind": "categorical", "levels": 17}},
        "train": {"epochs": 1, "batch_size": 128}, "output": {"plots": False, "samples": 4}}


def test_a_conditional_vae_decoder_may_end_in_images(tmp_path):
    run = gengraph.run(CVAE, out=tmp_path / "cvae", progress=None)
    assert run.sample(3, label=7).shape == (3, 1, 8, 8)
    # the 3x3 output convolution to the data's channels (x 17 levels) was added, as for the plain VAE
    assert any(name.endswith("/W") and value.shape[:2] == (17, 4) for name, value in run.params.items())


def test_ebm_layers_see_images(tmp_path):
    spec = {"data": {"source": "digits", "scale": "minmax_global"},
            "model": {"kind": "ebm", "layers": [{"type": "conv2d", "channels": 4, "kernel": 3}, {"units": 16}]},
            "train": {"epochs": 1}, "output": {"plots": False, "samples": 4}}
    run = gengraph.run(spec, out=tmp_path / "ebm", progress=None)
    assert run.params["energy/conv2d0/W"].shape == (4, 1, 3, 3)
