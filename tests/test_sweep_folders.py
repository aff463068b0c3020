"""A sweep writes only into trial folders it made itself: a trial-named folder that holds another
run (running or finished, or one run there over a trial) or only the user's files is refused up
front (exit 2, nothing written or removed); --resume reruns a recorded trial whose folder is gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.plugins.run.rundir import open_run_dir
from gengraph.plugins.sweep import sweep as sw

from test_sweep_folder_safety import RIDGE  # noqa: E402  (the same small ridge sweep)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} if folder.is_dir() else {}


def setup(tmp_path) -> tuple[Path, Path]:
    spec = tmp_path / "ridge.toml"
    spec.write_text(RIDGE)
    return spec, tmp_path / "sw"


def refused(result, folder: Path) -> str:
    """The one error line of a refused sweep, which names the folder and says what to do."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert str(folder) in lines[0] and "another --out" in lines[0], lines[0]
    assert "move it away" in lines[0] or "move them away" in lines[0], lines[0]
    return lines[0]


def test_a_run_working_in_a_trial_folder_is_refused_and_untouched(tmp_path):
    spec, out = setup(tmp_path)
    busy = out / "lam=0.01"
    assert invoke("run", spec, "--out", busy, "-q").exit_code == 0
    lock = open_run_dir(busy)  # a run that is still working there holds its lock
    try:
        before = snapshot(busy)
        err = refused(invoke("sweep", spec, "--out", out, "--workers", "1"), busy)
        assert "running" in err and "gengraph.lock" in err
        assert snapshot(busy) == before  # its spec, checkpoint, metrics and lock are as they were
        assert sorted(p.name for p in out.iterdir()) == ["lam=0.01"]  # no sweep.jsonl, no other trial ran
    finally:
        lock.release()


def test_a_finished_run_or_the_users_files_in_a_trial_folder_are_refused(tmp_path):
    spec, out = setup(tmp_path)
    run_dir, mine = out / "lam=0.01", out / "lam=0.0001"
    assert invoke("run", spec, "--out", run_dir, "-q").exit_code == 0
    mine.mkdir()
    (mine / "loss.png").write_bytes(b"the user's own plot")  # named like a run's file, but the user's
    before = {d: snapshot(d) for d in (run_dir, mine)}
    err = refused(invoke("sweep", spec, "--out", out, "--workers", "1"), run_dir)
    assert str(mine) in err and "loss.png" in err and "spec.toml" in err
    assert {d: snapshot(d) for d in (run_dir, mine)} == before
    assert not (out / "sweep.jsonl").exists()


def test_a_run_over_a_sweeps_trial_is_no_longer_the_sweeps(tmp_path):
    spec, out = setup(tmp_path)
    assert invoke("sweep", spec, "--out", out, "--workers", "1", "-q").exit_code == 0
    trial = out / "lam=0.01"
    # the user reruns one trial as a plain run, over the sweep's files
    assert invoke("run", spec, "--out", trial, "--overwrite", "--set", "run.seed=3", "-q").exit_code == 0
    jsonl = (out / "sweep.jsonl").read_bytes()
    before = snapshot(trial)
    for extra in (["--overwrite"], ["--resume", "--set", "run.seed=7"]):  # both would replace that folder
        err = refused(invoke("sweep", spec, "--out", out, "--workers", "1", *extra), trial)
        assert "which this sweep did not write" in err and "spec.toml" in err
        assert snapshot(trial) == before and (out / "sweep.jsonl").read_bytes() == jsonl


def test_overwrite_refuses_to_clear_a_recorded_folder_that_now_holds_another_run(tmp_path):
    spec, out = setup(tmp_path)
    assert invoke("sweep", spec, "--out", out, "--workers", "1", "-q").exit_code == 0
    gone = out / "lam=0.01"
    shutil.rmtree(gone)
    assert invoke("run", spec, "--out", gone, "-q").exit_code == 0  # still recorded in sweep.jsonl
    before = snapshot(gone)
    err = refused(invoke("sweep", spec, "--out", out, "--workers", "1", "--overwrite", "--set", "sweep.axes={}",
                         "--axis", "model.lam=0.001"), gone)
    assert "did not make" in err
    assert snapshot(gone) == before and (out / "lam=0.0001" / "summary.json").exists()


def test_a_sweeps_own_trial_is_replaced_keeping_the_users_files(tmp_path):
    spec, out = setup(tmp_path)
    assert invoke("sweep", spec, "--out", out, "--workers", "1", "-q").exit_code == 0
    trial = out / "lam=0.01"
    (trial / "notes.txt").write_text("mine")
    (trial / "samples.png").write_bytes(b"mine too")  # no trial wrote one (plots = false)
    r = invoke("sweep", spec, "--out", out, "--workers", "1", "--resume", "--set", "run.seed=7", "-q")
    assert r.exit_code == 0, r.output
    assert "seed = 7" in (trial / "spec.toml").read_text()
    assert (trial / "notes.txt").read_text() == "mine" and (trial / "samples.png").read_bytes() == b"mine too"
    assert set(sw._read_mark(trial)["files"]) >= {"spec.toml", "summary.json"}


def test_an_older_mark_still_makes_the_folder_the_sweeps(tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "spec.toml").write_text("spec_version = 1\n")
    (folder / ".sweep-attempt").write_text("123-456-abcd\nok\n")  # before marks listed their files
    assert sw._trial_conflict(folder) is None
    (folder / ".sweep-attempt").unlink()
    assert "did not make" in sw._trial_conflict(folder)


def test_publishing_never_replaces_a_folder_a_run_took_meanwhile(tmp_path):
    plan = sw.plan_sweep(Path(__file__).resolve().parents[1] / "specs" / "ols_franke.toml", ["output.plots=false"],
                         ["model.degree=2"], out_dir=tmp_path / "s")
    payload = {**sw._payload(plan, plan.trials[0]), "attempt": "A"}
    final = Path(payload["run_dir"])
    final.mkdir(parents=True)
    (final / "gengraph.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))  # a run started after the check
    (final / "spec.toml").write_text("the run's spec\n")
    before = snapshot(final)
    record = sw.run_trial(payload)
    assert record["status"] == "failed" and str(final) in record["error"] and "gengraph.lock" in record["error"]
    assert snapshot(final) == before
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # no temporary folder left


def test_resume_reruns_a_recorded_trial_whose_folder_is_gone(tmp_path):
    spec, out = setup(tmp_path)
    assert invoke("sweep", spec, "--out", out, "--workers", "1", "-q").exit_code == 0
    gone = out / "lam=0.01"
    shutil.rmtree(gone)
    r = invoke("sweep", spec, "--out", out, "--workers", "1", "--resume")
    assert r.exit_code == 0, r.output
    assert f"trial lam=0.01 is recorded in sweep.jsonl but its folder {gone} is missing; running it again" in r.output
    assert r.output.count("(recorded in sweep.jsonl)") == 1 and r.output.count("] ok ") == 1
    result = json.loads((out / "sweep.json").read_text())
    assert all(Path(t["run_dir"], "summary.json").is_file() for t in result["trials"])


def test_an_axis_value_the_optimizer_refuses_is_refused_before_any_trial(tmp_path):
    # --axis train.optimizer.lr=-1,0.01 ran the sweep and failed the lr=-1 trial (exit 1)
    res = CliRunner().invoke(main, ["sweep", str(Path(__file__).resolve().parents[1] / "specs" / "mlp_digits.toml"),
                                    "--axis", "train.optimizer.lr=-1,0.01", "--set", "train.epochs=1",
                                    "--workers", "1", "--out", str(tmp_path / "sw")])
    assert res.exit_code == 2 and "--axis train.optimizer.lr: must be >= 0, found -1" in res.output, \
        res.output
    assert not (tmp_path / "sw").exists()
