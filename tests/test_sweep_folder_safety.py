"""A sweep folder holds one sweep, like a run directory holds one run: a second sweep into it is
refused (exit 2) unless --resume or --overwrite (which keeps the user's files), the folder is
locked while a sweep runs (a second process is refused naming the PID; a killed sweep's stale
lock is taken over), and SIGINT/SIGTERM stop the pool's workers and exit 130/143 with every
published trial folder recorded in sweep.jsonl, so that --resume continues correctly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gengraph.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "specs" / "mlp_digits.toml"

RIDGE = """spec_version = 1
[run]
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
[sweep.axes]
"model.lam" = [1e-4, 1e-2]
"""

# 4 digits trials of about 1.5 s each on 2 workers: a signal finds some recorded, some running
SLOW = ["--set", "train.epochs=250", "--set", "output.plots=false",
        "--axis", "train.optimizer.lr=0.001,0.002,0.003,0.004", "--workers", "2"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def records(out: Path) -> list[dict]:
    path = out / "sweep.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def start(out: Path, tmp_path: Path, *args) -> subprocess.Popen:
    """`gengraph sweep MLP --out OUT ARGS` in its own process group, output to files."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "gengraph", "sweep", str(MLP), "--out", str(out), *args],
                            stdout=open(tmp_path / "stdout.txt", "w"), stderr=open(tmp_path / "stderr.txt", "w"),
                            env=env, start_new_session=True, cwd=tmp_path)


def wait_for(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(k) for k in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_group(p: subprocess.Popen) -> None:
    """Whatever the test found: leave no process of it behind (the group was made for it)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except OSError:
        pass
    p.wait(10)


def test_a_folder_holding_a_sweep_is_refused_unless_resume_or_overwrite(tmp_path):
    spec = tmp_path / "ridge.toml"
    spec.write_text(RIDGE)
    out = tmp_path / "sw"
    assert invoke("sweep", spec, "--out", out, "--workers", "1", "-q").exit_code == 0
    first = (out / "sweep.jsonl").read_bytes()
    assert [r["trial"] for r in records(out)] == ["lam=0.0001", "lam=0.01"]
    (out / "lam=0.0001" / "notes.txt").write_text("mine")  # the user's files, in a trial folder and beside
    (out / "mine.txt").write_text("mine too")
    spec_before = (out / "lam=0.0001" / "spec.toml").read_text()

    for extra in (["--set", "run.seed=7"], []):  # another sweep, and the identical one again
        r = invoke("sweep", spec, "--out", out, "--workers", "1", *extra)
        assert r.exit_code == 2, r.output
        err = [line for line in r.output.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("error: ") and str(out) in err[0], r.output
        assert "holds a sweep" in err[0] and "--resume" in err[0] and "--overwrite" in err[0]
        assert (out / "sweep.jsonl").read_bytes() == first  # nothing recorded was lost
        assert (out / "lam=0.0001" / "spec.toml").read_text() == spec_before
        assert (out / "lam=0.0001" / "notes.txt").read_text() == "mine"
        assert not (out / "gengraph.lock").exists()

    both = invoke("sweep", spec, "--out", out, "--resume", "--overwrite")
    assert both.exit_code == 2 and "pass one" in both.output

    # --resume: the changed trials run again, in place; the user's file in the trial folder stays
    r = invoke("sweep", spec, "--out", out, "--workers", "1", "--resume", "--set", "run.seed=7", "-q")
    assert r.exit_code == 0, r.output
    assert [rec["status"] for rec in records(out)] == ["ok", "ok"]
    assert "seed = 7" in (out / "lam=0.0001" / "spec.toml").read_text()
    assert (out / "lam=0.0001" / "notes.txt").read_text() == "mine"

    # --overwrite: the old sweep's files and trial folders go, the user's files stay
    r = invoke("sweep", spec, "--out", out, "--workers", "1", "--overwrite", "--set", "sweep.axes={}",
               "--axis", "model.lam=0.001")
    assert r.exit_code == 0, r.output
    assert "--overwrite removed the earlier sweep" in r.output
    assert [rec["trial"] for rec in records(out)] == ["lam=0.001"]
    assert json.loads((out / "sweep.json").read_text())["n_trials"] == 1
    assert sorted(p.name for p in (out / "lam=0.0001").iterdir()) == ["notes.txt"]
    assert not (out / "lam=0.01").exists()
    assert (out / "mine.txt").read_text() == "mine too"
    assert (out / "lam=0.001" / "summary.json").exists()

    # a folder that holds a single run is not a sweep's to take either
    run_dir = tmp_path / "run"
    assert invoke("run", spec, "--out", run_dir, "-q").exit_code == 0
    summary = (run_dir / "summary.txt").read_text()
    r = invoke("sweep", spec, "--out", run_dir, "--workers", "1")
    assert r.exit_code == 2 and "holds a gengraph run" in r.output and str(run_dir) in r.output
    assert (run_dir / "summary.txt").read_text() == summary and not (run_dir / "sweep.jsonl").exists()


def test_a_running_sweep_locks_its_folder_and_a_killed_ones_lock_is_taken_over(tmp_path):
    out = tmp_path / "sw"
    p = start(out, tmp_path, "--set", "train.epochs=600", "--set", "output.plots=false",
              "--axis", "train.optimizer.lr=0.001,0.002", "--workers", "1")
    try:
        assert wait_for(lambda: out.is_dir() and any(".tmp-" in d.name for d in out.iterdir()), 60)
        second = invoke("sweep", MLP, "--out", out, "--set", "train.epochs=2", "--set", "output.plots=false",
                        "--axis", "train.optimizer.lr=0.001,0.002", "--workers", "1", "--resume")
        assert p.poll() is None, "the first sweep ended too soon for this test"
        assert second.exit_code == 2, second.output
        assert f"PID {p.pid}" in second.output and str(out) in second.output, second.output
        assert records(out) == []  # the second sweep ran nothing
        os.killpg(p.pid, signal.SIGKILL)  # kill -9: the lock stays behind
        p.wait(10)
    finally:
        kill_group(p)
    assert json.loads((out / "gengraph.lock").read_text())["pid"] == p.pid
    third = invoke("sweep", MLP, "--out", out, "--set", "train.epochs=2", "--set", "output.plots=false",
                   "--axis", "train.optimizer.lr=0.001,0.002", "--workers", "1", "--resume", "-q")
    assert third.exit_code == 0, third.output
    assert "took over the stale lock" in third.output and f"PID {p.pid} is not running" in third.output
    assert [r["status"] for r in records(out)] == ["ok", "ok"]
    assert not (out / "gengraph.lock").exists()
    assert not [d.name for d in out.iterdir() if ".tmp-" in d.name]  # the killed sweep's half trials are gone


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_workers_and_every_published_trial_is_recorded(tmp_path, signame):
    signum = getattr(signal, signame)
    out = tmp_path / "sw"
    p = start(out, tmp_path, *SLOW)
    try:
        assert wait_for(lambda: len(records(out)) >= 1 or p.poll() is not None, 90)
        time.sleep(0.3)  # the next trials are running in the workers
        kids = descendants(p.pid)
        assert p.poll() is None and len(records(out)) < 4, "the sweep ended too soon for this test"
        os.kill(p.pid, signum)  # to the sweep's process only: it must stop its workers itself
        rc = p.wait(30)
        workers_gone = wait_for(lambda: not any(alive(k) for k in kids), 5)
    finally:
        kill_group(p)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert rc == 128 + signum, (rc, stderr)
    recorded = records(out)
    assert 1 <= len(recorded) < 4 and all(r["status"] == "ok" for r in recorded)
    # every trial folder there is recorded (none published behind the records), no half trial is left
    assert sorted(d.name for d in out.iterdir() if d.is_dir()) == sorted(r["trial"] for r in recorded)
    assert len(kids) >= 2 and workers_gone, "pool workers outlived the sweep"
    assert f"sweep interrupted by {signame}" in stderr and "continue with --resume" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["n_trials"] == len(recorded) and summary["complete"] is False
    if signame == "SIGTERM":  # --resume runs only the rest
        again = subprocess.run([sys.executable, "-m", "gengraph", "sweep", str(MLP), "--out", str(out), *SLOW,
                                "--resume"], check=False, capture_output=True, text=True, timeout=120,
                               env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
        assert again.returncode == 0, again.stderr
        assert again.stderr.count("(recorded in sweep.jsonl)") == len(recorded)  # progress: stderr
        assert again.stderr.count("] ok ") == 4 - len(recorded)
        final = records(out)
        assert len(final) == 4 and len({r["trial"] for r in final}) == 4 and all(r["status"] == "ok" for r in final)


def test_a_pool_worker_ends_when_the_sweep_is_killed(tmp_path):
    # after `kill -9` of the sweep's process its workers were reparented and waited forever,
    # holding the sweep's stdout/stderr open
    import subprocess
    import sys
    import time

    child = ("import os, time\n"
             "from gengraph.plugins.sweep.sweep import _exit_with_parent\n"
             "_exit_with_parent(os.getppid(), every=0.05)\n"
             "time.sleep(60)\n")
    parent = ("import subprocess, sys, time\n"
              f"c = subprocess.Popen([sys.executable, '-c', {child!r}])\n"
              "print(c.pid, flush=True)\n"
              "time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    pid = int(p.stdout.readline())
    time.sleep(1.0)  # the child has imported gengraph and started watching
    assert _alive(pid)
    p.kill()
    p.wait()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    """Running (a zombie, waiting for init to reap it, has exited)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in fh)
    except FileNotFoundError:
        return False
