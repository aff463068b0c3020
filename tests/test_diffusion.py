"""The diffusion plugin: the bound's terms are the KLs they claim to be, the three
parameterisations agree, the loss gradient matches finite differences, DDIM(eta=1, all
steps) is DDPM, and both shipped specs run end to end (shortened)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from gengraph.engine import Graph, compile, grad, ops
from gengraph.engine.gradcheck import central_differences, compare
from gengraph.plugins.blocks import sample_quality as sq
from gengraph.plugins.models import diffusion as dfn
from gengraph.plugins.datasets import Dataset
from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.blocks.noise_schedules import make_noise_schedule
from gengraph.plugins.blocks.samplers import ddim_timesteps, sampler_steps
from gengraph.plugins.spec.schema import validate

SPECS = Path(__file__).resolve().parents[1] / "specs"
PREDICTIONS = ["epsilon", "x0", "v"]


def model_cfg(**over):
    return validate(dfn.plugin.schema, over, path="model")


def tiny_data(D=2, n=8, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, D))
    return Dataset(x, None, x[:5].copy(), None, "unsupervised")


def tiny_model(dtype="float64", seed=3, data=None, **over):
    over.setdefault("layers", [{"units": 5, "activation": "tanh"}])
    over.setdefault("time_embedding", {"kind": "scalar"})
    over.setdefault("schedule", {"kind": "linear", "T": 4, "beta_start": 0.05, "beta_end": 0.5})
    cfg = model_cfg(**over)
    data = data or tiny_data()
    g = Graph(dtype=dtype, seed=seed)
    return dfn.plugin.build(cfg, g, data, np.random.default_rng(1)), data


# --- Gaussian KL ----------------------------------------------------------------------------
def test_kl_normal_analytic_vs_monte_carlo():
    mu_q, lv_q = np.array([0.3, -1.0, 2.0]), np.array([-0.5, 0.2, 0.0])
    mu_p, lv_p = np.array([0.0, 0.5, 1.0]), np.array([0.3, -0.4, 0.8])
    g = Graph(dtype="float64")
    nodes = [g.input(k, (3,)) for k in ("a", "b", "c", "d")]
    kl = compile(g, ops.kl_normal(*nodes)).run(a=mu_q, b=lv_q, c=mu_p, d=lv_p)
    rng = np.random.default_rng(0)
    z = mu_q + np.exp(lv_q / 2) * rng.standard_normal((400_000, 3))
    logq = -0.5 * (np.log(2 * np.pi) + lv_q + (z - mu_q) ** 2 / np.exp(lv_q))
    logp = -0.5 * (np.log(2 * np.pi) + lv_p + (z - mu_p) ** 2 / np.exp(lv_p))
    d = logq - logp
    se = d.std(0) / math.sqrt(len(d))
    assert np.all(np.abs(d.mean(0) - kl) < 4 * se), (d.mean(0), kl)


def gaussian_kl(mq, vq, mp, vp):
    return 0.5 * np.sum(np.log(vp / vq) + (vq + (mq - mp) ** 2) / vp - 1.0, axis=-1)


SCHEDULES = [{"kind": "linear", "T": 20, "beta_start": 1e-3, "beta_end": 0.3}, {"kind": "cosine", "T": 20}]


@pytest.mark.parametrize("sched_cfg", SCHEDULES)
@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_bound_terms_are_the_kls(sched_cfg, variance, prediction):
    """const_t + w_t ||target - f||^2 = KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) for t >= 2,
    = -log N(x0; x0_hat, beta_1) for t = 1, and the prior term = KL(q(x_T|x0) || N(0, I))."""
    s = make_noise_schedule(sched_cfg)
    D = 3
    tab = dfn.bound_tables(s.gamma, D, prediction, variance)
    c0, ct = s.posterior_coefs
    rng = np.random.default_rng(7)
    x0, eps, f = rng.normal(size=(3, 4, D))
    for t in range(1, s.T + 1):
        sa, sb = math.sqrt(s.alpha_bar[t - 1]), math.sqrt(s.one_minus_alpha_bar[t - 1])
        np.testing.assert_allclose([tab["sqrt_abar"][t], tab["sqrt_1m_abar"][t]], [sa, sb], rtol=1e-12)
        xt = sa * x0 + sb * eps
        x0_hat, _ = dfn.x0_eps_from_output(f, xt, sa, sb, prediction)
        target = dfn.target_of(x0, eps, sa, sb, prediction)
        mine = tab["const"][t] + tab["w"][t] * np.sum((target - f) ** 2, axis=1)
        if t == 1:
            b1 = s.betas[0]
            expected = -np.sum(-0.5 * (np.log(2 * np.pi * b1) + (x0 - x0_hat) ** 2 / b1), axis=1)
        else:
            var_p = s.beta_tilde[t - 1] if variance == "beta_tilde" else s.betas[t - 1]
            expected = gaussian_kl(c0[t - 1] * x0 + ct[t - 1] * xt, s.beta_tilde[t - 1],
                                   c0[t - 1] * x0_hat + ct[t - 1] * xt, var_p)
        np.testing.assert_allclose(mine, expected, rtol=1e-8, atol=1e-10)
    prior = 0.5 * np.sum(tab["abar_T"] * (x0 ** 2 - 1), axis=1) + 0.5 * D * tab["neg_log_1m_abar_T"]
    aT = s.alpha_bar[-1]
    np.testing.assert_allclose(prior, gaussian_kl(math.sqrt(aT) * x0, 1 - aT, 0.0, 1.0), rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_graph_tables_equal_numpy_tables(variance):
    """The learned schedule's tables (graph ops on gamma) are the fixed schedules' (NumPy)."""
    s = make_noise_schedule(SCHEDULES[1])
    for prediction in PREDICTIONS:
        ref = dfn.bound_tables(s.gamma, 3, prediction, variance)
        g = Graph(dtype="float64")
        nodes = dfn.bound_tables(g.constant(s.gamma), 3, prediction, variance, dfn._GraphMath(g))
        got = compile(g, nodes).run()
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("t", [1, 5, 20])
def test_parameterisations_give_the_same_x0(t):
    """One x0 estimate written as each parameterisation's output gives back the same x0_hat,
    eps_hat and the same bound term: the bound does not depend on the parameterisation."""
    s = make_noise_schedule(SCHEDULES[0])
    sa, sb = math.sqrt(s.alpha_bar[t - 1]), math.sqrt(s.one_minus_alpha_bar[t - 1])
    rng = np.random.default_rng(t)
    x0, eps = rng.normal(size=(2, 6, 2))
    xt = sa * x0 + sb * eps
    x0_est = np.tanh(xt) * 1.3 - 0.2  # some function of the network's input
    results = {}
    for p in PREDICTIONS:
        f = dfn.output_for_x0(x0_est, xt, sa, sb, p)
        x0_hat, eps_hat = dfn.x0_eps_from_output(f, xt, sa, sb, p)
        tab = dfn.bound_tables(s.gamma, 2, p, "beta_tilde")
        term = tab["const"][t] + tab["w"][t] * np.sum((dfn.target_of(x0, eps, sa, sb, p) - f) ** 2, axis=1)
        results[p] = (x0_hat, eps_hat, term)
        np.testing.assert_allclose(sa * x0_hat + sb * eps_hat, xt, rtol=1e-12, atol=1e-12)
    for p in ("x0", "v"):
        for a, b in zip(results["epsilon"], results[p]):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(results["epsilon"][0], x0_est, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_graph_x0_hat_uses_the_same_conversion(prediction):
    model, data = tiny_model(prediction=prediction)
    s = model.extras["schedule"]
    out = model.programs["sample_step"][0]
    prog = compile(model.graph, {"f": model.extras["output"], "x0_hat": out["x0_hat"]})
    x = np.random.default_rng(0).normal(size=(5, 2))
    for t in (1, 3):
        res = prog.run(x_t=x, t=np.full(5, t))
        sa, sb = math.sqrt(s.alpha_bar[t - 1]), math.sqrt(s.one_minus_alpha_bar[t - 1])
        np.testing.assert_allclose(res["x0_hat"], dfn.x0_eps_from_output(res["f"], x, sa, sb, prediction)[0],
                                   rtol=1e-10)


# --- loss gradient vs finite differences --------------------------------------------------------
GRAD_CASES = [
    {"loss": "simple", "prediction": "epsilon"},
    {"loss": "elbo", "prediction": "epsilon"},
    {"loss": "elbo", "prediction": "x0", "variance": "beta"},
    {"loss": "elbo", "prediction": "v", "time_embedding": {"kind": "sinusoidal", "dim": 4}},
    {"loss": "elbo", "prediction": "v", "schedule": {"kind": "learned", "T": 4, "units": 3,
                                                      "gamma_min": -4.0, "gamma_max": 3.0}},
    {"loss": "elbo", "prediction": "epsilon", "symmetric": True, "variance": "beta",
     "schedule": {"kind": "learned", "T": 3, "units": 2, "learn_endpoints": False}},
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: "-".join(str(v) if not isinstance(v, dict)
                                                                     else v["kind"] for v in c.values()))
def test_loss_gradient_matches_finite_differences(case):
    model, data = tiny_model(**copy.deepcopy(case))
    g = model.graph
    grads = grad(model.loss, model.params)
    prog = compile(g, [model.loss, model.extras["t_train"]] + grads)
    for stream in (dfn.EPS_STREAM, dfn.T_STREAM):  # create the generators, then freeze their state
        g.streams.rng(stream)
    state = copy.deepcopy(g.streams.state())
    x = data.x_train

    def run():
        g.streams.set_state(copy.deepcopy(state))
        return prog.run(x=x)

    out = run()
    t_drawn = set(np.asarray(out[1]).tolist())
    assert 1 in t_drawn and len(t_drawn) > 1  # the decoder term and diffusion terms are both checked
    assert np.isfinite(out[0])
    for p, analytic in zip(model.params, out[2:]):
        numeric = central_differences(lambda: run()[0], g.values[p.id], eps=1e-6)
        row = compare(p.label, analytic, numeric, rtol=1e-5, atol=1e-7)
        assert row.ok, row


# --- samplers ------------------------------------------------------------------------------
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_steps_keep_the_marginal_variance(eta):
    # b^2 + sigma^2 = 1 - abar_prev (Song et al. 2021, eq. 12) at every step with eta in [0, 1];
    # eta = 1.5 gave 1.98 instead of 0.9997 (b^2 clamped at 0) and is refused now
    s = make_noise_schedule({"kind": "linear", "T": 1000})
    for st in sampler_steps({"kind": "ddim", "eta": eta, "steps": 10, "clip_x0": False}, s):
        if st.t_next > 0:
            assert st.b ** 2 + st.sigma ** 2 == pytest.approx(s.one_minus_alpha_bar[st.t_next - 1], rel=1e-12)


def test_ddim_eta_above_one_is_refused():
    import gengraph
    from gengraph.plugins.spec.errors import SpecError

    with pytest.raises(SpecError, match=r"model\.sampler\.eta: must be <= 1\.0, found 1\.5"):
        gengraph.validate("diffusion_digits", {"model.sampler": {"kind": "ddim", "eta": 1.5}})


@pytest.mark.parametrize("sched_cfg", SCHEDULES)
def test_ddim_eta_one_full_steps_is_ddpm(sched_cfg):
    s = make_noise_schedule(sched_cfg)
    ddpm = sampler_steps({"kind": "ddpm", "variance": "beta_tilde", "clip_x0": False}, s)
    ddim = sampler_steps({"kind": "ddim", "eta": 1.0, "steps": 0, "clip_x0": False}, s)
    assert [(a.t, a.t_next) for a in ddpm] == [(b.t, b.t_next) for b in ddim]
    np.testing.assert_allclose([[a.a, a.b, a.sigma] for a in ddpm], [[b.a, b.b, b.sigma] for b in ddim],
                               rtol=1e-10, atol=1e-13)
    # the same update on a real model, given the same noise
    model, _ = tiny_model(schedule=copy.deepcopy(sched_cfg))
    progs = dfn.programs_of(model)
    x_ddpm, snaps1 = dfn.sample(model, progs, ddpm, 7, np.random.default_rng(5), record=[sched_cfg["T"], 10, 0])
    x_ddim, snaps2 = dfn.sample(model, progs, ddim, 7, np.random.default_rng(5), record=[sched_cfg["T"], 10, 0])
    np.testing.assert_allclose(x_ddpm, x_ddim, rtol=1e-9, atol=1e-12)
    assert set(snaps1) == {sched_cfg["T"], 10, 0}
    np.testing.assert_allclose(snaps1[10], snaps2[10], rtol=1e-9, atol=1e-12)
    # DDPM's mean: a x0_hat + b eps_hat = c0 x0_hat + ct x_t
    c0, ct = s.posterior_coefs
    for st in ddpm:
        i = st.t - 1
        assert st.a == pytest.approx(c0[i] + ct[i] * math.sqrt(s.alpha_bar[i]), rel=1e-12)
        assert st.b == pytest.approx(ct[i] * math.sqrt(s.one_minus_alpha_bar[i]), rel=1e-12, abs=1e-15)


def test_ddim_fewer_steps_and_deterministic():
    s = make_noise_schedule({"kind": "cosine", "T": 100})
    taus = ddim_timesteps(100, 10)
    assert taus[0] == 1 and taus[-1] == 100 and len(taus) == 10 and np.all(np.diff(taus) > 0)
    steps = sampler_steps({"kind": "ddim", "eta": 0.0, "steps": 10, "clip_x0": False}, s)
    assert [st.t for st in steps] == list(taus[::-1]) and steps[-1].t_next == 0
    assert all(st.sigma == 0.0 for st in steps)
    # eta = 0: x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev) eps_hat
    st = steps[1]
    assert st.a == pytest.approx(math.sqrt(s.alpha_bar[st.t_next - 1]))
    assert st.b == pytest.approx(math.sqrt(s.one_minus_alpha_bar[st.t_next - 1]))
    beta_var = sampler_steps({"kind": "ddpm", "variance": "beta", "clip_x0": False}, s)
    assert beta_var[0].sigma == pytest.approx(math.sqrt(s.betas[-1])) and beta_var[-1].sigma == 0.0


# --- decoder and sample-quality numerics ------------------------------------------------------
def test_discretized_decoder_is_a_distribution():
    levels, sigma = 5, 0.3
    grid = np.linspace(-1, 1, levels)
    mean = np.array([-1.2, -0.3, 0.0, 0.55, 2.0])
    probs = np.exp(np.stack([dfn.discretized_gaussian_loglik(np.full_like(mean, v), mean, sigma, levels)
                             for v in grid]))
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-12)
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    h = 1 / (levels - 1)
    assert probs[2, 3] == pytest.approx(phi((h - 0.55) / sigma) - phi((-h - 0.55) / sigma), rel=1e-10)
    assert probs[0, 1] == pytest.approx(phi((-1 + h + 0.3) / sigma), rel=1e-10)
    # far tails stay finite and match the asymptotic normal tail
    far = dfn.discretized_gaussian_loglik(np.array([0.5]), np.array([-1.0]), 0.01, levels)
    z = (0.5 - h + 1.0) / 0.01
    assert far[0] == pytest.approx(-0.5 * z * z - math.log(z * math.sqrt(2 * math.pi)), rel=1e-3)
    # the erfc branch and the asymptotic branch meet at z = 20
    below, above = dfn.log_normal_sf(np.array([20.0 - 1e-7, 20.0 + 1e-7]))
    assert below == pytest.approx(above, abs=1e-5)


def test_mmd_and_energy_distance():
    rng = np.random.default_rng(0)
    x, y, z = rng.normal(size=(400, 2)), rng.normal(size=(400, 2)), rng.normal(size=(400, 2)) + [1.0, 0.0]
    h = sq.median_bandwidth(x)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    assert h == pytest.approx(np.median(d[np.triu_indices(400, 1)]))
    assert abs(sq.mmd2_unbiased(x, y, h)) < 0.005 < sq.mmd2_unbiased(x, z, h)
    a, b = x[:30], z[:20]
    dab = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).mean()
    daa = np.sqrt(((a[:, None] - a[None]) ** 2).sum(-1)).sum() / (30 * 29)
    dbb = np.sqrt(((b[:, None] - b[None]) ** 2).sum(-1)).sum() / (20 * 19)
    assert sq.energy_distance_unbiased(a, b) == pytest.approx(2 * dab - daa - dbb, rel=1e-9)


# --- spec errors ------------------------------------------------------------------------------
def test_config_errors_name_the_key():
    with pytest.raises(ModelConfigError, match="model.loss"):
        tiny_model(schedule={"kind": "learned", "T": 4}, loss="simple")
    with pytest.raises(ModelConfigError, match="model.time_embedding.dim"):
        tiny_model(time_embedding={"kind": "sinusoidal", "dim": 5})
    with pytest.raises(ModelConfigError, match="model.decoder"):
        tiny_model(decoder="discretized", levels=17)  # Gaussian data are not on a grid


# --- the shipped specs, shortened -----------------------------------------------------------------
def run_spec(name, out, *overrides):
    from gengraph.plugins.run.loading import load
    from gengraph.plugins.run.runner import execute

    spec = load(SPECS / name, list(overrides))
    return execute(spec, out, log=lambda *a, **k: None)


def _finite(summary):
    return all(math.isfinite(v) for v in summary.values() if isinstance(v, float))


def test_moons_spec_end_to_end_and_reproducible(tmp_path):
    short = ("train.epochs=2", "model.schedule.T=30", "output.samples=300")
    s1 = run_spec("diffusion_moons.toml", tmp_path / "a", *short)
    for key in ("test_nll_bound", "test_nll_bound_mc", "test_mmd2_h", "baseline_mmd2_h", "test_mmd2_hdiv5_pvalue",
                "test_energy_distance", "baseline_energy_distance", "test_prior_term", "test_reconstruction_term", "test_diffusion_term"):
        assert key in s1, key
    assert _finite(s1) and s1["test_nll_bound"] > 0 and abs(s1["baseline_mmd2_h"]) < 0.03
    assert s1["test_nll_bound"] == pytest.approx(s1["test_prior_term"] + s1["test_reconstruction_term"]
                                                 + s1["test_diffusion_term"], rel=1e-9)
    samples = np.load(tmp_path / "a" / "samples.npy", allow_pickle=False)
    assert samples.shape == (300, 2) and np.all(np.isfinite(samples))
    for f in ("samples.png", "denoising.png", "loss.png", "checkpoint.npz", "summary.json"):
        assert (tmp_path / "a" / f).stat().st_size > 0, f
    # the same seed gives the same run, bit for bit
    s2 = run_spec("diffusion_moons.toml", tmp_path / "b", *short)
    drop = lambda d: {k: v for k, v in d.items() if k not in ("seconds", "epoch_seconds")}  # noqa: E731
    assert drop(s1) == drop(s2)
    np.testing.assert_array_equal(samples, np.load(tmp_path / "b" / "samples.npy"))
    rows = [[drop(json.loads(line)) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("a", "b")]
    assert rows[0] == rows[1] and len(rows[0]) == 2


def test_moons_learned_schedule_runs(tmp_path):
    s = run_spec("diffusion_moons.toml", tmp_path, "train.epochs=1", 'model.loss="elbo"', "output.samples=50",
                 'model.schedule={kind="learned", T=20, units=8}', 'model.sampler={kind="ddim", steps=5}',
                 "model.bound_batch=300", "model.bound_samples=2")
    assert _finite(s) and s["sampler_steps"] == 5 and s["log_snr_1"] > s["log_snr_T"]


def test_digits_spec_end_to_end_via_cli(tmp_path):
    from click.testing import CliRunner

    from gengraph.cli.main import main

    out = tmp_path / "digits"
    res = CliRunner().invoke(main, ["run", str(SPECS / "diffusion_digits.toml"), "--out", str(out), "--json",
                                    "--set", "train.epochs=1", "--set", "model.schedule.T=40"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)["summary"]
    assert _finite(summary)
    assert summary["test_bpd"] == pytest.approx(summary["test_nll_bound"] / (64 * math.log(2)))
    assert summary["test_bpd"] > 0 and summary["test_reconstruction_term"] >= 0  # a discrete likelihood
    assert 0 < summary["baseline_fd"] < summary["test_fd"] and summary["fd_sample_size"] == 449
    assert 0 <= summary["label_entropy"] <= math.log(10)
    samples = np.load(out / "samples.npy", allow_pickle=False)
    assert samples.shape == (64, 1, 8, 8) and np.all(np.isfinite(samples))  # the data's image shape
    assert (out / "samples.png").exists() and (out / "denoising.png").exists()


# --- the stratified estimate of the bound over t (model.bound_timesteps) ------------------------
@pytest.mark.parametrize("T,k", [(1000, 100), (50, 7), (12, 3), (12, 11), (5, 0)])
def test_t_strata_partition_one_to_T(T, k):
    strata = dfn.t_strata(T, k)
    assert strata[0] == (1, 1)  # prior + decoder: always exact
    covered = [t for lo, hi in strata for t in range(lo, hi + 1)]
    assert covered == list(range(1, T + 1))  # every t once, in order
    assert len(strata) - 1 <= (k if 0 < k < T - 1 else T - 1)
    widths = [hi - lo + 1 for lo, hi in strata[1:]]
    assert widths[0] == 1 and widths[-1] == max(widths)  # narrow where the terms are large


def test_stratified_bound_is_unbiased_for_the_full_sum():
    # T = 12 terms per example; K = 3 strata draw one t each. The mean of many independent
    # stratified estimates must agree with the exact sum over t (both with fresh x_t draws) within
    # their standard errors, and each estimate must run 1 + 3 programs per batch, not 12.
    sched = {"kind": "linear", "T": 12, "beta_start": 0.05, "beta_end": 0.4}
    runs = {}
    for k, reps in ((0, 200), (3, 800)):
        model, data = tiny_model(schedule=sched, bound_timesteps=k, bound_samples=reps)
        progs = dfn.programs_of(model)
        calls = [0]
        run = progs["bound_terms"].run

        def counting(*a, _run=run, **kw):
            calls[0] += 1
            return _run(*a, **kw)

        progs["bound_terms"].run = counting
        runs[k] = dfn.nll_bound(model, progs, dfn.current_schedule(model, progs), data.x_test, seed=5)
        assert calls[0] == reps * (12 if k == 0 else 4)
    full, strat = runs[0], runs[3]
    assert full["prior"] == pytest.approx(strat["prior"], rel=1e-12)  # the same model
    se = math.hypot(full["nll_bound_se"], strat["nll_bound_se"])
    assert 0 < se < 0.05 * abs(full["diffusion"])
    assert abs(full["nll_bound"] - strat["nll_bound"]) < 4 * se
    # the stratified draws add variance over t: a larger SE at the same number of estimates
    assert strat["nll_bound_se"] * math.sqrt(800) > full["nll_bound_se"] * math.sqrt(200)


def test_ddim_steps_past_T_are_refused(tmp_path):
    # steps = 100000 with T = 100 validated, and gengraph sample --steps 100000 ran 100 steps, unsaid
    from click.testing import CliRunner

    from gengraph.cli.main import main

    spec = str(Path(__file__).resolve().parents[1] / "specs" / "diffusion_moons.toml")
    r = CliRunner().invoke(main, ["validate", spec, "--set", 'model.sampler={kind="ddim", steps=101}'])
    assert r.exit_code == 2 and "model.sampler.steps: at most T = 100 (one step per timestep), found 101" in r.output
    out = tmp_path / "r"
    r = CliRunner().invoke(main, ["run", spec, "--out", str(out), "-q", "--set", "train.epochs=1", "--set", "data.n=200",
                                  "--set", "output.samples=4", "--set", "output.plots=false"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["sample", str(out), "--sampler", "ddim", "--steps", "101", "--n", "2"])
    assert r.exit_code == 2 and "option steps: DDIM takes at most T = 100 steps (one per timestep), found 101" \
        in r.output, r.output
