"""A sweep's progress reader going away (| head) stops the lines, not the sweep; a scheduler that
cannot be used is said before the sweep folder is claimed, so the retry is not refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gengraph.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
SPEC = """spec_version = 1
[run]
name = "small"
dtype = "float64"
[data]
source = "franke"
n = 60
[model]
kind = "regression"
method = "ridge"
degree = 2
[output]
plots = false
[sweep]
metric = "test_mse"
[sweep.axes]
"model.lam" = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
"model.degree" = [1, 2, 3]
"""


@pytest.mark.parametrize("both", [False, True], ids=["stdout", "stdout+stderr"])
def test_a_sweep_piped_into_head_runs_every_trial(tmp_path, both):
    # `gengraph sweep ... | head -2` and `... 2>&1 | head -2`: the reader goes away after two lines
    (tmp_path / "s.toml").write_text(SPEC)
    out = tmp_path / "sw"
    p = subprocess.Popen([sys.executable, "-m", "gengraph", "sweep", str(tmp_path / "s.toml"), "--out", str(out),
                          "--workers", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT if both else subprocess.DEVNULL, cwd=tmp_path)
    if both:
        first = [p.stdout.readline(), p.stdout.readline()]
        assert first[0].startswith(b"sweep s: grid, 18 trials")
    p.stdout.close()
    assert p.wait(timeout=120) == 0
    records = [json.loads(line) for line in (out / "sweep.jsonl").read_text().splitlines()]
    assert len(records) == 18 and all(r["status"] == "ok" for r in records)
    assert json.loads((out / "sweep.json").read_text())["complete"] is True and (out / "summary.txt").is_file()


def _sweep(tmp_path, *args):
    """`gengraph sweep` of the SPEC (written to tmp_path/s.toml) into tmp_path/sw."""
    (tmp_path / "s.toml").write_text(SPEC)
    return CliRunner().invoke(main, ["sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "sw"), *args])


def test_a_missing_dask_leaves_no_sweep_behind(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails, as without Dask
    refused = _sweep(tmp_path, "--scheduler", "local-dask", "-q")
    assert refused.exit_code == 2 and "needs Dask's distributed scheduler" in refused.output
    assert not (tmp_path / "sw" / "sweep.jsonl").exists()
    again = _sweep(tmp_path, "--workers", "1", "-q")
    assert again.exit_code == 0, again.output
    assert len((tmp_path / "sw" / "sweep.jsonl").read_text().splitlines()) == 18


def test_an_unreachable_scheduler_leaves_no_sweep_behind(tmp_path, monkeypatch):
    from gengraph.plugins.sweep import sweep as sw

    def unreachable(scheduler, workers):
        raise sw.SchedulerError(f"cannot reach the Dask scheduler at {scheduler}: refused")

    monkeypatch.setattr(sw, "dask_client", unreachable)
    refused = _sweep(tmp_path, "--scheduler", "tcp://127.0.0.1:9", "-q")
    assert refused.exit_code == 1 and "cannot reach the Dask scheduler" in refused.output
    assert not (tmp_path / "sw" / "sweep.jsonl").exists()
    again = _sweep(tmp_path, "--workers", "1", "-q")
    assert again.exit_code == 0, again.output
    # a finished sweep resumed with a scheduler only re-ranks: nothing to run, nothing to connect to
    resumed = _sweep(tmp_path, "--resume", "--scheduler", "tcp://127.0.0.1:9", "-q")
    assert resumed.exit_code == 0, resumed.output


def test_sweep_json_is_one_document_also_when_a_trial_fails(tmp_path):
    out = tmp_path / "sw"
    result = CliRunner().invoke(main, [
        "sweep", "linear_perceptron", "--set", 'train.optimizer={kind="gd", lr=0.1}', "--set", "train.epochs=50",
        "--axis", "train.optimizer.lr=0.1,1e6", "--out", str(out), "--json", "--workers", "1"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)  # was the sweep's document followed by a second error object
    assert doc["n_failed"] == 1 and doc["exit_code"] == 1 and "1 of 2 trials failed" in doc["error"]
