"""Runs do not write over what is not theirs: a user's files with a run's names, a resumed run's
stale report, and a folder deleted or replaced while the run writes to it."""

import json
import shutil

import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.plugins.run.loading import load
from gengraph.plugins.run.rundir import RunDirError
from gengraph.plugins.run.runner import execute

SPEC = """spec_version = 1
[run]
name = "tiny"
[data]
source = "moons"
n = 80
[model]
kind = "mlp"
layers = [{ units = 4, activation = "tanh" }]
[train]
epochs = 2
batch_size = 16
[output]
plots = true
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SPEC)
    return path


def _run(*args):
    return CliRunner().invoke(main, ["run", *map(str, args), "-q"])


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_users_files_with_a_runs_names_are_not_written_over(spec, tmp_path, overwrite):
    # loss.png and env.json of the user's in a folder without a run were replaced without a word
    out = tmp_path / "mine"
    out.mkdir()
    (out / "loss.png").write_text("mine")
    (out / "env.json").write_text("mine too")
    res = _run(spec, "--out", out, *(["--overwrite"] if overwrite else []))
    assert res.exit_code == 2 and "no gengraph run wrote" in res.output and "loss.png" in res.output, res.output
    assert sorted(p.name for p in out.iterdir()) == ["env.json", "loss.png"]
    assert (out / "loss.png").read_text() == "mine" and (out / "env.json").read_text() == "mine too"


def test_a_users_file_with_a_plugins_name_is_kept_and_resume_writes_the_report(spec, tmp_path):
    # confusion.png (a classifier's plot) of the user's was replaced and then listed as the run's,
    # so a later --overwrite deleted it
    out = tmp_path / "mine"
    out.mkdir()
    (out / "confusion.png").write_text("mine")
    res = _run(spec, "--out", out)
    assert res.exit_code == 2 and "confusion.png was there before this run" in res.output, res.output
    assert (out / "confusion.png").read_text() == "mine" and (out / "checkpoint.npz").is_file()
    assert not (out / "summary.json").exists()
    listed = json.loads((out / "files.json").read_text()) if (out / "files.json").exists() else []
    assert "confusion.png" not in listed
    (out / "confusion.png").rename(tmp_path / "kept.png")
    res = CliRunner().invoke(main, ["run", "--resume", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2 and (out / "confusion.png").is_file()


def test_resume_removes_the_earlier_report_before_it_continues(spec, tmp_path):
    # an interrupted or changed continuation left a 2-epoch summary.json and plots beside a later
    # checkpoint, read back as the run's current figures
    out = tmp_path / "run"
    assert _run(spec, "--out", out).exit_code == 0
    before = {p.name for p in out.iterdir()}
    assert {"summary.json", "summary.txt", "loss.png", "confusion.png"} <= before

    def fail(row):
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError):
        execute(load(out / "spec.toml", ["train.epochs=4"]), out, resume=True, on_epoch=fail, log=lambda m: None)
    left = {p.name for p in out.iterdir()}
    assert not left & {"summary.json", "summary.txt", "loss.png", "confusion.png"}, left
    notes = []
    execute(load(out / "spec.toml", ["train.epochs=4", "output.plots=false"]), out, resume=True, log=notes.append)
    assert json.loads((out / "summary.json").read_text())["epochs"] == 4
    assert not (out / "loss.png").exists() and not (out / "confusion.png").exists()  # no plots: none stale


def test_a_folder_deleted_and_made_again_during_the_run_stops_it(spec, tmp_path):
    # the run went on writing into the new folder, without a lock, beside another run's files
    out = tmp_path / "run"

    def replace(row):
        if row["epoch"] == 1:
            shutil.rmtree(out)
            out.mkdir()
            (out / "other.txt").write_text("another run's")

    with pytest.raises(RunDirError, match="deleted, replaced or unlocked while this run was writing"):
        execute(load(spec, ["train.epochs=3"]), out, on_epoch=replace, log=lambda m: None)
    assert [p.name for p in out.iterdir()] == ["other.txt"]

    def delete(row):
        shutil.rmtree(out)

    with pytest.raises(RunDirError, match="deleted, replaced or unlocked"):
        execute(load(spec, ["train.epochs=3"]), out, on_epoch=delete, log=lambda m: None)
    assert not out.exists()


def test_resume_after_an_edit_of_the_runs_spec_toml_says_so(spec, tmp_path):
    # "--resume cannot change train.optimizer.lr" blamed a --set the user never gave
    out = tmp_path / "run"
    assert _run(spec, "--out", out, "--set", "output.plots=false").exit_code == 0
    text = (out / "spec.toml").read_text()
    (out / "spec.toml").write_text(text.replace("lr = 0.001", "lr = 0.5"))
    res = CliRunner().invoke(main, ["run", "--resume", str(out), "--set", "train.epochs=3"])
    assert res.exit_code == 2 and "another spec than the spec.toml beside it" in res.output, res.output
    assert "restore that run's spec.toml" in res.output and "--resume cannot change" not in res.output
    res = CliRunner().invoke(main, ["run", "--resume", str(out), "--set", "train.optimizer.lr=0.5"])
    assert res.exit_code == 2 and "--resume cannot change train.optimizer.lr" in res.output, res.output


def test_resuming_an_early_stopped_run_whose_report_was_cut_writes_only_the_report(spec, tmp_path):
    # a signal during the report of a run that stopped early: --resume trained another epoch
    out = tmp_path / "run"
    overrides = ["train.epochs=60", "train.optimizer.lr=0.05", "train.early_stopping={patience = 2}",
                 "output.plots=false"]
    s = execute(load(spec, overrides), out, log=lambda *a, **k: None)
    assert s["epochs"] < 60  # it stopped early
    rows = (out / "metrics.jsonl").read_text()
    ckpt = (out / "checkpoint.npz").read_bytes()
    (out / "summary.json").unlink()  # what a signal during the report leaves: no summary.json
    again = execute(load(out / "spec.toml"), out, resume=True, log=lambda *a, **k: None)
    assert (out / "metrics.jsonl").read_text() == rows and again["epochs"] == s["epochs"]
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in s.items() if k != "seconds"}
    assert (out / "checkpoint.npz").read_bytes() == ckpt
