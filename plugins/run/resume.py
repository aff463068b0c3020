"""Before a run is resumed: is there anything left to do, and is metrics.jsonl intact?

(The checkpoint itself is checked in checkpoint.py: file, metadata, fingerprint, arrays.)
"""

from __future__ import annotations

import json
from pathlib import Path

from gengraph.plugins.run.checkpoint import CheckpointError


def check_resumable(trainer, cfg, run_dir: Path) -> None:
    """Refuse a resume that would un-train or has nothing left to do."""
    st = trainer.state
    finished = _finished(run_dir, st)
    if st.solved:
        if finished:
            how = "by L-BFGS" if cfg["train"]["optimizer"]["kind"] == "lbfgs" else "in closed form"
            raise CheckpointError(f"nothing to resume: {run_dir} holds a finished run whose model is fitted {how} "
                                  f"(there are no epochs to continue); start a new run to change it")
        return
    epochs = cfg["train"]["epochs"]
    done = st.epoch + (1 if st.batch_in_epoch else 0)
    where = f"{st.epoch} epochs" + (f" and {st.batch_in_epoch} steps of epoch {st.epoch + 1}"
                                    if st.batch_in_epoch else "")
    if epochs < done:
        raise CheckpointError(f"train.epochs = {epochs}, but the run in {run_dir} has already trained {where}; "
                              f"a resumed run cannot un-train: set train.epochs to {done} or more")
    es = cfg["train"].get("early_stopping") or {}
    if finished and es.get("patience") and st.bad_epochs >= es["patience"]:
        raise CheckpointError(f"nothing to resume: the run in {run_dir} stopped early at epoch {st.epoch} "
                              f"(train.early_stopping)")
    if finished and epochs == st.epoch:
        raise CheckpointError(f"nothing to resume: the run in {run_dir} finished all {st.epoch} epochs; "
                              f"to train on, pass --set train.epochs=N with N > {st.epoch}")


def _finished(run_dir: Path, st) -> bool:
    """The run's report was written for exactly the checkpoint's position."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and summary.get("epochs") == st.epoch and summary.get("steps") == st.step


def parse_metrics(path: Path, log=print) -> list[dict]:
    """The rows of metrics.jsonl ([] when there is none). A partial last line (the run was killed
    while appending it) is dropped with a note; any other damaged line is a ValueError naming the
    file and line."""
    return [row for _, row in _numbered_rows(path, log)]


def _numbered_rows(path: Path, log) -> list[tuple[int, dict]]:
    """parse_metrics's rows with their line numbers (for messages that point at a line)."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_bytes().decode()
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends with a newline
    rows = []
    for i, line in enumerate(lines + ([torn] if torn else []), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or type(row.get("epoch")) is not int:
                raise ValueError("not a metrics row")
        except ValueError:
            if i == len(lines) + 1:
                log(f"note: {path}: dropped the partial last line (the run was stopped while writing it)")
                continue
            raise ValueError(f"{path}:{i}: damaged line (not a metrics row)") from None
        rows.append((i, row))
    return rows


def read_metrics(path: Path, upto_epoch: int, log=print) -> list[dict]:
    """The logged rows of metrics.jsonl up to a checkpoint's epoch, for a resumed run
    (parse_metrics; a file that cannot be read, a damaged line or rows that do not count the
    epochs up to the checkpoint's is a CheckpointError)."""
    try:
        numbered = _numbered_rows(path, log)
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc}); the run cannot be resumed") from None
    except ValueError as exc:
        raise CheckpointError(f"{exc}; the run cannot be resumed") from None
    _check_epochs(path, numbered, upto_epoch)
    return [r for _, r in numbered if r["epoch"] <= upto_epoch]


def _check_epochs(path: Path, numbered: list[tuple[int, dict]], upto_epoch: int) -> None:
    """One row per epoch, in order: 1, 2, ... (a closed-form fit logs epoch 0), on to the checkpoint's
    epoch; rows after it (logged after the last checkpoint) are dropped by the caller."""
    want = 0 if numbered and numbered[0][1]["epoch"] == 0 else 1
    for line, row in numbered:
        if row["epoch"] != want:  # a repeated row would be logged twice, a missing one lost
            raise CheckpointError(f"{path}:{line}: a row of epoch {row['epoch']} where the row of epoch {want} "
                                  f"belongs (one row per epoch, in order); the run cannot be resumed")
        want += 1
    # every epoch logs its row before its checkpoint: rows that stop short of the checkpoint's epoch
    # belong to another run (a checkpoint copied in), and resuming would leave a gap in the history
    last = numbered[-1][1]["epoch"] if numbered else 0
    if upto_epoch > 0 and last < upto_epoch:
        raise CheckpointError(f"{path}: the logged rows end at epoch {last} but the checkpoint is at epoch "
                              f"{upto_epoch}: they are not from the same run; the run cannot be resumed")
