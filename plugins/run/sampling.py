"""Drawing new examples from a finished generative run (`gengraph sample`, `Run.sample`).

`open_run(run_dir)` rebuilds what the runner built (the resolved spec.toml of the run,
`runner.build_checked`) and loads the trained parameters from checkpoint.npz with the
runner's own reader (no pickles); `draw(run_dir, n)` then calls the model plugin's
`sample` hook. Every mistake a user can make here (not a run directory, no checkpoint,
a kind that cannot sample, a label for an unconditional model, an option the kind does
not take) raises `SampleError`, whose message is one line the CLI prints (exit 2).

Seeds: with `seed=None` the run's own seed (run.seed) is used, and the plugins draw
exactly what their report wrote to the run's samples.npy (for the same n and options).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gengraph.engine.backend import BackendError, get_backend
from gengraph.engine.errors import UserError
from gengraph.plugins.datasets.base import reopening_a_run
from gengraph.plugins.model import ModelConfigError, ModelPlugin
from gengraph.plugins.run.loading import load
from gengraph.plugins.run import data_files
from gengraph.plugins.run.checkpoint import fit_to_model, load_checkpoint
from gengraph.plugins.run.context import RunContext
from gengraph.plugins.run.contract import checked_samples, plugin_code
from gengraph.plugins.run.runner import backend_of, build_checked
from gengraph.plugins.run.trainer import Trainer
from gengraph.plugins.model import MODELS
from gengraph.plugins.spec.errors import SpecError
from gengraph.plugins.spec.schema import is_integer

DEVICES = {"numpy": "cpu", "cpu": "cpu", "cupy": "cuda", "cuda": "cuda"}
MAX_SAMPLE_BYTES = 2 << 30  # n x features x 8 bytes drawn at once


class SampleError(UserError, ValueError):
    """A mistake in a sampling request; the message is one line for the user."""


@dataclass
class OpenedRun:
    """A finished run rebuilt in memory: spec (loaded Spec), data, plugin, model, context."""

    dir: Path
    spec: object
    data: object
    plugin: ModelPlugin
    model: object
    ctx: object
    note: str | None = None  # what the user should know about the samples (an unfinished run)

    @property
    def kind(self) -> str:
        return self.spec.data["model"]["kind"]

    @property
    def n_labels(self) -> int:
        """Number of classes a class-conditional model takes (0: unconditional). A plugin
        whose count depends on the data sets Model.n_labels."""
        return int(self.model.n_labels or getattr(self.plugin, "n_labels", 0) or 0)

    def can_sample(self) -> bool:
        return can_sample(self.plugin)


def can_sample(plugin) -> bool:
    return type(plugin).sample is not ModelPlugin.sample


def open_run(run_dir, *, backend: str | None = None) -> OpenedRun:
    """Rebuild a finished run's data and model and load its checkpoint.

    backend: None (the run's run.device), "numpy"/"cpu" or "cupy"/"cuda"."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SampleError(f"{run_dir}: not a run directory (no such folder)")
    spec_path = run_dir / "spec.toml"
    if not spec_path.is_file():
        raise SampleError(f"{run_dir}: not a run directory (no spec.toml; `gengraph run SPEC --out DIR` makes one)")
    ckpt = run_dir / "checkpoint.npz"
    if not ckpt.is_file():
        raise SampleError(f"{run_dir}: no checkpoint.npz (the run has not finished, or failed before its first "
                          "checkpoint)")
    overrides = []
    if backend is not None:
        if backend not in DEVICES:
            raise SampleError(f'unknown backend "{backend}" (choose from {", ".join(DEVICES)})')
        if DEVICES[backend] == "cuda":  # said of the backend asked for, not of the run.device it becomes
            try:
                get_backend("cupy")
            except BackendError as exc:
                raise SampleError(f"backend {backend!r}: {exc}") from None
        overrides.append(f'run.device="{DEVICES[backend]}"')
    spec = load(spec_path, overrides)
    with reopening_a_run():
        data, plugin, _graph, model = build_checked(spec, base_dir=run_dir)
    cfg = spec.data
    ctx = RunContext(cfg, None, cfg["run"]["seed"], backend_of(cfg["run"]["device"]), plots=False,
                     log=lambda *a, **k: None)
    trainer = Trainer(plugin, model, data, cfg["train"], ctx)
    if cfg["train"]["optimizer"].get("ema"):  # the averages are optimizer state: create its leaves
        trainer.program_defs()
    ctx.data_files = data_files.fingerprints(spec)
    arrays, meta = load_checkpoint(ckpt, cfg, purpose="sample")
    data_files.check_unchanged(ckpt, meta["data_files"], spec, ctx.data_files)  # the data it was trained on
    trainer.restore(fit_to_model(ckpt, arrays, meta, trainer))  # CheckpointError when it does not fit
    trainer.use_averaged_weights()  # what the run reported with
    opened = OpenedRun(run_dir, spec, data, plugin, model, ctx)
    if not (run_dir / "summary.json").is_file():  # no report: the run was stopped (or is still going)
        opened.note = (f"{run_dir} has no summary.json: its run has not finished (stopped, or still going); these "
                       f"samples come from its last checkpoint (epoch {meta['state']['epoch']} of "
                       f"{cfg['train']['epochs']})")
    return opened


def sample_options(plugin) -> tuple[list[str], bool]:
    """(keyword options the plugin's `sample` takes besides label, whether it takes any **options)."""
    sig = inspect.signature(plugin.sample)
    names = [p.name for p in sig.parameters.values()
             if p.kind is p.KEYWORD_ONLY and p.name != "label"]
    return names, any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def generative_kinds() -> list[str]:

    kinds = []
    for name in MODELS.names():
        try:
            if can_sample(MODELS.get(name)):
                kinds.append(name)
        except Exception:  # a broken plugin: `gengraph plugins` reports it
            continue
    return kinds


def check_seed(seed) -> None:
    """SampleError unless seed is None (the run's seed) or a non-negative integer (`--seed`, `seed=`)."""
    if seed is None:
        return
    if not is_integer(seed) or seed < 0:
        shown = int(seed) if isinstance(seed, np.integer) else seed
        raise SampleError(f"seed must be a non-negative integer, found {shown!r}")


# the options `gengraph sample` has, checked alike for Run.sample (a plugin would int() "5" or 2.5)
OPTION_TYPES = {
    "steps": (lambda v: is_integer(v) and v >= 1, "a positive integer"),
    "guidance": (lambda v: (is_integer(v) or isinstance(v, (float, np.floating))) and bool(np.isfinite(v)),
                 "a finite number"),
    "sampler": (lambda v: isinstance(v, str), "a sampler's name (a string)"),
}


def check_request(run: OpenedRun, n, label=None, options=None, seed=None) -> dict:
    """The options to pass to the plugin (None values dropped); SampleError for a bad request."""
    kind = run.kind
    if not run.can_sample():
        others = generative_kinds()
        raise SampleError(f'a "{kind}" model does not generate samples'
                          + (f" (kinds that do: {', '.join(others)})" if others else ""))
    if not is_integer(n) or n < 1:
        raise SampleError(f"n must be a positive integer, found {n!r}")
    check_seed(seed)
    if int(n) * int(run.data.n_features) * 8 > MAX_SAMPLE_BYTES:
        raise SampleError(f"{n} samples of {run.data.n_features} features need more than "
                          f"{MAX_SAMPLE_BYTES >> 30} GiB; draw fewer at a time")
    n_labels = run.n_labels
    if label is not None:
        if not n_labels:
            raise SampleError(f"the {kind} model is not class-conditional: it takes no label")
        if not is_integer(label) or not 0 <= label < n_labels:
            raise SampleError(f"label must be an integer in 0..{n_labels - 1} for this {kind} model, found {label!r}")
    options = {k: v for k, v in (options or {}).items() if v is not None}
    for name, value in options.items():
        if name in OPTION_TYPES and not OPTION_TYPES[name][0](value):
            raise SampleError(f"{name} must be {OPTION_TYPES[name][1]}, found {value!r}")
    names, any_options = sample_options(run.plugin)
    unknown = [k for k in options if k not in names]
    if unknown and not any_options:
        takes = f"it takes: {', '.join(names)}" if names else "it takes none"
        raise SampleError(f"the {kind} model takes no option{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)} ({takes})")
    return options


def sample_from(run: OpenedRun, n: int, *, label=None, seed=None, **options) -> np.ndarray:
    """n new examples (data units) from an opened run; see `draw`."""
    options = check_request(run, n, label, options, seed)
    run.ctx.seed = run.spec.data["run"]["seed"] if seed is None else int(seed)
    try:
        with plugin_code(run.plugin, run.kind, "sample"):
            out = run.plugin.sample(run.model, run.data, run.ctx, int(n), label=label, **options)
    except ModelConfigError as exc:
        where = exc.path if exc.path.startswith("model.") else f"option {exc.path}"
        raise SampleError(f"{where}: {exc.message}") from None
    except SpecError as exc:
        raise SampleError(str(exc).splitlines()[0] if str(exc) else "bad sampling options") from None
    out = checked_samples(out, run.plugin, run.kind, int(n), run.data)
    return run.data.as_examples(out)  # images (n, C, H, W), as samples.npy


def draw(run_dir, n: int, *, label=None, seed=None, backend=None, **options) -> np.ndarray:
    """n new examples in data units from the finished generative run in run_dir.

    label: a class 0..n_labels-1 for a class-conditional model; seed: None uses the run's
    seed (the run's samples.npy for the same n and options); backend: None (the run's
    device), "numpy" or "cupy"; options: what the kind's `sample` takes (diffusion:
    sampler="ddpm"|"ddim", steps; rbm and ebm: steps). Raises SampleError for a bad
    request, SpecError when the run's spec no longer loads, CheckpointError when the
    checkpoint does not fit.
    """
    return sample_from(open_run(run_dir, backend=backend), n, label=label, seed=seed, **options)
