"""checkpoint.npz: parameters, optimizer state, random-stream states and the trainer's
position in one file, written atomically and read without ever unpickling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gengraph.engine.errors import UserError
from gengraph.plugins.blocks.files import atomic_write, save_npz


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be loaded into this model (missing, corrupt, mismatched)."""


def write_checkpoint(run_dir: Path, trainer, snap: dict | None = None) -> Path:
    """params, state, RNG states and the trainer's position in one npz, written atomically.

    Arrays are keyed by node label (stable across builds of the same spec); the
    metadata travels inside the same file as UTF-8 JSON bytes, so the pair can never
    disagree. A readable copy of the metadata is written to checkpoint.json.
    """
    snap = snap or trainer.snapshot()
    g = trainer.model.graph
    labels = {n.id: n.label for n in g.params() + g.states()}
    arrays = {f"{'param' if n.op == 'param' else 'state'}/{labels[n.id]}": snap["leaves"][n.id]
              for n in g.params() + g.states()}
    meta = {"format": 1, "streams": snap["streams"], "rng": snap["rng"], "state": snap["state"]}
    text = json.dumps(meta, indent=1, default=jsonable)
    arrays["__meta__"] = np.frombuffer(text.encode(), dtype=np.uint8)
    path = run_dir / "checkpoint.npz"
    save_npz(path, arrays)
    atomic_write(run_dir / "checkpoint.json", text)
    return path


def read_checkpoint(path: Path, trainer) -> dict:
    """A snapshot (as Trainer.restore takes it) from a checkpoint file; never unpickles."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint here") from None
    except (ValueError, OSError, EOFError) as exc:  # object arrays need pickle: refused
        raise CheckpointError(f"{path}: not a loadable checkpoint ({exc})") from None
    if "__meta__" not in arrays:
        raise CheckpointError(f"{path}: not a gengraph checkpoint (no metadata)")
    meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    g = trainer.model.graph
    leaves, problems = {}, []
    for n in g.params() + g.states():
        key = f"{'param' if n.op == 'param' else 'state'}/{n.label}"
        if key not in arrays:
            problems.append(f"missing {key}")
        elif arrays[key].shape != g.value(n).shape:
            problems.append(f"{key} has shape {arrays[key].shape}, the model needs {g.value(n).shape}")
        else:
            leaves[n.id] = arrays[key]
    if problems:
        raise CheckpointError(f"{path} does not fit this model: " + "; ".join(problems[:5]))
    return {"leaves": leaves, "streams": meta["streams"], "rng": meta["rng"], "state": meta["state"]}


def jsonable(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


