"""The Markovian hierarchical VAE: the lecture's ELBO, an exactly solvable linear chain, gradients, a short run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gengraph.engine import compile, ops
from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.models.hvae import plugin as hvae
from gengraph.plugins.models.latent_common import nll_iw
from gengraph.plugins.run.loading import load
from gengraph.plugins.run.runner import execute
from gengraph.plugins.models.vae import plugin as vae

from test_vae import LOG_2PI, build, check_loss_gradients, per_example_neg_elbo, run

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = {"encoder": [{"units": 5, "activation": "tanh"}], "decoder": [{"units": 4, "activation": "tanh"}]}


def test_levels_use_the_template_unless_they_declare_their_own_layers():
    x = np.zeros((3, 6))
    g, m = build(hvae, {**TEMPLATE, "levels": [{"size": 3}, {"size": 2, "encoder": [{"units": 7}]}]}, x)
    shapes = {p.label: p.shape for p in m.params}
    assert shapes["encoder1/dense0/W"] == (6, 5) and shapes["encoder1/out/W"] == (5, 6)  # q(h1|x): mu, logvar
    assert shapes["encoder2/dense0/W"] == (3, 7) and shapes["encoder2/out/W"] == (7, 4)  # q(h2|h1), own layers
    assert shapes["decoder1/dense0/W"] == (3, 4) and shapes["decoder1/out/W"] == (4, 6)  # p(x|h1): logits
    assert shapes["decoder2/dense0/W"] == (2, 4) and shapes["decoder2/out/W"] == (4, 6)  # p(h1|h2): mu, logvar
    assert set(m.metrics) == {"neg_elbo", "reconstruction", "kl", "kl_1", "kl_2"}
    with pytest.raises(ModelConfigError, match="model.levels"):  # the runner adds file:line
        build(hvae, {**TEMPLATE, "levels": []}, x)


def test_one_level_hvae_is_the_vae():
    x = np.random.default_rng(0).uniform(size=(5, 4))
    elbo = {"kl": "monte_carlo", "samples": 3}
    gv, mv = build(vae, {"latent": 2, **TEMPLATE, "elbo": elbo}, x)
    gh, mh = build(hvae, {**TEMPLATE, "levels": [{"size": 2}], "elbo": elbo}, x)
    assert [p.shape for p in mv.params] == [p.shape for p in mh.params]
    a = compile(gv, {"loss": mv.loss, **mv.metrics}).run({"x": x})
    b = compile(gh, {"loss": mh.loss, **mh.metrics}).run({"x": x})  # same seed: same weights and noise
    for k in a:
        np.testing.assert_allclose(float(a[k]), float(b[k]), rtol=1e-12, err_msg=k)


# --- the lecture's equation, recomputed in NumPy from the drawn samples ---------------------------
def _dense(g, scope, x, n_hidden):
    for i in range(n_hidden):
        x = np.tanh(x @ g.value(g.find(f"{scope}/dense{i}/W")) + g.value(g.find(f"{scope}/dense{i}/b")))
    return x @ g.value(g.find(f"{scope}/out/W")) + g.value(g.find(f"{scope}/out/b"))


def _log_normal(h, z):
    mu, lv = np.split(z, 2, axis=-1)
    return np.sum(-0.5 * (LOG_2PI + lv + (h - mu) ** 2 / np.exp(lv)), axis=-1)


def test_neg_elbo_is_the_markovian_hvae_equation():
    rng = np.random.default_rng(1)
    x = (rng.uniform(size=(4, 5)) > 0.5).astype(float)
    g, m = build(hvae, {**TEMPLATE, "levels": [{"size": 3}, {"size": 2}],
                        "elbo": {"kl": "monte_carlo", "samples": 1}}, x)
    hs = m.extras["parts"].hs
    out = run(g, {"neg": per_example_neg_elbo(m), "h1": hs[0], "h2": hs[1]}, x)
    h1, h2 = out["h1"][0], out["h2"][0]  # one sample per example
    logits = _dense(g, "decoder1", h1, 1)
    log_px_h1 = np.sum(x * logits - np.logaddexp(0, logits), axis=-1)
    log_p_h1_h2 = _log_normal(h1, _dense(g, "decoder2", h2, 1))
    log_p_h2 = np.sum(-0.5 * (LOG_2PI + h2 ** 2), axis=-1)
    log_q_h1_x = _log_normal(h1, _dense(g, "encoder1", x, 1))
    log_q_h2_h1 = _log_normal(h2, _dense(g, "encoder2", h1, 1))
    elbo = log_px_h1 + log_p_h1_h2 + log_p_h2 - log_q_h1_x - log_q_h2_h1
    np.testing.assert_allclose(-out["neg"], elbo, rtol=1e-10)


# --- a linear-Gaussian chain whose posterior the HVAE can represent exactly ---------------------------
# p(h2) = N(0, 1), p(h1|h2) = N(A h2 + C, S1^2), p(x|h1) = N(W h1 + B, S^2); the posterior factorises as
# p(h1|x) p(h2|h1) (h2 and x are independent given h1), both Gaussians linear in what they condition on.
A, C, S1, W, B, S = 1.3, -0.2, 0.5, 0.8, 0.3, 0.4
X = np.array([[-1.0], [0.1], [0.7], [2.0]])
V1 = A ** 2 + S1 ** 2  # marginal variance of h1 (mean C)


def log_px(x):
    var = W ** 2 * V1 + S ** 2
    return -0.5 * (LOG_2PI + math.log(var) + (x - B - W * C) ** 2 / var)


def linear_chain(kl="monte_carlo", samples=5, iw=50):
    cfg = {"encoder": [], "decoder": [], "levels": [{"size": 1}, {"size": 1}],
           "likelihood": {"kind": "gaussian", "sigma": S}, "elbo": {"kl": kl, "samples": samples, "iw_samples": iw}}
    g, m = build(hvae, cfg, X)
    v_post1 = 1 / (1 / V1 + W ** 2 / S ** 2)  # p(h1|x) = N(v (C/V1 + W (x - B)/S^2), v)
    a1, c1 = v_post1 * W / S ** 2, v_post1 * (C / V1 - W * B / S ** 2)
    v_post2 = 1 / (1 + A ** 2 / S1 ** 2)  # p(h2|h1) = N(v A (h1 - C)/S1^2, v)
    a2, c2 = v_post2 * A / S1 ** 2, -v_post2 * A * C / S1 ** 2
    values = {"encoder1/out": ([[a1, 0.0]], [c1, math.log(v_post1)]),
              "encoder2/out": ([[a2, 0.0]], [c2, math.log(v_post2)]),
              "decoder2/out": ([[A, 0.0]], [C, math.log(S1 ** 2)]),  # p(h1|h2)
              "decoder1/out": ([[W]], [B])}  # p(x|h1)
    for scope, (w, b) in values.items():
        g.set_value(g.find(f"{scope}/W"), w)
        g.set_value(g.find(f"{scope}/b"), b)
    return g, m


def test_hvae_elbo_equals_log_px_with_the_exact_posterior():
    g, m = linear_chain(kl="monte_carlo", samples=7)
    np.testing.assert_allclose(-run(g, per_example_neg_elbo(m), X), log_px(X[:, 0]), atol=1e-9)
    iw = nll_iw(m, X)
    np.testing.assert_allclose(-iw["nll_iw"], log_px(X[:, 0]), atol=1e-9)


def test_hvae_analytic_top_kl_is_unbiased():
    g, m = linear_chain(kl="analytic", samples=20_000)
    p = m.extras["parts"]
    mu2, lv2 = p.qs[1]
    out = run(g, {"per_sample": -p.log_lik + p.log_q[0] - p.log_p[0] + ops.sum(ops.kl_normal_std(mu2, lv2), axis=-1),
                  "neg_elbo": per_example_neg_elbo(m)}, X)  # one program: the same draws
    per_sample = out["per_sample"]
    np.testing.assert_allclose(out["neg_elbo"], per_sample.mean(0), rtol=1e-10)
    se = per_sample.std(0) / math.sqrt(per_sample.shape[0])
    assert np.all(se > 0) and np.all(np.abs(-per_sample.mean(0) - log_px(X[:, 0])) < 4.5 * se)


# --- gradients ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels,likelihood,kl", [
    ([{"size": 3}, {"size": 2}], {"kind": "bernoulli"}, "analytic"),
    ([{"size": 2}, {"size": 2}, {"size": 1}], {"kind": "gaussian", "sigma": 0.8, "learn_variance": True},
     "monte_carlo"),
])
def test_hvae_loss_gradient_matches_finite_differences(levels, likelihood, kl):
    x = np.random.default_rng(2).uniform(size=(4, 4))
    g, m = build(hvae, {**TEMPLATE, "levels": levels, "likelihood": likelihood, "elbo": {"kl": kl, "samples": 2}}, x)
    assert len(m.params) == 8 * len(levels) + (1 if likelihood.get("learn_variance") else 0)
    assert check_loss_gradients(g, m, x) > 100


# --- end to end ---------------------------------------------------------------------------------------------
def test_hvae_digits_spec_runs(tmp_path):
    out = tmp_path / "hvae"
    summary = execute(load(ROOT / "specs" / "hvae_digits.toml", ["train.epochs=3", "model.elbo.report_draws=3",
                                                                  "model.elbo.iw_samples=20"]), out)
    for key in ("test_neg_elbo", "test_reconstruction", "test_kl", "test_kl_1", "test_kl_2", "test_nll_iw"):
        assert math.isfinite(summary[key]), key
    # a categorical pmf over 17 grey levels: below the uniform pmf's 64 log 17 nats
    assert 0 < summary["test_nll_iw"] < summary["test_neg_elbo"] < 64 * math.log(17)
    assert summary["test_bpd"] == pytest.approx(summary["test_nll_iw"] / (64 * math.log(2)), rel=1e-12)
    for key in ("test_neg_elbo", "test_nll_iw", "test_bpd", "test_kl_1"):
        assert 0 < summary[key + "_se"] < 0.05 * summary[key], key
    assert summary["baseline_histogram_bpd"] == pytest.approx(2.4176, abs=1e-4)
    assert summary["test_kl"] == pytest.approx(summary["test_kl_1"] + summary["test_kl_2"], rel=1e-5)
    assert summary["test_neg_elbo"] == pytest.approx(summary["test_reconstruction"] + summary["test_kl"], rel=1e-5)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[-1]["train_neg_elbo"] < rows[0]["train_neg_elbo"]
    samples = np.load(out / "samples.npy", allow_pickle=False)
    assert samples.shape == (64, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 16
    for name in ("reconstructions.png", "samples.png", "elbo_terms.png"):
        assert (out / name).stat().st_size > 1000, name
