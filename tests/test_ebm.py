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


def _validate(spec_text, tmp_path, *args):
    from click.testing import CliRunner

    from gengraph.cli.main import main

    path = tmp_path / "e.toml"
    path.write_text(spec_text)
    return CliRunner().invoke(main, ["validate", str(path), *args])


EXPR_EBM = ('spec_version = 1\n[data]\nsource = "moons"\n[model]\nkind = "ebm"\nenergy = "{energy}"\n{params}'
            '[train]\nepochs = 1\nbatch_size = 16\n')


def test_an_energy_without_parameters_is_refused_unless_nothing_trains(tmp_path):
    # it validated, then the first batch failed with KeyError: 'train_step' (no parameters, no step)
    text = EXPR_EBM.format(energy="sum(x * x, axis=1)", params="")
    res = _validate(text, tmp_path)
    assert res.exit_code == 2
    assert "e.toml:4:1: model.params: the model has no parameters to train (declare them in model.params and use " \
           "them in model.energy); or set train.epochs = 0" in res.output, res.output
    assert _validate(text, tmp_path, "--set", "train.epochs=0").exit_code == 0  # sampling a fixed energy


def test_an_energy_whose_shapes_clash_on_data_is_a_spec_error(tmp_path):
    # x @ x passed the shape rules (unknown batch axis) and raised NumPy's ValueError: a traceback
    res = _validate(EXPR_EBM.format(energy="sum(x @ x, axis=1)", params=""), tmp_path)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "e.toml:6:1: model.energy: 'sum(x @ x, axis=1)': matmul: " in res.output, res.output


def test_rbm_energy_messages_read_once(tmp_path):
    from click.testing import CliRunner

    from gengraph.cli.main import main

    spec = str(Path(__file__).parent.parent / "specs" / "rbm_digits.toml")
    res = CliRunner().invoke(main, ["validate", spec, "--set", 'model.energy="sum(x)"'])
    assert res.exit_code == 2 and "model.energy: in expression 'sum(x)', column 1: the energy must" in res.output
    res = CliRunner().invoke(main, ["validate", spec, "--set", 'model.energy="sum(x * q, axis=1)"'])
    assert res.exit_code == 2 and "unknown name(s) q; a binary-visible energy may use" in res.output, res.output


def test_energy_names_and_constants_are_explained(tmp_path):
    # an unknown name got no suggestion (functions and keywords did); a 4000-digit constant was
    # echoed whole as "not an array or a number"
    res = _validate(EXPR_EBM.format(energy="sum(x * ww, axis=1)", params="params = { w = 1.0 }\n"), tmp_path)
    assert res.exit_code == 2 and 'unknown name(s) ww (did you mean "w" for ww?): declare them' in res.output, res.output
    res = _validate(EXPR_EBM.format(energy="9" * 4000 + " * sum(x * w, axis=1)", params="params = { w = 1.0 }\n"),
                    tmp_path)
    assert res.exit_code == 2 and "column 1: constant is too large for a float" in res.output and "9" * 100 not in \
        res.output, res.output[:300]


@pytest.mark.parametrize("params, message", [
    ("params = { w = true }\n", "model.params.w: expected a number or an array of numbers"),
    ("params = { w = [1.0, false] }\n", "model.params.w: expected a number or an array of numbers"),
    ('params = { "w\\u001b[2J" = 1.0 }\n', "model.params: 'w\\x1b[2J' is not a name an expression can use"),
])
def test_energy_parameters_are_numbers_with_usable_names(tmp_path, params, message):
    # true was taken as 1.0, and a name with an escape sequence went into the checkpoint's keys
    res = _validate(EXPR_EBM.format(energy="sum(x * x, axis=1)", params=params), tmp_path)
    assert res.exit_code == 2 and message in res.output, res.output
