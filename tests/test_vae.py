"""The VAE plugin: KL identities, the ELBO on a linear-Gaussian model, gradients, a short run.

Noise is fixed for gradient checks by saving the graph's random-stream state after a
first run and restoring it before every evaluation: each level of a latent model draws
from its own stream, so the restored state replays the same eps in the loss program and
in the gradient program alike (feeding eps would need a second code path in the plugin).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from gengraph.engine import Graph, compile, grad, ops, to_numpy
from gengraph.engine.gradcheck import central_differences, compare
from gengraph.plugins.datasets import Dataset
from gengraph.plugins.models.latent_common import ELBO_TERMS, LIKELIHOODS, nll_iw
from gengraph.plugins.blocks.layers import init_rng
from gengraph.plugins.run.loading import load
from gengraph.plugins.run.runner import execute
from gengraph.plugins.spec.schema import validate
from gengraph.plugins.models.vae import plugin as vae

ROOT = Path(__file__).resolve().parents[1]
LOG_2PI = math.log(2 * math.pi)


# --- helpers shared with test_hvae.py ---------------------------------------------------------
def build(plugin, cfg: dict, x: np.ndarray, dtype="float64", seed=0):
    """A validated model config built on a tiny unsupervised dataset."""
    data = Dataset(np.asarray(x, float), None, np.asarray(x, float), None, "unsupervised")
    graph = Graph(dtype=dtype, seed=seed)
    model = plugin.build(validate(plugin.schema, cfg, path="model"), graph, data, init_rng(seed))
    return graph, model


def run(graph, node_or_dict, x):
    out = compile(graph, node_or_dict).run({"x": x})
    if isinstance(out, dict):
        return {k: np.asarray(to_numpy(v), np.float64) for k, v in out.items()}
    return np.asarray(to_numpy(out), np.float64)


def per_example_neg_elbo(model):
    terms = model.extras["terms"]
    return terms["reconstruction"] + terms["kl"]


def check_loss_gradients(graph, model, x, rtol=1e-5, atol=1e-7):
    """Engine gradients of the loss vs central differences with the noise held fixed."""
    feeds = {"x": x}
    loss_prog = compile(graph, model.loss)
    grad_prog = compile(graph, grad(model.loss, model.params))
    first = float(loss_prog.run(feeds))  # creates the streams' generators
    state = copy.deepcopy(graph.streams.state())
    assert state, "the loss should draw from a random stream"
    assert float(loss_prog.run(feeds)) != first  # without a reset the noise differs ...

    def loss():
        graph.streams.set_state(copy.deepcopy(state))
        return float(loss_prog.run(feeds))

    assert loss() == loss()  # ... and with it the loss is a deterministic function of the params
    graph.streams.set_state(copy.deepcopy(state))
    analytic = grad_prog.run(feeds)
    checked = 0
    for p, a in zip(model.params, analytic):
        numeric = central_differences(loss, graph.values[p.id], eps=1e-6)
        row = compare(p.label, a, numeric, rtol, atol)
        assert row.ok, f"{p.label}: max abs err {row.max_abs_err:.3e}, rel {row.max_rel_err:.3e}"
        checked += numeric.size
    return checked


TINY = {"encoder": [{"units": 5, "activation": "tanh"}], "decoder": [{"units": 4, "activation": "tanh"}]}


# --- KL: closed form vs Monte Carlo -----------------------------------------------------------
def test_analytic_gaussian_kl_matches_monte_carlo():
    n = 200_000
    mu_q, lv_q = np.array([0.3, -1.2, 0.0]), np.array([-0.5, 0.4, -1.5])
    mu_p, lv_p = np.array([0.0, 0.5, -0.2]), np.array([0.2, -0.3, 0.0])
    g = Graph(dtype="float64", seed=3)
    c = {k: g.constant(v) for k, v in dict(mu_q=mu_q, lv_q=lv_q, mu_p=mu_p, lv_p=lv_p).items()}
    h = c["mu_q"] + ops.exp(0.5 * c["lv_q"]) * ops.random_normal(shape=(n, 3), graph=g, stream=1)
    log_q = ops.gaussian_logpdf(h, c["mu_q"], c["lv_q"])
    outs = compile(g, {
        "std_mc": log_q + 0.5 * (ops.square(h) + LOG_2PI),  # log q - log N(0, 1)
        "gen_mc": log_q - ops.gaussian_logpdf(h, c["mu_p"], c["lv_p"]),
        "std": ops.kl_normal_std(c["mu_q"], c["lv_q"]),
        "gen": ops.kl_normal(c["mu_q"], c["lv_q"], c["mu_p"], c["lv_p"]),
    }).numpy()
    # the closed forms themselves
    vq, vp = np.exp(lv_q), np.exp(lv_p)
    np.testing.assert_allclose(outs["std"], 0.5 * (vq + mu_q ** 2 - 1 - lv_q), rtol=1e-12)
    np.testing.assert_allclose(outs["gen"], 0.5 * (lv_p - lv_q + (vq + (mu_q - mu_p) ** 2) / vp - 1), rtol=1e-12)
    for mc, exact in (("std_mc", "std"), ("gen_mc", "gen")):
        est, se = outs[mc].mean(0), outs[mc].std(0) / math.sqrt(n)
        assert np.all(np.abs(est - outs[exact]) < 4 * se + 1e-12), (mc, est, outs[exact], se)


def test_vae_analytic_and_monte_carlo_kl_estimate_the_same_kl():
    x = np.random.default_rng(0).uniform(size=(6, 4))
    cfg = {"latent": 3, **TINY, "elbo": {"kl": "monte_carlo", "samples": 4000}}
    g_mc, m_mc = build(vae, cfg, x)
    g_an, m_an = build(vae, {**cfg, "elbo": {"kl": "analytic", "samples": 4000}}, x)
    for p, q in zip(m_mc.params, m_an.params):  # same seed: same initial weights
        np.testing.assert_array_equal(g_mc.value(p), g_an.value(q))
    parts = m_mc.extras["parts"]
    per_sample = run(g_mc, parts.log_q[0] - parts.log_p[0], x)  # (S, B)
    exact = run(g_an, m_an.extras["terms"]["kl"], x)  # (B,)
    est, se = per_sample.mean(0), per_sample.std(0) / math.sqrt(per_sample.shape[0])
    assert exact.shape == (6,) and np.all(exact > 0)
    assert np.all(np.abs(est - exact) < 4.5 * se), (est, exact, se)


# --- the ELBO on a linear-Gaussian model with a known log p(x) ---------------------------------
W, B, S = 1.7, 0.4, 0.6  # p(h) = N(0, 1), p(x|h) = N(W h + B, S^2)
X = np.array([[-1.3], [0.2], [0.9], [2.5]])


def log_px(x):
    var = W ** 2 + S ** 2
    return -0.5 * (LOG_2PI + math.log(var) + (x - B) ** 2 / var)


def posterior(x):
    var = S ** 2 / (S ** 2 + W ** 2)
    return W * (x - B) / (S ** 2 + W ** 2), var


def linear_vae(kl="monte_carlo", samples=5, iw=50, exact=True, dtype="float64"):
    cfg = {"latent": 1, "encoder": [], "decoder": [], "likelihood": {"kind": "gaussian", "sigma": S},
           "elbo": {"kl": kl, "samples": samples, "iw_samples": iw}}
    g, m = build(vae, cfg, X, dtype=dtype)
    # q(h|x) = N(a x + c, exp(lv)); the exact posterior has a = W/(S^2+W^2), c = -W B/(S^2+W^2)
    a, c = W / (S ** 2 + W ** 2), -W * B / (S ** 2 + W ** 2)
    lv = math.log(S ** 2 / (S ** 2 + W ** 2))
    if not exact:
        a, c, lv = a * 0.6, c + 0.3, lv + 0.8
    g.set_value(g.find("encoder/out/W"), [[a, 0.0]])
    g.set_value(g.find("encoder/out/b"), [c, lv])
    g.set_value(g.find("decoder/out/W"), [[W]])
    g.set_value(g.find("decoder/out/b"), [B])
    return g, m, (a, c, lv)


def test_elbo_equals_log_px_when_q_is_the_exact_posterior():
    g, m, _ = linear_vae(kl="monte_carlo", samples=5)
    neg_elbo = run(g, per_example_neg_elbo(m), X)
    # log p(x, h) - log q(h|x) = log p(x) for every h: every sample gives the exact bound
    np.testing.assert_allclose(-neg_elbo, log_px(X[:, 0]), rtol=0, atol=1e-9)
    iw = nll_iw(m, X)
    np.testing.assert_allclose(-iw["nll_iw"], log_px(X[:, 0]), atol=1e-9)
    np.testing.assert_allclose(-iw["neg_elbo"], log_px(X[:, 0]), atol=1e-9)


def test_analytic_kl_terms_on_the_linear_model():
    g, m, (a, c, lv) = linear_vae(kl="analytic", samples=20_000, exact=False)
    mu, var = a * X[:, 0] + c, math.exp(lv)
    kl = run(g, m.extras["terms"]["kl"], X)
    np.testing.assert_allclose(kl, 0.5 * (var + mu ** 2 - 1 - lv), rtol=1e-12)
    # E_q[-log p(x|h)] in closed form vs its Monte Carlo estimate (20000 samples)
    rec_exact = 0.5 * (LOG_2PI + math.log(S ** 2)) + ((X[:, 0] - B - W * mu) ** 2 + W ** 2 * var) / (2 * S ** 2)
    per_sample = -run(g, m.extras["parts"].log_lik, X)
    se = per_sample.std(0) / math.sqrt(per_sample.shape[0])
    assert np.all(np.abs(per_sample.mean(0) - rec_exact) < 4.5 * se)
    # ELBO = log p(x) - KL(q || posterior) < log p(x)
    pm, pv = posterior(X[:, 0])
    gap = 0.5 * (math.log(pv) - lv + (var + (mu - pm) ** 2) / pv - 1)
    assert np.all(gap > 0.05)
    elbo_exact = log_px(X[:, 0]) - gap
    np.testing.assert_allclose(-(rec_exact + kl), elbo_exact, atol=1e-12)
    assert np.all(-(per_sample.mean(0) + kl) < log_px(X[:, 0]))


def test_iw_bound_lies_between_the_elbo_and_log_px():
    g, m, _ = linear_vae(kl="analytic", iw=500, exact=False)
    runs = [nll_iw(m, X) for _ in range(20)]  # 20 x 500 samples per example
    iw = np.array([r["nll_iw"] for r in runs])
    elbo_k = -np.mean([r["neg_elbo"] for r in runs], axis=0)  # the ELBO from the same samples
    se = iw.std(0) / math.sqrt(len(runs))
    lp = log_px(X[:, 0])
    assert np.all(elbo_k < -iw.mean(0))  # Jensen, run by run and on average
    assert np.all(-iw.mean(0) < lp + 4 * se + 1e-3)  # E[IW bound] <= log p(x)
    # with 500 samples the IW bound closes most of the gap on this 1-D model
    assert np.all(np.abs(lp + iw.mean(0)) < 0.1 * (lp - elbo_k))


# --- gradients ---------------------------------------------------------------------------------
@pytest.mark.parametrize("likelihood,kl", [({"kind": "bernoulli"}, "analytic"),
                                           ({"kind": "gaussian", "sigma": 0.7, "learn_variance": True},
                                            "monte_carlo")])
def test_vae_loss_gradient_matches_finite_differences(likelihood, kl):
    x = np.random.default_rng(1).uniform(size=(5, 4))
    cfg = {"latent": 2, **TINY, "likelihood": likelihood, "elbo": {"kl": kl, "samples": 2, "beta": 0.7}}
    g, m = build(vae, cfg, x)
    n_lik = len([p for p in m.params if p.label.startswith("likelihood/")])
    assert n_lik == (1 if likelihood.get("learn_variance") else 0)
    assert check_loss_gradients(g, m, x) == sum(p.shape[0] * (p.shape[1] if p.ndim == 2 else 1)
                                                 for p in m.params)


def test_beta_weighs_the_kl_in_the_loss_only():
    x = np.random.default_rng(2).uniform(size=(5, 4))
    g, m = build(vae, {"latent": 2, **TINY, "elbo": {"beta": 0.25}}, x)
    out = compile(g, {"loss": m.loss, **m.metrics}).run({"x": x})
    np.testing.assert_allclose(float(out["neg_elbo"]), float(out["reconstruction"]) + float(out["kl"]), rtol=1e-12)
    np.testing.assert_allclose(float(out["loss"]), float(out["reconstruction"]) + 0.25 * float(out["kl"]),
                               rtol=1e-12)


def test_registries_name_the_builtins():
    assert {"reconstruction", "kl"} <= set(ELBO_TERMS.names())
    assert {"bernoulli", "gaussian"} <= set(LIKELIHOODS.names())


# --- end to end ----------------------------------------------------------------------------------
def test_vae_digits_spec_runs_and_iw_bound_is_tighter(tmp_path):
    out = tmp_path / "vae"
    summary = execute(load(ROOT / "specs" / "vae_digits.toml", ["train.epochs=4", "model.elbo.report_draws=3",
                                                                 "model.elbo.iw_samples=20"]), out)
    for key in ("test_neg_elbo", "test_reconstruction", "test_kl", "test_nll_iw"):
        assert math.isfinite(summary[key]), key
    # a categorical pmf over 17 grey levels: below the uniform pmf's 64 log 17 nats
    assert 0 < summary["test_nll_iw"] < summary["test_neg_elbo"] < 64 * math.log(17)
    assert summary["test_bpd"] == pytest.approx(summary["test_nll_iw"] / (64 * math.log(2)), rel=1e-12)
    for key in ("test_neg_elbo", "test_nll_iw", "test_bpd"):
        assert 0 < summary[key + "_se"] < 0.05 * summary[key], key
    assert summary["baseline_histogram_bpd"] == pytest.approx(2.4176, abs=1e-4)
    assert summary["test_neg_elbo"] == pytest.approx(summary["test_reconstruction"] + summary["test_kl"], rel=1e-5)
    assert 0 < summary["baseline_fd"] < summary["test_fd"] and summary["fd_sample_size"] == 449
    assert 1.5 < summary["label_entropy"] <= math.log(10) and sum(summary["sample_label_counts"]) == 449
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train_neg_elbo"] < rows[0]["train_neg_elbo"]
    samples = np.load(out / "samples.npy", allow_pickle=False)
    assert samples.shape == (64, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 16  # data units (grey levels)
    for name in ("reconstructions.png", "samples.png", "elbo_terms.png", "loss.png"):
        assert (out / name).stat().st_size > 1000, name


def test_vae_with_2d_latent_draws_the_latent_plots(tmp_path):
    out = tmp_path / "vae2"
    summary = execute(load(ROOT / "specs" / "vae_digits.toml",
                           ["train.epochs=1", "model.latent=2", "output.samples=9",
                            "model.elbo.report_draws=2", "model.elbo.iw_samples=10"]), out)
    assert math.isfinite(summary["test_nll_iw"])
    assert np.load(out / "samples.npy", allow_pickle=False).shape == (9, 1, 8, 8)
    for name in ("latent.png", "manifold.png"):
        assert (out / name).stat().st_size > 1000, name


def test_bernoulli_on_binarized_digits_reports_bits_per_dim(tmp_path):
    summary = execute(load(ROOT / "specs" / "vae_digits.toml",
                           ["train.epochs=1", "data.binarize=0.5", 'model.likelihood={kind="bernoulli"}',
                            "output.samples=0", "model.elbo.report_draws=2"]), tmp_path / "bin")
    assert summary["test_bpd"] == pytest.approx(summary["test_nll_iw"] / (64 * math.log(2)), rel=1e-12)
    assert 0 < summary["test_bpd"] < 1  # binary pixels: at most 1 bit each
    assert 0 < summary["baseline_histogram_bpd"] < 1
