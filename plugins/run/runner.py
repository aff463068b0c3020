"""One run, end to end: resolved spec -> data -> model -> training -> run directory.

The run directory gets spec.toml (resolved), metrics.jsonl (one line per epoch),
summary.json (final metrics under stable names), checkpoint.npz (no pickles),
env.json, summary.txt and plots. Files are written atomically: a crash never
leaves a half-written file behind.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from gengraph.engine import Graph

from gengraph.plugins.datasets import make_dataset
from gengraph.plugins.blocks.layers import init_rng
from gengraph.plugins.model import MODELS
from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.blocks.files import atomic_write
from gengraph.plugins.run.checkpoint import jsonable, read_checkpoint, write_checkpoint
from gengraph.plugins.run.context import RunContext
from gengraph.plugins.run.trainer import Interrupted, Trainer
from gengraph.engine.expr import ExprError
from gengraph.engine.ops.registry import ShapeError
from gengraph.plugins.datasets import DataError
from gengraph.plugins.spec.errors import SpecError, SpecIssue
from gengraph.plugins.registry import UnknownKind
from gengraph.plugins.run.trainer import optimizer_from_spec
from gengraph.engine.backend import BackendError, get_backend
from gengraph import __version__
from gengraph.plugins.blocks.plots import loss_curves


def build(spec_data: dict, *, base_dir=None):
    """Data, plugin, graph and model for a resolved spec (no training)."""
    run = spec_data["run"]
    data = make_dataset(spec_data["data"], run["seed"], base_dir=base_dir)
    cfg = spec_data["model"]
    plugin = MODELS.get(cfg["kind"])
    graph = Graph(dtype=run["dtype"], seed=run["seed"])
    model = plugin.build(cfg, graph, data, init_rng(run["seed"]))
    return data, plugin, graph, model


def build_checked(spec, *, base_dir=None):
    """`build`, with the user's mistakes it uncovers (data files, shapes) as one SpecError."""
    def issue(path, message):
        return SpecError([SpecIssue(*spec.position(path), path, message)])

    if spec.data["run"]["device"] == "cuda":  # say so now, not after the data and model are built
        try:
            get_backend("cupy")
        except BackendError as exc:
            raise issue("run.device", str(exc)) from None
    try:
        optimizer_from_spec(spec.data["train"])  # hyper-parameter combinations the schema cannot express
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


def env_info(spec_data: dict) -> dict:
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
            fh.write(json.dumps(row, default=jsonable) + "\n")
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
    atomic_write(run_dir / "summary.json", json.dumps(summary, indent=1, default=jsonable))
    if ctx.plots:
        loss_curves(trainer.state.history, run_dir / "loss.png")
    atomic_write(run_dir / "summary.txt", summary_text(cfg, data, summary))
    return summary


def summary_text(spec_data, data, summary) -> str:
    lines = [f"# {spec_data['run']['name']}", "", f"model: {spec_data['model']['kind']}", f"data: {data.summary()}",
             "", "final metrics:"]
    lines += [f"  {k:24s} {v:.6g}" if isinstance(v, float) else f"  {k:24s} {v}" for k, v in summary.items()]
    return "\n".join(lines) + "\n"

