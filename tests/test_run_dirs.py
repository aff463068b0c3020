"""A run directory belongs to one run: refusal and --overwrite, the lock, --resume's limits,
damaged files, signals in every phase, and paths that cannot be run directories."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.plugins.run.checkpoint import fingerprint
from gengraph.plugins.run.checkpoint import read_checkpoint
from gengraph.plugins.run.loading import load
from gengraph.plugins.run.rundir import LOCK_NAME
from gengraph.plugins.run.runner import RunInterrupted, Trainer, build, execute

ROOT = Path(__file__).resolve().parents[1]

TINY = """spec_version = 1
[run]
name = "tiny"
[data]
source = "linear"
n = 60
[model]
kind = "mlp"
layers = [{ units = 4, activation = "tanh" }]
[train]
epochs = 2
batch_size = 16
[output]
plots = false
"""

OLS = """spec_version = 1
[data]
source = "franke"
n = 100
[model]
kind = "regression"
method = "ols"
degree = 2
[output]
plots = false
"""

# A model kind whose build or report waits (GG_SLOW = "import" | "build" | "report"), writing
# GG_MARK first, so that a test can send a signal in exactly that phase.
SLOW_PLUGIN = '''
import os, time
from pathlib import Path
from gengraph.plugins.models.mlp import MLP

def _wait(phase):
    if os.environ.get("GG_SLOW") == phase:
        Path(os.environ["GG_MARK"]).write_text(phase)
        time.sleep(60)

_wait("import")

class SlowMLP(MLP):
    kind = "slowmlp"

    def build(self, *a, **k):
        _wait("build")
        return super().build(*a, **k)

    def report(self, *a, **k):
        _wait("report")
        return super().report(*a, **k)

plugin = SlowMLP()
'''


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def tiny(tmp_path, text=TINY):
    p = tmp_path / "tiny.toml"
    p.write_text(text)
    return p


def snapshot(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


_TEMPLATE = {}


def finished_run(tmp_path, *sets, text=TINY):
    """A finished run in tmp_path/run (the plain TINY one is made once and copied)."""
    out = tmp_path / "run"
    if not sets and text == TINY and "run" in _TEMPLATE:
        shutil.copytree(_TEMPLATE["run"], out)
        tiny(tmp_path, text)
        return out
    result = invoke("run", tiny(tmp_path, text), "--out", out, "-q", *sum((["--set", s] for s in sets), []))
    assert result.exit_code == 0, result.output
    if not sets and text == TINY:
        _TEMPLATE["run"] = tmp_path / "template"
        shutil.copytree(out, _TEMPLATE["run"])
    return out


def ok_no_traceback(result, code):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


# --- item 2: a run directory holds one run ------------------------------------------------------

def test_a_second_run_into_a_run_directory_is_refused_and_changes_nothing(tmp_path):
    out = finished_run(tmp_path)
    before = snapshot(out)
    result = invoke("run", tiny(tmp_path), "--out", out, "-q", "--set", "train.epochs=1")
    ok_no_traceback(result, 2)
    assert f"{out} holds another run" in result.output
    assert "--overwrite" in result.output and f"--resume {out}" in result.output
    assert snapshot(out) == before


def test_a_run_without_checkpoint_is_not_offered_for_resume(tmp_path):
    # a run that failed before its first checkpoint (e.g. diverged) was offered --resume, which then
    # answered "no checkpoint here"
    out = finished_run(tmp_path)
    (out / "checkpoint.npz").unlink()
    result = invoke("run", tiny(tmp_path), "--out", out, "-q")
    ok_no_traceback(result, 2)
    assert "--overwrite" in result.output and "--resume" not in result.output
    assert "no checkpoint to resume from" in result.output


def test_overwrite_replaces_the_run_files_and_keeps_the_users(tmp_path):
    out = finished_run(tmp_path)
    (out / "notes.txt").write_text("mine")
    (out / "my_plot.png").write_bytes(b"png")
    (out / "model.npy").write_bytes(b"x")
    result = invoke("run", tiny(tmp_path), "--out", out, "-q", "--overwrite", "--set", "train.epochs=1")
    ok_no_traceback(result, 0)
    assert "removed the earlier run's files" in result.output
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "my_plot.png").read_bytes() == b"png" and (out / "model.npy").read_bytes() == b"x"
    assert not (out / LOCK_NAME).exists()


def test_overwrite_keeps_user_files_named_like_plugin_outputs(tmp_path):
    # --overwrite deleted every file named like some plugin's output (samples.npy, density.png,
    # log.txt) although this run's manifest did not list them
    out = finished_run(tmp_path)
    for name in ("samples.npy", "density.png", "log.txt"):
        (out / name).write_text("mine")
    manifest = out / "files.json"
    assert not manifest.exists() or not {"samples.npy", "density.png"} & set(json.loads(manifest.read_text()))
    result = invoke("run", tiny(tmp_path), "--out", out, "-q", "--overwrite", "--set", "train.epochs=1")
    ok_no_traceback(result, 0)
    for name in ("samples.npy", "density.png", "log.txt"):
        assert (out / name).read_text() == "mine", name


def test_a_plugin_file_is_listed_before_it_is_written(tmp_path):
    # files.json was written after the report: a run killed (kill -9) after its samples.npy and
    # before that left a file no list named, and the next run's --overwrite kept it beside its own
    from gengraph.plugins.run.context import RunContext

    ctx = RunContext({}, tmp_path, 0)
    path = ctx.path("samples.npy")
    assert path == tmp_path / "samples.npy" and not path.exists()
    assert json.loads((tmp_path / "files.json").read_text()) == ["samples.npy"]
    ctx.path("density.png")
    assert json.loads((tmp_path / "files.json").read_text()) == ["density.png", "samples.npy"]
    (tmp_path / "spec.toml").write_text("")  # what the killed run had written: a run is here
    path.write_bytes(b"stale")
    (tmp_path / "s").mkdir()
    result = invoke("run", tiny(tmp_path / "s"), "--out", tmp_path, "-q", "--overwrite", "--set", "train.epochs=1")
    ok_no_traceback(result, 0)
    assert not path.exists()


def test_overwrite_removes_the_plugin_files_the_manifest_names(tmp_path):
    out = finished_run(tmp_path, "output.plots=true")
    names = json.loads((out / "files.json").read_text())
    assert "fit.png" in names  # the mlp's regression plot, recorded through ctx.path
    json.dump(names + ["custom_plot.png"], open(out / "files.json", "w"))
    (out / "custom_plot.png").write_bytes(b"old")
    result = invoke("run", tiny(tmp_path), "--out", out, "-q", "--overwrite", "--set", "output.plots=false")
    ok_no_traceback(result, 0)
    assert not (out / "custom_plot.png").exists() and not (out / "fit.png").exists()


def test_an_empty_folder_or_one_with_only_user_files_is_fine(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "README").write_text("my notes")
    ok_no_traceback(invoke("run", tiny(tmp_path), "--out", out, "-q"), 0)
    assert (out / "README").read_text() == "my notes" and (out / "summary.json").exists()


def test_resume_and_overwrite_together_is_a_usage_error(tmp_path):
    out = finished_run(tmp_path)
    result = invoke("run", "--resume", out, "--overwrite", "-q")
    ok_no_traceback(result, 2)
    assert "--overwrite" in result.output


def test_the_python_api_refuses_too(tmp_path):
    out = finished_run(tmp_path)
    from gengraph.plugins.run.rundir import RunDirError

    with pytest.raises(RunDirError, match="holds another run"):
        execute(load(tiny(tmp_path)), out, log=lambda *a: None)
    execute(load(tiny(tmp_path), ["train.epochs=1"]), out, overwrite=True, log=lambda *a: None)
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1


# --- item 4: --resume changes only what cannot rewrite the past ----------------------------------

@pytest.mark.parametrize("sets, key", [
    (["run.seed=7"], "run.seed"),
    (["data.test_fraction=0.5"], "data.test_fraction"),
    (["model.layers[0].units=8"], "model.layers[0].units"),
    (["train.optimizer.lr=0.5"], "train.optimizer.lr"),
])
def test_resume_refuses_keys_that_rewrite_the_past_and_writes_nothing(tmp_path, sets, key):
    out = finished_run(tmp_path)
    before = snapshot(out)
    result = invoke("run", "--resume", out, "-q", "--set", "train.epochs=4", *sum((["--set", s] for s in sets), []))
    ok_no_traceback(result, 2)
    assert f"--resume cannot change {key}" in result.output
    assert "train.epochs, output.*" in result.output
    assert snapshot(out) == before
    # a later plain resume still works: the failed one rewrote nothing
    result = invoke("run", "--resume", out, "-q", "--set", "train.epochs=3")
    ok_no_traceback(result, 0)
    assert json.loads((out / "summary.json").read_text())["epochs"] == 3


def test_resume_refuses_a_checkpoint_ahead_of_the_logged_rows(tmp_path):
    # a checkpoint copied in from a longer run of the same spec was resumed, and metrics.jsonl held
    # epochs 1-2 then 5-6
    longer = tmp_path / "longer"
    longer.mkdir()
    out = finished_run(longer, "train.epochs=4")
    short = finished_run(tmp_path)
    shutil.copy(out / "checkpoint.npz", short / "checkpoint.npz")
    before = snapshot(short)
    result = invoke("run", "--resume", short, "-q", "--set", "train.epochs=6")
    ok_no_traceback(result, 2)
    assert "the logged rows end at epoch 2 but the checkpoint is at epoch 4" in result.output
    assert snapshot(short) == before


def test_resume_may_change_epochs_and_output(tmp_path):
    out = finished_run(tmp_path)
    result = invoke("run", "--resume", out, "-q", "--set", "train.epochs=3", "--set", "output.checkpoint_every=1",
                    "--set", "output.plots=false", "--set", "run.threads=2")
    ok_no_traceback(result, 0)
    assert json.loads((out / "checkpoint.json").read_text())["state"]["epoch"] == 3


def test_resume_cannot_untrain_and_a_finished_run_has_nothing_to_resume(tmp_path):
    out = finished_run(tmp_path, "train.epochs=3")
    before = snapshot(out)
    result = invoke("run", "--resume", out, "-q", "--set", "train.epochs=1")
    ok_no_traceback(result, 2)
    assert "already trained 3 epochs" in result.output and "cannot un-train" in result.output
    result = invoke("run", "--resume", out, "-q")
    ok_no_traceback(result, 2)
    assert "nothing to resume" in result.output and "train.epochs=N with N > 3" in result.output
    assert snapshot(out) == before


def test_resume_of_a_closed_form_fit_says_there_is_nothing_to_resume(tmp_path):
    out = finished_run(tmp_path, text=OLS)
    before = snapshot(out)
    result = invoke("run", "--resume", out, "-q", "--set", "train.epochs=50")
    ok_no_traceback(result, 2)
    assert "nothing to resume" in result.output and "closed form" in result.output
    assert snapshot(out) == before


def test_resume_where_there_is_no_run(tmp_path):
    result = invoke("run", "--resume", tmp_path / "none", "-q")
    ok_no_traceback(result, 2)
    assert "nothing to resume" in result.output


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    a = finished_run(tmp_path)
    b = tmp_path / "b"
    ok_no_traceback(invoke("run", tiny(tmp_path), "--out", b, "-q", "--set", "run.seed=3"), 0)
    (a / "checkpoint.npz").write_bytes((b / "checkpoint.npz").read_bytes())
    before = snapshot(a)
    result = invoke("run", "--resume", a, "-q", "--set", "train.epochs=3")
    ok_no_traceback(result, 2)
    assert "belongs to a run with another spec" in result.output and "run.seed = 3 in the checkpoint, 0 now" in result.output
    assert snapshot(a) == before


# --- item 13: damaged files are one clear error, and nothing is rewritten -------------------------

def _rewrite_checkpoint(out, edit):
    with np.load(out / "checkpoint.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["__meta__"].tobytes().decode())
    edit(arrays, meta)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(out / "checkpoint.npz", **arrays)


def _set(path, value):
    def edit(arrays, meta):
        *parents, last = path
        d = meta
        for p in parents:
            d = d[p]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value
    return edit


W = "param/hidden/dense0/W"


@pytest.mark.parametrize("damage, words", [
    (lambda out: (out / "checkpoint.npz").write_bytes((out / "checkpoint.npz").read_bytes()[:300]),
     "damaged or truncated"),
    (lambda out: (out / "checkpoint.npz").write_bytes(b""), "not a loadable checkpoint"),
    (lambda out: _rewrite_checkpoint(out, _set(["rng"], KeyError)), 'damaged metadata ("rng" missing'),
    (lambda out: _rewrite_checkpoint(out, _set(["state", "epoch"], "two")), "state.epoch"),
    (lambda out: _rewrite_checkpoint(out, _set(["state", "surprise"], 1)), "state keys"),
    (lambda out: _rewrite_checkpoint(out, _set(["rng", "bit_generator"], "MT19937")), "rng is not a PCG64 state"),
    (lambda out: _rewrite_checkpoint(out, _set(["rng", "state"], {"state": "x"})), "rng is not a PCG64 state"),
    (lambda out: _rewrite_checkpoint(out, _set(["streams"], {"0": {"bit_generator": "PCG64"}})), "streams.0"),
    (lambda out: _rewrite_checkpoint(out, _set(["spec", "run", "seed"], 5)), "does not match its fingerprint"),
    (lambda out: _rewrite_checkpoint(out, _set(["format"], 1)), "checkpoint format 1"),
    (lambda out: _rewrite_checkpoint(out, lambda a, m: a.update({W: np.full(a[W].shape, "x")})), "dtype <U1"),
    (lambda out: _rewrite_checkpoint(out, lambda a, m: a.update({W: np.full(a[W].shape, np.nan)})), "non-finite"),
    (lambda out: (out / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n{"epoch": 2}\n'),
     "metrics.jsonl:2: damaged line"),
    (lambda out: (out / "metrics.jsonl").write_bytes(b"\xff\xfe\n"), "metrics.jsonl: cannot be read"),
])
def test_a_damaged_run_directory_is_one_clear_error_and_is_not_rewritten(tmp_path, damage, words):
    out = finished_run(tmp_path)
    damage(out)
    before = snapshot(out)
    result = invoke("run", "--resume", out, "-q", "--set", "train.epochs=3")
    ok_no_traceback(result, 2)
    assert words in result.output
    assert result.output.count("\n") <= 2
    assert snapshot(out) == before


def test_a_torn_last_metrics_line_is_dropped_with_a_note(tmp_path):
    out = finished_run(tmp_path, "train.epochs=1")
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 2, "step": 8, "train_lo')  # killed while appending
    result = invoke("run", "--resume", out, "-q", "--set", "train.epochs=2")
    ok_no_traceback(result, 0)
    assert "dropped the partial last line" in result.output
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


# --- item 3: the lock ------------------------------------------------------------------------------

def _write_lock(out, pid):
    out.mkdir(parents=True, exist_ok=True)
    import socket

    (out / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "then"}))


def test_a_live_lock_refuses_the_run_and_names_the_pid(tmp_path):
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(out, child.pid)
        lock = (out / LOCK_NAME).read_text()
        result = invoke("run", tiny(tmp_path), "--out", out, "-q")
        ok_no_traceback(result, 2)
        assert f"in use by another gengraph run (PID {child.pid}" in result.output
        assert (out / LOCK_NAME).read_text() == lock and snapshot(out) == {LOCK_NAME: lock.encode()}
        result = invoke("run", "--resume", out, "-q")  # --resume takes the lock before anything else
        assert result.exit_code == 2
    finally:
        child.kill()
        child.wait()


def test_a_stale_lock_is_taken_over_with_a_note_and_released(tmp_path):
    out = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(out, dead.pid)
    result = invoke("run", tiny(tmp_path), "--out", out, "-q")
    ok_no_traceback(result, 0)
    assert f"took over the stale lock {out / LOCK_NAME} (PID {dead.pid} is not running)" in result.output
    assert not (out / LOCK_NAME).exists() and (out / "summary.json").exists()


def test_a_lock_whose_pid_now_names_a_later_process_is_stale(tmp_path):
    # any live PID counted as the owner: a reused PID (a process started after the lock was written)
    # kept the folder locked for good
    import socket

    out = tmp_path / "run"
    later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out.mkdir()
        (out / LOCK_NAME).write_text(json.dumps({"pid": later.pid, "host": socket.gethostname(),
                                                 "started": "2020-01-01 00:00:00", "time": 1577836800.0}))
        result = invoke("run", tiny(tmp_path), "--out", out, "-q")
        ok_no_traceback(result, 0)
        assert f"took over the stale lock {out / LOCK_NAME} (PID {later.pid} now names a process started after " \
               "the lock was written)" in result.output
        # a lock of the earlier version (no "time"): its local "started" text may be another time
        # zone's, so it is not compared: a live PID keeps it (it was taken from a running run)
        (out / LOCK_NAME).write_text(json.dumps({"pid": later.pid, "host": socket.gethostname(),
                                                 "started": "2020-01-01 00:00:00"}))
        result = invoke("run", tiny(tmp_path), "--out", out, "-q", "--overwrite")
        ok_no_traceback(result, 2)
        assert f"in use by another gengraph run (PID {later.pid}" in result.output
    finally:
        later.kill()
        later.wait()


@pytest.mark.parametrize("pid", [0, -1, True])
def test_a_lock_naming_no_process_is_garbage(tmp_path, pid):
    # os.kill(0, 0) and os.kill(-1, 0) succeed: such locks were "in use by another gengraph run"
    out = tmp_path / "run"
    _write_lock(out, pid)
    old = time.time() - 60  # an old garbage lock is taken over; a fresh one may be a run starting
    os.utime(out / LOCK_NAME, (old, old))
    result = invoke("run", tiny(tmp_path), "--out", out, "-q")
    ok_no_traceback(result, 0)
    assert f"took over the stale lock {out / LOCK_NAME} (it held no owner's PID)" in result.output


def test_a_refused_run_leaves_no_folder_it_made(tmp_path):
    # --out a/b/c: the run made a, b and c, and a refusal (a missing data file) removed only c
    out = tmp_path / "a" / "b" / "c"
    result = invoke("run", tiny(tmp_path), "--out", out, "-q", "--set", "data.source=\"csv\"",
                    "--set", "data.path=\"nope.csv\"")
    ok_no_traceback(result, 2)
    assert not (tmp_path / "a").exists()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "mine.txt").write_text("x")
    result = invoke("run", tiny(tmp_path), "--out", out, "-q", "--set", "data.source=\"csv\"",
                    "--set", "data.path=\"nope.csv\"")
    ok_no_traceback(result, 2)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["mine.txt"]  # a was there: kept


def test_the_lock_is_released_when_a_run_fails(tmp_path):
    out = tmp_path / "run"
    result = invoke("run", tiny(tmp_path), "--out", out, "-q", "--set", "model.loss=\"bce\"")
    assert result.exit_code == 2
    assert not out.exists()  # made for this run, left empty: removed again
    out.mkdir()
    result = invoke("run", tiny(tmp_path), "--out", out, "-q", "--set", "model.loss=\"bce\"")
    assert result.exit_code == 2 and out.exists() and list(out.iterdir()) == []


# --- item 6: signals --------------------------------------------------------------------------------

def _gengraph(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "gengraph", "run", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def _wait_for(proc, ready, what):
    deadline = time.time() + 90
    while not ready():
        assert time.time() < deadline and proc.poll() is None, (what, proc.communicate())
        time.sleep(0.05)


def _metrics_started(out):
    return lambda: (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().count("\n") >= 1


SLOW = ["--set", "train.epochs=100000", "--set", "data.n=2000"]


def test_sigterm_checkpoints_exits_143_and_a_second_process_is_refused_meanwhile(tmp_path):
    out = tmp_path / "run"
    proc = _gengraph(tiny(tmp_path), "--out", out, "-q", *SLOW)  # checkpoint_every = 0: only at the end
    _wait_for(proc, _metrics_started(out), "first metrics line")
    second = invoke("run", tiny(tmp_path), "--out", out, "-q")
    ok_no_traceback(second, 2)
    assert f"PID {proc.pid}" in second.output
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert f"interrupted by SIGTERM; checkpoint written to {out / 'checkpoint.npz'}" in err
    assert f"continue with: gengraph run --resume {out}" in err
    assert len(err.strip().splitlines()) == 1
    assert not (out / LOCK_NAME).exists()
    step = json.loads((out / "checkpoint.json").read_text())["state"]["step"]
    assert step > 0
    epoch = json.loads((out / "checkpoint.json").read_text())["state"]["epoch"]
    result = invoke("run", "--resume", out, "-q", "--set", f"train.epochs={epoch + 1}")
    ok_no_traceback(result, 0)
    assert json.loads((out / "summary.json").read_text())["epochs"] == epoch + 1


def test_two_quick_sigints_still_leave_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = _gengraph(tiny(tmp_path), "--out", out, "-q", *SLOW)
    _wait_for(proc, _metrics_started(out), "first metrics line")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)  # the first has been handled: the second would have stopped at once, leaving nothing
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Aborted" not in err and "Traceback" not in err and "checkpoint written to" in err
    spec = load(out / "spec.toml")
    data, plugin, graph, model = build(spec.data)
    from gengraph.plugins.run.context import RunContext

    trainer = Trainer(plugin, model, data, spec.data["train"], RunContext(spec.data, None, 0))
    trainer.compile_programs()
    assert read_checkpoint(out / "checkpoint.npz", trainer)["state"]["step"] > 0


def test_a_second_sigint_while_the_checkpoint_is_written_waits_for_it(tmp_path, monkeypatch):
    import gengraph.plugins.run.checkpoint as ckpt

    real = ckpt.save_npz
    calls = []

    def save_npz_interrupted(path, arrays):
        calls.append(path)
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, while the checkpoint is being written
        time.sleep(0.05)
        real(path, arrays)

    monkeypatch.setattr(ckpt, "save_npz", save_npz_interrupted)

    def first_ctrl_c(trainer, loss):
        if trainer.state.step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "run"
    with pytest.raises(RunInterrupted) as info:
        execute(load(tiny(tmp_path), SLOW[1::2]), out, on_step=first_ctrl_c, log=lambda *a: None)
    assert info.value.exit_code == 130 and info.value.checkpoint == out / "checkpoint.npz" and len(calls) == 1
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["state"]["step"] == 5
    with np.load(out / "checkpoint.npz", allow_pickle=False) as z:
        assert W in z.files and np.all(np.isfinite(z[W]))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


@pytest.mark.parametrize("phase, signum, words", [
    ("import", signal.SIGINT, "interrupted by SIGINT"),
    ("build", signal.SIGINT, "interrupted by SIGINT before training began; nothing was saved"),
    ("report", signal.SIGTERM, "interrupted by SIGTERM while writing the report; training is finished"),
])
def test_signals_during_startup_and_report(tmp_path, phase, signum, words):
    plugin = tmp_path / "slow_plugin.py"
    plugin.write_text(SLOW_PLUGIN)
    spec = tiny(tmp_path, TINY.replace('kind = "mlp"', 'kind = "slowmlp"'))
    out, mark = tmp_path / "run", tmp_path / "mark"
    proc = _gengraph(spec, "--out", out, "-q", "--plugin", plugin, env={"GG_SLOW": phase, "GG_MARK": str(mark)})
    _wait_for(proc, mark.exists, f"{phase} phase")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert words in err and "Traceback" not in err and "Aborted" not in err
    if phase != "report":
        assert not out.exists()  # nothing of the run was written, the lock is gone
        return
    assert not (out / LOCK_NAME).exists() and not (out / "summary.json").exists()
    result = invoke("run", "--resume", out, "-q", "--plugin", plugin)  # writes the report, trains nothing
    ok_no_traceback(result, 0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["steps"] == json.loads((out / "checkpoint.json").read_text())[
        "state"]["step"]


# --- item 12 (run directories): paths that cannot hold a run --------------------------------------

def test_out_paths_that_cannot_be_run_directories(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [("/dev/null", "exists and is not a directory"), (afile, "exists and is not a directory"),
             (afile / "sub", "cannot create it"), ("/proc/self/gengraph", "cannot create it"),
             ("/proc/self", "cannot write there"), (f"{tmp_path}/a\0b", "contains a NUL byte")]
    for out, words in cases:
        for opt in ("--out", "--resume"):
            result = invoke("run", tiny(tmp_path), opt, out, "-q")
            ok_no_traceback(result, 2)
            assert "run directory" in result.output, (out, result.output)
            if opt == "--out":
                assert words in result.output, (out, result.output)
    assert afile.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_place(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        result = invoke("run", tiny(tmp_path), "--out", ro / "run", "-q")
        ok_no_traceback(result, 2)
        assert "cannot create it (Permission denied)" in result.output
    finally:
        ro.chmod(0o755)


def _drop_default_key(path):
    """A checkpoint as an older gengraph wrote it: without the key `path` (a newer option at its
    default), with a fingerprint that matches its recorded spec."""
    def edit(arrays, meta):
        d = meta["spec"]
        for p in path[:-1]:
            d = d[p]
        del d[path[-1]]
        meta["fingerprint"] = fingerprint(meta["spec"])
    return edit


def test_checkpoints_written_before_a_new_option_still_resume(tmp_path):
    # a key added later with its default is what the older version ran: resume and sample accept it
    out = finished_run(tmp_path)
    _rewrite_checkpoint(out, _drop_default_key(["train", "optimizer", "ema"]))
    result = invoke("run", "--resume", out, "-q", "--set", "train.epochs=3")
    ok_no_traceback(result, 0)
    # ... but a spec that now sets that option to something else is another run
    out2 = tmp_path / "second"
    shutil.copytree(out, out2, ignore=shutil.ignore_patterns("gengraph.lock"))
    result = invoke("run", "--resume", out2, "-q", "--set", "train.epochs=4", "--set", "train.optimizer.ema=0.5")
    ok_no_traceback(result, 2)
    assert "train.optimizer.ema = 0.0 in the checkpoint, 0.5 now" in result.output


def _sigterm_when_writing(monkeypatch, name):
    """A SIGTERM to this process the moment the runner writes `name` of the report."""
    import gengraph.plugins.run.runner as runner

    real = runner.atomic_write

    def atomic_write(path, *a, **kw):
        if Path(path).name == name:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(path, *a, **kw)

    monkeypatch.setattr(runner, "atomic_write", atomic_write)


def test_a_signal_in_the_report_leaves_a_run_that_resume_completes(tmp_path, monkeypatch):
    # summary.json was written first: a run stopped after it said "--resume writes the report",
    # then resume refused ("nothing to resume: finished") and summary.txt stayed missing
    out = tmp_path / "run"
    _sigterm_when_writing(monkeypatch, "summary.txt")
    with pytest.raises(RunInterrupted) as info:
        execute(load(tiny(tmp_path)), out, log=lambda *a: None)
    assert info.value.exit_code == 143 and "while writing the report" in str(info.value)
    assert not (out / "summary.json").exists()
    monkeypatch.undo()
    ok_no_traceback(invoke("run", "--resume", out, "-q"), 0)
    assert (out / "summary.txt").exists() and json.loads((out / "summary.json").read_text())["epochs"] == 2


def test_a_signal_as_summary_json_is_written_ends_a_complete_run(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _sigterm_when_writing(monkeypatch, "summary.json")
    with pytest.raises(RunInterrupted) as info:
        execute(load(tiny(tmp_path)), out, log=lambda *a: None)
    assert info.value.exit_code == 143 and str(info.value) == f"interrupted by SIGTERM as the run ended; its report " \
                                                              f"is complete in {out}"
    assert (out / "summary.txt").exists() and json.loads((out / "summary.json").read_text())["epochs"] == 2
    monkeypatch.undo()
    result = invoke("run", "--resume", out, "-q")
    assert result.exit_code == 2 and "nothing to resume" in result.output


def test_a_stop_swallowed_by_a_finalizer_is_silent_and_raised_at_the_next_check(monkeypatch):
    # matplotlib's weakref callbacks swallowed the handler's Stop: "Exception ignored ... Traceback"
    # on stderr, and the run went on; the signal must still end it at the next check
    import weakref

    from gengraph.plugins.run.signals import SignalGuard, Stop

    class Thing:
        pass

    printed = []  # what Python's hook would print as "Exception ignored in ..."
    monkeypatch.setattr(sys, "unraisablehook", printed.append)
    with SignalGuard() as guard:
        thing = Thing()
        guard.received = signal.SIGTERM

        def callback(_):
            raise Stop(signal.SIGTERM)

        ref = weakref.ref(thing, callback)  # noqa: F841 - kept alive so that its callback runs
        del thing
        with pytest.raises(Stop):
            guard.check()
    assert printed == [] and sys.unraisablehook == printed.append  # silent, and the hook restored
    other = RuntimeError("not a signal")
    with SignalGuard():
        obj = Thing()

        def fails(_):
            raise other

        ref = weakref.ref(obj, fails)  # noqa: F841
        del obj
    assert [info.exc_value for info in printed] == [other]  # other exceptions still reach the hook


def test_a_run_is_refused_in_a_sweeps_folder_even_with_overwrite(tmp_path):
    # it was accepted and replaced the sweep's ranked summary.txt
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.jsonl").write_text('{"trial": "a"}\n')
    (out / "summary.txt").write_text("the sweep's ranking\n")
    for extra in ([], ["--overwrite"]):
        result = invoke("run", tiny(tmp_path), "--out", out, "-q", *extra)
        assert result.exit_code == 2 and f"{out} holds a sweep (sweep.jsonl); a run needs a folder of its own" \
            in result.output, result.output
    assert (out / "summary.txt").read_text() == "the sweep's ranking\n" and sorted(os.listdir(out)) == [
        "summary.txt", "sweep.jsonl"]


def test_resume_removes_the_temporaries_a_killed_run_left(tmp_path):
    # a SIGKILL while the checkpoint was written left .checkpoint.npz.XXXX.tmp (1 MiB) after the resume
    out = tmp_path / "run"
    ok_no_traceback(invoke("run", tiny(tmp_path), "--out", out, "-q"), 0)
    left = [out / ".checkpoint.npz.abc123.tmp", out / ".summary.json.x1.tmp"]
    for f in left:
        f.write_bytes(b"half")
    (out / ".mine.tmp").write_text("a user's file")
    ok_no_traceback(invoke("run", "--resume", out, "-q", "--set", "train.epochs=3"), 0)
    assert not any(f.exists() for f in left) and (out / ".mine.tmp").exists()
