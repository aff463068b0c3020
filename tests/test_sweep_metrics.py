"""Which metric a sweep ranks by and which end is best, where it writes by default, and metrics
that no run reports refused before anything runs (sweep.metric, train.early_stopping.metric)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.plugins.run.metrics import metric_mode
from gengraph.plugins.spec.errors import SpecError
from gengraph.plugins.sweep import sweep as sw

ROOT = Path(__file__).resolve().parents[1]

MLP = """spec_version = 1
[data]
source = "digits"
[model]
kind = "mlp"
layers = [{ units = 8 }]
[train]
epochs = 1
[output]
plots = false
dir = "OUT"
[sweep]
[sweep.axes]
"train.optimizer.lr" = [1e-3, 1e-2]
"""


def write(tmp_path, text):
    p = tmp_path / "cls.toml"
    p.write_text(text.replace("OUT", str(tmp_path / "runs")))
    return p


@pytest.mark.parametrize("name,mode", [
    ("test_accuracy", "max"), ("test_r2", "max"), ("test_loglik_ais", "max"), ("test_elbo", "max"),
    ("test_ll", "max"), ("test_mse", "min"), ("test_loss", "min"), ("test_bpd", "min"), ("test_nll_iw", "min"),
    ("test_neg_elbo", "min"), ("seconds", "min"),
])
def test_mode_follows_the_metric(name, mode):
    assert metric_mode(name) == mode


def test_classifier_sweep_ranks_by_accuracy_max_into_name_sweep(tmp_path):
    plan = sw.plan_sweep(write(tmp_path, MLP))
    assert (plan.metric, plan.mode) == ("test_accuracy", "max")
    assert plan.out_dir == tmp_path / "runs" / "cls-sweep"  # not runs/cls, which `gengraph run` uses
    plan = sw.plan_sweep(write(tmp_path, MLP.replace("[sweep]\n", '[sweep]\nmetric = "test_loss"\n')))
    assert (plan.metric, plan.mode) == ("test_loss", "min")
    plan = sw.plan_sweep(write(tmp_path, MLP.replace("[sweep]\n", '[sweep]\nmode = "min"\n')))
    assert (plan.metric, plan.mode) == ("test_accuracy", "min")  # written mode wins


def test_regression_sweep_defaults_to_mse_min():
    plan = sw.plan_sweep(ROOT / "specs" / "sweep_ridge_franke.toml")
    assert plan.mode == "min" and plan.metric in ("test_mse", "test_r2")


def test_metric_no_trial_reports_is_refused_before_running(tmp_path):
    spec = write(tmp_path, MLP.replace("[sweep]\n", '[sweep]\nmetric = "test_acuracy"\n'))
    with pytest.raises(SpecError) as exc:
        sw.plan_sweep(spec)
    assert str(exc.value).startswith(f"{spec}:13:1: ")
    assert 'sweep.metric: "test_acuracy" is not reported by this model; did you mean "test_accuracy"?' in str(exc.value)
    r = CliRunner().invoke(main, ["sweep", str(spec), "--workers", "1"])
    assert r.exit_code == 2 and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("metric, message", [
    ("test_accuracy", '"test_accuracy" is not reported by this model'),  # a regression has no accuracy
    ("coefficients", '"coefficients" is not a number in summary.json \\(a list, table or flag\\): nothing to rank'),
    ("terms", '"terms" is not a number in summary.json'),
    ("lasso_converged", '"lasso_converged" is not a number in summary.json'),
])
def test_a_sweep_ranks_only_by_numbers_the_model_reports(metric, message):
    with pytest.raises(SpecError, match=message):
        sw.plan_sweep(ROOT / "specs" / "sweep_ridge_franke.toml", [f'sweep.metric="{metric}"'])


def test_early_stopping_metric_checked_by_validate():
    r = CliRunner().invoke(main, ["validate", str(ROOT / "specs" / "mlp_digits.toml"), "--set",
                                  "train.early_stopping.patience=2", "--set", 'train.early_stopping.metric="test_acuracy"'])
    assert r.exit_code == 2
    assert ('train.early_stopping.metric: "test_acuracy" is not logged by this model; did you mean "test_accuracy"?'
            in r.output)


def test_a_grid_range_that_cannot_fit_is_refused_before_running(tmp_path):
    spec = tmp_path / "big.toml"
    spec.write_text('spec_version = 1\n[data]\nsource = "digits"\n[model]\nkind = "mlp"\nlayers = [{ units = 8 }]\n'
                    '[train]\nepochs = 1\n[output]\ndir = "' + str(tmp_path / "runs") + '"\n'
                    '[sweep.axes]\n"model.layers[0].units" = [16, 1000000000]\n')
    with pytest.raises(SpecError) as exc:
        sw.plan_sweep(spec)
    assert str(exc.value).startswith(f'{spec}:12:1: sweep.axes."model.layers[0].units": a parameter of shape '
                                     "(64, 1000000000)")
    assert not (tmp_path / "runs").exists()


def test_a_random_range_that_cannot_fit_is_refused_before_running(tmp_path):
    # a random sweep is checked at every numeric axis' largest drawn value, as a grid is
    spec = tmp_path / "big.toml"
    spec.write_text('spec_version = 1\n[data]\nsource = "digits"\n[model]\nkind = "mlp"\nlayers = [{ units = 8 }]\n'
                    '[train]\nepochs = 1\n[output]\ndir = "' + str(tmp_path / "runs") + '"\n'
                    '[sweep]\nmethod = "random"\ntrials = 3\n'
                    '[sweep.axes]\n"model.layers[0].units" = { low = 100000000, high = 1000000000 }\n'
                    '"train.optimizer.lr" = { low = 1e-4, high = 1e-2, log = true }\n')
    with pytest.raises(SpecError) as exc:
        sw.plan_sweep(spec)
    assert 'sweep.axes."model.layers[0].units": a parameter of shape (64, ' in str(exc.value)
    assert not (tmp_path / "runs").exists()
