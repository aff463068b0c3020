"""Early stopping watches its metric in the right direction, checks its name before training, lets
an epoch that does not log the metric pass; batch sizes past the training set are one batch; a
run of train.epochs = 0 evaluates the model as it is, with L-BFGS too."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import gengraph
from gengraph.cli.main import main

GAUSS = {"run": {"name": "g", "seed": 0}, "data": {"source": "gaussians", "n": 300},
         "model": {"kind": "mlp", "layers": [{"units": 16, "activation": "tanh"}]},
         "train": {"epochs": 12, "batch_size": 32, "optimizer": {"kind": "sgd", "lr": 0.02}},
         "output": {"plots": False}}


def expected_stop(values, patience, higher_is_better):
    """The epoch (1-based) early stopping ends at for this logged sequence, else len(values)."""
    best, bad = np.inf, 0
    for epoch, v in enumerate(values, 1):
        score = -v if higher_is_better else v
        if score < best:
            best, bad = score, 0
        else:
            bad += 1
            if bad >= patience:
                return epoch
    return len(values)


@pytest.mark.parametrize("metric, mode, higher", [("test_accuracy", "auto", True), ("test_accuracy", "max", True),
                                                   ("test_loss", "auto", False), ("test_accuracy", "min", False)])
def test_early_stopping_follows_the_metric_s_direction(tmp_path, metric, mode, higher):
    spec = {**GAUSS, "train": {**GAUSS["train"], "early_stopping": {"patience": 2, "metric": metric, "mode": mode}}}
    run = gengraph.run(spec, out=tmp_path / "r", progress=None)
    values = [row[metric] for row in run.metrics]
    free = gengraph.run({**GAUSS}, out=tmp_path / "free", progress=None)  # the same run without stopping
    full = [row[metric] for row in free.metrics]
    assert values == full[:len(values)]
    assert len(values) == expected_stop(full, 2, higher)


def test_accuracy_is_watched_upwards_by_default():
    assert gengraph.validate({**GAUSS, "train": {**GAUSS["train"], "early_stopping": {"patience": 2}}}
                             )["train"]["early_stopping"]["mode"] == "auto"
    from gengraph.plugins.run.metrics import stopping_mode
    assert stopping_mode({"metric": "test_accuracy"}) == "max" and stopping_mode({"metric": "test_loss"}) == "min"
    assert stopping_mode({"metric": "test_loglik_ais"}) == "max"


def test_a_misspelt_train_metric_is_refused_before_training(tmp_path):
    result = CliRunner().invoke(main, ["validate", "linear_perceptron", "--set", "train.early_stopping.patience=2",
                                       "--set", 'train.early_stopping.metric="train_los"'])
    assert result.exit_code == 2
    assert '"train_los" is not logged by this model; did you mean "train_loss"?' in result.output


def test_an_epoch_that_does_not_log_the_metric_does_not_count(tmp_path):
    # rbm logs test_loglik_ais after its first ais_epochs epochs only: the run went on (it died with
    # '"test_loglik_ais" is not logged' after epoch 2, its epochs lost)
    run = gengraph.run("rbm_digits", {"train.epochs": 4, "model.ais_epochs": 2, "train.early_stopping.patience": 3,
                                      "train.early_stopping.metric": "test_loglik_ais", "output.plots": False,
                                      "output.samples": 0}, out=tmp_path / "rbm", progress=None)
    assert [("test_loglik_ais" in row) for row in run.metrics] == [True, True, False, False]
    assert run.summary["epochs"] == 4


def test_a_batch_larger_than_the_training_set_is_one_batch(tmp_path):
    spec = {**GAUSS, "train": {**GAUSS["train"], "epochs": 2, "batch_size": 10 ** 8}}
    gengraph.validate(spec)  # the memory check counted 10**8 rows
    run = gengraph.run(spec, out=tmp_path / "r", progress=None)
    assert [row["step"] for row in run.metrics] == [1, 2]


@pytest.mark.parametrize("spec, optimizer", [("regression_gd", "lbfgs"), ("mlp_digits", "adam")])
def test_zero_epochs_evaluates_the_model_as_it_is(tmp_path, spec, optimizer):
    run = gengraph.run(spec, {"train.epochs": 0, "output.plots": False}, out=tmp_path / "r", progress=None)
    assert run.spec["train"]["optimizer"]["kind"] == optimizer
    rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0] and run.summary["steps"] == 0 and run.summary["epochs"] == 0
    assert run.summary["test_loss"] == rows[0]["test_loss"] and "lbfgs_iterations" not in rows[0]
    trained = gengraph.run(spec, {"train.epochs": 1, "output.plots": False}, out=tmp_path / "t", progress=None)
    assert trained.summary["test_loss"] < run.summary["test_loss"]  # one epoch (L-BFGS: its fit) does better
    assert any(not np.array_equal(v, trained.params[k]) for k, v in run.params.items())


def test_an_early_stop_is_said(tmp_path, capsys):
    # min_delta 10: no epoch after the first can improve on it, so the run stops after epoch 2
    spec = {**GAUSS, "train": {**GAUSS["train"], "epochs": 40,
                               "early_stopping": {"patience": 1, "min_delta": 10.0}}}
    run = gengraph.run(spec, out=tmp_path / "r", progress=None)
    assert len(run.metrics) == 2
    best = run.metrics[0]["test_loss"]
    assert (f"note: early stopping after epoch 2 of 40: test_loss has not improved on {best:.6g} by more than min_delta 10 for 1 epoch"
            in capsys.readouterr().out)


def test_a_reader_that_goes_away_does_not_cut_a_run_short(tmp_path):
    # `gengraph run ... 2>&1 | head -1`: the progress lines (and the early-stop note) stopped the run
    # with exit 0 and no checkpoint; now they stop, the run ends with all its files
    import subprocess
    import sys

    out = tmp_path / "r"
    p = subprocess.Popen([sys.executable, "-m", "gengraph", "run", "mlp_digits", "--out", str(out), "--set",
                          "train.epochs=6", "--set", "train.early_stopping={patience=1, min_delta=10.0}"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    p.stdout.readline()
    p.stdout.close()
    assert p.wait(timeout=300) == 0
    assert (out / "summary.json").is_file() and (out / "checkpoint.npz").is_file()
