"""The conditional VAE (`kind = "vae"`, `condition = "label"`): gradients of the conditional
encoder/decoder against central differences, the IW bound against NumPy for a tiny model,
label-faithful samples of a short digits run, and the spec errors."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest

from gengraph.engine import Graph, compile, grad, to_numpy
from gengraph.engine.gradcheck import central_differences, compare
from gengraph.plugins.datasets import Dataset
from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.models import digit_quality as dq
from gengraph.plugins.models.latent_common import IW_STREAM
from gengraph.plugins.models.vae import plugin as vae
from gengraph.plugins.blocks.layers import init_rng
from gengraph.plugins.run.loading import load
from gengraph.plugins.run.runner import build_checked, execute
from gengraph.plugins.spec.errors import SpecError
from gengraph.plugins.spec.schema import validate

ROOT = Path(__file__).resolve().parents[1]
LEVELS, K = 3, 3  # grey levels of the tiny data, classes
TINY = {"latent": 2, "condition": "label", "encoder": [{"units": 5, "activation": "tanh"}],
        "decoder": [{"units": 4, "activation": "tanh"}], "likelihood": {"kind": "categorical", "levels": LEVELS}}


def tiny_data(n=6, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, LEVELS, size=(n, d)) / (LEVELS - 1)
    y = np.arange(n, dtype=np.int64) % K
    return Dataset(x, y, x, y, "classification", n_classes=K), x, y


def build(cfg, data, seed=0):
    graph = Graph(dtype="float64", seed=seed)
    return graph, vae.build(validate(vae.schema, cfg, path="model"), graph, data, init_rng(seed))


def test_conditional_vae_loss_gradient_matches_finite_differences():
    data, x, y = tiny_data()
    g, m = build({**TINY, "elbo": {"samples": 2, "beta": 0.7}}, data)
    assert m.n_labels == K and set(m.inputs) == {"x", "y"}
    # the one-hot enters both networks: K more input rows in their first layers
    assert g.values[g.find("encoder/dense0/W").id].shape == (4 + K, 5)
    assert g.values[g.find("decoder/dense0/W").id].shape == (2 + K, 4)
    feeds = {"x": x, "y": y}
    loss_prog, grad_prog = compile(g, m.loss), compile(g, grad(m.loss, m.params))
    loss_prog.run(feeds)  # creates the streams
    state = copy.deepcopy(g.streams.state())

    def loss(f=feeds):
        g.streams.set_state(copy.deepcopy(state))
        return float(loss_prog.run(f))

    assert loss() == loss()
    assert abs(loss({"x": x, "y": (y + 1) % K}) - loss()) > 1e-3  # the label changes the loss
    g.streams.set_state(copy.deepcopy(state))
    analytic = dict(zip([p.label for p in m.params], grad_prog.run(feeds)))
    for p in m.params:
        numeric = central_differences(loss, g.values[p.id], eps=1e-6)
        row = compare(p.label, analytic[p.label], numeric, 1e-5, 1e-7)
        assert row.ok, f"{p.label}: max abs err {row.max_abs_err:.3e}, rel {row.max_rel_err:.3e}"
    for name in ("encoder/dense0/W", "decoder/dense0/W"):  # the label rows get gradient
        assert np.abs(np.asarray(analytic[name])[-K:]).max() > 1e-4, name


def _np_forward(W, x, y):
    """NumPy forward of TINY's encoder q(h|x, y): (mu, logvar, one-hot of y)."""
    c = np.eye(K)[y]
    hid = np.tanh(np.concatenate([x, c], 1) @ W["encoder/dense0/W"] + W["encoder/dense0/b"])
    out = hid @ W["encoder/out/W"] + W["encoder/out/b"]
    return out[:, :2], out[:, 2:], c


def test_conditional_iw_bound_equals_numpy():
    data, x, y = tiny_data(n=5, seed=3)
    k = 7
    g, m = build({**TINY, "elbo": {"iw_samples": k}}, data, seed=2)
    rng = np.random.default_rng(5)
    for p in g.params():  # away from the initialisation (zero log-variance weights, zero biases)
        g.values[p.id][...] += 0.3 * rng.standard_normal(g.values[p.id].shape)
    hier = m.extras["hierarchy"]
    parts = hier.parts(m.inputs["x"], k, IW_STREAM, {"kl": "monte_carlo"})  # the iw program's draws
    h_prog = compile(g, {"h": parts.hs[0]})
    iw_prog = m.program("iw")
    h_prog.run(x=x, y=y)  # creates the streams
    iw_prog.run(x=x, y=y)
    state = copy.deepcopy(g.streams.state())
    h = np.asarray(to_numpy(h_prog.run(x=x, y=y)["h"]))  # (k, B, 2)
    g.streams.set_state(copy.deepcopy(state))
    got = np.asarray(to_numpy(iw_prog.run(x=x, y=y)["nll_iw"]))

    W = {p.label: np.asarray(g.values[p.id], np.float64) for p in g.params()}
    mu, lv, c = _np_forward(W, x, y)
    log_q = -0.5 * (np.log(2 * np.pi) + lv + (h - mu) ** 2 / np.exp(lv)).sum(-1)
    log_p = -0.5 * (np.log(2 * np.pi) + h ** 2).sum(-1)
    hc = np.concatenate([h, np.broadcast_to(c, (k,) + c.shape)], -1)
    logits = (np.tanh(hc @ W["decoder/dense0/W"] + W["decoder/dense0/b"]) @ W["decoder/out/W"]
              + W["decoder/out/b"]).reshape(k, len(x), x.shape[1], LEVELS)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    idx = np.rint(x * (LEVELS - 1)).astype(int)
    log_lik = np.take_along_axis(logp, np.broadcast_to(idx[None, ..., None], logp.shape[:-1] + (1,)), -1)
    lw = log_lik[..., 0].sum(-1) + log_p - log_q  # (k, B)
    mx = lw.max(0)
    expected = -(mx + np.log(np.exp(lw - mx).mean(0)))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cvae")
    spec = load(ROOT / "specs" / "cvae_digits.toml",
                ["train.epochs=12", "model.elbo.report_draws=2", "model.elbo.iw_samples=10", "output.samples=16"])
    return out, execute(spec, out, log=lambda *a, **k: None)


def test_cvae_digits_report(cvae_run):
    out, s = cvae_run
    # chance is 0.1; the classifier itself reads 0.98 of the test digits right
    assert s["cond_accuracy"] > 0.7, s["cond_accuracy_by_label"]
    assert len(s["cond_accuracy_by_label"]) == 10 and s["cond_samples_per_label"] == 44
    assert s["cond_accuracy"] == pytest.approx(np.mean(s["cond_accuracy_by_label"]), abs=1e-12)
    assert s["test_bpd"] == pytest.approx(s["test_nll_iw"] / (64 * math.log(2)), rel=1e-12)
    assert 0 < s["test_nll_iw"] < s["test_neg_elbo"] < 64 * math.log(17)
    assert 1.5 < s["label_entropy"] <= math.log(10)  # unconditional draws, y ~ p(y): every class
    assert (out / "samples_by_label.png").stat().st_size > 1000


def test_gengraph_sample_label_for_a_conditional_vae(cvae_run):
    from click.testing import CliRunner

    from gengraph.cli.main import main
    from gengraph.plugins.run.sampling import SampleError, draw

    out, _ = cvae_run
    clf = dq.digit_classifier(None, 0)
    for label in (3, 7):
        x = draw(out, 60, label=label)
        assert x.shape == (60, 1, 8, 8) and 0 <= x.min() and x.max() <= 16
        # at chance (0.1) 30 or more of 60 read as the label has probability < 1e-12
        assert np.mean(clf.predict(x / 16.0) == label) > 0.5, label
    np.testing.assert_array_equal(draw(out, 16), np.load(out / "samples.npy"))  # the run's samples.npy
    with pytest.raises(SampleError, match="0..9"):
        draw(out, 5, label=10)
    with pytest.raises(SampleError, match="takes no option guidance"):
        draw(out, 5, label=3, guidance=2.0)
    res = CliRunner().invoke(main, ["sample", str(out), "--n", "8", "--label", "3", "--out", str(out / "t.npy")])
    assert res.exit_code == 0, res.output
    assert np.load(out / "t.npy").shape == (8, 1, 8, 8)
    res = CliRunner().invoke(main, ["sample", str(out), "--label", "12"])
    assert res.exit_code == 2 and "0..9" in res.output


def test_condition_needs_labels_and_flat_encoder(tmp_path):
    x = np.random.default_rng(0).uniform(size=(8, 4))
    unlabelled = Dataset(x, None, x, None, "unsupervised")
    with pytest.raises(ModelConfigError, match="needs class labels") as e:
        build({**TINY, "likelihood": {"kind": "gaussian"}}, unlabelled)
    assert e.value.path == "model.condition"
    with pytest.raises(SpecError, match="model.condition"):
        load(ROOT / "specs" / "cvae_digits.toml", ['model.condition="labels"'])
    path = tmp_path / "roll.toml"
    path.write_text('spec_version = 1\n[data]\nsource = "swiss_roll"\nn = 50\n'
                    '[model]\nkind = "vae"\nlatent = 2\ncondition = "label"\n'
                    '[train]\noptimizer = { kind = "adam", lr = 1e-3 }\nepochs = 1\n')
    with pytest.raises(SpecError, match="roll.toml:.*model.condition.*needs class labels"):
        build_checked(load(path))
    images = Dataset(np.zeros((4, 64)), np.arange(4) % 2, None, None, "classification", n_classes=2,
                     image_shape=(1, 8, 8))
    with pytest.raises(ModelConfigError, match=r"flat layers; model.encoder\[0\] is conv2d"):
        build({**TINY, "likelihood": {"kind": "bernoulli"},
               "encoder": [{"type": "conv2d", "channels": 2, "kernel": 3}]}, images)
