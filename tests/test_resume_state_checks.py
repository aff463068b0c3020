"""--resume trusts nothing it did not write: a checkpoint whose metadata was altered (its digest),
whose position is impossible for the run (solved by gradient steps, past an epoch's batches, no
shuffle state inside an epoch, non-finite sums), whose arrays have another dtype, or whose
metrics.jsonl does not count the epochs one by one is refused with one line (exit 2) and nothing
rewritten; a damaged sweep.jsonl record makes its trial run again, with a note, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.plugins.run.checkpoint import metadata_digest
from gengraph.plugins.run.loading import load
from gengraph.plugins.run.runner import RunInterrupted, execute
from gengraph.plugins.sweep import sweep as sw

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "specs" / "mlp_digits.toml"
SHORT = ["train.epochs=3", "model.layers[0].units=32", "model.layers[1].units=16"]  # 11 steps per epoch
W = "param/hidden/dense0/W"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _stopped_at(step: int, out: Path) -> Path:
    def stop(trainer, loss):
        if trainer.state.step == step:
            trainer.stop_requested = True

    with pytest.raises(RunInterrupted):
        execute(load(DIGITS, SHORT), out, on_step=stop)
    return out


@pytest.fixture(scope="module")
def mid_epoch(tmp_path_factory) -> Path:
    """A run stopped in epoch 2, after 6 of its 11 steps (checkpoint at epoch 1, batch_in_epoch 6)."""
    return _stopped_at(17, tmp_path_factory.mktemp("mid") / "run")


@pytest.fixture
def run(mid_epoch, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(mid_epoch, out)
    return out


def _rewrite(out: Path, meta_edit=None, arrays_edit=None, redigest=False) -> None:
    """Edit checkpoint.npz; with redigest the digest is made to match, as a bug (not a hand) would leave it."""
    with np.load(out / "checkpoint.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["__meta__"].tobytes().decode())
    if meta_edit:
        meta_edit(meta)
    if arrays_edit:
        arrays_edit(arrays)
    if redigest:
        meta["digest"] = metadata_digest(meta)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(out / "checkpoint.npz", **arrays)


def _state(**values):
    return lambda meta: meta["state"].update(values)


def _refused(out: Path, *words, args=()):
    """--resume exits 2 with one line holding every word, and leaves the folder as it was."""
    before = snapshot(out)
    result = invoke("run", "--resume", out, "-q", *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("\n") <= 1, result.output
    for w in words:
        assert w in result.output, result.output
    assert snapshot(out) == before  # nothing rewritten
    return result.output


def test_the_mid_epoch_checkpoint_is_what_the_cases_below_alter(mid_epoch):
    meta = json.loads((mid_epoch / "checkpoint.json").read_text())
    assert meta["format"] == 3 and meta["digest"] == metadata_digest(meta)
    st = meta["state"]
    assert (st["epoch"], st["step"], st["batch_in_epoch"], st["solved"]) == (1, 17, 6, False)
    assert st["epoch_rng"] is not None and set(st["partial"]) >= {"loss"}


# --- altered by hand: the digest ------------------------------------------------------------------

@pytest.mark.parametrize("edit", [
    _state(epoch=0),  # one epoch less: continued with the parameters of another position
    _state(step=22),
    _state(solved=True, batch_in_epoch=0),
    _state(batch_in_epoch=9),
    lambda meta: meta["state"]["partial"].update(loss=meta["state"]["partial"]["loss"] + 1.0),
    lambda meta: meta["rng"]["state"].update(state=meta["rng"]["state"]["state"] + 1),
    lambda meta: meta["data_files"].update(extra={"sha256": "0" * 64}),
], ids=["epoch", "step", "solved", "batch_in_epoch", "partial", "rng", "data_files"])
def test_altered_metadata_is_refused_by_its_digest(run, edit):
    _rewrite(run, edit)
    _refused(run, f"{run / 'checkpoint.npz'}: damaged metadata (it does not match its digest: it was altered "
                  f"after it was written); the checkpoint cannot be resumed")


def test_a_checkpoint_without_a_digest_is_refused(run):
    _rewrite(run, lambda meta: meta.pop("digest", None))
    _refused(run, 'damaged metadata ("digest" missing or not a str)')


@pytest.mark.parametrize("fmt, why", [
    (1, "format 1 checkpoints do not record their spec"),
    (4, "not written by this version of gengraph"),
    ([2], "not written by this version of gengraph"),
])
def test_another_format_is_refused_with_the_reason(run, fmt, why):
    _rewrite(run, lambda meta: (meta.pop("digest", None), meta.update(format=fmt)))
    _refused(run, f"checkpoint format {fmt!r}, this gengraph reads formats 2 and 3 ({why}); start a new run")


def test_a_format_2_checkpoint_still_resumes_with_every_other_check(run):
    # the previous version's runs (no digest, perhaps no data_files) resume and sample; what they
    # record is still checked
    _rewrite(run, lambda meta: (meta.pop("digest"), meta.pop("data_files"), meta.update(format=2)))
    saved = (run / "checkpoint.npz").read_bytes()
    result = invoke("run", "--resume", run, "-q", "--set", "train.epochs=3")
    assert result.exit_code == 0, result.output
    (run / "checkpoint.npz").write_bytes(saved)
    _rewrite(run, _state(batch_in_epoch=999))
    _refused(run, "state.batch_in_epoch = 999, but an epoch has", args=("--set", "train.epochs=3"))


# --- impossible positions, even where the digest matches (a bug, not a hand, wrote them) ----------

@pytest.mark.parametrize("edit, words", [
    (_state(solved=True, batch_in_epoch=0),
     'state.solved = true, but the "mlp" model is trained by gradient steps, not fitted in one go'),
    (_state(solved=True), "state.solved = true inside an epoch (state.batch_in_epoch = 6)"),
    (_state(batch_in_epoch=999), "state.batch_in_epoch = 999, but an epoch has 11 batches"),
    (_state(batch_in_epoch=12), "state.batch_in_epoch = 12, but an epoch has 11 batches"),
    (_state(epoch_rng=None), "state.epoch_rng is null inside an epoch (state.batch_in_epoch = 6)"),
    (lambda meta: meta["state"]["partial"].update(loss=float("nan")), "state.partial is not a table of finite numbers"),
    (lambda meta: meta["state"]["partial"].update(loss=float("inf")), "state.partial is not a table of finite numbers"),
], ids=["solved", "solved_inside_epoch", "batch_in_epoch_999", "batch_in_epoch_12", "epoch_rng_null",
        "partial_nan", "partial_inf"])
def test_an_impossible_position_is_refused(run, edit, words):
    _rewrite(run, edit, redigest=True)
    _refused(run, f"{run / 'checkpoint.npz'}: damaged metadata ({words}); the checkpoint cannot be resumed")


def test_a_run_stopped_after_an_epochs_last_step_resumes_bit_identically(tmp_path):
    """batch_in_epoch == the number of batches is a real position (stopped after step 11 of 11)."""
    full = tmp_path / "full"
    execute(load(DIGITS, SHORT), full)
    cut = _stopped_at(22, tmp_path / "cut")
    assert json.loads((cut / "checkpoint.json").read_text())["state"]["batch_in_epoch"] == 11
    result = invoke("run", "--resume", cut, "-q")
    assert result.exit_code == 0, result.output
    assert (cut / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text()


# --- arrays: the model's dtype exactly --------------------------------------------------------------

def test_a_parameter_of_another_float_dtype_is_refused_not_cast(run):
    _rewrite(run, arrays_edit=lambda a: a.update({W: a[W].astype(np.float16)}))
    _refused(run, f"{run / 'checkpoint.npz'} does not fit this model: {W} has dtype float16, the model needs float32")


def test_a_step_counter_of_another_float_dtype_is_refused(run):
    key = "state/optimizer/opt/step"  # float64 in a float32 model: exact counts up to 2**53, not 2**24
    _rewrite(run, arrays_edit=lambda a: a.update({key: a[key].astype(np.float32)}))
    _refused(run, f"{key} has dtype float32, the model needs float64")


def test_a_negative_second_moment_is_refused(run):
    # Adam's v (a running mean of squared gradients) < 0 resumed, and the first step's sqrt made
    # the loss NaN: "the training loss became nan", exit 1, blaming the model
    with np.load(run / "checkpoint.npz") as z:
        key = next(k for k in z.files if k.startswith("state/optimizer/adam/") and k.endswith("/v"))
    _rewrite(run, arrays_edit=lambda a: a.update({key: -np.abs(a[key]) - 1.0}))
    _refused(run, f"{key} holds negative values, which a running mean of squared gradients cannot")


# --- metrics.jsonl: one row per epoch, in order -------------------------------------------------------

def test_a_repeated_metrics_row_is_refused_naming_its_line(run):
    path = run / "metrics.jsonl"
    first = path.read_text().splitlines()[0]
    path.write_text(path.read_text() + first + "\n")
    _refused(run, f"{path}:2: a row of epoch 1 where the row of epoch 2 belongs (one row per epoch, in order); "
                  f"the run cannot be resumed")


def test_a_missing_metrics_row_is_refused_naming_its_line(tmp_path):
    out = tmp_path / "done"
    execute(load(DIGITS, SHORT), out)
    path = out / "metrics.jsonl"
    rows = path.read_text().splitlines()
    path.write_text(rows[0] + "\n" + rows[2] + "\n")  # epochs 1 and 3
    _refused(out, f"{path}:2: a row of epoch 3 where the row of epoch 2 belongs", args=["--set", "train.epochs=4"])


# --- sweep.jsonl: a damaged record is a trial not done -------------------------------------------------

SWEEP = ROOT / "specs" / "sweep_ridge_franke.toml"
AXES = ["--axis", "model.degree=1,3", "--axis", "model.lam=1e-2", "--workers", "1"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "s"
    result = invoke("sweep", SWEEP, "--out", out, "-q", *AXES)
    assert result.exit_code == 0, result.output
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "sweep.jsonl").read_text().splitlines()]


def _edit_first(edit):
    def damage(out):
        recs = _records(out)
        lines = [json.dumps(r) for r in recs]
        lines[0] = edit(recs[0])
        (out / "sweep.jsonl").write_text("\n".join(lines) + "\n")
    return damage


def _without(key):
    return lambda rec: json.dumps({k: v for k, v in rec.items() if k != key})


def _with(**values):
    return lambda rec: json.dumps({**rec, **values})


@pytest.mark.parametrize("edit, why", [
    (_without("metrics"), '"metrics" missing or not a dict'),
    (_with(metrics="oops"), '"metrics" missing or not a dict'),
    (_with(metrics={"test_mse": "x"}), '"metrics" is not a table of numbers'),
    (_with(overrides=None), '"overrides" missing or not a dict'),
    (_with(set=[1]), '"set" is not a list of overrides'),
    (_with(error=5), '"error" is not text'),
    (lambda rec: "GARBAGE", "not JSON"),
    (lambda rec: "[1, 2]", "not a JSON object"),
], ids=["no_metrics", "metrics_text", "metric_text", "overrides_null", "set_numbers", "error_number", "not_json",
        "not_object"])
def test_a_damaged_sweep_record_reruns_its_trial_with_a_note(swept, tmp_path, edit, why):
    out = tmp_path / "s"
    shutil.copytree(swept, out)
    first = _records(out)[0]
    _edit_first(edit)(out)
    result = invoke("sweep", SWEEP, "--out", out, "--resume", *AXES)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    named = f"trial {first['trial']!r}" if "JSON" not in why else "its trial"
    assert f"note: {out / 'sweep.jsonl'}:1: ignored a damaged record ({why}); {named} counts as not done" \
        in result.output
    assert result.output.count("(recorded in sweep.jsonl)") == 1 and result.output.count("] ok ") == 1
    again = {r["trial"]: r for r in _records(out)}
    assert len(again) == 2 and again[first["trial"]]["metrics"] == first["metrics"]  # run again: same results


def test_a_skipped_trial_is_described_by_the_plan_not_by_its_record(swept, tmp_path):
    out = tmp_path / "s"
    shutil.copytree(swept, out)
    first = _records(out)[0]
    _edit_first(_with(overrides={k: None for k in first["overrides"]}, set=["edited"]))(out)
    result = invoke("sweep", SWEEP, "--out", out, "--resume", *AXES)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert result.output.count("(recorded in sweep.jsonl)") == 2  # the results are whole: not run again
    again = _records(out)[0]
    assert (again["overrides"], again["set"]) == (first["overrides"], first["set"])


def test_a_damaged_latest_record_outdates_an_earlier_one(tmp_path):
    ok = {"trial": "a", "index": 0, "status": "ok", "overrides": {}, "set": [], "metrics": {"m": 1.0},
          "run_dir": "a", "spec_sha": "x", "error": None}
    path = tmp_path / "sweep.jsonl"
    path.write_text(json.dumps(ok) + "\n" + json.dumps({**ok, "metrics": None}) + "\n\n"
                    + json.dumps({**ok, "trial": "b"}) + "\n" + '{"trial": "c", "sta')
    notes = []
    records = sw.read_records(path, notes.append)
    assert list(records) == ["b"]
    assert notes == [(f"note: {path}:2: ignored a damaged record (\"metrics\" missing or not a dict); "
                      f"trial 'a' counts as not done"),
                     f"note: {path}:5: ignored a damaged record (not JSON); its trial counts as not done"]
