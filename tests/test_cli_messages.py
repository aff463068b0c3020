"""The CLI's messages: one error style, JSON errors with --json, shipped specs by name,
-q keeps the results, --device errors name --device, a note for [sweep] under `run`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
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
    assert 'ols_frank: spec file not found; did you mean the shipped spec "ols_franke"?' in r.output
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


def test_validate_checks_the_sweep_table(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('spec_version = 1\n[data]\nsource = "franke"\n[model]\nkind = "regression"\n'
                    '[sweep.axes]\n"model.lamm" = [1, 2]\n')
    r = invoke("validate", spec)
    assert r.exit_code == 2 and f'{spec}:7:1: sweep.axes."model.lamm": unknown key; did you mean "lam"?' in r.output


# --- item 12: output paths and a full disk -----------------------------------------------------
@pytest.mark.parametrize("out,why", [
    ("/dev/null", "exists and is not a directory"),
    ("/dev/null/run", "cannot create it (Not a directory)"),
    ("/proc/gengraph_run", "cannot create it"),
    ("bad\0name", "the name contains a NUL byte"),
])
def test_unusable_out_is_one_message_exit_2(out, why):
    # argv cannot carry a NUL byte, so the command line is built inside the child
    code = f"from gengraph.cli.main import main; main(['run', {str(ROOT / 'specs' / 'ols_franke.toml')!r}, '--out', {out!r}])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "error: run directory " in r.stderr and why in r.stderr and "Traceback" not in r.stderr


def test_read_only_out_is_exit_2(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    r = invoke("run", ROOT / "specs" / "ols_franke.toml", "--out", ro / "run")
    assert r.exit_code == 2 and "cannot write there: Permission denied" in r.output


def test_full_disk_during_a_run_is_one_message_exit_1(tmp_path, monkeypatch):
    import errno

    import gengraph.plugins.blocks.files as files

    real = files.atomic_write
    calls = []

    def full(path, data):
        calls.append(path)
        if Path(path).name == "summary.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(files, "atomic_write", full)
    import gengraph.plugins.run.runner as runner

    monkeypatch.setattr(runner, "atomic_write", full)
    out = tmp_path / "r"
    r = invoke("run", ROOT / "specs" / "ols_franke.toml", "--out", out, "-q")
    assert r.exit_code == 1
    assert r.output.strip() == f"error: run failed: cannot write {out / 'summary.json'}: No space left on device"
    assert not (out / "summary.json").exists() and not list(out.glob(".*.tmp"))


def test_full_disk_in_atomic_write_leaves_no_temp_file(tmp_path, monkeypatch):
    import errno
    import os

    from gengraph.plugins.blocks import files

    def replace(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        files.atomic_write(tmp_path / "a.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_during_a_sweep_is_one_message_exit_1(tmp_path, monkeypatch):
    import errno

    import gengraph.plugins.sweep.sweep as sw

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(sw, "atomic_write", full)
    r = invoke("sweep", ROOT / "specs" / "sweep_ridge_franke.toml", "--out", tmp_path / "s", "--workers", "1", "-q",
               "--set", "output.plots=false")
    assert r.exit_code == 1, r.output
    assert "error: sweep failed: cannot write " in r.output and "No space left on device" in r.output
    assert "Traceback" not in r.output


# --- item 16: no leaked internals, no raw control characters, every spec issue has line:col ----
@pytest.mark.parametrize("src,words", [
    ("matmul(x)", "matmul(a, b) takes 2 arguments, found 1"),
    ("where(x)", "where(c, a, b) takes 3 arguments, found 1"),
    ("exp(x, x)", "exp(x) takes 1 argument, found 2"),
    ("sum(x, 0)", "sum(x) takes 1 argument, found 2; give axis= and keepdims= by keyword"),
    ("gaussian_logpdf(x)", "gaussian_logpdf(x, mean, logvar) takes 3 arguments, found 1"),
])
def test_wrong_argument_counts_name_the_function_not_its_internals(src, words):
    from gengraph.engine import Graph
    from gengraph.engine.expr import ExprError, build

    g = Graph("float64")
    with pytest.raises(ExprError) as exc:
        build(src, {"x": g.input("x", (3,))})
    assert words in str(exc.value)
    assert "positional argument" not in str(exc.value) and "<lambda>" not in str(exc.value)


def test_user_supplied_names_are_escaped(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('spec_version = 1\n[data]\nsource = "csv"\npath = "a\\u001b[31mred\\nline"\n'
                    '[model]\nkind = "mlp"\n')
    r = invoke("validate", spec)
    assert r.exit_code == 2
    assert "\x1b" not in r.output and r.output.count("\n") == 1
    assert "a\\x1b[31mred\\nline: no such file" in r.output
    r = invoke("validate", ROOT / "specs" / "ols_franke.toml", "--set", 'model.kind="ml\\u001bp"')
    assert r.exit_code == 2 and 'unknown model kind "ml\\x1bp"' in r.output and "\x1b" not in r.output


def test_every_issue_of_a_spec_file_has_a_line_and_column(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('spec_version = 1\n[data]\nsource = "digits"\n')
    r = invoke("validate", spec)
    assert r.exit_code == 2 and f"{spec}:1:1: model: missing required table" in r.output
    spec.write_text('[model]\nkind = "mlp"\n[data]\nsource = "digits"\n')
    r = invoke("validate", spec)
    assert f"{spec}:1:1: spec_version: missing" in r.output


def test_numpy_warnings_are_not_printed_before_the_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gengraph.cli", "run", str(ROOT / "specs" / "ols_franke.toml"),
                        "--set", "data.noise=1e300", "--out", str(tmp_path / "r"), "-q"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "Warning" not in r.stderr and r.stderr.count("\n") == 1 and r.stderr.startswith("error: run failed")


def test_full_disk_while_appending_metrics_leaves_no_half_line(tmp_path, monkeypatch):
    import builtins
    import errno

    real_open = builtins.open
    state = {"lines": 0}

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return self.fh.__exit__(*a)

        def tell(self):
            return self.fh.tell()

        def truncate(self, n):
            return self.fh.truncate(n)

        def flush(self):
            self.fh.flush()

        def write(self, text):
            state["lines"] += 1
            if state["lines"] == 3:  # the third epoch line: half of it, then the disk is full
                self.fh.write(text[: len(text) // 2])
                self.fh.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(text)

    def fake_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        return Full(fh) if str(path).endswith("metrics.jsonl") and mode == "a" else fh

    monkeypatch.setattr(builtins, "open", fake_open)
    out = tmp_path / "r"
    r = invoke("run", ROOT / "specs" / "linear_perceptron.toml", "--set", "train.epochs=5", "--out", out, "-q")
    monkeypatch.setattr(builtins, "open", real_open)
    assert r.exit_code == 1 and "No space left on device" in r.output
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(x)["epoch"] in (1, 2) for x in lines)


def test_ctrl_c_before_a_command_runs_exits_130(monkeypatch, capsys):
    # a SIGINT while click parses the command line became click's "Aborted!" with exit 1
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(click.Group, "parse_args", interrupted)
    with pytest.raises(SystemExit) as stop:
        main.main(["validate", "spec.toml"])
    assert stop.value.code == 130
    assert "interrupted by SIGINT" in capsys.readouterr().err


def test_a_spec_saved_with_a_byte_order_mark_is_read(tmp_path):
    # Windows editors write a UTF-8 BOM: "1:1: invalid TOML: Invalid statement"
    text = (ROOT / "specs" / "mlp_digits.toml").read_text()
    spec = tmp_path / "bom.toml"
    spec.write_bytes(b"\xef\xbb\xbf" + text.encode())
    r = CliRunner().invoke(main, ["validate", str(spec)])
    assert r.exit_code == 0 and "valid (mlp on digits)" in r.output, r.output
    lines = text.splitlines()
    i = next(i for i, s in enumerate(lines) if s.startswith("epochs"))
    lines[i] = "epochs = -3"
    spec.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())
    r = CliRunner().invoke(main, ["validate", str(spec)])
    assert r.exit_code == 2 and f"bom.toml:{i + 1}:1: train.epochs: must be >= 0" in r.output, r.output


def test_a_forgotten_kind_is_named_with_the_kinds_that_take_the_keys(tmp_path):
    # a schedule table without kind said "total_steps: unknown key (known keys: kind)"
    text = (ROOT / "specs" / "mlp_digits.toml").read_text().replace(
        "[train]", "[train]\nschedule = { total_steps = 100, min_lr = 1e-5 }", 1)
    (tmp_path / "s.toml").write_text(text)
    line = text.splitlines().index("schedule = { total_steps = 100, min_lr = 1e-5 }") + 1
    r = CliRunner().invoke(main, ["validate", str(tmp_path / "s.toml")])
    assert r.exit_code == 2
    assert (f's.toml:{line}:1: train.schedule.kind: missing; the default kind "constant" takes no total_steps, '
            'min_lr: set kind to "cosine"') in r.output, r.output
    r = CliRunner().invoke(main, ["validate", str(ROOT / "specs" / "mlp_digits.toml"), "--set",
                                  "train.schedule={bogus=1}"])  # no kind takes it: the unknown key
    assert r.exit_code == 2 and "--set: train.schedule.bogus: unknown key" in r.output, r.output


@pytest.mark.parametrize("command", ["validate", "run", "graph", "gradcheck", "sweep"])
def test_a_folder_given_as_the_spec_is_one_line(tmp_path, command):
    # click printed its "Usage: ... Try 'gengraph validate --help'" lines before the error
    r = CliRunner().invoke(main, [command, str(tmp_path)])
    assert r.exit_code == 2 and r.output == f"error: {tmp_path}: cannot read spec: a directory\n", r.output


def test_misspellings_get_a_suggestion_whatever_their_case(tmp_path):
    # "sepc_version" gave "spec_version: missing" plus an unknown key listing run, data, ...; "RELU"
    # got no "did you mean" (difflib's ratio is case-sensitive)
    text = (ROOT / "specs" / "mlp_digits.toml").read_text().replace("spec_version", "sepc_version", 1)
    (tmp_path / "s.toml").write_text(text)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if s.startswith("sepc_version"))
    r = CliRunner().invoke(main, ["validate", str(tmp_path / "s.toml")])
    assert r.exit_code == 2
    assert r.output == f'error: {tmp_path / "s.toml"}:{line}:1: sepc_version: unknown key; did you mean "spec_version"?\n'
    r = CliRunner().invoke(main, ["validate", str(ROOT / "specs" / "mlp_digits.toml"), "--set",
                                  'model.layers[0].activation="RELU"'])
    assert r.exit_code == 2 and r.output.rstrip().endswith('; did you mean "relu"?'), r.output


def test_a_nul_byte_in_the_run_name_is_found_by_validate():
    # validate passed it; run then refused "run directory 'runs/a\x00b'", naming neither key nor --set
    r = CliRunner().invoke(main, ["validate", str(ROOT / "specs" / "mlp_digits.toml"), "--set",
                                  'run.name="a\\u0000b"'])
    assert r.exit_code == 2 and r.output == "error: --set: run.name: contains a NUL byte, which no file name can hold\n"


@pytest.mark.parametrize("key", ["run.name", "output.dir"])
def test_control_characters_in_the_run_folder_are_refused(key):
    # run.name = "x\e[2Jy\nz" made a folder with ESC and a newline in its name, and "run directory:"
    # printed the escape sequence to the terminal
    r = invoke("validate", str(ROOT / "specs" / "linear_perceptron.toml"), "--set", f'{key}="x\\u001b[2Jy\\nz"')
    assert r.exit_code == 2
    assert f"--set: {key}: contains a control character (x\\x1b[2Jy\\nz); use a plain name" in r.output, r.output


def test_a_spec_file_name_is_echoed_escaped(tmp_path):
    path = tmp_path / "e\x1b[2Jvil.toml"
    path.write_text((ROOT / "specs" / "linear_perceptron.toml").read_text())
    r = invoke("validate", str(path))
    assert r.exit_code == 0 and "e\\x1b[2Jvil.toml: valid (mlp on" in r.output and "\x1b" not in r.output
