"""The trainer's options through real runs: heads/losses, schedules, early stopping, L-BFGS, mini-batches."""

import json

import numpy as np
import pytest

from gengraph.plugins.spec.errors import SpecError
from gengraph.plugins.run.loading import load
from gengraph.plugins.run.runner import execute
from gengraph.plugins.run.trainer import batches

BASE = """spec_version = 1
[run]
dtype = "float64"
[data]
source = "{source}"
n = {n}
[model]
kind = "mlp"
layers = [{{ units = 16, activation = "tanh" }}]
{model}
[train]
optimizer = {{ kind = "adam", lr = 0.01 }}
epochs = {epochs}
batch_size = 32
{train}
[output]
plots = false
"""


def run(tmp_path, source="moons", n=200, model="", train="", epochs=20):
    spec = tmp_path / "spec.toml"
    spec.write_text(BASE.format(source=source, n=n, model=model, train=train, epochs=epochs))
    summary = execute(load(spec), tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return summary, rows


def test_binary_head_with_bce_classifies_moons(tmp_path):
    summary, rows = run(tmp_path, model='loss = "bce"', epochs=60)
    assert summary["test_accuracy"] >= 0.85
    assert "train_accuracy" in rows[-1] and rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_mae_loss_logs_mae_and_mse(tmp_path):
    summary, rows = run(tmp_path, source="linear", model='loss = "mae"', epochs=40)
    assert {"test_mae", "test_mse"} <= set(rows[-1])
    assert rows[-1]["test_mae"] < rows[0]["test_mae"]
    assert summary["test_r2"] > 0.9


def test_bce_on_regression_data_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="model.loss"):
        run(tmp_path, source="linear", model='loss = "bce"')


def test_early_stopping_stops_when_the_metric_stalls(tmp_path):
    # lr = 0 never improves the test loss: stop after `patience` epochs without improvement
    train = "early_stopping = { patience = 3 }\nschedule = { kind = \"constant\" }"
    spec_text = BASE.format(source="moons", n=200, model="", train=train, epochs=50).replace("lr = 0.01", "lr = 0.0")
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text)
    summary = execute(load(spec), tmp_path / "run")
    assert summary["epochs"] == 4  # epoch 1 sets the best, epochs 2-4 do not improve


def test_step_schedule_changes_the_lr_at_its_boundary(tmp_path):
    from gengraph.engine.schedules import make_schedule

    sched = make_schedule("step", lr=0.1, step_size=7, gamma=0.5)
    assert [sched.value(t) for t in (0, 6, 7, 14)] == [0.1, 0.1, 0.05, 0.025]
    summary, rows = run(tmp_path, train='schedule = { kind = "step", step_size = 7, gamma = 0.5 }', epochs=3)
    assert rows[-1]["step"] == 15 and np.isfinite(rows[-1]["train_loss"])


def test_lbfgs_trains_an_mlp_full_batch(tmp_path):
    spec = tmp_path / "lbfgs.toml"
    spec.write_text(BASE.format(source="linear", n=200, model="", train="", epochs=1)
                    .replace('optimizer = { kind = "adam", lr = 0.01 }', 'optimizer = { kind = "lbfgs", max_iter = 300 }'))
    summary = execute(load(spec), tmp_path / "lbfgs")
    assert summary["test_r2"] > 0.98  # noise 0.1 on y = 2x + 1, x ~ U(-1, 1): at most ~0.993
    assert summary["steps"] > 5  # L-BFGS iterations


def test_minibatches_cover_every_row_once_per_epoch():
    rng = np.random.default_rng(0)
    parts = batches(103, 10, rng)
    assert [len(p) for p in parts] == [10] * 10 + [3]
    assert sorted(np.concatenate(parts).tolist()) == list(range(103))
    assert [len(p) for p in batches(5, 0, None)] == [5]  # batch_size 0: full batch, in order


def test_a_plugin_that_does_not_train_by_gradient_fits_itself(tmp_path):
    from gengraph.plugins.models.mlp import MLP
    from gengraph.plugins.model import MODELS

    class ClosedForm(MLP):
        kind = "closedform_test"
        trains_by_gradient = False
        calls = 0

        def fit(self, model, data, ctx):
            type(self).calls += 1
            return False  # says nothing; trains_by_gradient = False alone must skip gradient training

    MODELS.register("closedform_test", ClosedForm(), replace=True)
    spec = tmp_path / "spec.toml"
    spec.write_text(BASE.format(source="linear", n=50, model="", train="", epochs=5)
                    .replace('kind = "mlp"', 'kind = "closedform_test"'))
    summary = execute(load(spec), tmp_path / "run")
    assert ClosedForm.calls == 1 and summary["epochs"] == 0 and summary["steps"] == 0
