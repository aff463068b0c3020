"""checkpoint.npz: parameters, optimizer state, random-stream states and the trainer's
position in one file, written atomically and read without ever unpickling.

The checkpoint knows which run it belongs to: it carries the resolved spec minus the keys
a resumed run may change (`RESUMABLE`) and that part's SHA-256 (the fingerprint). The rest of
the metadata carries its own SHA-256 (the digest), so a hand-edited position or random state
is refused instead of resumed from. Reading checks everything before anything is restored: the
file, the metadata's structure, types and consistency, the fingerprint, the digest, the
trainer's position against the model and data, each array's shape, dtype and finiteness.
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
from gengraph.plugins.run.trainer import TrainState, batches
from gengraph.plugins.spec.errors import SpecError
from gengraph.plugins.spec.schema import is_number, validate


FORMAT = 3  # 2: the spec and its fingerprint travel in the metadata; 3: the metadata's digest too
# Format 2 (no digest) is still read, with every other check: the earlier version's runs resume and
# sample. (The digest finds a hand edit or a damaged write, not a forger: anyone can recompute a SHA-256.)
READABLE_FORMATS = (2, FORMAT)
OLDER_FORMATS = {1: "format 1 checkpoints do not record their spec"}  # why an older format cannot be read

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


# the spec has its own hash: a spec recorded before an option existed is resumed (with_current_defaults)
_UNDIGESTED = ("digest", "spec", "fingerprint")


def metadata_digest(meta: dict) -> str:
    """SHA-256 of the metadata but the spec and its fingerprint, as a reader of its JSON sees it:
    the trainer's position, the random states, the data files' fingerprints."""
    body = {k: v for k, v in meta.items() if k not in _UNDIGESTED}
    plain = json.loads(json.dumps(body, default=jsonable))  # numpy scalars, tuples, int keys: as read back
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()


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
    meta["digest"] = metadata_digest(meta)
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


def load_checkpoint(path: Path, spec_data: dict, purpose: str = "resume", given=None) -> tuple[dict, dict]:
    """The arrays and the checked metadata of a checkpoint of the run spec_data declares; `given`:
    the keys a resume set on its command line (see check_fingerprint)."""
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
    check_fingerprint(path, meta, spec_data, purpose, given)
    # last, so that the checks above name what is wrong where they can
    if meta["format"] == FORMAT and metadata_digest(meta) != meta["digest"]:
        raise _damaged(path, "it does not match its digest: it was altered after it was written")
    return arrays, meta


def fit_to_model(path: Path, arrays: dict, meta: dict, trainer) -> dict:
    """The snapshot for Trainer.restore: the trainer's position possible for this model and data;
    every param and state leaf present, of its shape and dtype, finite."""
    _check_position(path, meta["state"], trainer)
    g = trainer.model.graph
    leaves, problems = {}, []
    squares = {n.id for n in trainer.optimizer.nonnegative_states()} if trainer.optimizer is not None else set()
    for n in g.params() + g.states():
        key = f"{'param' if n.op == 'param' else 'state'}/{n.label}"
        want = g.value(n)
        a = arrays.get(key)
        if a is None:
            problems.append(f"missing {key}")
        elif a.shape != want.shape:
            problems.append(f"{key} has shape {a.shape}, the model needs {want.shape}")
        elif a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            problems.append(f"{key} holds non-finite values (NaN or inf)")
        elif a.dtype != want.dtype:  # never cast: float16 values in a float32 model lost their precision
            problems.append(f"{key} has dtype {a.dtype}, the model needs {want.dtype}")
        elif n.id in squares and a.size and a.min() < 0:  # the first step's sqrt would be NaN, blamed on the loss
            problems.append(f"{key} holds negative values, which a running mean of squared gradients cannot")
        else:
            leaves[n.id] = a
    if problems:
        raise CheckpointError(f"{path} does not fit this model: " + "; ".join(problems[:5]))
    return {"leaves": leaves, "streams": meta["streams"], "rng": meta["rng"], "state": meta["state"]}


def _check_position(path: Path, state: dict, trainer) -> None:
    """A position this run can be at: solved only by a fit that solves, and inside the epochs it draws."""
    if state["solved"] and not (trainer.plugin.fits_without_gradients(trainer.model)
                                or trainer.cfg["optimizer"]["kind"] == "lbfgs"):
        raise _damaged(path, f'state.solved = true, but the "{trainer.plugin.kind}" model is trained by '
                             f'gradient steps, not fitted in one go')
    # == the count when a run was stopped right after an epoch's last step
    n = len(batches(trainer.data.n_train, trainer.cfg["batch_size"], None))
    if state["batch_in_epoch"] > n:
        raise _damaged(path, f"state.batch_in_epoch = {state['batch_in_epoch']}, but an epoch has {n} batches")


def _damaged(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: damaged metadata ({what}); the checkpoint cannot be resumed")


def _read_meta(path: Path, raw: np.ndarray) -> dict:
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _damaged(path, f"not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise _damaged(path, "not a JSON object")
    fmt = meta.get("format")
    if type(fmt) is not int or fmt not in READABLE_FORMATS:
        why = OLDER_FORMATS.get(fmt) if type(fmt) is int else None  # (a list would not even hash)
        why = why or "not written by this version of gengraph"
        raise CheckpointError(f"{path}: checkpoint format {fmt!r}, this gengraph reads formats "
                              f"{' and '.join(map(str, READABLE_FORMATS))} ({why}); start a new run")
    if fmt < FORMAT:
        meta.setdefault("data_files", {})  # absent in format 2 checkpoints written before it was recorded
    required = [("fingerprint", str), ("spec", dict), ("streams", dict), ("rng", dict), ("state", dict),
                ("data_files", dict)] + ([("digest", str)] if fmt == FORMAT else [])
    for key, typ in required:
        if not isinstance(meta.get(key), typ):
            raise _damaged(path, f'"{key}" missing or not a {typ.__name__}')
    if not all(isinstance(v, dict) for v in meta["data_files"].values()):
        raise _damaged(path, '"data_files" is not a table of file fingerprints')
    _check_state(path, meta["state"])
    _check_generators(path, meta)
    return meta


_STATE_INTS = ("epoch", "step", "batch_in_epoch", "seen", "bad_epochs")


def _check_state(path: Path, state: dict) -> None:
    """The trainer's position: the fields TrainState has, of their types, consistent with each other."""
    known = {f for f in TrainState.__dataclass_fields__ if f != "history"}
    if set(state) != known:
        raise _damaged(path, f"state keys {sorted(state)}, expected {sorted(known)}")
    for k in _STATE_INTS:
        if type(state[k]) is not int or state[k] < 0:
            raise _damaged(path, f"state.{k} = {state[k]!r} is not a count")
    if type(state["solved"]) is not bool:
        raise _damaged(path, f"state.solved = {state['solved']!r} is not true or false")
    if not is_number(state["best"]) or isinstance(state["best"], float) and math.isnan(state["best"]):
        raise _damaged(path, f"state.best = {state['best']!r} is not a number")
    # sums of finite losses (a non-finite one stops the run before it is added)
    if not isinstance(state["partial"], dict) or not all(
            is_number(v) and (isinstance(v, int) or math.isfinite(v)) for v in state["partial"].values()):
        raise _damaged(path, "state.partial is not a table of finite numbers")
    inside = state["batch_in_epoch"]
    if inside and state["solved"]:
        raise _damaged(path, f"state.solved = true inside an epoch (state.batch_in_epoch = {inside})")
    if inside and state["epoch_rng"] is None:  # the rest of the epoch replays its shuffle from it
        raise _damaged(path, f"state.epoch_rng is null inside an epoch (state.batch_in_epoch = {inside})")


def _check_generators(path: Path, meta: dict) -> None:
    """Every random-generator state is one PCG64 accepts (epoch_rng and streams may be null)."""
    for k in meta["streams"]:
        if not isinstance(k, str) or not k or len(k) > 200:
            raise _damaged(path, f"stream key {k!r} is not a stream name")
    for what, st in [("rng", meta["rng"]), ("state.epoch_rng", meta["state"]["epoch_rng"])] + \
            [(f"streams.{k}", v) for k, v in meta["streams"].items()]:
        if st is None and what != "rng":
            continue
        if what.startswith("streams.") and isinstance(st, dict) and set(st) == {"cupy_draws"}:
            if type(st["cupy_draws"]) is not int or st["cupy_draws"] < 0:  # a CUDA run's stream (random.py)
                raise _damaged(path, f"{what} is not a count of CuPy draws: {st['cupy_draws']!r}")
            continue
        try:
            np.random.PCG64().state = copy.deepcopy(st)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise _damaged(path, f"{what} is not a PCG64 state: {type(exc).__name__}: {exc}") from None


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


def check_fingerprint(path: Path, meta: dict, spec_data: dict, purpose: str = "resume", given=None) -> None:
    """Refuse a checkpoint of another run: its spec must equal this one but for RESUMABLE keys.
    purpose "resume" (a resumed run's overrides) or "sample" (the spec.toml beside it, edited).
    A resume whose command line (`given`: the keys it set, where known) changed none of the keys
    that differ is told what sampling is told: "--resume cannot change lr" blamed a --set the user
    never gave for an edit of the run's spec.toml."""
    now = frozen_spec(spec_data)
    if fingerprint(meta["spec"]) != meta["fingerprint"]:
        raise _damaged(path, "the recorded spec does not match its fingerprint")
    if fingerprint(now) == meta["fingerprint"]:
        return
    recorded = with_current_defaults(meta["spec"])
    if recorded == now:  # written before a key with a default existed; that default is what ran
        return
    changes = spec_changes(recorded, now)
    shown = "; ".join(f"{k} = {json.dumps(a)} in the checkpoint, {json.dumps(b)} now" for k, a, b in changes[:5])
    keys = ", ".join(k for k, _, _ in changes[:5])
    if given is not None and not any(_under(k, given) for k, _, _ in changes):
        purpose = "sample"
    if purpose == "sample":  # nothing was overridden: the folder's spec.toml or checkpoint was replaced
        raise CheckpointError(f"{path} belongs to a run with another spec than the spec.toml beside it "
                              f"({shown}); restore that run's spec.toml (or its checkpoint)")
    raise CheckpointError(f"{path} belongs to a run with another spec: --resume cannot change {keys} ({shown}); "
                          "a resumed run may change only train.epochs, output.*, run.name, run.threads and "
                          "run.device; start a new run (another --out, or --overwrite) to change the rest")


def _under(key: str, given) -> bool:
    """Whether `key` or a table above it is one of `given` (dotted spec keys)."""
    return any(key == g or key.startswith((g + ".", g + "[")) for g in given)


def jsonable(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")
