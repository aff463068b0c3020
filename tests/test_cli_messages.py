"""The CLI's messages: one error style, JSON errors with --json, shipped specs by name,
-q keeps the results, --device errors name --device, a note for [sweep] under `run`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gengraph.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def test_shipped_spec_by_name_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("ols_franke", "ols_franke.toml"):
        r = invoke("validate", name)
        assert r.exit_code == 0, r.output
        assert r.output.strip().endswith("ols_franke.toml: valid (regression on franke)")
    r = invoke("validate", "ols_frank")
    assert r.exit_code == 2
    assert 'ols_frank: spec file not found (a shipped spec is named "ols_franke")' in r.output
    (tmp_path / "ols_franke.toml").write_text("spec_version = 1\n[model]\nkind = \"nope\"\n")
    assert invoke("validate", "ols_franke.toml").exit_code == 2  # a file of that name wins


def test_quiet_keeps_the_run_directory_and_metrics(tmp_path):
    r = invoke("run", ROOT / "specs" / "ols_franke.toml", "--out", tmp_path / "r", "-q")
    assert r.exit_code == 0
    assert f"run directory: {tmp_path / 'r'}" in r.output and "test_mse" in r.output


def test_one_error_style_for_click_and_gengraph_errors():
    r = subprocess.run([sys.executable, "-m", "gengraph.cli", "validate", "--bogus", "x"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "error: No such option '--bogus'." in r.stderr and "Error:" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "gengraph.cli", "run", str(ROOT / "specs" / "regression_gd.toml"),
                        "--set", "data.noise=1e300", "--out", "/dev/null/x", "-q"], capture_output=True, text=True)
    assert "Error:" not in r.stderr and r.stderr.startswith("error: ")


def test_json_errors_are_json_on_stdout():
    r = subprocess.run([sys.executable, "-m", "gengraph.cli", "validate", "nope_spec", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert json.loads(r.stdout) == {"error": "nope_spec: spec file not found", "exit_code": 2}


def test_device_cuda_without_cupy_names_the_option(tmp_path):
    from gengraph.engine import cupy_available

    if cupy_available():
        pytest.skip("CuPy and a GPU are present")
    r = invoke("run", ROOT / "specs" / "ols_franke.toml", "--device", "cuda", "--out", tmp_path / "r")
    assert r.exit_code == 2
    assert "--device: run.device: the cupy backend needs CuPy" in r.output and "--set" not in r.output


def test_run_notes_an_ignored_sweep_table(tmp_path):
    r = invoke("run", ROOT / "specs" / "sweep_ridge_franke.toml", "--out", tmp_path / "r", "-q")
    assert r.exit_code == 0
    assert "has a [sweep] table, which `gengraph run` ignores; run the sweep with `gengraph sweep`" in r.output
