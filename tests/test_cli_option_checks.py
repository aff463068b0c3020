"""Options checked before any work, with one message (exit 2) that the Python API raises too:
run's device (CLI and gengraph.run), gradcheck's eps/rtol/atol/seed, sample's seed, an --out
file that cannot be written (sample, graph), and `run --json` when interrupted."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import gengraph
from gengraph.cli.main import main
from gengraph.plugins.spec.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
QUAD = SPECS / "mlp_quadratic.toml"
EBM_SETS = ["train.epochs=1", "data.n=120", "model.sample_steps=10", "output.samples=30",
            "model.langevin.steps=3", "model.layers=[{units=8}]"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, message: str) -> None:
    """exit 2, exactly `error: message` (one line), no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == f"error: {message}", result.output


@pytest.fixture(scope="module")
def ebm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ebm"
    r = invoke("run", SPECS / "ebm_moons.toml", "--out", out, "-q", *[a for s in EBM_SETS for a in ("--set", s)])
    assert r.exit_code == 0, r.output
    return out


# --- 4/10: a device the CLI refuses, the API refuses with the same message, writing nothing -----

@pytest.mark.parametrize("device, message", [
    ("gpu", '--device: run.device: "gpu" is not one of "cpu", "cuda"; did you mean "cuda"?'),
    ("tpu", '--device: run.device: "tpu" is not one of "cpu", "cuda"; did you mean "cpu"?'),
    ("", '--device: run.device: "" is not one of "cpu", "cuda"'),
])
def test_a_bad_device_is_refused_alike_by_cli_and_api(tmp_path, device, message):
    r = invoke("run", "mlp_digits", "--set", "train.epochs=1", "--device", device, "--out", tmp_path / "cli", "-q")
    refused(r, message)
    assert not (tmp_path / "cli").exists()
    with pytest.raises(SpecError) as info:
        gengraph.run("mlp_digits", overrides={"train.epochs": 1}, out=tmp_path / "api", device=device, progress=None)
    assert str(info.value) == message
    assert not (tmp_path / "api").exists()  # no spec.toml with device = "gpu" that later commands reject


def test_api_device_that_is_not_a_string(tmp_path):
    with pytest.raises(SpecError, match=r"^--device: run\.device: expected string, found integer 1$"):
        gengraph.run("mlp_digits", out=tmp_path / "r", device=1, progress=None)
    assert not (tmp_path / "r").exists()


# --- 5: numeric options of gradcheck and sample -------------------------------------------------

EPS = "eps must be a finite number from 1e-12 to 0.1 (the step of float64 central differences), found "


@pytest.mark.parametrize("args, message", [
    (["--eps", "0"], EPS + "0.0"),
    (["--eps", "-1"], EPS + "-1.0"),
    (["--eps", "nan"], EPS + "nan"),
    (["--eps", "inf"], EPS + "inf"),
    (["--eps", "1e-300"], EPS + "1e-300"),  # passed: the round-off allowance 8 * 2.2e-16 * S / eps was huge
    (["--eps", "0.5"], EPS + "0.5"),
    (["--rtol", "-1"], "rtol must be a finite number >= 0, found -1.0"),
    (["--rtol", "nan"], "rtol must be a finite number >= 0, found nan"),
    (["--atol", "-1"], "atol must be a finite number >= 0, found -1.0"),
    (["--atol", "inf"], "atol must be a finite number >= 0, found inf"),
    (["--seed", "-1"], "seed must be a non-negative integer, found -1"),
])
def test_gradcheck_options_out_of_range(args, message):
    refused(invoke("gradcheck", QUAD, "--batch", "2", "--max-entries", "3", *args), message)


def test_gradcheck_options_in_range_still_check(tmp_path):
    r = invoke("gradcheck", QUAD, "--batch", "2", "--max-entries", "3", "--eps", "1e-4", "--seed", "7",
               "--rtol", "0", "--atol", "1e-6")
    assert r.exit_code == 0, r.output
    assert "ok: " in r.output


@pytest.mark.parametrize("kw, message", [
    ({"eps": 0}, EPS + "0"),
    ({"eps": float("nan")}, EPS + "nan"),
    ({"eps": 1e-300}, EPS + "1e-300"),
    ({"rtol": -1.0}, "rtol must be a finite number >= 0, found -1.0"),
    ({"atol": np.float64(-2)}, "atol must be a finite number >= 0, found -2.0"),
    ({"seed": -1}, "seed must be a non-negative integer, found -1"),
    ({"seed": 1.5}, "seed must be a non-negative integer, found 1.5"),
    ({"batch": 0}, "batch must be a positive integer, found 0"),
    ({"max_entries": 0}, "max_entries must be a positive integer, found 0"),
])
def test_api_gradcheck_options_out_of_range(ebm_run, kw, message):
    with pytest.raises(ValueError) as info:
        gengraph.load(ebm_run).gradcheck(**kw)
    assert str(info.value) == message


def test_sample_seed_must_be_non_negative(ebm_run, tmp_path):
    message = "seed must be a non-negative integer, found -1"
    r = invoke("sample", ebm_run, "--seed", "-1", "--n", "2", "--out", tmp_path / "a.npy")
    refused(r, message)
    assert not (tmp_path / "a.npy").exists()
    run = gengraph.load(ebm_run)
    for seed in (-1, np.int64(-1)):
        with pytest.raises(ValueError) as info:
            run.sample(2, seed=seed)
        assert str(info.value) == message
    with pytest.raises(ValueError, match=r"^seed must be a non-negative integer, found True$"):
        run.sample(2, seed=True)
    assert run.sample(2, seed=0).shape == (2, 2)  # 0 is a seed


# --- 8: an --out file that cannot be written --------------------------------------------------

@pytest.fixture()
def afile(tmp_path):
    p = tmp_path / "afile"
    p.write_text("x")
    return p


def test_out_under_a_regular_file(ebm_run, afile):
    for out in (afile / "x.npy", afile / "sub" / "x.png"):
        refused(invoke("sample", ebm_run, "--n", "2", "--out", out), f"--out {out}: {afile} exists and is not a folder")
    out = afile / "g.txt"
    refused(invoke("graph", QUAD, "--out", out), f"--out {out}: {afile} exists and is not a folder")
    assert afile.read_text() == "x"


def _refuse_writes_in(monkeypatch, folder: Path, err=errno.EACCES):
    """mkstemp in `folder` fails as in a read-only folder (which root could write into)."""
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, prefix=None, suffix=None, **kw):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            name = f"{dir}/{prefix or ''}abcd{suffix or ''}"
            raise OSError(err, os.strerror(err), name)
        return real(*args, dir=dir, prefix=prefix, suffix=suffix, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_out_in_a_read_only_folder_names_the_requested_file(ebm_run, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    _refuse_writes_in(monkeypatch, ro)
    for name in ("x.png", "x.npy"):
        r = invoke("sample", ebm_run, "--n", "2", "--out", ro / name)
        refused(r, f"--out {ro / name}: cannot write in {ro}: Permission denied")
        assert ".tmp" not in r.output
    r = invoke("graph", QUAD, "--out", ro / "g.txt")
    refused(r, f"--out {ro / 'g.txt'}: cannot write in {ro}: Permission denied")
    assert list(ro.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_out_in_a_chmod_read_only_folder(ebm_run, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = invoke("sample", ebm_run, "--n", "2", "--out", ro / "x.png")
        refused(r, f"--out {ro / 'x.png'}: cannot write in {ro}: Permission denied")
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("err, code, words", [
    (errno.EACCES, 2, "--out {out}: cannot write it: Permission denied"),
    (errno.ENOSPC, 1, "sample failed: cannot write {out}: No space left on device"),
])
def test_a_write_that_fails_later_names_the_requested_file(ebm_run, tmp_path, monkeypatch, err, code, words):
    import gengraph.plugins.blocks.files as files

    out = tmp_path / "x.npy"

    def failing(path, data):
        raise OSError(err, os.strerror(err), f"{Path(path).parent}/.{Path(path).name}.k2j4.tmp")

    monkeypatch.setattr(files, "atomic_write", failing)
    r = invoke("sample", ebm_run, "--n", "2", "--out", out)
    assert r.exit_code == code and "Traceback" not in r.output, r.output
    assert r.output.strip().splitlines()[-1] == "error: " + words.format(out=out)
    assert ".tmp" not in r.output


# --- 9: run --json when interrupted -----------------------------------------------------------

@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_run_json_prints_the_error_object_when_interrupted(tmp_path, monkeypatch, signum, code):
    import gengraph.plugins.run.runner as runner

    out = tmp_path / "r"

    def interrupted(spec, run_dir, **kw):
        raise runner.RunInterrupted(Path(run_dir), Path(run_dir) / "checkpoint.npz", signum)

    monkeypatch.setattr(runner, "execute", interrupted)
    r = CliRunner().invoke(main, ["run", str(QUAD), "--out", str(out), "--json"])
    assert r.exit_code == code, r.output
    obj = json.loads(r.stdout)
    name = signal.Signals(signum).name
    assert obj == {"error": f"interrupted by {name}; checkpoint written to {out / 'checkpoint.npz'}; "
                            f"continue with: gengraph run --resume {out}", "exit_code": code}


def test_run_json_when_stopped_outside_the_run(tmp_path, monkeypatch):
    import gengraph.plugins.run.runner as runner
    from gengraph.plugins.run.signals import Stop

    def stopped(*a, **kw):
        raise Stop(signal.SIGTERM)

    monkeypatch.setattr(runner, "execute", stopped)
    r = CliRunner().invoke(main, ["run", str(QUAD), "--out", str(tmp_path / "r"), "--json"])
    assert r.exit_code == 143
    assert json.loads(r.stdout) == {"error": "interrupted by SIGTERM", "exit_code": 143}


def test_run_json_sigint_in_a_real_process(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "gengraph", "run", str(SPECS / "mlp_digits.toml"), "--out", str(out), "--json",
           "--set", "train.epochs=100000", "--set", "model.layers[0].units=8", "--set", "model.layers[1].units=8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    obj = json.loads(stdout)
    assert obj["exit_code"] == 130 and obj["error"].startswith("interrupted by SIGINT; checkpoint written to ")
    assert "Traceback" not in err


def test_sample_device_cuda_without_cupy_names_the_option(ebm_run):
    # the message blamed "--set: run.device", an option the user never gave
    import importlib.util

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed")
    refused(invoke("sample", ebm_run, "--device", "cuda", "--n", "2"),
            "--device cuda: the cupy backend needs CuPy: pip install 'gengraph[cuda]'")
