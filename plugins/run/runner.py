"""One run, end to end: resolved spec -> data -> model -> training -> run directory.

The run directory gets spec.toml (resolved), metrics.jsonl (one line per epoch),
summary.json (final metrics under stable names), checkpoint.npz (no pickles),
env.json, summary.txt and plots. Files are written atomically: a crash never
leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gengraph.engine import Graph

from gengraph.plugins.datasets import make_dataset
from gengraph.plugins.blocks.layers import init_rng
from gengraph.plugins.model import MODELS
from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.blocks.files import atomic_write, save_npy, save_npz  # noqa: F401  (re-exported)
from gengraph.plugins.run.trainer import Interrupted, Trainer


@dataclass
class RunContext:
    """What plugins and the trainer may read about the run in progress."""

    spec: dict
    run_dir: Path | None
    seed: int
    backend: str = "numpy"
    debug: bool = False
    plots: bool = True
    log: object = print
    extra: dict = field(default_factory=dict)

    def path(self, name: str) -> Path | None:
        return None if self.run_dir is None else self.run_dir / name


def build(spec_data: dict, *, base_dir=None):
    """Data, plugin, graph and model for a resolved spec (no training)."""
    run = spec_data["run"]
    # images keep their (C, H, W) shape in the Dataset; models are fed rows of C*H*W features
    # (image networks reshape them back in the graph, from data.image_shape)
    data = make_dataset(spec_data["data"], run["seed"], base_dir=base_dir).flat()
    cfg = spec_data["model"]
    plugin = MODELS.get(cfg["kind"])
    graph = Graph(dtype=run["dtype"], seed=run["seed"])
    model = plugin.build(cfg, graph, data, init_rng(run["seed"]))
    return data, plugin, graph, model


def build_checked(spec, *, base_dir=None):
    """`build`, with the user's mistakes it uncovers (data files, shapes) as one SpecError."""
    from gengraph.engine.expr import ExprError
    from gengraph.engine.ops.registry import ShapeError
    from gengraph.engine.optimizers import make_optimizer

    from gengraph.plugins.datasets import DataError
    from gengraph.plugins.spec.errors import SpecError, SpecIssue
    from gengraph.plugins.model import ModelConfigError
    from gengraph.plugins.registry import UnknownKind
    from gengraph.plugins.run.trainer import schedule_from_spec

    def issue(path, message):
        return SpecError([SpecIssue(*spec.position(path), path, message)])

    if spec.data["run"]["device"] == "cuda":  # say so now, not after the data and model are built
        from gengraph.engine.backend import BackendError, get_backend

        try:
            get_backend("cupy")
        except BackendError as exc:
            raise issue("run.device", str(exc)) from None
    opt = dict(spec.data["train"]["optimizer"])
    if opt.pop("kind") != "lbfgs":  # hyper-parameter combinations the schema cannot express
        try:
            make_optimizer(spec.data["train"]["optimizer"]["kind"], **opt)
        except ValueError as exc:
            raise issue("train.optimizer", str(exc)) from None
        try:
            schedule_from_spec(spec.data["train"].get("schedule") or {"kind": "constant"}, opt["lr"])
        except ValueError as exc:
            raise issue("train.schedule", str(exc)) from None
    try:
        return build(spec.data, base_dir=base_dir)
    except UnknownKind as exc:  # a registry name the schema does not enumerate (initializer, layer, ...)
        raise issue("model", str(exc)) from None
    except DataError as exc:
        raise issue("data", str(exc)) from None
    except ModelConfigError as exc:
        raise issue(exc.path, exc.message) from None
    except ExprError as exc:
        raise issue("model", str(exc)) from None
    except ShapeError as exc:
        raise issue("model", f"the declared model does not fit the data: {exc}") from None


def backend_of(device: str) -> str:
    return "cupy" if device == "cuda" else "numpy"


class CheckpointError(ValueError):
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
    text = json.dumps(meta, indent=1, default=_jsonable)
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


def _jsonable(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def env_info(spec_data: dict) -> dict:
    from gengraph import __version__

    info = {"gengraph": __version__, "python": sys.version.split()[0], "numpy": np.__version__,
            "platform": platform.platform(), "device": spec_data["run"]["device"], "seed": spec_data["run"]["seed"]}
    try:
        import subprocess

        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def blas_threads(n: int):
    """Limit BLAS/OpenMP thread pools for the run (threadpoolctl); 0 leaves them alone."""
    import contextlib

    if not n:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n)


class RunInterrupted(Exception):
    def __init__(self, checkpoint: Path):
        self.checkpoint = checkpoint
        super().__init__(f"interrupted; checkpoint written to {checkpoint}")


def execute(spec, run_dir: Path, *, debug=False, log=print, on_epoch=None, base_dir=None, resume=False,
            on_step=None) -> dict:
    """Run a loaded Spec, writing everything into run_dir; returns the summary dict.

    With resume=True the run continues from run_dir/checkpoint.npz. SIGINT (Ctrl-C)
    finishes the current step, writes a checkpoint and raises RunInterrupted.
    """
    import signal

    cfg = spec.data
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "spec.toml", spec.to_toml())
    atomic_write(run_dir / "env.json", json.dumps(env_info(cfg), indent=1))
    t0 = time.perf_counter()
    backend = backend_of(cfg["run"]["device"])
    data, plugin, graph, model = build_checked(spec, base_dir=base_dir)
    ctx = RunContext(cfg, run_dir, cfg["run"]["seed"], backend, debug, cfg["output"]["plots"], log)
    trainer = Trainer(plugin, model, data, cfg["train"], ctx)
    ctx.extra["trainer"] = trainer
    metrics_path = run_dir / "metrics.jsonl"
    if resume:
        trainer.compile_programs(with_optimizer=plugin.trains_by_gradient)
        trainer.restore(read_checkpoint(run_dir / "checkpoint.npz", trainer))
        rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()] \
            if metrics_path.exists() else []
        trainer.state.history = [r for r in rows if r["epoch"] <= trainer.state.epoch]
        atomic_write(metrics_path, "".join(json.dumps(r) + "\n" for r in trainer.state.history))
    else:
        metrics_path.write_text("")
    every = cfg["output"]["checkpoint_every"]

    def epoch_done(row):
        with open(metrics_path, "a") as fh:
            fh.write(json.dumps(row, default=_jsonable) + "\n")
        if every and row["epoch"] and row["epoch"] % every == 0:
            write_checkpoint(run_dir, trainer)
        if on_epoch is not None:
            on_epoch(row)

    def request_stop(signum, frame):
        trainer.stop_requested = True
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C stops at once

    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, request_stop)
    except ValueError:  # not the main thread: no signal handling
        previous = None
    try:
        with blas_threads(cfg["run"].get("threads", 1)):
            trainer.fit(on_epoch=epoch_done, on_step=on_step)
    except Interrupted:
        raise RunInterrupted(write_checkpoint(run_dir, trainer)) from None
    except ModelConfigError as exc:
        from gengraph.plugins.spec.errors import SpecError, SpecIssue

        raise SpecError([SpecIssue(*spec.position(exc.path), exc.path, exc.message)]) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    write_checkpoint(run_dir, trainer)
    summary = {k: v for k, v in (trainer.state.history[-1] if trainer.state.history else {}).items()
               if k.startswith("test_")}
    summary.update(plugin.report(model, data, ctx))
    summary.update({"epochs": trainer.state.epoch, "steps": trainer.state.step,
                    "seconds": round(time.perf_counter() - t0, 3)})
    atomic_write(run_dir / "summary.json", json.dumps(summary, indent=1, default=_jsonable))
    if ctx.plots:
        from gengraph.plugins.blocks.plots import loss_curves

        loss_curves(trainer.state.history, run_dir / "loss.png")
    atomic_write(run_dir / "summary.txt", summary_text(cfg, data, summary))
    return summary


def summary_text(spec_data, data, summary) -> str:
    lines = [f"# {spec_data['run']['name']}", "", f"model: {spec_data['model']['kind']}", f"data: {data.summary()}",
             "", "final metrics:"]
    lines += [f"  {k:24s} {v:.6g}" if isinstance(v, float) else f"  {k:24s} {v}" for k, v in summary.items()]
    return "\n".join(lines) + "\n"

