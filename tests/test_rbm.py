"""RBM plugin: free energies, conditionals and exact likelihood gradients against enumeration."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gengraph.engine import Graph, central_differences, compile, grad, ops
from gengraph.plugins.datasets import Dataset
from gengraph.plugins.models.rbm_energy import BuiltinEnergy, ExpressionEnergy, all_states, check_expression
from gengraph.plugins.run.loading import load
from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.models.rbm import ais_log_partition, plugin
from gengraph.plugins.run.runner import execute

ROOT = Path(__file__).resolve().parents[1]
NV, NH = 6, 4
BINARY_EXPR = "-(x @ a) - (h @ b) - sum((x @ W) * h, axis=-1)"
GAUSS_EXPR = "sum((x - a)**2 / (2 * sigma**2), axis=-1) - h @ b - sum(((x / sigma**2) @ W) * h, axis=-1)"


def tiny(visible="binary", expression=None, nv=NV, nh=NH, seed=0):
    """(graph, energy, numpy parameter values) of a small RBM in float64."""
    rng = np.random.default_rng(seed)
    g = Graph(dtype="float64", seed=seed)
    vals = {"a": rng.normal(0, 0.5, nv), "b": rng.normal(0, 0.5, nh), "W": rng.normal(0, 0.7, (nv, nh))}
    params = {k: g.param(k, v) for k, v in vals.items()}
    if visible == "gaussian":
        vals["sigma"] = rng.uniform(0.6, 1.4, nv)
        params["log_sigma"] = g.param("log_sigma", np.log(vals["sigma"]))
    env = {k: params[k] for k in ("a", "b", "W")}
    if visible == "gaussian":
        env["sigma"] = ops.exp(params["log_sigma"])
    if expression:
        return g, ExpressionEnergy(g, visible, nv, nh, env, expression), vals, params
    return g, BuiltinEnergy(g, visible, nv, nh, env), vals, params


def np_energy(x, h, v, visible):
    """E for every pair of rows: (len(x), len(h))."""
    if visible == "binary":
        return -(x @ v["a"])[:, None] - (h @ v["b"])[None, :] - x @ v["W"] @ h.T
    s2 = v["sigma"] ** 2
    quad = np.sum((x - v["a"]) ** 2 / (2 * s2), axis=1)
    return quad[:, None] - (h @ v["b"])[None, :] - (x / s2) @ v["W"] @ h.T


def run(g, outputs, **feeds):
    return compile(g, outputs).run(feeds)


# --- free energy and conditionals ---------------------------------------------------------
@pytest.mark.parametrize("visible", ["binary", "gaussian"])
@pytest.mark.parametrize("form", ["builtin", "expression"])
def test_free_energy_matches_brute_force_sum_over_h(visible, form):
    expression = (GAUSS_EXPR if visible == "gaussian" else BINARY_EXPR) if form == "expression" else None
    g, energy, v, _ = tiny(visible, expression)
    rng = np.random.default_rng(1)
    x_val = (rng.random((7, NV)) < 0.5).astype(float) if visible == "binary" else rng.normal(size=(7, NV))
    x = g.input("x", (None, NV))
    f = run(g, energy.free_energy(x), x=x_val)
    H = all_states(NH)
    brute = -np.logaddexp.reduce(-np_energy(x_val, H, v, visible), axis=1)
    np.testing.assert_allclose(f, brute, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", ["builtin", "expression"])
def test_binary_conditionals_match_enumeration(form):
    g, energy, v, _ = tiny("binary", BINARY_EXPR if form == "expression" else None)
    V, H = all_states(NV), all_states(NH)
    logp = -np_energy(V, H, v, "binary")  # unnormalised log p(v, h)
    x, h = g.input("x", (None, NV)), g.input("h", (None, NH))
    out = run(g, {"ph": energy.hidden_probs(x), "px": energy.visible_mean(h)}, x=V, h=H)
    p_h_given_x = np.exp(logp - np.logaddexp.reduce(logp, axis=1, keepdims=True))  # rows: v
    np.testing.assert_allclose(out["ph"], p_h_given_x @ H, rtol=1e-12, atol=1e-14)
    p_x_given_h = np.exp(logp - np.logaddexp.reduce(logp, axis=0, keepdims=True))  # columns: h
    np.testing.assert_allclose(out["px"], p_x_given_h.T @ V, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("form", ["builtin", "expression"])
def test_gaussian_conditional_matches_numerical_integration(form):
    nv, nh = 2, 3
    g, energy, v, _ = tiny("gaussian", GAUSS_EXPR if form == "expression" else None, nv=nv, nh=nh, seed=4)
    H = all_states(nh)
    h = g.input("h", (None, nh))
    t = energy.visible_terms(h)
    out = run(g, {"mean": t["mean"], "prec": t["precision"] + ops.zeros_like(t["mean"]),
                  "fh": energy.hidden_free_energy(h)}, h=H)
    # p(x | h) ∝ exp(-E(x, h)) on a fine grid: its mean and variance per coordinate
    u = np.linspace(-9, 9, 721)
    du = u[1] - u[0]
    grid = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    logp = -np_energy(grid, H, v, "gaussian")  # (grid, h)
    log_int = np.logaddexp.reduce(logp, axis=0) + 2 * math.log(du)  # log ∫ exp(-E(x, h)) dx
    p = np.exp(logp - logp.max(0))
    p /= p.sum(0)
    mean = p.T @ grid
    var = p.T @ grid ** 2 - mean ** 2
    np.testing.assert_allclose(out["mean"], mean, atol=1e-8)
    np.testing.assert_allclose(out["prec"], 1 / var, rtol=1e-6)
    np.testing.assert_allclose(out["mean"], v["a"] + H @ v["W"].T, atol=1e-12)  # the lecture's formula
    np.testing.assert_allclose(out["prec"], np.broadcast_to(1 / v["sigma"] ** 2, (len(H), nv)), rtol=1e-12)
    np.testing.assert_allclose(-out["fh"], log_int, atol=1e-8)  # visible units integrated out


def test_gaussian_log_partition_matches_2d_quadrature():
    g, energy, v, _ = tiny("gaussian", nv=2, nh=3, seed=5)
    log_z = run(g, energy.log_partition())
    u = np.linspace(-10, 10, 801)
    grid = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    brute = np.logaddexp.reduce(-np_energy(grid, all_states(3), v, "gaussian"), axis=None) + 2 * math.log(u[1] - u[0])
    assert abs(float(log_z) - brute) < 1e-8


@pytest.mark.parametrize("visible", ["binary", "gaussian"])
def test_expression_energy_equal_to_builtin_gives_the_same_model(visible):
    g1, e1, _, _ = tiny(visible)
    g2, e2, _, _ = tiny(visible, GAUSS_EXPR if visible == "gaussian" else BINARY_EXPR)
    rng = np.random.default_rng(2)
    xv = (rng.random((9, NV)) < 0.5).astype(float) if visible == "binary" else rng.normal(size=(9, NV))
    hv = (rng.random((9, NH)) < 0.5).astype(float)
    outs = []
    for g, e in ((g1, e1), (g2, e2)):
        x, h = g.input("x", (None, NV)), g.input("h", (None, NH))
        outs.append(run(g, {"F": e.free_energy(x), "E": e.energy(x, h), "ph": e.hidden_probs(x),
                            "mx": e.visible_mean(h), "logZ": e.log_partition(),
                            "dF": grad(ops.sum(e.free_energy(x)), x)}, x=xv, h=hv))
    for k in outs[0]:
        np.testing.assert_allclose(outs[1][k], outs[0][k], rtol=1e-12, atol=1e-12, err_msg=k)


def test_expression_check_rejects_batch_sums_and_hidden_interactions():
    with pytest.raises(ValueError, match="other examples"):
        check_expression("-sum(x * a) - (h @ b) - sum((x @ W) * h, axis=-1)", "binary", 5, 3)
    with pytest.raises(ValueError, match="not linear in h"):
        check_expression("-(x @ a) - (h @ b) ** 2 - sum((x @ W) * h, axis=-1)", "binary", 5, 3)
    with pytest.raises(ValueError, match="diagonal"):
        check_expression("sum(x**2, axis=-1) + sum(x, axis=-1)**2 - h @ b - sum((x @ W) * h, axis=-1)",
                         "gaussian", 4, 3)
    check_expression(GAUSS_EXPR, "gaussian", 4, 3)  # the lecture's form passes


# --- exact likelihood and its gradient ------------------------------------------------------
def test_exact_loglik_gradient_matches_numpy_enumeration_to_1e10():
    g, energy, v, params = tiny("binary")
    rng = np.random.default_rng(3)
    data = (rng.random((10, NV)) < 0.4).astype(float)
    x = g.input("x", (None, NV))
    ll = ops.mean(-energy.free_energy(x)) - energy.log_partition()
    wrt = [params["a"], params["b"], params["W"]]
    out = run(g, [ll] + grad(ll, wrt), x=data)
    # independent NumPy: enumerate (v, h), p(v, h) = exp(-E) / Z
    V, H = all_states(NV), all_states(NH)
    logp = -np_energy(V, H, v, "binary")
    log_z = np.logaddexp.reduce(logp, axis=None)
    joint = np.exp(logp - log_z)
    idx = (data @ (2 ** np.arange(NV))).astype(int)  # row of each example in V
    cond = np.exp(logp[idx] - np.logaddexp.reduce(logp[idx], axis=1, keepdims=True))  # p(h | x)
    ll_ref = np.mean(np.logaddexp.reduce(logp[idx], axis=1)) - log_z
    grads_ref = [data.mean(0) - joint.sum(1) @ V,  # <x>_data - <v>_model
                 (cond @ H).mean(0) - joint.sum(0) @ H,  # <h>_data - <h>_model
                 data.T @ (cond @ H) / len(data) - V.T @ joint @ H]  # <x h^T>_data - <v h^T>_model
    assert abs(float(out[0]) - ll_ref) < 1e-10
    for got, ref in zip(out[1:], grads_ref):
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)


def test_gaussian_exact_loglik_gradient_matches_finite_differences():
    g, energy, v, params = tiny("gaussian", nv=3, nh=4, seed=6)
    x = g.input("x", (None, 3))
    data = np.random.default_rng(0).normal(size=(8, 3))
    ll = ops.mean(-energy.free_energy(x)) - energy.log_partition()
    wrt = [params[k] for k in ("a", "b", "W", "log_sigma")]
    prog = compile(g, [ll] + grad(ll, wrt))
    out = prog.run(x=data)
    for p, got in zip(wrt, out[1:]):
        num = central_differences(lambda: prog.run(x=data)[0], g.values[p.id], eps=1e-6)
        np.testing.assert_allclose(got, num, rtol=1e-6, atol=1e-8, err_msg=p.label)


# --- the plugin --------------------------------------------------------------------------------
def _dataset(nv=NV, n=40, seed=0, binary=True):
    rng = np.random.default_rng(seed)
    x = (rng.random((n, nv)) < 0.3 + 0.4 * (np.arange(nv) % 2)).astype(float) if binary \
        else rng.normal(size=(n, nv))
    return Dataset(x[: n * 3 // 4], None, x[n * 3 // 4:], None, "unsupervised")


def _cfg(**kw):
    from gengraph.plugins.spec.schema import validate

    return validate(plugin.schema, {"n_hidden": NH, **kw})


@pytest.mark.parametrize("training", ["cd", "pcd", "exact"])
def test_plugin_loss_gradient_matches_finite_differences(training):
    data = _dataset()
    g = Graph(dtype="float64", seed=11)
    model = plugin.build(_cfg(training=training, k=2, chains=5, init_std=0.5), g, data, np.random.default_rng(0))
    feeds = {"x": data.x_train[:12]}
    prog = compile(g, [model.loss] + grad(model.loss, model.params))
    prog.run(feeds)  # creates the noise streams; every run below starts from this state
    saved = g.streams.state()

    def run_fixed():
        g.streams.set_state(saved)
        return prog.run(feeds)

    out = run_fixed()
    for p, got in zip(model.params, out[1:]):
        num = central_differences(lambda: run_fixed()[0], g.values[p.id], eps=1e-6)
        np.testing.assert_allclose(got, num, rtol=1e-5, atol=1e-7, err_msg=p.label)
    if training == "cd":  # the CD gradient is the positive minus the negative phase
        assert {"recon_error", "pseudo_loglik", "loglik_exact"} <= set(model.metrics)


def test_ais_estimate_matches_exact_log_partition():
    data = _dataset(nv=10, n=80)
    g = Graph(dtype="float64", seed=2)
    model = plugin.build(_cfg(n_hidden=8, exact_max_units=0, init_std=0.4, ais_steps=1000), g, data,
                         np.random.default_rng(1))
    assert "ais_step" in model.programs
    exact = float(compile(g, model.extras["energy"].log_partition()).run())
    est, se = ais_log_partition(model, None, runs=100, steps=1000, seed=0)
    assert abs(est - exact) < max(4 * se, 0.02), (est, exact, se)


def test_binary_visible_needs_binary_data_and_energy_names_are_checked():
    with pytest.raises(ModelConfigError, match="binarize"):
        plugin.build(_cfg(), Graph(), _dataset(binary=False), np.random.default_rng(0))
    with pytest.raises(ModelConfigError, match="unknown name"):
        plugin.build(_cfg(energy="-(x @ c)"), Graph(), _dataset(), np.random.default_rng(0))


# --- the specs, shortened -------------------------------------------------------------------------
def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_rbm_digits_spec_short_run(tmp_path):
    spec = load(ROOT / "specs" / "rbm_digits.toml",
                ["train.epochs=3", "model.ais_steps=500", "model.ais_runs=50", "model.sample_steps=50"])
    s = execute(spec, tmp_path)
    rows = _rows(tmp_path)
    chance = 64 * math.log(0.5)  # the pseudo-log-likelihood of p(x_i | rest) = 1/2
    plls = [r["test_pseudo_loglik"] for r in rows]
    assert plls[0] < plls[1] < plls[2] and chance < plls[0] < 0
    assert -40 < s["test_loglik_ais"] < 0 and np.isfinite(s["ais_log_partition"])
    assert s["test_loglik_ais_se"] == s["train_loglik_ais_se"] == s["ais_log_partition_se"] > 0  # the README's NAME_se
    assert 0 < s["test_recon_error"] < 0.2
    assert s["test_accuracy_hidden_logreg"] > 0.75
    # sample quality in the digit classifier's features: data vs data is close, entropies at most ln 10
    assert 0 < s["baseline_fd"] < 5 and s["test_fd"] > 0 and s["fd_sample_size"] == 449 and s["test_fd_se"] > 0
    assert 2.2 < s["baseline_label_entropy"] <= math.log(10) and 0 <= s["label_entropy"] <= math.log(10)
    # the samples come from parallel tempering: 10 replicas, every neighbour pair exchanging states
    assert len(s["pt_swap_acceptance"]) == 9 and all(0.2 < r <= 1 for r in s["pt_swap_acceptance"])
    samples = np.load(tmp_path / "samples.npy")
    assert samples.shape == (64, 1, 8, 8) and set(np.unique(samples)) <= {0.0, 1.0}
    assert (tmp_path / "samples.png").exists() and (tmp_path / "filters.png").exists()


def test_rbm_gaussian_spec_short_run(tmp_path):
    s = execute(load(ROOT / "specs" / "rbm_gaussian.toml", ["train.epochs=6", "model.sample_steps=50"]), tmp_path)
    lls = [r["test_loglik_exact"] for r in _rows(tmp_path)]
    assert lls[-1] > lls[0] and all(np.isfinite(lls))
    assert abs(s["test_loglik_exact"] - lls[-1]) < 1e-3  # the report's chunked log Z agrees with the graph's
    assert np.load(tmp_path / "samples.npy").shape == (1000, 2)
    assert (tmp_path / "density.png").exists()


def test_ais_without_a_test_split_names_the_training_rows(tmp_path):
    # the per-epoch estimate on the training rows was logged as test_loglik_ais, with no standard error
    spec = load(ROOT / "specs" / "rbm_digits.toml",
                ["train.epochs=2", "model.ais_epochs=2", "model.ais_steps=100", "model.ais_runs=20",
                 "model.sample_steps=5", "data.test_fraction=0.0", "output.plots=false", "model.sampler=\"gibbs\""])
    s = execute(spec, tmp_path)
    rows = _rows(tmp_path)
    assert not [k for r in rows for k in r if k.startswith("test_")]
    assert all(r["train_loglik_ais_se"] > 0 and -60 < r["train_loglik_ais"] < 0 for r in rows)
    assert s["train_loglik_ais_by_epoch"] == [r["train_loglik_ais"] for r in rows]
    assert s["train_loglik_ais_se"] == s["ais_log_partition_se"] > 0


def _np_free_energy(x, v):
    return -(x @ v["a"]) - np.sum(np.logaddexp(0.0, v["b"] + x @ v["W"]), axis=1)


def test_pseudo_loglik_is_exact_for_the_digits_and_an_unbiased_one_flip_estimate_above():
    # all nv flips in one tensor cost nv free energies per example: 784 on MNIST, 60 GFLOP a step
    # (1.3 s of a 1.31 s rbm_mnist step); above EXACT_PLL_MAX_VISIBLE one drawn unit, times nv
    import gengraph.plugins.models.rbm_energy as rbm_energy

    def exact_np(x, v):
        f = _np_free_energy(x, v)
        terms = [np.logaddexp(0.0, f - _np_free_energy(np.where(np.arange(x.shape[1]) == i, 1 - x, x), v))
                 for i in range(x.shape[1])]
        return -np.sum(terms, axis=0)

    rng = np.random.default_rng(3)
    for nv in (rbm_energy.EXACT_PLL_MAX_VISIBLE, rbm_energy.EXACT_PLL_MAX_VISIBLE + 20):
        g, energy, vals, _ = tiny(nv=nv, nh=5, seed=nv)
        x = g.input("x", (None, nv))
        prog = compile(g, energy.pseudo_loglik(x))
        xs = (rng.random((6, nv)) < 0.3).astype(np.float64)
        want = exact_np(xs, vals)
        if nv <= rbm_energy.EXACT_PLL_MAX_VISIBLE:
            np.testing.assert_allclose(prog.run({"x": xs}), want, rtol=1e-12)
            continue
        draws = np.array([prog.run({"x": xs}) for _ in range(3000)])  # a new unit per example each run
        assert len({tuple(d) for d in draws[:20]}) > 1  # the drawn unit changes from run to run
        se = draws.std(axis=0) / np.sqrt(len(draws))
        assert np.all(np.abs(draws.mean(axis=0) - want) < 4 * se), (draws.mean(axis=0), want, se)
