"""checkpoint.npz: parameters, optimizer state, random-stream states and the trainer's
position in one file, written atomically and read without ever unpickling.

The checkpoint knows which run it belongs to: it carries the resolved spec minus the keys
a resumed run may change (`RESUMABLE`) and that part's SHA-256 (the fingerprint). Reading
checks everything before anything is restored: the file, the metadata's structure and
types, the fingerprint, each array's shape, dtype and finiteness.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import numpy as np

from gengraph.engine.errors import UserError
from gengraph.plugins.blocks.files import atomic_write, save_npz
from gengraph.plugins.run.spec_schema import top_schema
from gengraph.plugins.run.trainer import TrainState
from gengraph.plugins.spec.errors import SpecError
from gengraph.plugins.spec.schema import validate


FORMAT = 2  # 2: the spec and its fingerprint travel in the metadata

# What `--resume` may change: how long to go on, what to write, how fast to compute.
# Everything else (seed, data, split, model, optimizer, ...) would rewrite the past.
RESUMABLE = ("train.epochs", "output", "run.name", "run.threads", "run.device")


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be loaded into this model (missing, corrupt, mismatched)."""


def frozen_spec(spec_data: dict) -> dict:
    """The resolved spec without the RESUMABLE keys, as plain JSON data."""
    out = json.loads(json.dumps(spec_data, default=str))
    for dotted in RESUMABLE:
        *parents, last = dotted.split(".")
        table = out
        for p in parents:
            table = table.get(p, {}) if isinstance(table, dict) else {}
        if isinstance(table, dict):
            table.pop(last, None)
    return out


def fingerprint(frozen: dict) -> str:
    return hashlib.sha256(json.dumps(frozen, sort_keys=True).encode()).hexdigest()


def spec_changes(old, new, path="") -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) for every leaf where two specs differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{k}" if path else k
            if k not in new or k not in old:
                out.append((sub, old.get(k, "(unset)"), new.get(k, "(unset)")))
            else:
                out += spec_changes(old[k], new[k], sub)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [c for i, (a, b) in enumerate(zip(old, new)) for c in spec_changes(a, b, f"{path}[{i}]")]
    return [] if old == new else [(path, old, new)]


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
    frozen = frozen_spec(trainer.ctx.spec)
    meta = {"format": FORMAT, "fingerprint": fingerprint(frozen), "spec": frozen, "streams": snap["streams"],
            "rng": snap["rng"], "state": snap["state"], "data_files": trainer.ctx.data_files}
    text = json.dumps(meta, indent=1, default=jsonable)
    arrays["__meta__"] = np.frombuffer(text.encode(), dtype=np.uint8)
    path = run_dir / "checkpoint.npz"
    save_npz(path, arrays)
    atomic_write(run_dir / "checkpoint.json", text)
    return path


def read_checkpoint(path: Path, trainer) -> dict:
    """A snapshot (as Trainer.restore takes it) from a checkpoint file; never unpickles.

    Every way the file can be damaged or belong to another run is a CheckpointError."""
    arrays, meta = load_checkpoint(path, trainer.ctx.spec)
    return fit_to_model(path, arrays, meta, trainer)


def load_checkpoint(path: Path, spec_data: dict) -> tuple[dict, dict]:
    """The arrays and the checked metadata of a checkpoint of the run spec_data declares."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint here, so nothing to resume") from None
    except (ValueError, OSError, EOFError) as exc:  # object arrays need pickle: refused
        raise CheckpointError(f"{path}: not a loadable checkpoint ({exc})") from None
    except Exception as exc:  # noqa: BLE001 -- truncated zip, bad CRC, bad compression: all "damaged"
        raise CheckpointError(f"{path}: not a loadable checkpoint (damaged or truncated: "
                              f"{type(exc).__name__}: {exc})") from None
    if "__meta__" not in arrays:
        raise CheckpointError(f"{path}: not a gengraph checkpoint (no metadata)")
    meta = _read_meta(path, arrays.pop("__meta__"))
    check_fingerprint(path, meta, spec_data)
    return arrays, meta


def fit_to_model(path: Path, arrays: dict, meta: dict, trainer) -> dict:
    """The snapshot for Trainer.restore: every param and state leaf present, of its shape and kind, finite."""
    g = trainer.model.graph
    leaves, problems = {}, []
    for n in g.params() + g.states():
        key = f"{'param' if n.op == 'param' else 'state'}/{n.label}"
        want = g.value(n)
        a = arrays.get(key)
        if a is None:
            problems.append(f"missing {key}")
        elif a.shape != want.shape:
            problems.append(f"{key} has shape {a.shape}, the model needs {want.shape}")
        elif a.dtype.kind not in "biuf" or (a.dtype.kind == "f") != (np.dtype(want.dtype).kind == "f"):
            problems.append(f"{key} has dtype {a.dtype}, the model needs {want.dtype}")
        elif a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            problems.append(f"{key} holds non-finite values (NaN or inf)")
        else:
            leaves[n.id] = a.astype(want.dtype, copy=False)
    if problems:
        raise CheckpointError(f"{path} does not fit this model: " + "; ".join(problems[:5]))
    return {"leaves": leaves, "streams": meta["streams"], "rng": meta["rng"], "state": meta["state"]}


_STATE_INTS = ("epoch", "step", "batch_in_epoch", "seen", "bad_epochs")


def _read_meta(path: Path, raw: np.ndarray) -> dict:
    def bad(what):
        return CheckpointError(f"{path}: damaged metadata ({what}); the checkpoint cannot be resumed")

    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise bad("not a JSON object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format')!r}, this gengraph reads format "
                              f"{FORMAT} (older checkpoints do not record their spec); start a new run")
    for key, typ in (("fingerprint", str), ("spec", dict), ("streams", dict), ("rng", dict), ("state", dict)):
        if not isinstance(meta.get(key), typ):
            raise bad(f'"{key}" missing or not a {typ.__name__}')
    files = meta.setdefault("data_files", {})  # absent in checkpoints written before it was recorded
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise bad('"data_files" is not a table of file fingerprints')
    state = meta["state"]
    known = {f for f in TrainState.__dataclass_fields__ if f != "history"}
    if set(state) != known:
        raise bad(f"state keys {sorted(state)}, expected {sorted(known)}")
    for k in _STATE_INTS:
        if type(state[k]) is not int or state[k] < 0:
            raise bad(f"state.{k} = {state[k]!r} is not a count")
    if type(state["solved"]) is not bool:
        raise bad(f"state.solved = {state['solved']!r} is not true or false")
    if not isinstance(state["best"], (int, float)) or isinstance(state["best"], bool) or math.isnan(state["best"]):
        raise bad(f"state.best = {state['best']!r} is not a number")
    if not isinstance(state["partial"], dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in state["partial"].values()):
        raise bad("state.partial is not a table of numbers")
    for what, st in [("rng", meta["rng"]), ("state.epoch_rng", state["epoch_rng"])] + \
            [(f"streams.{k}", v) for k, v in meta["streams"].items()]:
        if st is None and what != "rng":
            continue
        try:
            np.random.PCG64().state = copy.deepcopy(st)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise bad(f"{what} is not a PCG64 state: {type(exc).__name__}: {exc}") from None
    for k in meta["streams"]:
        if not isinstance(k, str) or not k or len(k) > 200:
            raise bad(f"stream key {k!r} is not a stream name")
    return meta


def with_current_defaults(recorded: dict) -> dict:
    """A checkpoint's frozen spec as this version resolves it: keys added since it was written
    (e.g. a new model option) get their defaults, which reproduce what the old version ran.
    The recorded spec itself when it no longer validates (then the comparison shows why)."""
    def unset_nones(d):  # a resolved None is an unset optional key (TOML has no None)
        if isinstance(d, dict):
            return {k: unset_nones(v) for k, v in d.items() if v is not None}
        return [unset_nones(v) for v in d] if isinstance(d, list) else d

    body = unset_nones({k: v for k, v in recorded.items() if k != "spec_version"})
    try:
        out = frozen_spec(validate(top_schema(), body))
    except SpecError:
        return recorded
    if "spec_version" in recorded:
        out["spec_version"] = recorded["spec_version"]
    return out


def check_fingerprint(path: Path, meta: dict, spec_data: dict) -> None:
    """Refuse a checkpoint of another run: its spec must equal this one but for RESUMABLE keys."""
    now = frozen_spec(spec_data)
    if fingerprint(meta["spec"]) != meta["fingerprint"]:
        raise CheckpointError(f"{path}: damaged metadata (the recorded spec does not match its fingerprint)")
    if fingerprint(now) == meta["fingerprint"]:
        return
    recorded = with_current_defaults(meta["spec"])
    if recorded == now:  # written before a key with a default existed; that default is what ran
        return
    changes = spec_changes(recorded, now)
    shown = "; ".join(f"{k} = {json.dumps(a)} in the checkpoint, {json.dumps(b)} now" for k, a, b in changes[:5])
    keys = ", ".join(k for k, _, _ in changes[:5])
    raise CheckpointError(f"{path} belongs to a run with another spec: --resume cannot change {keys} ({shown}); "
                          f"a resumed run may change only train.epochs, output.*, run.threads and run.device; "
                          f"start a new run (another --out, or --overwrite) to change the rest")


def jsonable(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")
