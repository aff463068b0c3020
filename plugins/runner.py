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

from gengraph.engine import Graph, to_numpy

from .datasets import make_dataset
from .layers import init_rng
from .model import MODELS
from .trainer import Trainer


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


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write via a temporary file in the same folder and rename: all or nothing."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_npz(path: Path, arrays: dict) -> None:
    """np.savez into an atomic write (no object arrays, so loading never needs pickle)."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write(path, buf.getvalue())


def build(spec_data: dict, *, backend=None, base_dir=None):
    """Data, plugin, graph and model for a resolved spec (no training)."""
    run = spec_data["run"]
    data = make_dataset(spec_data["data"], run["seed"], base_dir=base_dir)
    cfg = spec_data["model"]
    plugin = MODELS.get(cfg["kind"])
    graph = Graph(dtype=run["dtype"], seed=run["seed"])
    model = plugin.build(cfg, graph, data, init_rng(run["seed"]))
    return data, plugin, graph, model


def backend_of(device: str) -> str:
    return "cupy" if device == "cuda" else "numpy"


def checkpoint_arrays(model, trainer=None) -> dict:
    g = model.graph
    arrays = {f"param/{n.label}": g.value(n) for n in g.params()}
    arrays.update({f"state/{n.label}": g.value(n) for n in g.states()})
    return arrays


def write_checkpoint(run_dir: Path, model, trainer) -> Path:
    path = run_dir / "checkpoint.npz"
    save_npz(path, checkpoint_arrays(model, trainer))
    streams = model.graph.__dict__.get("_streams")
    meta = {"epoch": trainer.state.epoch, "step": trainer.state.step,
            "noise_streams": streams.state() if streams is not None else {},
            "shuffle_rng": trainer.rng.bit_generator.state}
    atomic_write(run_dir / "checkpoint.json", json.dumps(meta, indent=1, default=_jsonable))
    return path


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
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


def execute(spec, run_dir: Path, *, quiet=False, debug=False, log=print, on_epoch=None, base_dir=None) -> dict:
    """Run a loaded Spec, writing everything into run_dir; returns the summary dict."""
    data_cfg = spec.data
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "spec.toml", spec.to_toml())
    atomic_write(run_dir / "env.json", json.dumps(env_info(data_cfg), indent=1))
    t0 = time.perf_counter()
    data, plugin, graph, model = build(data_cfg, backend=backend_of(data_cfg["run"]["device"]), base_dir=base_dir)
    ctx = RunContext(data_cfg, run_dir, data_cfg["run"]["seed"], backend_of(data_cfg["run"]["device"]), debug,
                     data_cfg["output"]["plots"], log)
    trainer = Trainer(plugin, model, data, data_cfg["train"], ctx)
    ctx.extra["trainer"] = trainer
    metrics_path = run_dir / "metrics.jsonl"
    metrics_path.write_text("")
    every = data_cfg["output"]["checkpoint_every"]

    def epoch_done(row):
        with open(metrics_path, "a") as fh:
            fh.write(json.dumps(row, default=_jsonable) + "\n")
        if every and row["epoch"] and row["epoch"] % every == 0:
            write_checkpoint(run_dir, model, trainer)
        if on_epoch is not None:
            on_epoch(row)

    trainer.fit(on_epoch=epoch_done)
    write_checkpoint(run_dir, model, trainer)
    summary = {k: v for k, v in (trainer.state.history[-1] if trainer.state.history else {}).items()
               if k.startswith("test_")}
    summary.update(plugin.report(model, data, ctx))
    summary.update({"epochs": trainer.state.epoch, "steps": trainer.state.step,
                    "seconds": round(time.perf_counter() - t0, 3)})
    atomic_write(run_dir / "summary.json", json.dumps(summary, indent=1, default=_jsonable))
    if ctx.plots:
        from .plots import loss_curves

        loss_curves(trainer.state.history, run_dir / "loss.png")
    atomic_write(run_dir / "summary.txt", summary_text(data_cfg, data, summary))
    return summary


def summary_text(spec_data, data, summary) -> str:
    lines = [f"# {spec_data['run']['name']}", "", f"model: {spec_data['model']['kind']}", f"data: {data.summary()}",
             "", "final metrics:"]
    lines += [f"  {k:24s} {v:.6g}" if isinstance(v, float) else f"  {k:24s} {v}" for k, v in summary.items()]
    return "\n".join(lines) + "\n"


def to_float(v) -> float:
    return float(to_numpy(v))
