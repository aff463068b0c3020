"""One run, end to end: resolved spec -> data -> model -> training -> run directory.

The run directory gets spec.toml (resolved), metrics.jsonl (one line per epoch),
summary.json (final metrics under stable names), checkpoint.npz (no pickles),
env.json, summary.txt and plots. Files are written atomically: a crash never
leaves a half-written file behind.
"""

from __future__ import annotations

import json
import platform
import re
import shlex
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from gengraph.engine import Graph

from gengraph.plugins.datasets import make_dataset
from gengraph.plugins.blocks.layers import init_rng
from gengraph.plugins.model import MODELS
from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.blocks.files import atomic_write, dumps_json, non_finite
from gengraph.plugins.blocks.memory import model_estimate
from gengraph.plugins.run.checkpoint import CheckpointError, fit_to_model, jsonable, load_checkpoint, write_checkpoint
from gengraph.plugins.run import data_files
from gengraph.plugins.run.resume import check_resumable, read_metrics
from gengraph.plugins.run.loading import plugin_source
from gengraph.plugins.run.rundir import (RunDirError, clear_report, clear_run_files, clear_temporaries,
                                         foreign_files, open_run_dir, record_report, refuse_foreign, refuse_if_taken,
                                         refuse_sweep_folder, refuse_user_files, start_record)
from gengraph.plugins.run.signals import SignalGuard, Stop, exit_code, signal_name
from gengraph.plugins.run.context import RunContext
from gengraph.plugins.run.contract import call_build, checked_mapping, plugin_code, plugin_frame
from gengraph.plugins.run.trainer import DivergenceError, Interrupted, Trainer
from gengraph.engine.errors import GraphTooLarge
from gengraph.engine.expr import ExprError
from gengraph.engine.ops.cpu_loops import describe as describe_cpu_loops
from gengraph.engine.ops.registry import ShapeError
from gengraph.plugins.datasets import SHARED_FIELDS, DataError
from gengraph.plugins.datasets.base import reopening_a_run
from gengraph.plugins.spec.errors import SpecError, SpecIssue, first_named, printable, with_article
from gengraph.plugins.spec.overrides import ORIGIN
from gengraph.plugins.registry import UnknownKind
from gengraph.plugins.run.trainer import check_in_dtype, lbfgs_refusal, optimizer_from_spec
from gengraph.engine.backend import BackendError, get_backend
from gengraph import __version__
from gengraph.plugins.blocks.plots import loss_curves
from gengraph.plugins.run.metrics import logged_names, stopping_mode, train_names, unknown_metric
from gengraph.plugins.blocks import memory
from gengraph.plugins.blocks.memory import human


def build(spec_data: dict, *, base_dir=None):
    """Data, plugin, graph and model for a resolved spec (no training)."""
    run = spec_data["run"]
    # images keep their (C, H, W) shape in the Dataset; models are fed rows of C*H*W features
    # (image networks reshape them back in the graph, from data.image_shape)
    data = make_dataset(spec_data["data"], run["seed"], base_dir=base_dir).flat()
    cfg = spec_data["model"]
    plugin = MODELS.get(cfg["kind"])
    check_task(plugin, cfg["kind"], data)
    graph = Graph(dtype=run["dtype"], seed=run["seed"])
    model = call_build(plugin, cfg["kind"], cfg, graph, data, init_rng(run["seed"]))  # checked: contract.py
    return data, plugin, graph, model


def check_task(plugin, kind: str, data) -> None:
    """ModelConfigError at data.source unless the data's task is one of the plugin's `tasks`."""
    tasks = tuple(getattr(plugin, "tasks", ()) or ())
    if not tasks or data.task in tasks:
        return
    y = data.y_train
    if data.task == "unsupervised" and "regression" in tasks and y is not None and y.dtype.kind == "f":
        return  # a side value of unlabelled data (the swiss roll's t) that a regression may fit
    hint = ""
    if data.task == "classification" and data.meta.get("task_inferred") and "regression" in tasks:
        hint = ('; task = "auto" read its whole-number targets as class labels: set data.task = "regression" '
                "to fit them as numbers")
    raise ModelConfigError("data.source", f'model kind "{kind}" takes {" or ".join(tasks)} data; '
                                          f'"{data.meta.get("source", "?")}" gives {with_article(data.task)} '
                                          f'task{hint}')


def named_child(positions: dict, path: str, message: str) -> str:
    """The key directly under `path`, given by --set, that the message names first ("conv2d layer:
    padding must be ..." under model.encoder[0] with --set model.encoder[0].padding=...), else
    path: so that the error points at the --set that gave the value, not at the table's line in
    the file (keys from the file keep the table's position: its words may name other things)."""
    children = {key[len(path) + 1:]: key for key, where in positions.items()
                if key.startswith(path + ".") and where[0] == ORIGIN and re.fullmatch(r"\w+", key[len(path) + 1:])}
    return first_named(message, children) or path


def blamed_key(positions: dict, path: str, message: str, also=()) -> str:
    """Where an error about `path` points: `named_child`'s key under it; or the one --set of a key
    inside path where path itself was not set by --set (that --set changed what the error is about); or,
    when the check is also about other keys (`also`, which the raiser names) and the user gave one
    of them where path was not given the same way (by --set, else at all), that one: "groups = 8
    does not divide the channels [12]" belongs to --set model.network.channels=[12, 24] more than to
    the file's groups."""
    child = named_child(positions, path, message)
    if child != path:
        return child
    by_set = lambda k: positions.get(k, ("",))[0] == ORIGIN  # noqa: E731
    for given in (by_set, lambda k: k in positions):
        if given(path):
            return path
        # --set model.decoder[3].stride=4: the layer's error, which that --set made, is the --set's
        # (the only --set inside path; of several, which made the error is not known)
        inside = [k for k in positions if k.startswith((path + ".", path + "[")) and by_set(k)]
        if len(inside) == 1:
            return inside[0]
        other = next((k for k in also if given(k)), None)
        if other is not None:
            return other
    return path


def located(spec, path: str, message: str, also=()) -> SpecIssue:
    """The SpecIssue of an error about `path`, at the key blamed_key blames for it."""
    path = blamed_key(spec.positions, path, message, also)
    return SpecIssue(*spec.position(path), path, message)


def config_error(spec, exc: ModelConfigError) -> SpecError:
    """A plugin's complaint, and those it carries (ModelConfigError.together), each at its key."""
    return SpecError([located(spec, e.path, e.message, getattr(e, "also", ())) for e in exc.all()])


def build_checked(spec, *, base_dir=None):
    """`build`, with the user's mistakes it uncovers (data files, shapes) as one SpecError."""
    def issue(path, message, also=()):
        return SpecError([located(spec, path, message, also)])

    for key in ("run.name", "output.dir"):  # the run folder's path: validate passed these, run failed or echoed them
        section, name = key.split(".")
        text = spec.data[section][name]
        if "\0" in text:
            raise issue(key, "contains a NUL byte, which no file name can hold")
        if printable(text) != text:  # an escape sequence would reach the terminal in "run directory: ..."
            raise issue(key, f"contains a control character ({printable(text)}); use a plain name")
    if spec.data["run"]["device"] == "cuda":  # say so now, not after the data and model are built
        try:
            get_backend("cupy")
        except BackendError as exc:
            raise issue("run.device", str(exc)) from None
    try:
        optimizer_from_spec(spec.data["train"])  # hyper-parameter combinations the schema cannot express
        built = build(spec.data, base_dir=base_dir)
        check_in_dtype(built[0], spec.data["run"]["dtype"])  # values the run's float type cannot hold
    except UnknownKind as exc:  # a registry name the schema does not enumerate (initializer, layer, ...)
        raise issue("model", str(exc)) from None
    except DataError as exc:  # at the key that named the file, where the source knows it
        raise issue(exc.key or "data", str(exc)) from None
    except ModelConfigError as exc:
        raise config_error(spec, exc) from None
    except ExprError as exc:
        raise issue("model", str(exc)) from None
    except ShapeError as exc:  # raised in a local plugin's own code: where, for its author
        where = plugin_frame(exc, MODELS.get(spec.data["model"]["kind"]))
        raise issue("model", f"the declared model does not fit the data: {exc}"
                    + (f" (raised at {where}, in the plugin)" if where else "")) from exc
    except GraphTooLarge as exc:
        raise issue("model", str(exc)) from None
    except (MemoryError, OverflowError) as exc:  # OverflowError: a size or range NumPy cannot even represent
        raise issue("model", "the model does not fit in memory (a size in [model] or [data] is too large)"
                             + (f": {exc}" if isinstance(exc, OverflowError) else "")) from None
    except ValueError as exc:
        if "array is too big" not in str(exc):  # NumPy's refusal of an allocation past the address space
            raise
        raise issue("model", "the model does not fit in memory (a size in [model] or [data] is too large)") from None
    if built[0].meta.get("split", {}).get("kind") == "file":
        # a source with its own test files (mnist's t10k, an npz test_path) splits nothing off. The
        # default passes: every written spec.toml holds it, and the run's own spec must load again
        source = spec.data["data"]["source"]
        if spec.data["data"]["test_fraction"] != SHARED_FIELDS["test_fraction"].default:
            raise issue("data.test_fraction", f"the {source} data come with their own test split, so "
                                              "test_fraction does not apply; remove it")
        spec.notes.setdefault("data.test_fraction", f"not used: the {source} data come with their own test split")
    if not built[1].fits_without_gradients(built[3]) and not built[3].params and spec.data["train"]["epochs"] > 0:
        # no train_step is compiled without parameters: the first batch failed with a traceback
        key = "model.params" if "params" in spec.data["model"] else "model"
        raise issue(key, "the model has no parameters to train"
                         + (" (declare them in model.params and use them in model.energy)" if key != "model" else "")
                         + "; or set train.epochs = 0 to evaluate and sample it as it is")
    if (spec.data["train"]["optimizer"]["kind"] == "lbfgs" and built[1].trains_by_gradient
            and (why := lbfgs_refusal(built[1], built[3]))):
        raise issue("train.optimizer.kind", why)
    _check_memory(spec, built, issue)
    es = spec.data["train"].get("early_stopping") or {}
    if es.get("patience"):
        metric = es.get("metric", "test_loss")
        names, complete = (train_names if metric.startswith("train_") else logged_names)(built[1], built[3])
        if why := unknown_metric(metric, names, complete, "logged"):
            raise issue("train.early_stopping.metric", why)
    return built


def _check_memory(spec, built, issue) -> None:
    """Refuse, before training allocates it, what cannot fit in this machine's memory: the
    parameters with their optimizer state, and the activations of the largest batch a program runs."""
    data, _plugin, _graph, model = built
    cfg = spec.data
    train_batch = min(cfg["train"]["batch_size"] or data.n_train, data.n_train)  # a larger one is one full batch
    train_key = "train.batch_size"
    if cfg["train"]["optimizer"]["kind"] == "lbfgs":  # the whole training set at once, whatever batch_size says
        train_batch, train_key = data.n_train, "train.optimizer.kind"
    eval_batch = min(2048, data.n_test or 0)  # Trainer.evaluate's batches
    samples = cfg["output"].get("samples", 0)
    need = model_estimate(model, train_batch, eval_batch, samples)
    uses = [(train_key, train_batch, need["train"]), ("output.samples", samples, need["samples"]),
            ("model", eval_batch, need["evaluate"]), ("model", need["programs_rows"], need["programs"])]
    key, batch, acts = max(uses, key=lambda u: u[2])
    params, free = need["params"], memory.available_bytes()
    if params > free:
        raise issue("model", f"the parameters need {human(params)} with their gradients and optimizer state, "
                             f"more than the {human(free)} of memory available")
    if params + acts > free:
        raise issue(key, f"{batch} rows at once need about {human(acts)} of activations (and "
                         f"{human(params)} of parameters), more than the {human(free)} of memory available"
                         + ("; L-BFGS takes every training row at once: use a mini-batch optimizer (adam, sgd)"
                            if key == "train.optimizer.kind" else
                            f"; lower {key if key != 'model' else 'the sizes in [model]'}"))


def backend_of(device: str) -> str:
    return "cupy" if device == "cuda" else "numpy"


def env_info(spec_data: dict) -> dict:
    info = {"gengraph": __version__, "python": sys.version.split()[0], "numpy": np.__version__,
            "platform": platform.platform(), "device": spec_data["run"]["device"], "seed": spec_data["run"]["seed"],
            "cpu_loops": describe_cpu_loops(spec_data["run"]["device"])}  # Numba's loops or NumPy's passes
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
    """SIGINT or SIGTERM stopped the run; the message says what was saved and how to go on."""
    def __init__(self, run_dir: Path, checkpoint: Path | None, signum: int, phase: str = "training", again=None):
        """again: how to continue, as the caller spells it (default: the CLI's command line)."""
        self.run_dir, self.checkpoint, self.signum, self.phase = run_dir, checkpoint, signum, phase
        self.exit_code = exit_code(signum)
        again = again or f"gengraph run --resume {shlex.quote(str(run_dir))}"
        head = f"interrupted by {signal_name(signum)}"
        if phase == "training":
            msg = f"{head}; checkpoint written to {checkpoint}; continue with: {again}"
        elif phase == "report":
            msg = (f"{head} while writing the report; training is finished, checkpoint in {checkpoint}; "
                   f"{again} writes the report")
        elif phase == "done":
            msg = f"{head} as the run ended; its report is complete in {run_dir}"
        elif checkpoint is not None:
            msg = f"{head} before training began; {checkpoint} is unchanged; continue with: {again}"
        else:
            msg = f"{head} before training began; nothing was saved"
        super().__init__(msg)


def execute(spec, run_dir: Path, *, debug=False, log=print, on_epoch=None, base_dir=None, resume=False,
            overwrite=False, on_step=None, on_start=None) -> dict:
    """Run a loaded Spec, writing everything into run_dir; returns the summary dict.

    The run takes run_dir's lock first (RunDirError if another process holds it). A new run
    refuses a folder that holds another run unless overwrite=True, which then removes that
    run's files (and only those). resume=True continues the run from run_dir/checkpoint.npz
    after checking it belongs to this spec (only RESUMABLE keys may differ), and writes
    nothing before the checkpoint and metrics.jsonl are checked. SIGINT/SIGTERM during
    training finish the current step, write a checkpoint and raise RunInterrupted; during
    start-up or the report they raise it at once (see signals.py). on_start(epoch, row) is called
    once as training begins: with the checkpoint's epoch and its metrics row on --resume, with 0 and
    None otherwise (a progress bar starts there).
    """
    if resume and overwrite:
        raise RunDirError("--resume continues a run and --overwrite replaces it: pass one of them")
    run_dir = Path(run_dir)
    with SignalGuard() as signals:
        state = {"phase": "startup"}
        try:
            with signals.deferred():
                lock = open_run_dir(run_dir, log)
            try:
                return _execute(spec, run_dir, signals, state, lock, debug=debug, log=log, on_epoch=on_epoch,
                                base_dir=base_dir, resume=resume, overwrite=overwrite, on_step=on_step,
                                on_start=on_start)
            finally:
                with signals.deferred():
                    lock.release()
        except Stop as stop:
            checkpoint = run_dir / "checkpoint.npz"
            has = state["phase"] in ("report", "done") or (resume and checkpoint.exists())
            raise RunInterrupted(run_dir, checkpoint if has else None, stop.signum, state["phase"]) from None


def _execute(spec, run_dir, signals, state, lock, *, debug, log, on_epoch, base_dir, resume, overwrite, on_step,
             on_start):
    cfg = spec.data
    checkpoint = run_dir / "checkpoint.npz"
    refuse_sweep_folder(run_dir)
    if resume and not checkpoint.exists():
        raise CheckpointError(f"{checkpoint}: no checkpoint here, so nothing to resume")
    if not resume and not overwrite:
        refuse_if_taken(run_dir)
    # a user's file with a name the run writes (their loss.png, or one written over the run's), before
    # anything trains; the plugin's own names are known only as its report asks (RunContext.path)
    refuse_user_files(run_dir, plots=cfg["output"]["plots"], resume=resume)
    if resume:
        clear_temporaries(run_dir)
    t0 = time.perf_counter()
    backend = backend_of(cfg["run"]["device"])
    data_files.pin_paths(spec, base_dir)  # spec.toml then reads the same files from anywhere
    with reopening_a_run() if resume else nullcontext():
        data, plugin, graph, model = build_checked(spec, base_dir=base_dir)
    ctx = RunContext(cfg, run_dir, cfg["run"]["seed"], backend, debug, cfg["output"]["plots"], log)
    ctx.data_files = data_files.fingerprints(spec)
    trainer = Trainer(plugin, model, data, cfg["train"], ctx)
    metrics_path = run_dir / "metrics.jsonl"
    history = None
    if resume:  # check everything before anything is written
        given = {k for k, where in spec.positions.items() if where[0] == ORIGIN}  # the --set keys
        arrays, meta = load_checkpoint(checkpoint, cfg, given=given)
        data_files.check_unchanged(checkpoint, meta["data_files"], spec, ctx.data_files)
        trainer.compile_programs(with_optimizer=plugin.trains_by_gradient and not meta["state"]["solved"])
        snap = fit_to_model(checkpoint, arrays, meta, trainer)
        try:
            trainer.restore(snap)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise CheckpointError(f"{checkpoint}: damaged metadata ({type(exc).__name__}: {exc}); "
                                  f"the checkpoint cannot be resumed") from None
        history = read_metrics(metrics_path, trainer.state.epoch, log)
        check_resumable(trainer, cfg, run_dir)
        cuda_streams = any(isinstance(v, dict) and "cupy_draws" in v for v in meta["streams"].values())
        if meta["streams"] and (cuda_streams or cfg["run"]["device"] == "cuda"):
            log("note: the run draws its random numbers with CuPy (now or before), whose generator state cannot "
                "be saved or set: the resumed run draws fresh ones (the same on every resume from this "
                "checkpoint), so it is not bit-identical to a run that was never stopped")
    signals.stop_after_step(lambda: setattr(trainer, "stop_requested", True))
    state["phase"] = "training"
    with signals.deferred():
        if overwrite:
            cleared, aside = clear_run_files(run_dir)
            if cleared:
                log(f"note: --overwrite removed the earlier run's files from {run_dir}: {', '.join(cleared)}"
                    + (f" (its report files {', '.join(p.name for p in sorted(aside.iterdir()))} moved into {aside}: "
                       "the folder keeps no record of which it wrote, an earlier gengraph made it, and one may be "
                       "yours)" if aside is not None else ""))
        if resume:
            stale, aside = clear_report(run_dir)  # only the files its record vouches for
            if aside is not None:
                log(f"note: {run_dir} keeps no record of the report files its run wrote (an earlier gengraph made "
                    f"it), so --resume moved the earlier report into {aside} rather than delete what may be a file "
                    f"of yours: {', '.join(stale)}")
            elif stale:
                log(f"note: --resume removed the earlier report, which the continued run writes again: "
                    f"{', '.join(stale)}")
        ctx.foreign = foreign_files(run_dir)  # the user's (read before the record starts again, empty)
        start_record(run_dir)
        atomic_write(run_dir / "spec.toml", spec.to_toml())
        atomic_write(run_dir / "env.json", json.dumps(env_info(cfg), indent=1))
        if history is None:
            atomic_write(metrics_path, "")
        else:
            trainer.state.history = history
            atomic_write(metrics_path, "".join(dumps_json(r, default=jsonable) + "\n" for r in history))
    every = cfg["output"]["checkpoint_every"]

    def epoch_done(row):
        line = dumps_json(row, default=jsonable) + "\n"
        lock.check_held()
        with signals.deferred():
            with open(metrics_path, "a") as fh:
                end = fh.tell()
                try:
                    fh.write(line)
                    fh.flush()
                except OSError:  # e.g. a full disk: leave no half line behind
                    fh.truncate(end)
                    raise
            if every and row["epoch"] and row["epoch"] % every == 0:
                write_checkpoint(run_dir, trainer)
        if on_epoch is not None:
            on_epoch(row)

    if on_start is not None:  # a resumed run's bar starts at its checkpoint, beside that epoch's losses
        last = trainer.state.history[-1] if trainer.state.history else None
        on_start(trainer.state.epoch, last if last is not None and last.get("epoch") == trainer.state.epoch else None)
    try:
        with blas_threads(cfg["run"].get("threads", 1)):
            trainer.fit(on_epoch=epoch_done, on_step=on_step)
        if signals.received is not None:  # arrived during a fit that does not take steps
            raise Interrupted()
    except Interrupted:
        with signals.deferred():
            path = write_checkpoint(run_dir, trainer)
        raise RunInterrupted(run_dir, path, signals.received or signal.SIGINT) from None
    except ModelConfigError as exc:
        raise config_error(spec, exc) from None
    with signals.deferred():
        lock.check_held()
        write_checkpoint(run_dir, trainer)
    state["phase"] = "report"
    signals.stop_at_once()
    trainer.use_averaged_weights()  # after the checkpoint, which keeps the trained weights and the averages
    # (the plugin's files are listed in files.json as ctx.path hands them out)
    summary = {k: v for k, v in (trainer.state.history[-1] if trainer.state.history else {}).items()
               if k.startswith("test_")}
    try:
        with plugin_code(plugin, cfg["model"]["kind"], "report", f"; the training is in {checkpoint}: once the "
                         f"plugin is mended, gengraph run --resume {run_dir} writes the report"):
            reported = plugin.report(model, data, ctx)
    finally:  # what the plugin wrote, also when it (or a signal) stopped the report half-way
        with signals.deferred():
            record_report(run_dir, sorted(ctx.written))
    reported = checked_mapping(reported, plugin, cfg["model"]["kind"], "report")
    summary.update(reported)
    summary.update({"epochs": trainer.state.epoch, "steps": trainer.state.step,
                    "seconds": round(time.perf_counter() - t0, 3)})
    # the runner's own report files: one the user wrote there while the run trained is theirs
    refuse_foreign(run_dir, (["loss.png"] if ctx.plots else []) + ["summary.txt", "summary.json"])
    if ctx.plots:  # (a loss.png of the user's was refused before training)
        with signals.deferred():
            record_report(run_dir, pending=["loss.png"])
        try:
            loss_curves(trainer.state.history, run_dir / "loss.png", plugin.loss_label(cfg["model"]), final=summary)
        finally:
            with signals.deferred():
                record_report(run_dir, ["loss.png"])
    text = summary_text(cfg, data, summary)
    with signals.deferred():
        record_report(run_dir, written={"summary.txt": text})
        atomic_write(run_dir / "summary.txt", text)
    # last: summary.json at the checkpoint's epoch and step is what marks the report complete
    # (resume.check_resumable); written first, a run stopped after it could not be resumed and
    # kept no loss.png or summary.txt
    with signals.deferred():
        lock.check_held()
        text = dumps_json(summary, indent=1, default=jsonable)
        record_report(run_dir, written={"summary.json": text})
        atomic_write(run_dir / "summary.json", text)
        state["phase"] = "done"  # a signal from here on stops a finished run
    if note := _early_stop_note(cfg["train"], trainer.state):  # said once the run's files are whole
        log(note)
    if bad := non_finite(summary):  # written (NaN as null) for a post-mortem, but the run failed
        # a value only the report computed (a NaN of a plugin's own) was blamed on the learning rate;
        # one the training logged too (test_loss re-reported) is training's
        logged = trainer.state.history[-1] if trainer.state.history else {}
        trained = non_finite({k: v for k, v in summary.items() if k not in reported or k in logged})
        hint = ("check the data's scale and the learning rate" if trained else
                f"the {cfg['model']['kind']} plugin's report ({plugin_source(plugin)}) computed them; the training "
                f"metrics are finite")
        raise DivergenceError(f"final metrics are not finite: {', '.join(bad[:4])}"
                              f"{' ...' if len(bad) > 4 else ''} (summary.json has null for them); {hint}")
    if summary.get("samples_finite") is False:  # trained, but the sampler diverged: the run's samples are NaN
        raise DivergenceError("the samples are not finite (summary.json: samples_finite = false): the sampler "
                              "diverged; lower its step size (model.langevin.step_size; for score matching, model.score.step_ratio)")
    return summary


def _early_stop_note(train_cfg: dict, state) -> str | None:
    es = train_cfg.get("early_stopping") or {}
    patience = es.get("patience")
    if not patience or state.bad_epochs < patience or state.epoch >= train_cfg["epochs"]:
        return None
    best = -state.best if stopping_mode(es) == "max" else state.best
    by = f" by more than min_delta {es['min_delta']:g}" if es.get("min_delta") else ""
    return (f"note: early stopping after epoch {state.epoch} of {train_cfg['epochs']}: "
            f"{es.get('metric', 'test_loss')} has not improved on {best:.6g}{by} for {patience} "
            f"epoch{'s' * (patience != 1)}")


def summary_text(spec_data, data, summary) -> str:
    lines = [f"# {spec_data['run']['name']}", "", f"model: {spec_data['model']['kind']}", f"data: {data.summary()}",
             "", "final metrics:"]
    lines += [f"  {k:24s} {v:.6g}" if isinstance(v, float) else f"  {k:24s} {v}" for k, v in summary.items()]
    return "\n".join(lines) + "\n"

