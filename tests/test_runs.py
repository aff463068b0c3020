"""Runs that lose nothing: checkpoints, bit-identical resume, determinism, divergence guard."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.plugins.run.loading import load
from gengraph.plugins.run.checkpoint import CheckpointError, read_checkpoint
from gengraph.plugins.run.runner import RunInterrupted, execute

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "specs" / "mlp_digits.toml"
SHORT = ["train.epochs=3", "model.layers[0].units=32", "model.layers[1].units=16"]


def _params(run_dir):
    with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith(("param/", "state/"))}


def _metrics(run_dir):
    return (run_dir / "metrics.jsonl").read_text()


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    execute(load(DIGITS, SHORT), full)

    def stop_at_step_17(trainer, loss):  # mid-epoch 2 (11 steps per epoch)
        if trainer.state.step == 17:
            trainer.stop_requested = True

    with pytest.raises(RunInterrupted) as info:
        execute(load(DIGITS, SHORT), cut, on_step=stop_at_step_17)
    assert info.value.checkpoint == cut / "checkpoint.npz"
    meta = json.loads((cut / "checkpoint.json").read_text())
    assert meta["state"]["step"] == 17 and meta["state"]["batch_in_epoch"] == 6
    execute(load(DIGITS, SHORT), cut, resume=True)
    a, b = _params(full), _params(cut)
    assert a.keys() == b.keys() and len(a) > 4  # params and Adam moments
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert _metrics(full) == _metrics(cut)


def test_same_seed_same_metrics_file(tmp_path):
    execute(load(DIGITS, SHORT), tmp_path / "a")
    execute(load(DIGITS, SHORT), tmp_path / "b")
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    rows = [json.loads(x) for x in _metrics(tmp_path / "a").splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["test_loss"] < rows[0]["test_loss"] < rows[0]["train_loss"] + 1.0


def test_resume_via_cli_continues_to_more_epochs(tmp_path):
    out = tmp_path / "run"
    sets = sum((["--set", s] for s in SHORT), [])
    assert CliRunner().invoke(main, ["run", str(DIGITS), "--out", str(out), "-q"] + sets).exit_code == 0
    more = sets + ["--set", "train.epochs=5"]
    result = CliRunner().invoke(main, ["run", "--resume", str(out), "-q"] + more)
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in _metrics(out).splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert json.loads((out / "summary.json").read_text())["epochs"] == 5


def test_divergence_stops_names_the_node_and_keeps_last_good_checkpoint(tmp_path):
    out = tmp_path / "div"
    spec = ROOT / "specs" / "mlp_quadratic.toml"
    # 25 steps per epoch: epoch 1 trains at lr 1e-3, epoch 2 at 1e6 and diverges
    args = ["run", str(spec), "--out", str(out), "-q", "--set", "train.epochs=3", "--set",
            'train.optimizer.kind="gd"', "--set", "output.checkpoint_every=1", "--set", "train.optimizer.lr=0.001",
            "--set", 'train.schedule={ kind = "step", step_size = 25, gamma = 1e9 }',
            "--set", 'model.layers[0].activation="relu"']
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "became inf" in result.output or "became nan" in result.output
    assert "epoch 2, step" in result.output
    assert "first produced by" in result.output and "[" in result.output
    assert "Traceback" not in result.output
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["state"]["epoch"] == 1 and meta["state"]["step"] == 25  # the last good one: end of epoch 1
    for k, v in _params(out).items():
        assert np.all(np.isfinite(v)), k


def test_checkpoint_loading_never_unpickles(tmp_path):
    from gengraph.plugins.run.runner import Trainer, build

    spec = load(DIGITS, SHORT)
    data, plugin, graph, model = build(spec.data)
    from gengraph.plugins.run.context import RunContext

    trainer = Trainer(plugin, model, data, spec.data["train"], RunContext(spec.data, None, 0))
    evil = tmp_path / "checkpoint.npz"
    np.savez(evil, __meta__=np.array([{"boom": print}], dtype=object))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(evil, trainer)
    assert "not a loadable checkpoint" in str(info.value)
    np.savez(evil, other=np.zeros(3))
    with pytest.raises(CheckpointError, match="no metadata"):
        read_checkpoint(evil, trainer)


def test_resume_with_a_mismatched_model_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    sets = sum((["--set", s] for s in SHORT), [])
    CliRunner().invoke(main, ["run", str(DIGITS), "--out", str(out), "-q"] + sets)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = CliRunner().invoke(main, ["run", "--resume", str(out), "-q", "--set", "model.layers[0].units=8"])
    assert result.exit_code == 2
    assert "--resume cannot change model.layers[0].units" in result.output and "model.layers[0].units = 32 in the checkpoint, 8 now" in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing rewritten


def test_sigint_writes_a_checkpoint_and_exits_130(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "gengraph", "run", str(DIGITS), "--out", str(out), "-q",
           "--set", "train.epochs=100000", "--set", "model.layers[0].units=8", "--set", "model.layers[1].units=8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"checkpoint written to {out / 'checkpoint.npz'}" in err and "--resume" in err
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["state"]["step"] > 0
    assert set(_params(out)) >= {"param/hidden/dense0/W", "state/optimizer/opt/step"}
