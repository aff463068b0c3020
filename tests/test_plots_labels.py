"""Plots and figures that say what they show: every class labelled, a closed-form fit drawn as
bars and coefficients (not one dot), losses titled with what they are; summary names that say
their units; the gradcheck table says which criterion passed; README/docs outputs are real."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.plugins.blocks import plots

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def figures(monkeypatch):
    saved = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig))
    return saved


def test_confusion_matrix_labels_every_class(figures, tmp_path):
    y = np.arange(10)
    plots.confusion_matrix(y, y, 10, tmp_path / "c.png")
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(i) for i in range(10)]
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(i) for i in range(10)]


def test_single_fit_is_bars_not_a_dot(figures, tmp_path):
    plots.loss_curves([{"epoch": 1, "test_loss": 0.2, "test_mse": 0.2}], tmp_path / "l.png",
                      final={"train_loss": 0.1, "coefficients": [1.0]})
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["test loss", "test mse", "train loss"]
    assert len(ax.patches) == 3 and "one fit, no epochs" in ax.get_title()


def test_rbm_loss_is_titled_as_what_it_is(figures, tmp_path):
    from gengraph.plugins.models.rbm import plugin as rbm

    label = rbm.loss_label({"training": "cd"})
    assert "CD objective" in label and "not a likelihood" in label
    assert "negative log-likelihood" in rbm.loss_label({"training": "exact"})
    plots.loss_curves([{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 2.0}], tmp_path / "l.png",
                      label)
    assert figures[0].axes[0].get_title() == label


def test_closed_form_regression_draws_its_coefficients(tmp_path):
    r = CliRunner().invoke(main, ["run", str(ROOT / "specs" / "ols_franke.toml"), "--out", str(tmp_path / "r"), "-q"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r" / "coefficients.png").stat().st_size > 1000


def test_rbm_gaussian_reports_the_true_mixture_loglik(tmp_path):
    r = CliRunner().invoke(main, ["run", str(ROOT / "specs" / "rbm_gaussian.toml"), "--set", "train.epochs=1",
                                  "--set", "output.plots=false", "--set", "output.samples=0",
                                  "--out", str(tmp_path / "r"), "-q"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["true_test_loglik"] == pytest.approx(-1.01, abs=0.01)  # the README's yardstick


def test_scaled_target_metrics_say_so(tmp_path):
    r = CliRunner().invoke(main, ["run", str(ROOT / "specs" / "mlp_quadratic.toml"), "--set", "train.epochs=1",
                                  "--set", "output.plots=false", "--out", str(tmp_path / "r"), "-q"])
    assert r.exit_code == 0, r.output
    row = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "test_mse_scaled" in row and "test_mse" not in row
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["test_mse"] != summary["test_mse_scaled"]  # data units vs standardized units
    assert "two hidden layers" in (ROOT / "specs" / "mlp_quadratic.toml").read_text()


def test_gradcheck_says_which_criterion_passed():
    from gengraph.engine.gradcheck import GradCheckReport, GradCheckRow
    from gengraph.plugins.run.inspection import GradcheckReport

    rows = [GradCheckRow("a", 1e-12, 1.0, True, (2,), 2, 2), GradCheckRow("b", 1e-12, 1e-9, True, (2,), 2, 2),
            GradCheckRow("c", 1.0, 1.0, False, (2,), 2, 2)]
    report = GradcheckReport("spec", "mlp", GradCheckReport(rows, 1.0), 8, 1e-6, 1e-5, 1e-8, 0, 50)
    text = "\n".join(report.table())
    lines = text.splitlines()
    assert lines[2].split()[-2:] == ["atol+roundoff", "ok"]
    assert lines[3].split()[-2:] == ["rtol", "ok"] and lines[4].split()[-2:] == ["-", "FAIL"]
    assert "the relative error is large because the entries are near 0" in text


@pytest.mark.parametrize("doc", ["README.md", "docs/inspecting.md"])
def test_documented_graph_output_is_the_real_output(doc, monkeypatch):
    monkeypatch.chdir(ROOT)
    text = (ROOT / doc).read_text()
    key = "$ gengraph graph specs/linear_perceptron.toml --stage built\n"
    start = text.index(key) + len(key)
    shown = text[start:text.index("```", start)]
    assert shown == CliRunner().invoke(main, ["graph", "specs/linear_perceptron.toml", "--stage", "built"]).output


def test_diffusion_strip_times_are_spaced_where_the_picture_changes():
    from gengraph.plugins.run.loading import load
    from gengraph.plugins.run.runner import RunContext, build
    from gengraph.plugins.models import diffusion as d

    spec = load(ROOT / "specs" / "diffusion_moons.toml")
    _data, _plugin, _graph, model = build(spec.data, base_dir=ROOT / "specs")
    progs = d.programs_of(model, RunContext(spec.data, None, 0))
    sched = d.current_schedule(model, progs)
    cfg = model.extras["cfg"]
    steps = d.sampler_steps(cfg["sampler"], sched, cfg["variance"])
    times = d.strip_times(sched, steps, 6)
    abar = np.concatenate([[1.0], sched.alpha_bar])
    snr = [abar[t] / (1 - abar[t]) for t in times[1:-1]]
    assert times[0] == 100 and times[-1] == 0 and len(times) == 6
    assert sum(s < 0.2 for s in snr) <= 1  # at most one more column of (nearly) pure noise after t = T
    steps_log = np.diff(np.log(snr))
    assert np.all(steps_log > 0) and steps_log.max() / steps_log.min() < 2  # evenly spaced in log SNR


def test_discretized_diffusion_names_its_continuous_mc_bound(tmp_path):
    r = CliRunner().invoke(main, ["run", str(ROOT / "specs" / "diffusion_digits.toml"), "--set", "train.epochs=1",
                                  "--set", "output.plots=false", "--set", "output.samples=0",
                                  "--set", "model.schedule.T=20", "--out", str(tmp_path / "r"), "-q"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert "test_nll_bound_mc_continuous" in summary and "test_nll_bound_mc" not in summary
    assert summary["test_bpd"] > 0


@pytest.mark.parametrize("channels", [2, 5])
def test_images_of_channels_that_are_no_colours_show_side_by_side(figures, tmp_path, channels):
    # imshow refused (H, W, 2) and (H, W, 5): a run on 2-channel images ended in a traceback after
    # training, without its summary, and `gengraph sample --out x.png` too
    shape = (channels, 3, 4)
    images = np.arange(2 * channels * 12, dtype=float).reshape(2, -1)
    shown = plots.display_image(images[0], shape)
    assert shown.shape == (3, 4 * channels) == plots.display_hw(shape)
    for c in range(channels):
        np.testing.assert_array_equal(shown[:, 4 * c:4 * (c + 1)], images[0].reshape(shape)[c])
    plots.image_grid(images, shape, tmp_path / "g.png")
    np.testing.assert_array_equal(figures[0].axes[0].images[0].get_array(), shown)
    assert plots.display_image(np.arange(36.0), (3, 3, 4)).shape == (3, 4, 3)  # colours stay colours


def test_a_diffusion_run_on_two_channel_images_finishes(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d2c.npz", x=rng.integers(0, 17, size=(40, 2, 4, 4)).astype(float))
    spec = tmp_path / "u.toml"
    spec.write_text("""spec_version = 1
[run]
name = "u2c"
[data]
source = "npz"
path = "d2c.npz"
task = "unsupervised"
test_fraction = 0.25
scale = "minmax_global"
[model]
kind = "diffusion"
symmetric = true
decoder = "discretized"
levels = 17
schedule = { kind = "linear", T = 10 }
bound_timesteps = 2
[model.network]
kind = "unet"
channels = [4]
groups = 2
[train]
epochs = 1
batch_size = 16
[output]
samples = 2
""")
    res = CliRunner().invoke(main, ["run", str(spec), "--out", str(tmp_path / "r"), "-q"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert (tmp_path / "r" / "samples.png").stat().st_size > 0 and (tmp_path / "r" / "summary.json").exists()
