"""gengraph from Python and notebooks: `run`, `load`, `validate` and the `Run` they return.

The functions mirror the CLI and share its code: `prepare_run` is what `gengraph run` does
before training (find the spec, apply overrides, name the run directory), `runner.execute`
trains, `sampling` draws, `inspection` builds what `gengraph graph` / `gengraph gradcheck`
show. Every mistake in a spec or an override raises `SpecError`, whose message is the
CLI's error line (file:line:col: key: message; did you mean ...), raised from the
function the user called, not from deep inside.

    import gengraph
    run = gengraph.run("mlp_digits", overrides={"train.epochs": 5})
    run.summary["test_accuracy"], run.metrics_frame(), run.sample(16)  # (the last for generative kinds)
"""

from __future__ import annotations

import functools
import json
import os
import re
import warnings
from pathlib import Path

from gengraph.engine.expr import ExprError
from gengraph.engine.ops.registry import ShapeError
from gengraph.plugins.datasets import DataError
from gengraph.plugins.datasets.base import reopening_a_run
from gengraph.plugins.run.checkpoint import CheckpointError, load_checkpoint
from gengraph.plugins.run.display import GraphDisplay
from gengraph.plugins.run.display import SampleImages, unplottable
from gengraph.plugins.run.display import make_progress
from gengraph.plugins.run.display import run_html
from gengraph.plugins.run.inspection import check_graph_options, check_gradcheck_options, gradcheck
from gengraph.plugins.run.inspection import program_stage
from gengraph.plugins.run.loading import default_spec, resolve_spec, spec_or_run
from gengraph.plugins.run.loading import load as load_file
from gengraph.plugins.run.loading import plugin_files, plugin_paths
from gengraph.plugins.run.resume import parse_metrics
from gengraph.plugins.run.rundir import RunDirError
from gengraph.plugins.run.runner import RunInterrupted, build_checked
from gengraph.plugins.run.runner import execute
from gengraph.plugins.run.sampling import open_run
from gengraph.plugins.run.sampling import SampleError, check_seed, sample_from
from gengraph.plugins.run.spec_schema import run_schema, top_schema
from gengraph.plugins.spec.document import SPEC_VERSION, spec_from_text
from gengraph.plugins.spec.errors import SpecError, SpecIssue
from gengraph.plugins.spec.schema import Table
from gengraph.plugins.spec.schema import validate as validate_against
from gengraph.plugins.spec.toml_writer import dumps
from gengraph.plugins.spec.toml_writer import format_value

DICT_SPEC = "<spec dict>"


# --- user errors: one exception type, raised from the public function --------------------------
def user_facing(fn):
    """Spec, data and expression mistakes leave as one fresh SpecError (the CLI's message)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpecError as exc:
            err = SpecError(exc.issues)
        except (DataError, ExprError, ShapeError) as exc:
            err = SpecError(SpecIssue(None, None, None, "", str(exc)))
        raise err from None

    return wrapper


def path_argument(value, name: str) -> Path:
    """A folder or file argument as a Path with ~ expanded; TypeError naming the argument for
    anything else (out=5 failed inside pathlib; out="~/x" made a folder named ~)."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or pathlib.Path), not {type(value).__name__} {value!r}")
    return Path(value).expanduser()


def flag_argument(value, name: str) -> bool:
    """A True/False argument; anything else is a TypeError (overwrite="no" replaced the run)."""
    if type(value).__name__ not in ("bool", "bool_"):  # Python's or NumPy's
        raise TypeError(f"{name} must be True or False, not {type(value).__name__} {value!r}")
    return bool(value)


# --- specs: a path, a shipped name or a dict ----------------------------------------------------
def spec_path(spec) -> Path:
    """The file a spec argument names: an existing path, else a shipped spec's name (with or
    without .toml); a miss is reported by load() with a did-you-mean for shipped names."""
    return default_spec() if spec is None else Path(resolve_spec(spec))


def _plain(value, path="value"):
    """Python/NumPy values as the plain types TOML writes."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{path}.{k}") for k, v in value.items()}
    return value


def override_strings(overrides) -> list[str]:
    """{"train.optimizer.lr": 0.01} (or ["train.optimizer.lr=0.01"]) as --set strings."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, dict):
        out = []
        for key, value in overrides.items():
            try:
                out.append(f"{key}={format_value(_plain(value))}")
            except TypeError as exc:
                raise SpecError(SpecIssue("--set", None, None, str(key), str(exc))) from None
        return out
    try:
        return [str(o) for o in overrides]  # a list, tuple, set, generator or array of 'key=value' strings
    except TypeError:
        raise SpecError(SpecIssue(None, None, None, "overrides", "expected a dict {key: value} or a list of "
                                  f"'key=value' strings, found {type(overrides).__name__} {overrides!r}")) from None


def load_spec_any(spec, overrides=()):
    """(Spec, the file it came from or None for a dict, the folder data paths are relative to)."""
    overrides = list(overrides)
    if isinstance(spec, dict):

        data = {"spec_version": SPEC_VERSION, **_plain(spec)}
        try:
            text = dumps(data)
        except TypeError as exc:
            raise SpecError(SpecIssue(DICT_SPEC, None, None, "", str(exc))) from None
        try:
            loaded = spec_from_text(text, DICT_SPEC, overrides, top_schema())
        except SpecError as exc:  # lines of the TOML written from the dict would only confuse
            raise SpecError([SpecIssue(DICT_SPEC if i.file == DICT_SPEC else i.file, None, None, i.path, i.message)
                             for i in exc.issues]) from None
        loaded.has_lines = False  # and so would they in what later checks say (data, shapes)
        return loaded, None, Path.cwd()
    if spec is not None and not isinstance(spec, (str, os.PathLike)):  # 42 was "42: spec file not found"
        raise TypeError(f"spec must be a path, a shipped spec's name, a dict or None, not {type(spec).__name__} "
                        f"{spec!r}")
    if isinstance(spec, str) and not spec.strip():
        raise SpecError(SpecIssue(None, None, None, "spec", "the name is empty: give a spec file or a shipped "
                                  "spec's name (gengraph.shipped_specs())"))
    path = spec_path(spec)
    return load_file(path, overrides), path, path.parent


DEVICE_OPTION = "--device"  # errors about the device option name it, in the CLI and the API alike


def check_device(device) -> None:
    """SpecError unless `device` is a value run.device takes, checked as the schema checks the spec
    (`--device gpu` and gengraph.run(device="gpu") give the same message, naming --device)."""
    validate_against(Table({"device": run_schema().fields["device"]}), {"device": device},
             positions={"run.device": (DEVICE_OPTION, None, None)}, path="run")


def prepare_run(spec=None, overrides=None, *, out=None, resume=False, device=None):
    """What `gengraph run` does before training: (loaded Spec, run directory, base folder).

    spec: a path, a shipped spec's name, a dict, or None (the default spec; with resume,
    out/spec.toml). overrides: --set strings or {key: value}. out: the run directory
    (default output.dir/run.name); with resume the run to continue. device: "cpu" or "cuda"
    (None: the spec's run.device); anything else is a SpecError before anything is read or written."""
    if device is not None:
        check_device(device)
    resume = flag_argument(resume, "resume")
    out = None if out is None else path_argument(out, "out")
    overrides = override_strings(overrides)
    if resume and spec is None:
        if out is None:
            raise SpecError(SpecIssue(None, None, None, "resume", "name the run directory to continue (out=...)"))
        spec = Path(out) / "spec.toml"
    loaded, path, base_dir = load_spec_any(spec, overrides)
    if device is not None:  # the option, not a --set: errors about it name --device (checked above)
        loaded.data["run"]["device"] = device
        loaded.positions["run.device"] = (DEVICE_OPTION, None, None)
    name = loaded.data["run"]["name"] or (path.stem if path is not None else "run")
    loaded.data["run"]["name"] = name
    if out is None:
        check_run_name(loaded)
    run_dir = Path(out) if out is not None else Path(loaded.data["output"]["dir"]) / name
    return loaded, run_dir, base_dir


def check_run_name(loaded) -> None:
    """SpecError when run.name, the run's folder under output.dir without --out, would leave it."""
    name = loaded.data["run"]["name"]
    if name and (name.startswith("/") or ".." in name.split("/")):
        raise SpecError([SpecIssue(*loaded.position("run.name"), "run.name",
                                   f"{name!r} would put the run outside output.dir; give a plain name, and the "
                                   "folder with output.dir or --out")])


# --- the public functions ------------------------------------------------------------------
@user_facing
def run(spec=None, overrides=None, out=None, resume=False, progress="auto", *, overwrite=False, device=None,
        plugins=()) -> "Run":
    """Train the model a spec declares and write its run directory, as `gengraph run`.

    spec: a path, a shipped spec's name ("mlp_digits"), a dict in the spec's own structure,
    or None (the default spec). overrides: {"train.optimizer.lr": 0.01} (the --set keys).
    out: the run directory (default output.dir/run.name). resume: continue the run in
    `out` from its checkpoint. progress: "auto" (a notebook bar with ipywidgets, else
    plain lines; a tqdm bar on a terminal), "notebook", "bar", "text" or None/False.
    overwrite: replace the run already in `out` (its files only), as --overwrite; without
    it a directory holding another run is refused. device: "cpu" or "cuda". plugins:
    local plugin files to load first (--plugin); they are registered for this call and the
    returned Run's own calls only, so a later run of a built-in kind is not theirs.
    Spec mistakes raise SpecError with the CLI's message.
    """
    overwrite = flag_argument(overwrite, "overwrite")
    with plugin_files(plugins):
        loaded, run_dir, base_dir = prepare_run(spec, overrides, out=out, resume=resume, device=device)
        bar = make_progress(progress, loaded.data["train"]["epochs"])
        try:
            summary = execute(loaded, run_dir, on_epoch=bar.epoch, on_start=bar.start, base_dir=base_dir,
                              resume=bool(resume), overwrite=overwrite,
                              log=lambda message: print(_api_words(message, run_dir)))
            bar.finish()
        except RunInterrupted as exc:  # the way on, in this API's words rather than the CLI's
            again = f"gengraph.run(..., out={str(exc.run_dir)!r}, resume=True)"
            raise RunInterrupted(exc.run_dir, exc.checkpoint, exc.signum, exc.phase, again=again) from None
        except (RunDirError, CheckpointError) as exc:
            raise type(exc)(_api_words(str(exc), run_dir)) from None
        finally:
            bar.close()
    return Run(run_dir, summary=summary, plugins=plugins)


def _api_words(message: str, run_dir) -> str:
    """A run-folder message with the CLI's options spelled as this function's arguments."""
    message = re.sub(r"--set ([\w.\[\]]+)=(\S+)", lambda m: f"overrides={{{m[1]!r}: {m[2]}}}", message)
    return (message.replace(f"--resume {run_dir}", f"resume=True (out={str(run_dir)!r})")
            .replace("--overwrite", "overwrite=True").replace("--resume", "resume=True")
            .replace("--out", "out="))


@user_facing
def validate(spec, overrides=None, *, plugins=()) -> dict:
    """The resolved spec (defaults filled, overrides applied) after every check `gengraph
    validate` makes (data files and shapes included); SpecError lists every problem. A run's
    folder stands for its spec.toml, as for `gengraph validate`."""
    if isinstance(spec, (str, os.PathLike)) and str(spec).strip():
        spec = spec_or_run(spec)[0]
    with plugin_files(plugins):
        loaded, _, base_dir = load_spec_any(spec, override_strings(overrides))
        check_run_name(loaded)  # as `gengraph run SPEC` (without --out) would use it
        build_checked(loaded, base_dir=base_dir)
    return loaded.data


def load(run_dir, *, plugins=()) -> "Run":
    """The run in run_dir (written by `gengraph run` or `gengraph.run`); plugins: the local
    plugin files its kind comes from, if it is not installed."""
    run_dir = path_argument(run_dir, "run_dir")
    if not (run_dir / "spec.toml").is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no spec.toml)")
    return Run(run_dir, plugins=plugins)


# --- a run directory ------------------------------------------------------------------------
class Run:
    """A run directory: its resolved spec, summary, metrics, parameters, samples and graphs.

    In a notebook it shows as its summary table and loss plot. The folder is kept as an absolute
    path (a later chdir does not point it at another run), and what is read from it is read again
    when its files change (a resume or an overwrite from another cell)."""
    def __init__(self, run_dir, *, summary: dict | None = None, plugins=()):
        self.dir = Path(run_dir).absolute()
        self.plugins = tuple(str(Path(p).absolute()) for p in plugin_paths(plugins))
        self._spec, self._summary, self._opened = None, summary, {}
        self._stamp = self._files_stamp()

    def _files_stamp(self):
        """(mtime, size) of the files the cached values come from."""
        stamps = []
        for name in ("spec.toml", "summary.json", "checkpoint.npz"):
            try:
                st = (self.dir / name).stat()
                stamps.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def __getstate__(self) -> dict:
        # the rebuilt model (compiled programs, a backend module) stays behind: rebuilt on demand
        return {**self.__dict__, "_opened": {}}

    def _fresh(self) -> None:
        """Drops the cached spec, summary and rebuilt model when the run's files have changed."""
        stamp = self._files_stamp()
        if stamp != self._stamp:
            self._spec, self._summary, self._opened, self._stamp = None, None, {}, stamp

    def __repr__(self) -> str:
        try:
            s, kind = self.summary, self.kind
        except (OSError, ValueError, KeyError) as exc:  # a folder deleted since, damaged files: say so, never raise
            return f"Run({str(self.dir)!r}: cannot be read: {exc})"
        shown = ", ".join(f"{k}={v:.4g}" for k, v in s.items() if k.startswith("test_") and isinstance(v, float))
        return f"Run({str(self.dir)!r}, kind={kind!r}" + (f", {shown}" if shown else "") + ")"

    # files
    @property
    def spec(self) -> dict:
        """The resolved spec as the run wrote it (spec.toml; keys whose value is unset are absent)."""
        self._fresh()
        if self._spec is None:
            import tomllib

            self._spec = tomllib.loads((self.dir / "spec.toml").read_text(encoding="utf-8"))
        return self._spec

    @property
    def kind(self) -> str:
        return self.spec["model"]["kind"]

    @property
    def summary(self) -> dict:
        """Final metrics (summary.json); {} while the run has not finished."""
        self._fresh()
        if self._summary is None:
            path = self.dir / "summary.json"
            if not path.is_file():
                return {}
            self._summary = json.loads(path.read_text())
        return self._summary

    @property
    def metrics(self) -> list[dict]:
        """One dict per logged epoch (metrics.jsonl). A partial last line (the run was stopped
        while writing it) is left out with a note; another damaged line is a ValueError naming
        the file and line."""
        return parse_metrics(self.dir / "metrics.jsonl")

    def metrics_frame(self):
        """The metrics as a pandas DataFrame indexed by epoch (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Run.metrics_frame() needs pandas: pip install pandas "
                              "(or use Run.metrics, a list of dicts)") from None
        frame = pd.DataFrame(self.metrics)
        return frame.set_index("epoch") if "epoch" in frame else frame

    @property
    def params(self) -> dict:
        """Trained parameters by name (e.g. "output/dense0/W") from checkpoint.npz (with
        [train.optimizer] ema these are the trained values, not the averages the run reports with).
        A damaged checkpoint, or one of another run, raises the CheckpointError `Run.sample` gives."""
        if not self.dir.is_dir():
            raise FileNotFoundError(f"{self.dir}: no such folder (the run directory was deleted or moved)")
        if not (self.dir / "checkpoint.npz").is_file():
            raise FileNotFoundError(f"{self.dir}: no checkpoint.npz (the run has not finished)")
        arrays = _checkpoint_arrays(self.dir, self.plugins)
        return {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}

    # what the CLI does with a run
    def sample(self, n: int = 64, label=None, *, seed=None, as_image=False, backend=None, **options):
        """n new examples in data units (`gengraph sample`): label for class-conditional
        models, options the kind takes (diffusion: sampler="ddpm"|"ddim", steps; rbm/ebm:
        steps). seed None: the run's seed (its samples.npy). as_image=True returns a
        SampleImages that shows as an image grid (or a scatter over the data for 2-D data)
        and keeps the array in `.array`. A bad n, label, seed or option raises SampleError
        (a ValueError) with the message `gengraph sample` prints."""
        check_seed(seed)  # before the run is rebuilt
        opened = self.opened(backend)
        if opened.note:
            warnings.warn(opened.note, UserWarning, stacklevel=2)
        samples = sample_from(opened, n, label=label, seed=seed, **options)
        if as_image:
            if (why := unplottable(opened.data, samples)) is not None:
                raise SampleError(f"as_image=True: {why} (as_image=False gives the array)")
            return SampleImages(samples, opened.data, title=f"{self.kind} samples"
                                + (f" (label {label})" if label is not None else ""))
        return samples

    def opened(self, backend=None):
        """The run rebuilt in memory with its trained parameters (sampling.OpenedRun), cached
        until the run's files change."""
        self._fresh()
        if backend not in self._opened:
            with plugin_files(self.plugins):
                self._opened[backend] = _open(self.dir, backend)
        return self._opened[backend]

    def graph(self, program: str | None = None, stage: str = "optimized", *, batch: int = 128,
              collapse: int | None = None):
        """The graph `gengraph graph RUN/spec.toml --program P --stage S` prints: a GraphView
        display (text repr; SVG with Graphviz's `dot`, else an HTML table; .dot(), .json()).
        program None: train_step for a model trained by gradient, else evaluate (as the CLI).
        A bad batch or collapse raises InspectError (a ValueError), as --batch/--collapse do."""
        check_graph_options(batch=batch, collapse=collapse)
        with plugin_files(self.plugins):
            loaded, data, plugin, model = _build(self.dir, ['run.device="cpu"'])
            view, program = program_stage(loaded, data, plugin, model, program, stage,
                                          label=str(self.dir / "spec.toml"))
        return GraphDisplay(view, batch=batch, collapse=collapse, name=f"{self.spec['run']['name']}.{program}.{stage}")

    def gradcheck(self, params=(), *, eps=1e-6, rtol=1e-5, atol=1e-8, seed=0, batch=8, max_entries=50, perturb=0.0):
        """The report of `gengraph gradcheck RUN/spec.toml`: the spec's model (its initial
        parameters, plus N(0, perturb^2) noise with perturb > 0) in float64 on the CPU, the
        engine's loss gradient against central differences. Shows as an HTML table; str() is the
        command's text; `.ok`. An option out of its range (eps, rtol, atol, seed, batch,
        max_entries, perturb) raises InspectError (a ValueError) with the message `gengraph
        gradcheck` prints."""
        check_gradcheck_options(eps=eps, rtol=rtol, atol=atol, seed=seed, batch=batch, max_entries=max_entries,
                                perturb=perturb)
        params = (params,) if isinstance(params, str) else tuple(params)  # one name, not its letters
        with plugin_files(self.plugins):
            loaded, data, plugin, model = _build(self.dir, ['run.dtype="float64"', 'run.device="cpu"'])
            return gradcheck(loaded, data, model, label=str(self.dir / "spec.toml"), param_names=params,
                             eps=eps, rtol=rtol, atol=atol, seed=seed, batch=batch, max_entries=max_entries,
                             perturb=perturb)

    # displays
    def _repr_html_(self) -> str:
        return run_html(self)


@user_facing
def _open(run_dir, backend):
    return open_run(run_dir, backend=backend)


@user_facing
def _checkpoint_arrays(run_dir, plugins) -> dict:
    """The arrays of the run's checkpoint.npz, read and checked as sampling reads it (a damaged
    file, or the checkpoint of another spec than the spec.toml beside it, is a CheckpointError)."""
    with plugin_files(plugins):  # the spec names its kind: a local plugin's kind must be known
        loaded = load_file(Path(run_dir) / "spec.toml", [])
    arrays, _meta = load_checkpoint(Path(run_dir) / "checkpoint.npz", loaded.data, purpose="sample")
    return arrays


@user_facing
def _build(run_dir, overrides):
    loaded = load_file(Path(run_dir) / "spec.toml", overrides)
    with reopening_a_run():  # the run's own spec (Run.graph, Run.gradcheck): the data checks of its time
        data, plugin, _graph, model = build_checked(loaded, base_dir=Path(run_dir))
    return loaded, data, plugin, model
