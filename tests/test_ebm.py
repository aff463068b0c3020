"""EBM plugin: Langevin sampling of a known energy, loss gradients, two-sample statistics, the spec."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gengraph.engine import Graph, central_differences, compile, grad
from gengraph.plugins.datasets import Dataset
from gengraph.plugins.models.ebm import draw_samples, plugin, run_langevin
from gengraph.plugins.run.loading import load
from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.run.runner import RunContext, execute
from gengraph.plugins.spec.errors import SpecError
from gengraph.plugins.spec.schema import validate

ROOT = Path(__file__).resolve().parents[1]


def _data(n=200, d=2, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return Dataset(x[: n // 2], None, x[n // 2:], None, "unsupervised")


def _cfg(**kw):
    return validate(plugin.schema, kw)


def test_langevin_on_a_quadratic_energy_samples_the_gaussian():
    m, s, eta = np.array([1.0, -2.0]), 0.5, 0.01
    cfg = _cfg(energy="sum((x - m)**2, axis=-1) / (2 * s**2)", params={"m": m.tolist(), "s": s},
               langevin={"step_size": eta})
    g = Graph(dtype="float64", seed=0)
    model = plugin.build(cfg, g, _data(), np.random.default_rng(0))
    prog = compile(g, *model.programs["langevin_step"])
    n = 4000
    x = run_langevin(prog, np.random.default_rng(1).normal(size=(n, 2)), 400)
    # unadjusted Langevin on N(m, s^2) is exactly Gaussian with variance s^2 / (1 - eta / (4 s^2))
    var_ula = s ** 2 / (1 - eta / (4 * s ** 2))
    assert abs(var_ula / s ** 2 - 1) < 0.011
    np.testing.assert_array_less(np.abs(x.mean(0) - m), 4 * math.sqrt(var_ula / n))
    np.testing.assert_array_less(np.abs(x.var(0) - var_ula), 4 * var_ula * math.sqrt(2 / n))
    assert abs(np.corrcoef(x.T)[0, 1]) < 4 / math.sqrt(n)


def test_langevin_drift_is_minus_half_eta_times_the_engine_gradient():
    cfg = _cfg(langevin={"step_size": 0.1, "noise_scale": 0.0, "clip_step": 0.02})
    g = Graph(dtype="float64", seed=0)
    model = plugin.build(cfg, g, _data(), np.random.default_rng(0))
    x = np.random.default_rng(2).normal(size=(5, 2))
    step = compile(g, *model.programs["langevin_step"]).run(x_langevin=x)["x"]
    e = compile(g, model.programs["energy"][0]["energy"])
    num = central_differences(lambda: float(e.run(x_energy=x).sum()), x, eps=1e-6)  # dE/dx
    np.testing.assert_allclose(x - step, np.clip(0.05 * num, -0.02, 0.02), rtol=1e-6, atol=1e-9)


def test_plugin_loss_gradient_matches_finite_differences():
    g = Graph(dtype="float64", seed=0)
    model = plugin.build(_cfg(layers=[{"units": 5, "activation": "silu"}], alpha=0.3), g, _data(),
                         np.random.default_rng(0))
    rng = np.random.default_rng(3)
    feeds = {"x": rng.normal(size=(6, 2)), "x_neg": rng.normal(size=(6, 2))}
    prog = compile(g, [model.loss] + grad(model.loss, model.params))
    out = prog.run(feeds)
    assert len(model.params) == 4
    for p, got in zip(model.params, out[1:]):
        num = central_differences(lambda: prog.run(feeds)[0], g.values[p.id], eps=1e-6)
        np.testing.assert_allclose(got, num, rtol=1e-6, atol=1e-9, err_msg=p.label)


def test_train_batch_runs_langevin_from_the_replay_buffer():
    g = Graph(dtype="float64", seed=0)
    cfg = _cfg(layers=[{"units": 8, "activation": "silu"}], langevin={"steps": 3}, replay={"size": 50})
    model = plugin.build(cfg, g, _data(), np.random.default_rng(0))
    buf = model.extras["sampler"].buffer
    before = g.value(buf).copy()
    progs = {"langevin_step": compile(g, *model.programs["langevin_step"]),
             "train_step": compile(g, {"loss": model.loss})}
    ctx = RunContext({}, None, 0)
    out = plugin.train_batch(model, progs, model.feed(_data().x_train[:10], None), ctx)
    assert np.isfinite(out["loss"])
    changed = np.any(g.value(buf) != before, axis=1)
    assert 1 <= changed.sum() <= 10  # the chains' rows were written back


def test_reported_chains_continue_the_replay_buffer():
    # the buffer holds exact draws of the unadjusted chain's stationary law N(m, var_ula) for the
    # quadratic energy; started there, the reported chains stay in it (one step keeps it exactly)
    m, s, eta = np.array([1.0, -2.0]), 0.5, 0.01
    var_ula = s ** 2 / (1 - eta / (4 * s ** 2))
    n, size = 2000, 4000
    cfgs = {start: _cfg(energy="sum((x - m)**2, axis=-1) / (2 * s**2)", params={"m": m.tolist(), "s": s},
                        langevin={"step_size": eta}, replay={"size": size}, sample_start=start)
            for start in ("replay", "noise")}
    out = {}
    for start, cfg in cfgs.items():
        g = Graph(dtype="float64", seed=0)
        model = plugin.build(cfg, g, _data(), np.random.default_rng(0))
        buf = m + math.sqrt(var_ula) * np.random.default_rng(5).normal(size=(size, 2))
        g.set_value(model.extras["sampler"].buffer, buf)
        rows = model.extras["sampler"].rows(np.random.default_rng(1), size)  # without replacement
        np.testing.assert_array_equal(np.sort(rows[:, 0]), np.sort(buf[:, 0]))
        out[start] = draw_samples(model, RunContext({}, None, 0), n, 1, seed=0)
    x = out["replay"]
    np.testing.assert_array_less(np.abs(x.mean(0) - m), 4 * math.sqrt(var_ula / n))
    np.testing.assert_array_less(np.abs(x.var(0) - var_ula), 4 * var_ula * math.sqrt(2 / n))
    # one step from noise (uniform over the training rows' range, |x| up to ~3) is nowhere near it
    assert np.all(np.abs(out["noise"].mean(0) - m) > 0.5)


def test_sample_start_is_checked():
    with pytest.raises(ModelConfigError, match="replay.size"):
        plugin.build(_cfg(sample_start="replay", replay={"size": 0}), Graph(), _data(), np.random.default_rng(0))
    with pytest.raises(SpecError, match="sample_start"):
        _cfg(sample_start="buffer")


def test_energy_expression_must_be_per_example():
    with pytest.raises(ModelConfigError, match="one value per example"):
        plugin.build(_cfg(energy="sum(x**2)"), Graph(), _data(), np.random.default_rng(0))
    with pytest.raises(ModelConfigError, match="depends on the others"):
        plugin.build(_cfg(energy="sum(x**2, axis=-1) + sum(x)"), Graph(), _data(), np.random.default_rng(0))
    with pytest.raises(ModelConfigError, match="declare them"):
        plugin.build(_cfg(energy="sum((x - m)**2, axis=-1)"), Graph(), _data(), np.random.default_rng(0))


def test_ebm_moons_spec_short_run(tmp_path):
    spec = load(ROOT / "specs" / "ebm_moons.toml", ["train.epochs=4", "model.sample_steps=100"])
    s = execute(spec, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert s["samples_finite"] and np.isfinite(s["test_mmd2_h"]) and abs(s["baseline_mmd2_h"]) < 0.01
    assert s["baseline_mmd2_h_pvalue"] > 0.01 and 0 < s["test_mmd2_hdiv5_pvalue"] <= 1
    assert s["test_mmd2_h"] < 1.0 and s["energy_samples_mean"] > s["energy_data_mean"] - 1.0
    samples = np.load(tmp_path / "samples.npy")
    assert samples.shape == (1000, 2) and np.all(np.isfinite(samples))
    assert (tmp_path / "samples.png").exists() and (tmp_path / "energy.png").exists()
