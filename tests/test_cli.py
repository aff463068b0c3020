"""`gengraph run/validate/plugins`: exit codes and one clear message per user mistake."""

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from gengraph import __version__
from gengraph.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
LINEAR = ROOT / "specs" / "linear_perceptron.toml"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def write(tmp_path, text, name="spec.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = """spec_version = 1
[data]
source = "linear"
n = 50
[model]
kind = "mlp"
layers = [{ units = 4, activation = "tanh" }]
[train]
epochs = 2
"""


def test_version_and_help():
    assert invoke("--version").output.strip().endswith(__version__)
    out = invoke("--help").output
    for cmd in ("run", "validate", "plugins"):
        assert cmd in out
    assert "Examples:" in invoke("run", "--help").output


def test_run_linear_perceptron_learns_w2_b1(tmp_path):
    result = invoke("run", LINEAR, "--out", tmp_path / "lp", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    (w,), (b,) = summary["params"]["output/dense0/W"], summary["params"]["output/dense0/b"]
    assert abs(w - 2) < 1e-3 and abs(b - 1) < 1e-3
    for f in ("spec.toml", "metrics.jsonl", "summary.json", "checkpoint.npz", "loss.png", "fit.png",
              "env.json", "summary.txt"):
        assert (tmp_path / "lp" / f).exists(), f
    resolved = tomllib.loads((tmp_path / "lp" / "spec.toml").read_text())
    assert resolved["train"]["optimizer"] == {"kind": "gd", "lr": 0.5, "weight_decay": 0.0, "clip_norm": 0.0,
                                                 "ema": 0.0}


def test_validate_resolved_prints_defaults_and_overrides(tmp_path):
    result = invoke("validate", write(tmp_path, GOOD), "--resolved", "--set", "train.optimizer.lr=0.01")
    assert result.exit_code == 0, result.output
    resolved = tomllib.loads(result.output)
    assert resolved["spec_version"] == 1
    assert resolved["train"]["optimizer"]["lr"] == 0.01
    assert resolved["run"]["dtype"] == "float32"
    assert resolved["model"]["layers"][0]["init"] == "auto"


def test_plugins_json_lists_kinds_and_sources():
    result = invoke("plugins", "--json")
    assert result.exit_code == 0
    inv = json.loads(result.output)
    assert "mlp" in inv["models"] and "adam" in inv["optimizers"] and "digits" in inv["data_sources"]


@pytest.mark.parametrize("edit, where, words", [
    (("layers = [{ units = 4, activation = \"tanh\" }]", "layers = [{ units = 4, actvation = \"tanh\" }]"),
     ":7:", ['model.layers[0].actvation', 'did you mean "activation"']),
    (("epochs = 2", "epochs = \"two\""), ":9:", ["train.epochs", "expected integer", 'string "two"']),
    (("epochs = 2", "epochs = -1"), ":9:", ["train.epochs", "must be >= 0"]),
    (('kind = "mlp"', 'kind = "mpl"'), ":6:", ['unknown model kind "mpl"', 'did you mean "mlp"']),
    (('kind = "mlp"', 'kind = "transformer"'), ":6:", ['unknown model kind "transformer"', "--plugin"]),
    (('source = "linear"\nn = 50', 'source = "csv"\npath = "nope.csv"'), ":", ["data", "nope.csv"]),
    (("n = 50", "n = 50\nn = 60"), ":", ["spec.toml"]),
    (("[train]", "[train\n"), ":", ["spec.toml"]),
])
def test_user_mistakes_give_one_message_and_exit_2(tmp_path, edit, where, words):
    spec = write(tmp_path, GOOD.replace(*edit))
    for cmd in (("validate", spec), ("run", spec, "--out", tmp_path / "r")):
        result = invoke(*cmd)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert str(spec) + where in result.output
        for w in words:
            assert w in result.output


def test_all_errors_of_a_spec_at_once(tmp_path):
    bad = GOOD.replace("epochs = 2", "epochs = 2\nbatchsize = 3").replace("n = 50", "n = 0")
    result = invoke("validate", write(tmp_path, bad))
    assert result.exit_code == 2
    assert 'train.batchsize: unknown key; did you mean "batch_size"?' in result.output
    assert "data.n: must be >= 2, found 0" in result.output


def test_bad_override_is_a_clear_error(tmp_path):
    spec = write(tmp_path, GOOD)
    result = invoke("validate", spec, "--set", "train.optimiser.lr=0.1")
    assert result.exit_code == 2
    assert 'did you mean "optimizer"' in result.output and "--set" in result.output
    result = invoke("validate", spec, "--set", "model.layers[5].units=3")
    assert result.exit_code == 2 and "model.layers[5]" in result.output
    result = invoke("validate", spec, "--set", "novalue")
    assert result.exit_code == 2


def test_missing_spec_file(tmp_path):
    result = invoke("validate", tmp_path / "none.toml")
    assert result.exit_code == 2 and "spec file not found" in result.output


def test_debug_shows_the_traceback(tmp_path):
    spec = write(tmp_path, GOOD.replace("epochs = 2", "epochs = -1"))
    result = invoke("validate", spec, "--debug")
    assert result.exit_code != 0 and result.exception is not None


def test_cuda_without_cupy_is_a_clear_error(tmp_path):
    from gengraph.engine import cupy_available

    if cupy_available():
        pytest.skip("CuPy and a GPU are present")
    result = invoke("run", write(tmp_path, GOOD), "--device", "cuda", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "run.device" in result.output and "pip install 'gengraph[cuda]'" in result.output


DIGITS = ROOT / "specs" / "mlp_digits.toml"


@pytest.mark.parametrize("sets, words", [
    (['train.schedule.kind="step"', "train.schedule.step_size=0"],
     ["--set: train.schedule.step_size: must be >= 1, found 0"]),
    # the optimizer's keys: the error named train.schedule (lr) or the table's line, not the --set
    (["train.optimizer.lr=-1"], ["--set: train.optimizer.lr: must be >= 0, found -1"]),
    (["train.optimizer.beta1=2"], ["--set: train.optimizer.beta1: must be < 1, found 2"]),
    # "need 0 <= min_lr <= lr" was blamed on the optimizer's lr (its "lr"), and in the file's line
    (['train.schedule={kind="cosine", total_steps=100}', "train.schedule.min_lr=0.5"],
     ["--set: train.schedule.min_lr:", "need 0 <= min_lr <= lr"]),
    (['train.schedule={kind="cosine", total_steps=100}', "train.schedule.warmup_steps=100"],
     ["--set: train.schedule.warmup_steps:", "need 0 <= warmup_steps < total_steps"]),
    (['model.output_init="xavir"'], ["model.output_init", 'did you mean "xavier"']),
    (['model.loss="bce"'], ["model.loss", "two classes"]),
    (['train.early_stopping.metric="tset_loss"', "train.early_stopping.patience=1", "train.epochs=1"],
     ["train.early_stopping.metric", "not logged", "test_loss"]),
])
def test_mistakes_found_while_building_or_training_are_spec_errors(tmp_path, sets, words):
    args = ["run", DIGITS, "--out", tmp_path / "r", "-q"] + [a for s in sets for a in ("--set", s)]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for w in words:
        assert w in result.output


def test_plugin_that_is_not_a_python_file(tmp_path):
    bad = tmp_path / "plugin.txt"
    bad.write_text("x")
    result = invoke("validate", DIGITS, "--plugin", bad)
    assert result.exit_code == 2 and "not a Python file" in result.output


def test_an_optimizer_value_in_the_file_is_located_at_its_key(tmp_path):
    text = DIGITS.read_text().replace('optimizer = { kind = "adam", lr = 1e-3 }',
                                      'optimizer = { kind = "adam", lr = -1e-3 }')
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "lr = -1e-3" in row)
    result = invoke("validate", write(tmp_path, text))
    assert result.exit_code == 2
    assert f":{line}:30: train.optimizer.lr: must be >= 0, found -0.001" in result.output, result.output


def test_a_reader_that_stops_reading_is_no_error():
    # `gengraph plugins | head -1` printed "error: plugins failed: Broken pipe" and exited 1
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "gengraph", "plugins"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == ""


def _entry_with_a_signal_at_import(signum, *args):
    """`gengraph ARGS` through the console script's entry, the signal arriving while the CLI loads."""
    import subprocess
    import sys

    code = ("import builtins, os, sys\n"
            f"sys.argv = ['gengraph', *{list(args)!r}]\n"
            "import gengraph.cli.entry as entry\n"
            "real = builtins.__import__\n"
            "def importing(name, *a, **k):\n"
            f"    if name == 'gengraph.cli.main': os.kill(os.getpid(), {int(signum)})\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = importing\n"
            "entry.main()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_a_signal_while_the_cli_loads_is_an_ordinary_interrupt():
    # a Ctrl-C in the first ~60 ms printed a KeyboardInterrupt traceback; SIGTERM killed silently
    import signal

    r = _entry_with_a_signal_at_import(signal.SIGINT, "validate", "mlp_digits")
    assert r.returncode == 130 and r.stderr == "interrupted by SIGINT\n" and r.stdout == "", (r.returncode, r.stderr)
    r = _entry_with_a_signal_at_import(signal.SIGTERM, "validate", "mlp_digits", "--json")
    assert r.returncode == 143 and r.stderr == ""
    assert json.loads(r.stdout) == {"error": "interrupted by SIGTERM", "exit_code": 143}


def test_the_commands_run_with_pythons_own_signal_handling(monkeypatch):
    # once loaded, a KeyboardInterrupt must reach the commands (atomic writes clean up on it)
    import signal

    import gengraph.cli.entry as entry
    import gengraph.cli.main as cli_main

    seen = {}
    monkeypatch.setattr(cli_main, "main", lambda prog_name: seen.update(
        sigint=signal.getsignal(signal.SIGINT), sigterm=signal.getsignal(signal.SIGTERM)))
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        entry.main()
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
    assert seen == {"sigint": signal.default_int_handler, "sigterm": signal.SIG_DFL}
