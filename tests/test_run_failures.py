"""Valid input whose numbers blow up: the run fails with one clear message (exit 1), writes no
NaN into JSON, and prints no NumPy warnings; a model without a test split still runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from gengraph.cli.main import main

SPECS = Path(__file__).resolve().parents[1] / "specs"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _strict_json(text):
    def bad(name):
        raise AssertionError(f"{name} in JSON")
    return json.loads(text, parse_constant=bad)


def test_non_finite_final_metrics_fail_the_run(tmp_path):
    out = tmp_path / "r"
    r = invoke("run", SPECS / "ols_franke.toml", "--set", "data.noise=1e300", "--out", out, "-q")
    assert r.exit_code == 1
    assert "run failed: final metrics are not finite: test_loss = inf, test_mse = inf, test_r2 = nan" in r.output
    assert "RuntimeWarning" not in r.output and "Traceback" not in r.output
    summary = _strict_json((out / "summary.json").read_text())  # no NaN/Infinity tokens
    assert summary["test_mse"] is None and summary["test_r2"] is None


def test_json_writers_never_emit_nan():
    from gengraph.plugins.blocks.files import dumps_json

    text = dumps_json({"a": float("nan"), "b": [np.float32("inf"), 1.5], "c": np.array([1.0, -np.inf])})
    assert _strict_json(text) == {"a": None, "b": [None, 1.5], "c": [1.0, None]}


def test_lbfgs_overflow_is_a_failed_run(tmp_path):
    r = invoke("run", SPECS / "regression_gd.toml", "--set", "data.noise=1e300", "--out", tmp_path / "r", "-q")
    assert r.exit_code == 1
    assert "run failed: L-BFGS: the loss is not finite (check the data's scale)" in r.output
    assert "Traceback" not in r.output and "FloatingPointError" not in r.output


def test_diffusion_without_a_test_split_runs(tmp_path):
    out = tmp_path / "r"
    r = invoke("run", SPECS / "diffusion_digits.toml", "--set", "data.test_fraction=0.0", "--set", "train.epochs=1",
               "--set", "output.plots=false", "--set", "output.samples=4", "--set", "train.batch_size=512",
               "--out", out, "-q")
    assert r.exit_code == 0, r.output
    summary = _strict_json((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and not any(k.startswith("test_") for k in summary)
    assert all(math.isfinite(v) for v in summary.values() if isinstance(v, float))


def test_a_diverged_sampler_fails_the_run(tmp_path):
    # a score model sampled with a huge step wrote all-NaN samples.npy and exited 0 (only the
    # summary's samples_finite = false said so)
    spec = tmp_path / "sm.toml"
    spec.write_text('spec_version = 1\n[data]\nsource = "moons"\nn = 200\n[model]\nkind = "ebm"\n'
                    'layers = [{ units = 8, activation = "silu" }]\nsample_steps = 2\n'
                    'objective = "score_matching"\nscore = { step_ratio = 1e6 }\n[train]\nepochs = 1\n'
                    '[output]\nplots = false\n')
    r = invoke("run", spec, "--out", tmp_path / "r", "-q")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "run failed: the samples are not finite" in r.output and "model.score.step_ratio" in r.output
    assert _strict_json((tmp_path / "r" / "summary.json").read_text())["samples_finite"] is False


def test_point_mass_gaussians_have_no_true_log_density_to_report(tmp_path):
    # data.std = 0 (allowed) made true_test_loglik NaN after training: exit 1, "check the learning rate"
    spec = tmp_path / "g.toml"
    spec.write_text('spec_version = 1\n[data]\nsource = "gaussians"\nn = 200\nstd = 0.0\n[model]\nkind = "rbm"\n'
                    'visible = "gaussian"\nn_hidden = 3\nsample_steps = 2\n[train]\nepochs = 1\n[output]\nplots = false\n')
    r = invoke("run", spec, "--out", tmp_path / "r", "-q")
    assert r.exit_code == 0, r.output
    summary = _strict_json((tmp_path / "r" / "summary.json").read_text())
    assert "true_test_loglik" not in summary and math.isfinite(summary["test_loglik_exact"])
    r = invoke("run", spec, "--set", "data.std=0.1", "--out", tmp_path / "r1", "-q")
    assert math.isfinite(_strict_json((tmp_path / "r1" / "summary.json").read_text())["true_test_loglik"])


def test_out_of_memory_during_a_run_is_a_failed_run_not_a_traceback(tmp_path, monkeypatch):
    # past the estimates (a process limit): NumPy's MemoryError at the first checkpoint was a traceback
    from gengraph.plugins.run.trainer import Trainer

    def boom(self):
        raise MemoryError("Unable to allocate 732. MiB for an array with shape (3000000, 64) and data type float32")

    monkeypatch.setattr(Trainer, "snapshot", boom)
    r = invoke("run", str(SPECS / "linear_perceptron.toml"), "--out", str(tmp_path / "r"), "-q")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "error: run failed: out of memory (Unable to allocate 732. MiB for an array with shape (3000000, 64) " \
           "and data type float32); lower train.batch_size, output.samples or the sizes in [model]" in r.output, r.output


def test_a_failed_atomic_write_names_the_file_meant(tmp_path, monkeypatch):
    # a full disk said "cannot write: No space left on device": the error came from the temporary
    # file, which has no name in it
    import errno
    import os

    import pytest

    from gengraph.plugins.blocks import files

    def full(fd, mode):
        os.close(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fdopen", full)
    with pytest.raises(OSError) as err:
        files.atomic_write(tmp_path / "summary.json", "{}")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "summary.json")
    assert list(tmp_path.iterdir()) == []  # no temporary left behind
