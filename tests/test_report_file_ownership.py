"""A run removes or replaces only the report files it wrote itself: each is recorded with its SHA-256
(.report-files.json) as it is written, so a file of a report's name that the user wrote there later
(`gengraph sample RUN --out RUN/samples.png`, their own confusion.png) is theirs. --resume and
--overwrite keep it, and the run refuses to write over it (before training where the runner writes
that name, at the report where a plugin does), losing no training. A folder made before the record
existed still resumes: its earlier report is moved aside, not deleted."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from gengraph.cli.main import main
from gengraph.plugins.run.loading import load
from gengraph.plugins.run.rundir import ASIDE, REPORT_RECORD
from gengraph.plugins.run.runner import execute
from test_run_dir_integrity import SPEC as CLASSIFIER  # a 2-epoch moons classifier with plots

ROOT = Path(__file__).resolve().parents[1]

# a generative run that writes samples.npy and samples.png (1 epoch: about a second)
EBM = [ROOT / "specs" / "ebm_moons.toml", "--set", "train.epochs=1", "--set", "data.n=120", "--set",
       "model.sample_steps=10", "--set", "output.samples=30", "--set", "model.langevin.steps=3",
       "--set", "model.layers=[{units=8}]"]

MINE = b"the user's own file"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(result, code=0):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output


def snapshot(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(out: Path) -> dict:
    return json.loads((out / REPORT_RECORD).read_text())["files"]


def epochs_trained(out: Path) -> int:
    return json.loads((out / "checkpoint.json").read_text())["state"]["epoch"]


_TEMPLATE = {}


@pytest.fixture
def run(tmp_path):
    """A finished 2-epoch classifier run with plots (confusion.png, loss.png) in tmp_path/run."""
    spec = tmp_path / "tiny.toml"
    spec.write_text(CLASSIFIER)
    out = tmp_path / "run"
    if "run" not in _TEMPLATE:
        ok(invoke("run", spec, "--out", out, "-q"))
        _TEMPLATE["run"] = tmp_path / "template"
        shutil.copytree(out, _TEMPLATE["run"])
    else:
        shutil.copytree(_TEMPLATE["run"], out)
    return out


def test_the_record_holds_the_sha256_of_every_report_file_the_run_wrote(run):
    files = record(run)
    report = {"summary.json", "summary.txt", "loss.png", "confusion.png"}
    assert report <= set(files) and set(files) <= report | set(json.loads((run / "files.json").read_text()))
    for name in report:
        assert files[name] == sha(run / name), name


def test_resume_keeps_a_sample_picture_the_user_wrote_over_the_runs_and_loses_no_training(tmp_path):
    # `gengraph sample RUN --out RUN/samples.png` replaced the run's picture; --resume deleted it
    out = tmp_path / "ebm"
    ok(invoke("run", *EBM, "--out", out, "-q"))
    ok(invoke("sample", out, "--n", 9, "--out", out / "samples.png"))
    mine = (out / "samples.png").read_bytes()
    output = ok(invoke("run", "--resume", out, "-q", "--set", "train.epochs=2"), 2)
    assert output.strip().splitlines()[-1] == (
        f"error: {out / 'samples.png'} was there before this run and is not a run's file, so the report does not "
        f"write over it: move it away, then gengraph run --resume {out} writes the report")
    assert (out / "samples.png").read_bytes() == mine
    assert epochs_trained(out) == 2  # the second epoch is in the checkpoint
    assert record(out)["samples.png"] not in ("", hashlib.sha256(mine).hexdigest())  # the run's earlier one
    (out / "samples.png").rename(tmp_path / "mine.png")
    ok(invoke("run", "--resume", out, "-q"))
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    assert (tmp_path / "mine.png").read_bytes() == mine
    assert sha(out / "samples.png") == record(out)["samples.png"] != hashlib.sha256(mine).hexdigest()
    assert not (out / ASIDE).exists()


def test_resume_removes_only_the_report_files_the_run_wrote(run):
    # the user's confusion.png, written over the run's, was deleted with the run's stale report
    (run / "confusion.png").write_bytes(MINE)
    (run / "notes.txt").write_bytes(MINE)
    output = ok(invoke("run", "--resume", run, "--set", "train.epochs=3", "--set", "output.plots=false"))
    assert "note: --resume removed the earlier report, which the continued run writes again: summary.json, " \
           "summary.txt, loss.png\n" in output  # not confusion.png
    assert (run / "confusion.png").read_bytes() == MINE and (run / "notes.txt").read_bytes() == MINE
    assert not (run / "loss.png").exists()  # the run's own (no plots now: none stale)
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3
    files = record(run)
    assert files["loss.png"] == "" and files["confusion.png"] not in ("", sha(run / "confusion.png"))
    assert files["summary.json"] == sha(run / "summary.json")


def test_resume_refuses_up_front_a_users_file_the_runner_would_write_over(run):
    (run / "loss.png").write_bytes(MINE)
    before = snapshot(run)
    output = ok(invoke("run", "--resume", run, "-q", "--set", "train.epochs=3"), 2)
    assert output.strip() == (f"error: {run} holds files that no gengraph run wrote but a run would write over "
                              f"(loss.png): move them away and resume again")
    assert snapshot(run) == before and epochs_trained(run) == 2  # nothing trained, nothing written
    # a run that writes no loss.png keeps it and goes on
    ok(invoke("run", "--resume", run, "-q", "--set", "train.epochs=3", "--set", "output.plots=false"))
    assert (run / "loss.png").read_bytes() == MINE and json.loads((run / "summary.json").read_text())["epochs"] == 3


def test_overwrite_refuses_up_front_a_users_file_written_over_a_runs_report_file(run, tmp_path):
    (run / "summary.txt").write_bytes(MINE)
    before = snapshot(run)
    output = ok(invoke("run", tmp_path / "tiny.toml", "--out", run, "-q", "--overwrite"), 2)
    assert output.strip() == (f"error: {run} holds files that no gengraph run wrote but a run would write over "
                              f"(summary.txt): move them away or choose another --out")
    assert snapshot(run) == before


def test_overwrite_keeps_a_users_plugin_named_file_and_the_report_refuses_it_after_training(run, tmp_path):
    # the plugin's output names are known only as its report asks for them: the refusal comes after
    # training, whose checkpoint --resume then turns into the report
    (run / "confusion.png").write_bytes(MINE)
    output = ok(invoke("run", tmp_path / "tiny.toml", "--out", run, "-q", "--overwrite", "--set", "train.epochs=1"), 2)
    assert output.strip().splitlines()[-1] == (
        f"error: {run / 'confusion.png'} was there before this run and is not a run's file, so the report does "
        f"not write over it: move it away, then gengraph run --resume {run} writes the report")
    assert (run / "confusion.png").read_bytes() == MINE and epochs_trained(run) == 1
    assert not (run / "summary.json").exists()
    (run / "confusion.png").unlink()
    ok(invoke("run", "--resume", run, "-q"))
    assert json.loads((run / "summary.json").read_text())["epochs"] == 1
    assert record(run)["confusion.png"] == sha(run / "confusion.png")


@pytest.mark.parametrize("record_file", ["missing", "damaged"])
def test_a_folder_without_a_record_resumes_and_its_earlier_report_is_moved_aside(run, record_file):
    # a run folder of an earlier gengraph (or a record that cannot be read): which report files are
    # the run's is not known, so none is deleted
    (run / REPORT_RECORD).unlink(missing_ok=True)
    if record_file == "damaged":
        (run / REPORT_RECORD).write_text('{"files": ')
    (run / "confusion.png").write_bytes(MINE)
    old = {n: (run / n).read_bytes() for n in ("summary.json", "summary.txt", "loss.png")}
    output = ok(invoke("run", "--resume", run, "--set", "train.epochs=3"))
    aside = run / ASIDE
    assert (f"note: {run} keeps no record of the report files its run wrote (an earlier gengraph made it), so "
            f"--resume moved the earlier report into {aside} rather than delete what may be a file of yours: "
            f"summary.json, summary.txt, loss.png, confusion.png\n") in output
    assert (aside / "confusion.png").read_bytes() == MINE
    assert {n: (aside / n).read_bytes() for n in old} == old
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3
    assert all(record(run)[n] == sha(run / n) for n in ("summary.json", "loss.png", "confusion.png"))
    ok(invoke("run", "--resume", run, "-q", "--set", "train.epochs=4"))  # from now on the record decides
    assert sorted(p.name for p in aside.iterdir()) == ["confusion.png", "loss.png", "summary.json", "summary.txt"]
    assert not (run / f"{ASIDE}-2").exists()


def test_a_report_stopped_half_way_records_what_it_wrote(run, monkeypatch):
    # the plugin's files written before the report failed are the run's: --resume replaces them
    from gengraph.plugins.run import runner

    def broken(*a, **k):
        raise RuntimeError("the loss curve failed")

    monkeypatch.setattr(runner, "loss_curves", broken)
    with pytest.raises(RuntimeError, match="the loss curve failed"):
        execute(load(run / "spec.toml", ["train.epochs=3"]), run, resume=True, log=lambda *a: None)
    files = record(run)
    assert files["confusion.png"] == sha(run / "confusion.png") and files["loss.png"] == ""
    assert not (run / "loss.png").exists() and not (run / "summary.json").exists()
    monkeypatch.undo()
    notes = []
    execute(load(run / "spec.toml"), run, resume=True, log=notes.append)
    assert any("removed the earlier report" in n and "confusion.png" in n for n in notes), notes
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3
    assert record(run)["loss.png"] == sha(run / "loss.png")


def test_a_resumed_run_killed_in_its_report_still_owns_the_files_it_wrote(run, monkeypatch):
    # the record said "" for the earlier confusion.png once --resume removed it; killed after the plugin
    # wrote the new one and before the report's end recorded it, the next --resume refused it as the user's
    from gengraph.plugins.run import runner

    def killed(*a, **k):
        raise RuntimeError("killed before the report was recorded")

    monkeypatch.setattr(runner, "record_report", killed)
    with pytest.raises(RuntimeError, match="killed"):
        execute(load(run / "spec.toml", ["train.epochs=3"]), run, resume=True, log=lambda *a: None)
    assert (run / "confusion.png").exists() and record(run)["confusion.png"] is None  # being written
    monkeypatch.undo()
    execute(load(run / "spec.toml", ["train.epochs=3"]), run, resume=True, log=lambda *a: None)
    assert record(run)["confusion.png"] == sha(run / "confusion.png")
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3


def test_overwrite_of_a_folder_without_a_record_moves_its_report_aside(run, tmp_path):
    # --overwrite deleted report-named files by name where no record said which were the run's
    (run / REPORT_RECORD).unlink()
    (run / "confusion.png").write_bytes(MINE)
    spec = tmp_path / "tiny.toml"
    output = ok(invoke("run", spec, "--out", run, "--overwrite", "--set", "output.plots=false"))
    aside = run / "report-before-overwrite"
    assert (aside / "confusion.png").read_bytes() == MINE and f"moved into {aside}" in output, output
    assert sorted(p.name for p in aside.iterdir()) == ["confusion.png", "loss.png", "summary.json", "summary.txt"]
    assert not (run / "confusion.png").exists() and json.loads((run / "summary.json").read_text())["epochs"] == 2


@pytest.mark.parametrize("name", ["confusion.png", "summary.txt"])
def test_a_file_the_user_writes_while_the_run_trains_is_not_written_over(tmp_path, name):
    # written after the start-up checks (gengraph sample RUN --out RUN/samples.png from another shell),
    # it was replaced by the report without a word
    spec = tmp_path / "tiny.toml"
    spec.write_text(CLASSIFIER)
    out = tmp_path / "run"

    def user_writes(row):
        if row["epoch"] == 1:
            (out / name).write_bytes(MINE)

    with pytest.raises(Exception, match=f"{name} is not a file this run wrote .* gengraph run --resume"):
        execute(load(spec), out, on_epoch=user_writes, log=lambda *a: None)
    assert (out / name).read_bytes() == MINE and epochs_trained(out) == 2
