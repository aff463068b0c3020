"""Divergence messages: the first non-finite node is named also for plugins with their own
batch step (ebm), and the gradient-norm monitor cannot overflow while every gradient is finite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from gengraph.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_ebm_divergence_names_the_first_non_finite_node(tmp_path):
    r = CliRunner().invoke(main, ["run", str(ROOT / "specs" / "ebm_moons.toml"), "--set", "train.optimizer.lr=1e30",
                                  "--set", "train.epochs=2", "--set", "output.plots=false", "--out",
                                  str(tmp_path / "r"), "-q"])
    assert r.exit_code == 1
    assert "run failed: the training loss became nan at epoch 1" in r.output
    assert "non-finite value first produced by " in r.output


def test_gradient_norm_does_not_overflow_in_float32():
    from gengraph.engine import Graph, ops
    from gengraph.plugins.model import Model, ModelPlugin
    from gengraph.plugins.run.runner import RunContext
    from gengraph.plugins.run.trainer import Trainer
    from gengraph.plugins.datasets.base import Dataset

    g = Graph("float32")
    x = g.input("x", (None, 8))
    theta = g.param("theta", np.zeros(8, np.float32))
    loss = ops.mean(x @ theta) * 1e19  # d loss / d theta = 1e19 * mean(x): each entry finite in float32
    model = Model(g, [theta], loss, {"x": x})
    data = Dataset(np.full((4, 8), 5.0), None, np.full((2, 8), 5.0), None, "unsupervised", None)
    cfg = {"optimizer": {"kind": "sgd", "lr": 0.0}, "schedule": {"kind": "constant"}, "epochs": 1,
           "batch_size": 0, "shuffle": False, "early_stopping": {}}
    trainer = Trainer(ModelPlugin(), model, data, cfg, RunContext({}, None, 0))
    trainer.compile_programs()
    out = trainer.programs["train_step"].run({"x": np.full((4, 8), 5.0, np.float32)})
    norm = float(out["grad_norm"])
    # the sum of squares (8 * 2.5e39) is past float32's 3.4e38; the norm itself is not
    assert np.isfinite(norm) and abs(norm - 5e19 * np.sqrt(8)) / norm < 1e-5
