"""Image layers of `layers` lists: shape inference and its errors, outputs against NumPy
references, gradients of a small conv stack against central finite differences, conv VAEs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from gengraph.engine import Graph, compile, grad, to_numpy
from gengraph.plugins.blocks.layers import Network, build_stack, infer_shapes
from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.spec.schema import ListOf
from gengraph.plugins.blocks.layers import layer_schema


class _Ctx:
    def __init__(self):
        self.issues = []

    def add(self, path, message):
        raise AssertionError(f"{path}: {message}")


def filled(layers):
    return [ListOf(layer_schema())._validate([lay], "model.layers", _Ctx())[0] for lay in layers]


def run_stack(layers, x, image_shape=None, training=False, seed=0):
    g = Graph(dtype="float64", seed=seed)
    xin = g.input("x", (None,) + x.shape[1:])
    out, params = build_stack(g, xin, filled(layers), np.random.default_rng(seed), "net", origin="model.layers",
                              image_shape=image_shape)
    prog = compile(g, out, training=training)
    return np.asarray(to_numpy(prog.run(x=x))), g, {"/".join(p.label.split("/")[-2:]): p
                                                   for p in params}


# --- NumPy references ---------------------------------------------------------------------
def conv2d_ref(x, w, stride=1, padding=0, dilation=1, groups=1):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, o, ho, wo))
    og = o // groups
    for oc in range(o):
        gi = oc // og
        for i in range(ho):
            for j in range(wo):
                patch = xp[:, gi * cg:(gi + 1) * cg, i * stride:i * stride + dilation * (kh - 1) + 1:dilation,
                           j * stride:j * stride + dilation * (kw - 1) + 1:dilation]
                out[:, oc, i, j] = np.sum(patch * w[oc], axis=(1, 2, 3))
    return out


def conv_transpose2d_ref(x, w, stride=1, padding=0, output_padding=0):
    n, c, h, wd = x.shape
    _, o, kh, kw = w.shape
    full = np.zeros((n, o, (h - 1) * stride + kh + output_padding, (wd - 1) * stride + kw + output_padding))
    for i in range(h):
        for j in range(wd):
            full[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw] += np.einsum("nc,cokl->nokl",
                                                                                          x[:, :, i, j], w)
    return full[:, :, padding:full.shape[2] - padding, padding:full.shape[3] - padding]


# --- outputs -------------------------------------------------------------------------------
def test_conv2d_and_bias_activation_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 7, 6))
    layer = {"type": "conv2d", "channels": 6, "kernel": [3, 2], "stride": 2, "padding": 1, "dilation": 1,
             "groups": 2, "activation": "tanh"}
    out, g, p = run_stack([layer], x)
    W, b = g.value(p["conv2d0/W"]), g.value(p["conv2d0/b"])
    assert W.shape == (6, 2, 3, 2) and b.shape == (6, 1, 1) and not b.any()
    ref = np.tanh(conv2d_ref(x, W, stride=2, padding=1, groups=2))
    assert out.shape == ref.shape == (3, 6, 4, 4)
    np.testing.assert_allclose(out, ref, atol=1e-12)
    # dilation
    layer2 = dict(layer, dilation=2, groups=1, kernel=3, stride=1, padding=0, activation="identity")
    out2, g2, p2 = run_stack([layer2], x)
    np.testing.assert_allclose(out2, conv2d_ref(x, g2.value(p2["conv2d0/W"]), dilation=2), atol=1e-12)


def test_conv_transpose2d_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 4, 4))
    layer = {"type": "conv_transpose2d", "channels": 5, "kernel": 4, "stride": 2, "padding": 1,
             "output_padding": 1, "activation": "identity", "bias": False}
    out, g, p = run_stack([layer], x)
    ref = conv_transpose2d_ref(x, g.value(p["conv_transpose2d0/W"]), stride=2, padding=1, output_padding=1)
    assert out.shape == ref.shape == (2, 5, 9, 9)
    np.testing.assert_allclose(out, ref, atol=1e-12)


def test_pool_upsample_flatten_reshape_match_numpy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 6, 6))
    out, _, _ = run_stack([{"type": "pool", "mode": "max", "kernel": 2}], x)
    np.testing.assert_allclose(out, x.reshape(2, 3, 3, 2, 3, 2).max(axis=(3, 5)))
    out, _, _ = run_stack([{"type": "pool", "mode": "avg", "kernel": 3, "stride": 1}], x)
    ref = np.stack([np.stack([x[:, :, i:i + 3, j:j + 3].mean(axis=(2, 3)) for j in range(4)], -1)
                    for i in range(4)], -2)
    np.testing.assert_allclose(out, ref, atol=1e-12)
    out, _, _ = run_stack([{"type": "upsample", "scale": 2}], x)
    np.testing.assert_allclose(out, x.repeat(2, axis=2).repeat(2, axis=3))
    out, _, _ = run_stack([{"type": "flatten"}, {"type": "reshape", "shape": [6, 3, 6]}], x)
    np.testing.assert_allclose(out, x.reshape(2, 6, 3, 6))
    # rows of a flat input become images for image layers (image_shape given)
    out, _, _ = run_stack([{"type": "pool", "mode": "avg", "kernel": 2}], x.reshape(2, -1), image_shape=(3, 6, 6))
    np.testing.assert_allclose(out, x.reshape(2, 3, 3, 2, 3, 2).mean(axis=(3, 5)), atol=1e-12)


def test_norms_with_affine_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 6, 3, 5)) * 3 + 1
    out, g, p = run_stack([{"type": "group_norm", "groups": 3, "eps": 1e-5}], x)
    gx = x.reshape(4, 3, -1)
    ref = ((gx - gx.mean(-1, keepdims=True)) / np.sqrt(gx.var(-1, keepdims=True) + 1e-5)).reshape(x.shape)
    np.testing.assert_allclose(out, ref, atol=1e-10)
    assert g.value(p["group_norm0/weight"]).shape == (6, 1, 1)
    out, g, p = run_stack([{"type": "layer_norm", "eps": 1e-3, "activation": "relu"}], x)
    fx = x.reshape(4, -1)
    ref = ((fx - fx.mean(-1, keepdims=True)) / np.sqrt(fx.var(-1, keepdims=True) + 1e-3)).reshape(x.shape)
    np.testing.assert_allclose(out, np.maximum(ref, 0), atol=1e-10)
    assert g.value(p["layer_norm0/weight"]).shape == (6, 3, 5)


def test_dropout_training_and_evaluation():
    x = np.ones((50, 40))
    out, _, _ = run_stack([{"type": "dropout", "p": 0.25}], x, training=False)
    np.testing.assert_array_equal(out, x)
    out, _, _ = run_stack([{"type": "dropout", "p": 0.25}], x, training=True)
    assert set(np.unique(out)) == {0.0, 1.0 / 0.75}
    assert abs((out == 0).mean() - 0.25) < 0.03


def test_dense_after_images_flattens():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 2, 4, 4))
    out, g, p = run_stack([{"units": 5, "activation": "identity"}], x)
    np.testing.assert_allclose(out, x.reshape(3, -1) @ g.value(p["dense0/W"]), atol=1e-12)


# --- gradients -----------------------------------------------------------------------------
def test_conv_stack_gradients_match_finite_differences():
    rng = np.random.default_rng(5)
    layers = filled([
        {"type": "conv2d", "channels": 4, "kernel": 3, "padding": 1, "activation": "tanh"},
        {"type": "group_norm", "groups": 2, "activation": "silu"},
        {"type": "conv2d", "channels": 4, "kernel": 3, "stride": 2, "padding": 1, "activation": "tanh"},
        {"type": "pool", "mode": "max", "kernel": 2},
        {"type": "upsample", "scale": 2},
        {"type": "conv_transpose2d", "channels": 2, "kernel": 3, "stride": 2, "padding": 1, "output_padding": 1,
         "activation": "tanh"},
        {"type": "layer_norm"},
        {"type": "flatten"},
        {"units": 3, "activation": "identity"},
    ])
    g = Graph(dtype="float64", seed=0)
    x = g.input("x", (None, 2, 6, 6))
    out, params = build_stack(g, x, layers, rng, "net")
    assert out.shape == (None, 3)
    for p in params:  # non-trivial affine parameters
        g.values[p.id][...] += 0.1 * rng.normal(size=g.values[p.id].shape)
    from gengraph.engine import ops

    loss = ops.sum(out * g.constant(rng.normal(size=(3, 3))))
    grads = grad(loss, params)
    prog = compile(g, [loss] + list(grads))
    xv = rng.normal(size=(3, 2, 6, 6))
    res = prog.run(x=xv)
    analytic = [np.asarray(a) for a in res[1:]]
    f = compile(g, loss)
    eps, checked = 1e-6, 0
    for p, a in zip(params, analytic):
        v = g.values[p.id]
        for idx in list(zip(*[rng.integers(0, s, 3) for s in v.shape])):
            old = v[idx]
            v[idx] = old + eps
            up = float(f.run(x=xv))
            v[idx] = old - eps
            down = float(f.run(x=xv))
            v[idx] = old
            num = (up - down) / (2 * eps)
            assert abs(num - a[idx]) <= 1e-6 + 1e-5 * abs(num), (p.name, idx, num, a[idx])
            checked += 1
    assert checked >= 3 * len(params)


def test_conv2d_padding_same_and_valid():
    """PyTorch's padding="same" (an odd total padding goes bottom / right) and "valid"."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 2, 7, 6))
    for kernel, dilation in (([4, 3], 1), (2, 2), (3, 1)):
        layer = {"type": "conv2d", "channels": 3, "kernel": kernel, "padding": "same", "dilation": dilation,
                 "activation": "identity"}
        out, g, p = run_stack([layer], x)
        W = g.value(p["conv2d0/W"])
        total = [dilation * (k - 1) for k in W.shape[2:]]
        padded = np.pad(x, ((0, 0), (0, 0), (total[0] // 2, total[0] - total[0] // 2),
                            (total[1] // 2, total[1] - total[1] // 2)))
        assert out.shape == (2, 3, 7, 6)
        np.testing.assert_allclose(out, conv2d_ref(padded, W, dilation=dilation), atol=1e-12)
    out, g, p = run_stack([{"type": "conv2d", "channels": 3, "padding": "valid", "activation": "identity"}], x)
    np.testing.assert_allclose(out, conv2d_ref(x, g.value(p["conv2d0/W"])), atol=1e-12)


# --- shape inference and errors ------------------------------------------------------------
def test_infer_shapes_layer_by_layer():
    layers = filled([
        {"type": "conv2d", "channels": 8, "kernel": 3, "stride": 2, "padding": 1},
        {"type": "pool", "mode": "avg", "kernel": 2},
        {"type": "flatten"},
        {"units": 10},
        {"type": "reshape", "shape": [10, 1, 1]},
        {"type": "conv_transpose2d", "channels": 3, "kernel": 4, "stride": 2, "padding": 1},
        {"type": "upsample", "scale": [2, 3]},
        {"type": "conv2d", "channels": 2, "kernel": [2, 5], "padding": "same"},
        {"type": "conv2d", "channels": 2, "kernel": 3, "padding": "valid"},
    ])
    assert infer_shapes((1, 28, 28), layers, "model.layers") == [
        (1, 28, 28), (8, 14, 14), (8, 7, 7), (392,), (10,), (10, 1, 1), (3, 2, 2), (3, 4, 6), (2, 4, 6), (2, 2, 4)]


@pytest.mark.parametrize("layers, where, parts", [
    ([{"type": "flatten"}, {"units": 10}, {"type": "reshape", "shape": [3, 2, 2]}], "model.layers[2]",
     ["10", "3x2x2", "12 values"]),
    ([{"units": 16}, {"type": "conv2d", "channels": 4}], "model.layers[1]", ["16", "image input"]),
    ([{"type": "conv2d", "channels": 4, "kernel": 5}], "model.layers[0]", ["1x3x3", "5x5"]),
    ([{"type": "pool", "kernel": 4}], "model.layers[0]", ["1x3x3", "4x4"]),
    ([{"type": "conv2d", "channels": 3, "groups": 2}], "model.layers[0]", ["groups = 2", "1x3x3"]),
    ([{"type": "group_norm", "groups": 2}], "model.layers[0]", ["groups = 2", "1x3x3"]),
    # one value per group: normalised to 0, it was accepted and the classifier sat at chance
    ([{"type": "conv2d", "channels": 4, "kernel": 3}, {"type": "group_norm", "groups": 4}], "model.layers[1]",
     ["groups = 4", "4x1x1", "one value in each group"]),
    ([{"type": "conv2d", "channels": 2, "padding": "same", "stride": 2}], "model.layers[0]",
     ['padding="same" needs stride 1']),
    ([{"type": "conv2d", "channels": 2, "padding": "full"}], "model.layers[0]", ['"same" or "valid"', "'full'"]),
])
def test_shape_errors_name_the_layer_and_both_shapes(layers, where, parts):
    with pytest.raises(ModelConfigError) as err:
        infer_shapes((1, 3, 3), filled(layers), "model.layers")
    assert err.value.path == where
    for part in parts:
        assert part in err.value.message


CONV_VAE = """spec_version = 1
[run]
seed = 0
[data]
source = "digits"
scale = "minmax_global"
[model]
kind = "vae"
latent = 4
encoder = [
  { type = "conv2d", channels = 4, kernel = 3, stride = 2, padding = 1 },
  { type = "flatten" },
  { type = "reshape", shape = [4, 4, 5] },
]
decoder = [{ units = 8 }]
[train]
epochs = 1
"""


def test_spec_shape_error_has_position_and_shapes(tmp_path):
    from click.testing import CliRunner

    from gengraph.cli.main import main as cli

    path = tmp_path / "bad.toml"
    path.write_text(CONV_VAE)
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 2
    text = res.output
    assert re.search(r"bad\.toml:13:3: model\.encoder\[2\]: reshape layer: input 64 \(64 values\) does not "
                     r"fit shape 4x4x5 \(80 values\)", text), text
    # a conv decoder must end at the data's height and width
    path.write_text(CONV_VAE.replace("{ type = \"reshape\", shape = [4, 4, 5] },", "").replace(
        "decoder = [{ units = 8 }]", 'decoder = [{ units = 16 }, { type = "reshape", shape = [1, 4, 4] }]'))
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 2 and "model.decoder[1]" in res.output and "1x4x4" in res.output \
        and "1x8x8" in res.output, res.output


@pytest.mark.parametrize("spec", ["diffusion_digits", "diffusion_cfg_digits", "vdm_digits", "score_moons"])
def test_mlp_denoiser_layer_errors_name_their_spec_line(tmp_path, spec):
    # the discrete-time diffusion MLP reported "<file>:1:1: denoiser[2]" instead of the layer's key
    from click.testing import CliRunner

    from gengraph.cli.main import main as cli

    text = (Path(__file__).parent.parent / "specs" / f"{spec}.toml").read_text()
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.lstrip().startswith("layers = ["))
    lines.insert(at + 1, '  { units = 16 }, { type = "reshape", shape = [3, 2, 2] },')
    path = tmp_path / "bad.toml"
    path.write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 2
    assert f"bad.toml:{at + 2}:" in res.output and "model.layers[1]: reshape layer: input 16 (16 values) " \
        "does not fit shape 3x2x2" in res.output, res.output


def test_conv_vae_trains_and_graph_shows_conv_shapes_and_flops(tmp_path):
    from click.testing import CliRunner

    from gengraph.cli.main import main as cli

    spec = CONV_VAE.replace('  { type = "reshape", shape = [4, 4, 5] },\n', "").replace(
        "decoder = [{ units = 8 }]",
        'decoder = [{ units = 64 }, { type = "reshape", shape = [4, 4, 4] },\n'
        '  { type = "conv_transpose2d", channels = 4, kernel = 4, stride = 2, padding = 1 }]')
    path = tmp_path / "conv_vae.toml"
    path.write_text(spec + "batch_size = 128\n[model.elbo]\niw_samples = 5\n")
    res = CliRunner().invoke(cli, ["graph", str(path), "--format", "text"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    conv_lines = [ln for ln in res.output.splitlines() if " conv2d " in f" {ln} "]
    assert conv_lines, res.output[:2000]
    # the encoder's conv: batch x 4 x 4 x 4 output, FLOPs 2 * out * (1*3*3) per example at the listed batch
    enc = [ln for ln in conv_lines if "model.encoder[0]" in ln]
    assert enc and "?x4x4x4" in enc[0], conv_lines
    # FLOPs at the listed batch (128): 2 * (4*4*4 outputs) * (1*3*3 taps) per example
    assert f"{2 * 128 * 64 * 9:,}" in enc[0], enc[0]
    dot = CliRunner().invoke(cli, ["graph", str(path), "--format", "dot"]).output
    node = [ln for ln in dot.splitlines() if 'tooltip="model.encoder[0]"' in ln and "conv2d" in ln]
    assert node and "?x4x4x4" in node[0] and f"{2 * 128 * 64 * 9:,} FLOPs" in node[0], node
    res = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "run"), "--set", "train.epochs=3",
                                   "--set", "output.samples=4"])
    assert res.exit_code == 0, res.output
    import json

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    hist = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert hist[-1]["train_neg_elbo"] < 0.95 * hist[0]["train_neg_elbo"], hist
    assert summary["test_neg_elbo"] < hist[0]["test_neg_elbo"] and np.isfinite(summary["test_nll_iw"])
    assert np.load(tmp_path / "run" / "samples.npy").shape == (4, 1, 8, 8)


def test_network_reuses_conv_parameters_over_sample_axes():
    rng = np.random.default_rng(6)
    g = Graph(dtype="float64", seed=0)
    net = Network(g, 16, filled([{"type": "conv2d", "channels": 2, "kernel": 3, "padding": 1},
                                 {"type": "flatten"}]), rng, "enc", image_shape=(1, 4, 4),
                  out={"units": 3, "activation": "identity", "type": "dense", "init": "xavier", "bias": True})
    x2 = g.input("x2", (None, 16))
    x3 = g.input("x3", (5, None, 16))
    a, b = compile(g, net(x2)), compile(g, net(x3))
    xs = rng.normal(size=(5, 7, 16))
    ya = np.stack([np.asarray(a.run(x2=xs[i])) for i in range(5)])
    np.testing.assert_allclose(np.asarray(b.run(x3=xs)), ya, atol=1e-12)
    assert len(net.params) == 4


def test_mlp_takes_a_conv_classifier(tmp_path):
    from gengraph.plugins.run.loading import load
    from gengraph.plugins.run.runner import execute

    path = tmp_path / "cnn.toml"
    path.write_text("""spec_version = 1
[run]
seed = 0
[data]
source = "digits"
scale = "minmax_global"
[model]
kind = "mlp"
layers = [
  { type = "conv2d", channels = 8, kernel = 3, padding = 1, activation = "relu" },
  { type = "pool", mode = "max", kernel = 2 },
  { type = "flatten" },
  { units = 32, activation = "relu" },
]
[train]
optimizer = { kind = "adam", lr = 3e-3 }
epochs = 4
batch_size = 32
[output]
plots = false
""")
    summary = execute(load(path), tmp_path / "run")
    assert summary["test_accuracy"] > 0.85, summary


def test_a_template_list_says_which_level_it_failed_at(tmp_path):
    # an hvae's conv encoder template serves q(h_2|h_1) too: the message named model.encoder[0]
    # and "got 16" without saying that h_1 was the input
    from click.testing import CliRunner

    from gengraph.cli.main import main as cli

    path = tmp_path / "h.toml"
    path.write_text('spec_version = 1\n[data]\nsource = "digits"\n[model]\nkind = "hvae"\n'
                    'encoder = [{ type = "conv2d", channels = 4, kernel = 3, padding = 1 }, { units = 8 }]\n'
                    'levels = [{ size = 16 }, { size = 8, decoder = [{ units = 8 }] }]\n[train]\nepochs = 1\n')
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 2
    assert "h.toml:6:12: model.encoder[0]: in q(h_2 | h_1), whose input is h_1 (16 values): conv2d layer: " \
           "needs an image input" in res.output, res.output
    path.write_text(path.read_text().replace("encoder = [", "decoder = [").replace(
        "{ size = 16 }, { size = 8, decoder = [{ units = 8 }] }", "{ size = 16, decoder = [{ units = 8 }] }, { size = 8 }"))
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 2 and "in p(h_1 | h_2), whose input is h_2 (8 values): conv2d layer" in res.output, \
        res.output
