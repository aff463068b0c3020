"""The U-Net denoiser of the diffusion plugin: shapes, attention against NumPy, config errors,
and a tiny U-Net DDPM that trains."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gengraph.engine import Graph, compile, ops, to_numpy
from gengraph.plugins.blocks.unet import UNet, UNetConfigError, check_config
from gengraph.plugins.run.loading import load
from gengraph.plugins.run.runner import execute
from gengraph.plugins.spec.errors import SpecError

CFG = {"channels": [8, 16], "blocks": 1, "attention": True, "groups": 4, "downsample": "conv", "time_dim": 0,
       "dropout": 0.0}


def build(cfg=CFG, shape=(2, 8, 8), emb_dim=6, seed=0):
    g = Graph(dtype="float64", seed=seed)
    net = UNet(g, shape, emb_dim, cfg, np.random.default_rng(seed))
    x = g.input("x", (None, int(np.prod(shape))))
    e = g.input("e", (None, emb_dim))
    return g, net, x, e, net(x, e)


def test_output_shape_zero_init_and_dependence_on_inputs():
    rng = np.random.default_rng(0)
    g, net, x, e, out = build()
    assert out.shape == (None, 128)
    prog = compile(g, out)
    xs, es = rng.normal(size=(5, 128)), rng.normal(size=(5, 6))
    y0 = np.asarray(to_numpy(prog.run(x=xs, e=es)))
    assert y0.shape == (5, 128) and not y0.any()  # the output conv starts at zero
    W = [p for p in net.params if p.label.endswith("out/W")][0]
    g.values[W.id][...] = rng.normal(size=g.values[W.id].shape) * 0.1
    y = np.asarray(to_numpy(prog.run(x=xs, e=es)))
    assert np.abs(y).max() > 1e-3
    # per-example: one example's output does not depend on another's input (group norm is per example)
    xs2 = xs.copy()
    xs2[1] += 1.0
    y2 = np.asarray(to_numpy(prog.run(x=xs2, e=es)))
    np.testing.assert_allclose(y2[[0, 2, 3, 4]], y[[0, 2, 3, 4]], atol=1e-12)
    assert np.abs(y2[1] - y[1]).max() > 1e-6
    # the time embedding enters every residual block: changing it changes the output
    y3 = np.asarray(to_numpy(prog.run(x=xs, e=es + 1.0)))
    assert np.abs(y3 - y).max() > 1e-6
    # parameter count: channels 8 -> 16, attention at 4x4, zero-initialised output conv
    # (counted by hand: time MLP 1280, stem 152, down 1464+584+4208, mid 2x5232+1120, up 8096+6800+2320+2848+2192,
    # out 16+146)
    assert sum(g.values[p.id].size for p in net.params) == 41690


def test_attention_matches_numpy():
    rng = np.random.default_rng(1)
    g = Graph(dtype="float64")
    net = UNet(g, (1, 4, 4), 4, dict(CFG, channels=[8]), np.random.default_rng(0))
    x = g.input("h", (None, 8, 2, 3))
    prog = compile(g, net._apply_attention(x, net.attn))
    h = rng.normal(size=(3, 8, 2, 3))
    for p in net.params:
        g.values[p.id][...] = rng.normal(size=g.values[p.id].shape) * 0.3
    out = np.asarray(to_numpy(prog.run(h=h)))
    gw, gb = (g.value(p).reshape(-1) for p in net.attn["norm"])
    grp = h.reshape(3, 4, -1)
    hn = ((grp - grp.mean(-1, keepdims=True)) / np.sqrt(grp.var(-1, keepdims=True) + 1e-5)).reshape(h.shape)
    hn = hn * gw[None, :, None, None] + gb[None, :, None, None]
    seq = hn.reshape(3, 8, 6).transpose(0, 2, 1)
    qkv = seq @ g.value(net.attn["qkv"][0]) + g.value(net.attn["qkv"][1])
    q, k, v = qkv[..., :8], qkv[..., 8:16], qkv[..., 16:]
    s = q @ k.transpose(0, 2, 1) / math.sqrt(8)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = (a @ v) @ g.value(net.attn["proj"][0]) + g.value(net.attn["proj"][1])
    np.testing.assert_allclose(out, h + o.transpose(0, 2, 1).reshape(h.shape), atol=1e-10)


def test_config_errors():
    with pytest.raises(UNetConfigError, match="groups = 4 does not divide the channels \\[6\\]"):
        check_config((1, 8, 8), dict(CFG, channels=[8, 6]))
    with pytest.raises(UNetConfigError, match="1x6x6 needs height and width divisible by 4"):
        check_config((1, 6, 6), dict(CFG, channels=[8, 8, 8]))


@pytest.mark.parametrize("channels", [[8, 8, 8, 8], [8, 8, 8, 16]])
def test_a_lowest_level_of_one_value_per_norm_group_is_refused(channels):
    # 4 levels on 8x8 end at 1x1: 8 channels in 8 groups normalise to 0 there (the lowest level's
    # own channels, or the level above's in its first block), and the time embedding added there
    # had no effect (its weights' gradients were exactly 0)
    with pytest.raises(UNetConfigError, match="lowest of the 4 levels is 1x1 .* sees one value per group and outputs 0"):
        check_config((1, 8, 8), dict(CFG, channels=channels, groups=8))
    check_config((1, 8, 8), dict(CFG, channels=[8, 8, 16, 16], groups=8))  # two values a group: fine


SPEC = """spec_version = 1
[run]
seed = 0
[data]
source = "digits"
classes = [0, 1]
scale = "minmax_global"
[model]
kind = "diffusion"
symmetric = true
prediction = "epsilon"
time_embedding = { kind = "sinusoidal", dim = 16 }
schedule = { kind = "linear", T = 50, beta_start = 1e-3, beta_end = 0.2 }
[model.network]
kind = "unet"
channels = [8, 16]
groups = 4
[train]
optimizer = { kind = "adam", lr = 3e-3 }
epochs = 12
batch_size = 32
[output]
samples = 4
plots = false
"""


def test_tiny_unet_ddpm_trains(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SPEC)
    summary = execute(load(path), tmp_path / "run")
    hist = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = hist[0]["train_mse"], hist[-1]["train_mse"]
    assert first > 0.3 and last < 0.5 * first, (first, last)  # epsilon-MSE starts near 1 (zero output)
    assert math.isfinite(summary["test_nll_bound"]) and summary["steps"] == 12 * 9
    assert np.load(tmp_path / "run" / "samples.npy").shape == (4, 1, 8, 8)


def test_unet_on_flat_data_is_a_spec_error(tmp_path):
    path = tmp_path / "flat.toml"
    path.write_text(SPEC.replace('source = "digits"\nclasses = [0, 1]\nscale = "minmax_global"',
                                 'source = "moons"').replace("symmetric = true", "symmetric = false"))
    from gengraph.plugins.run.runner import build_checked

    with pytest.raises(SpecError, match=r"flat\.toml:\d+:\d+: model\.network\.kind: \"unet\" needs image data"):
        build_checked(load(path), base_dir=tmp_path)
    path.write_text(SPEC.replace("channels = [8, 16]", "channels = [8, 16, 16, 16, 16]"))
    with pytest.raises(SpecError, match=r"model\.network\.channels: 5 levels halve the image 4 times"):
        build_checked(load(path), base_dir=tmp_path)


@pytest.mark.parametrize("key, line", [("layers", 'layers = [{ units = 4 }]'), ("output_init", 'output_init = "zeros"')])
def test_mlp_denoiser_keys_next_to_a_unet_are_refused(tmp_path, key, line):
    # they were silently ignored: the run trained the U-Net without them
    from gengraph.plugins.run.runner import build_checked

    path = tmp_path / "both.toml"
    path.write_text(SPEC.replace("symmetric = true", "symmetric = true\n" + line))
    with pytest.raises(SpecError, match=rf"both\.toml:\d+:\d+: model\.{key}: is for the MLP denoiser; the unet network"):
        build_checked(load(path), base_dir=tmp_path)


def test_a_unet_runs_own_spec_with_every_default_loads(tmp_path):
    # a run's spec.toml records every default, model.layers and output_init included
    from gengraph.plugins.run.runner import build_checked

    path = tmp_path / "tiny.toml"
    path.write_text(SPEC.replace("epochs = 12", "epochs = 1"))
    execute(load(path), tmp_path / "run")
    written = load(tmp_path / "run" / "spec.toml")
    assert written.data["model"]["layers"] and written.data["model"]["output_init"] == "xavier"
    build_checked(written, base_dir=tmp_path / "run")


def test_ops_used_by_the_unet_keep_float32():
    g = Graph(dtype="float32")
    net = UNet(g, (1, 8, 8), 4, CFG, np.random.default_rng(0))
    x, e = g.input("x", (None, 64)), g.input("e", (None, 4))
    out = ops.sum(net(x, e))
    assert out.dtype == np.float32


def test_graph_gives_each_unet_block_its_own_row(tmp_path):
    # the ops were scoped per level only: `graph --collapse 3` put every block's FLOPs on its level
    # and showed denoiser/mid/attention with its parameters and 0 FLOPs
    from click.testing import CliRunner

    from gengraph.cli.main import main

    path = tmp_path / "tiny.toml"
    path.write_text(SPEC.replace("channels = [8, 16]", "channels = [8, 16]\nattention = true"))
    res = CliRunner().invoke(main, ["graph", str(path), "--stage", "built", "--collapse", "3"])
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line.split() for line in res.output.splitlines() if line.startswith("denoiser/")}
    for scope in ("denoiser/stem", "denoiser/down0/res0", "denoiser/down0/downsample", "denoiser/mid/res0",
                  "denoiser/mid/attention", "denoiser/mid/res1", "denoiser/up1/res0", "denoiser/up1/upsample"):
        assert scope in rows, (scope, sorted(rows))
    def flops(scope):  # columns ... params, flops, activations ("11.1 MiB")
        return int(rows[scope][-3].replace(",", ""))

    assert flops("denoiser/mid/attention") > 0 and flops("denoiser/down0/res0") > 0
    assert flops("denoiser/mid/res0") > 0 and flops("denoiser/up1/upsample") > 0
