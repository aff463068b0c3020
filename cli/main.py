"""The `gengraph` click group. Commands import their heavy modules lazily, so
`gengraph --help` never imports CuPy or matplotlib. No model logic lives here."""

from __future__ import annotations

import functools
import traceback
import sys
import warnings
import json
import click

from gengraph import __version__
from gengraph.plugins.run.progress import to_devnull

EXAMPLES = {
    "run": "  gengraph run                       # the default: an MLP on the shipped digits\n"
           "  gengraph run ols_franke --out runs/ols\n"
           "  gengraph run mlp_digits --set train.optimizer.lr=0.01 --set 'model.layers[0].units=64'",
    "validate": "  gengraph validate mlp_digits --resolved",
    "plugins": "  gengraph plugins --json",
}


def _examples(name):
    return "\b\nExamples:\n" + EXAMPLES[name]


class UserError(click.UsageError):
    """A mistake in a spec, an override or a command line: one message, exit 2."""

    def __init__(self, message):
        super().__init__(message)

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", file=file, err=file is None)


def echo_on(text: str = "", err: bool = False) -> None:
    """A line of a long command's output (stdout) or progress (err); a reader that stopped reading
    (| head, 2>&1 | head) stops the lines, not the work (a sweep's trials go on to their end and
    their files)."""
    try:
        click.echo(text, err=err)
    except BrokenPipeError:
        to_devnull(sys.stderr if err else sys.stdout)


def user_errors(fn):
    """Turn spec/data mistakes into one clear message (exit 2) and failed runs into exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = ctx.params.get("debug", False)
        from gengraph.engine.errors import UserError as Mistake  # SpecError, DataError, RunDirError, ...
        from gengraph.plugins.spec.errors import SpecError, printable
        from gengraph.plugins.run.runner import RunInterrupted
        from gengraph.plugins.run.signals import Stop, exit_code, signal_name
        from gengraph.plugins.run.trainer import DivergenceError
        from gengraph.plugins.run.contract import PluginCrash

        try:
            with warnings.catch_warnings():
                if not debug:  # NumPy's overflow/invalid warnings: non-finite results are reported once, below
                    warnings.simplefilter("ignore", RuntimeWarning)
                return fn(*args, **kwargs)
        except RunInterrupted as exc:
            _interrupted(ctx, str(exc), exc.exit_code)
        except (Stop, KeyboardInterrupt) as exc:  # before or after a run: nothing of it to save
            signum = exc.signum if isinstance(exc, Stop) else 2
            _interrupted(ctx, f"interrupted by {signal_name(signum)}", exit_code(signum))
        except SpecError as exc:  # one issue per line, each already escaped
            if debug:
                traceback.print_exc()  # and still the one-line message and exit code below
            raise UserError(str(exc)) from None
        except Mistake as exc:  # DataError, ExprError, ShapeError, CheckpointError, RunDirError, ...
            if debug:
                traceback.print_exc()  # and still the one-line message and exit code below
            raise UserError(printable(str(exc))) from None
        except PluginCrash as exc:  # a plugin's own bug: where it is, not gengraph's whole traceback
            if debug:
                traceback.print_exception(exc.__cause__ or exc)
            raise click.ClickException(printable(f"{ctx.info_name} failed: {exc}")) from None
        except DivergenceError as exc:
            if debug:
                traceback.print_exc()  # and still the one-line message and exit code below
            raise click.ClickException(printable(f"run failed: {exc}")) from None
        except MemoryError as exc:  # past the estimates (a process limit, other programs' memory): the run failed
            if debug:
                traceback.print_exc()  # and still the one-line message and exit code below
            raise click.ClickException(printable(f"{ctx.info_name} failed: out of memory ({exc or 'MemoryError'}); "
                                                 "lower train.batch_size, output.samples or the sizes in [model]")) from None
        except BrokenPipeError:  # the reader stopped reading (gengraph plugins | head): nothing failed
            to_devnull(sys.stdout)
            ctx.exit(0)
        except OSError as exc:  # a full disk (ENOSPC), a folder that vanished, ...: the run failed
            if debug:
                traceback.print_exc()  # and still the one-line message and exit code below
            import errno

            full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
            where = " ".join(p for p in ("cannot write" if full else "", str(exc.filename or "")) if p)
            raise click.ClickException(printable(f"{ctx.info_name} failed: {where + ': ' if where else ''}"
                                                 f"{exc.strerror or exc}")) from None

    return wrapper


def _interrupted(ctx, message: str, code: int) -> None:
    _report_interrupt(message, code, ctx.params.get("as_json"), after_output=True)
    ctx.exit(code)


def _report_interrupt(message: str, code: int, as_json, after_output: bool = False) -> None:
    """A stopped command (exit 130/143): its message on stderr (on a line of its own after a
    command's output), or with --json the same JSON object on stdout as every other failure."""
    if as_json:
        click.echo(json.dumps({"error": message, "exit_code": code}))
    else:
        click.echo(f"\n{message}" if after_output else message, err=True)


def _dumps(value, **kw) -> str:
    from gengraph.plugins.blocks.files import dumps_json

    return dumps_json(value, **kw)


def _load_plugins(paths):
    from gengraph.plugins.run.loading import load_plugin_file

    for p in paths:
        load_plugin_file(p)


def check_out_dir(path, option: str) -> None:
    """UserError (exit 2) naming the option when the output folder cannot be used."""
    from gengraph.plugins.blocks.files import writable_dir

    if (why := writable_dir(path)) is not None:
        raise UserError(f"{option} {str(path)!r}: {why}")


def check_out_file(path, option: str = "--out"):
    """The Path of an output file, or UserError (exit 2) naming the option and the requested
    path when it cannot be written there (a NUL byte, a folder of that name, a file where a
    folder should be, a folder that cannot be written in). Creates no folder: write_out_file does."""
    import os
    import tempfile
    from pathlib import Path

    from gengraph.plugins.spec.errors import printable

    text = os.fspath(path)

    def refuse(why):
        return UserError(f"{option} {printable(text)}: {why}")

    if "\0" in text:
        raise refuse("the path contains a NUL byte")
    p = Path(text)
    folder = p.parent
    try:
        if p.is_dir():
            raise refuse("is a folder; name a file")
        probe = folder  # the nearest folder that exists
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise refuse(f"{printable(str(probe))} exists and is not a folder")
        if probe == folder:  # try it: a read-only mount refuses even root
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".probe.", suffix=".tmp")
            os.close(fd)
            os.unlink(tmp)
        elif not os.access(probe, os.W_OK | os.X_OK):
            raise refuse(f"cannot create the folder {printable(str(folder))}: {printable(str(probe))} is not writable")
    except OSError as exc:
        raise refuse(f"cannot write in {printable(str(folder))}: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. a name the OS cannot take
        raise refuse(f"not a usable path: {exc}") from None
    return p


def write_out_file(path, write, option: str = "--out"):
    """Create the output file's folder and return write(). An OSError names the requested file (never
    the temporary one written first): a path that cannot be written is a UserError (exit 2), a
    full disk or another failure of the write a ClickException (exit 1)."""
    import errno
    from pathlib import Path

    from gengraph.plugins.spec.errors import printable

    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return write()
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.EISDIR,
                         errno.ENOENT, errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL):
            raise UserError(printable(f"{option} {path}: cannot write it: {why}")) from None
        name = click.get_current_context().info_name
        raise click.ClickException(printable(f"{name} failed: cannot write {path}: {why}")) from None


def _show_error(exc: click.ClickException, as_json: bool) -> None:
    """Every error in one style: `error: MESSAGE` on stderr (click's usage line kept), or with
    --json a JSON object on stdout."""
    if as_json:
        click.echo(json.dumps({"error": exc.format_message(), "exit_code": exc.exit_code}))
        return
    import io

    buf = io.StringIO()
    exc.show(file=buf)
    text = buf.getvalue()
    text = "\n".join("error: " + line[len("Error: "):] if line.startswith("Error: ") else line
                     for line in text.split("\n"))
    click.echo(text, err=True, nl=False)


class _Group(click.Group):
    """click's group, with its error messages in gengraph's style (see _show_error)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        import sys

        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            _show_error(exc, "--json" in argv)
            sys.exit(exc.exit_code)
        except click.Abort as exc:
            if isinstance(exc.__context__, KeyboardInterrupt):  # Ctrl-C before a command's own handling
                _report_interrupt("interrupted by SIGINT", 130, "--json" in argv)
                sys.exit(130)
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


class NamedPath(click.Path):
    """click.Path that refuses an empty name, which commands read as the working directory or as
    no option at all; said alike for every path argument and option."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():  # as rundir.check_path: nothing to name a file by
            self.fail("the name is empty", param, ctx)
        if isinstance(value, str) and "\0" in value:
            self.fail("contains a NUL byte, which no file name can hold", param, ctx)
        return super().convert(value, param, ctx)


class DeviceChoice(click.Choice):
    """`run --device`: cpu or cuda (listed in --help, completed by the shell); any other value is
    refused with the message gengraph.run(device=...) gives (api.check_device)."""

    def __init__(self):
        super().__init__(["cpu", "cuda"])

    def convert(self, value, param, ctx):
        if value not in self.choices:
            from gengraph.plugins.run.api import check_device
            from gengraph.plugins.spec.errors import SpecError

            try:
                check_device(value)
            except SpecError as exc:
                raise UserError(str(exc)) from None
        return super().convert(value, param, ctx)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gengraph")
def main():
    """gengraph: declare a model in TOML, differentiate its graph, run it.

    \b
    Shell completion (bash): eval "$(_GENGRAPH_COMPLETE=bash_source gengraph)"
    (zsh: zsh_source, fish: fish_source).
    """


_common = [
    click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                 help="override a spec key, e.g. --set train.optimizer.lr=0.01 (VALUE is a TOML literal)"),
    click.option("--plugin", "plugin_files", multiple=True, type=NamedPath(dir_okay=False),
                 help="load a local plugin file (only files named here are ever imported)"),
    click.option("--debug", is_flag=True, help="show full tracebacks"),
]


def common(fn):
    for opt in reversed(_common):
        fn = opt(fn)
    return fn


@main.command(epilog=_examples("run"))
@click.argument("spec", required=False, type=NamedPath())  # a folder: the spec reader says so
@click.option("--out", "out_dir", metavar="DIR", help="run directory (default: output.dir/run.name); "
              "it must be new, empty, or be replaced with --overwrite")
@click.option("--device", type=DeviceChoice(), help="override run.device")
@click.option("--resume", "resume_dir", metavar="DIR",
              help="continue the run in this directory from its checkpoint (SPEC defaults to its spec.toml); "
                   "only train.epochs, output.*, run.name, run.threads and run.device may change")
@click.option("--overwrite", is_flag=True, help="replace the run already in the run directory (its files only)")
@click.option("--quiet", "-q", is_flag=True, help="no progress output (the run directory and final metrics still print)")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@common
@user_errors
def run(spec, out_dir, device, resume_dir, overwrite, quiet, as_json, overrides, plugin_files, debug):
    """Train the model a SPEC declares and write its run directory.

    Without SPEC, runs the built-in default (specs/mlp_digits.toml on the shipped digits).
    SPEC is a spec file or a shipped spec's name (mlp_digits, vae_digits, ...: the files in specs/).

    \b
    A run directory holds one run: a directory that holds another run is refused unless
    --overwrite (which removes that run's files, never yours) or --resume, and a second
    process is refused while the first holds the directory's lock (gengraph.lock).
    Ctrl-C (SIGINT) or SIGTERM writes a checkpoint and exits 130 or 143; --resume then
    continues bit-identically. A checkpoint that is damaged or belongs to another spec
    is refused with exit 2 and nothing in the directory is rewritten.
    """
    from gengraph.plugins.run.signals import SignalGuard

    # a signal while the spec and plugins load: exit 130/143, no traceback; after a run is
    # interrupted, later signals are ignored until the process has exited with its code
    with SignalGuard(ignore_when_stopped=True) as guard:
        _run(guard, spec, out_dir, device, resume_dir, overwrite, quiet, as_json, overrides, plugin_files, debug)


def _run(guard, spec, out_dir, device, resume_dir, overwrite, quiet, as_json, overrides, plugin_files, debug):
    from pathlib import Path

    from gengraph.plugins.run.api import prepare_run
    from gengraph.plugins.run.progress import Progress
    from gengraph.plugins.run.rundir import check_path
    from gengraph.plugins.run.runner import execute
    from gengraph.plugins.spec.errors import printable

    if resume_dir is not None:
        check_path(resume_dir)
        if overwrite:
            raise UserError("--resume continues the run in a directory and --overwrite replaces it: pass one")
        if out_dir is not None and Path(out_dir).resolve() != Path(resume_dir).resolve():
            raise UserError("--resume DIR is the run directory: leave out --out or give the same directory")
    if out_dir is not None:
        check_path(out_dir)
    _load_plugins(plugin_files)
    if resume_dir and spec is None and not (Path(resume_dir) / "spec.toml").is_file():
        raise UserError(f"--resume {resume_dir}: no run here (no spec.toml), so nothing to resume")
    # shared with gengraph.run(): SPEC may also be a shipped spec's name (mlp_digits)
    loaded, run_dir, base_dir = prepare_run(spec, list(overrides), out=resume_dir or out_dir,
                                            resume=bool(resume_dir), device=device)
    check_path(run_dir)
    if loaded.raw.get("sweep") is not None and not as_json:
        click.echo(f"note: {loaded.file} has a [sweep] table, which `gengraph run` ignores; "
                   "run the sweep with `gengraph sweep`", err=True)
    progress = Progress(loaded.data["train"]["epochs"], quiet=quiet or as_json)  # -q: no progress, results still shown
    guard.raising = False  # from here on the run handles signals (and reports them as RunInterrupted)
    try:
        summary = execute(loaded, run_dir, debug=debug, on_epoch=progress.epoch, on_start=progress.start,
                          base_dir=base_dir,
                          resume=bool(resume_dir), overwrite=overwrite,
                          log=lambda *a, **k: echo_on(" ".join(map(str, a)), err=True))
        progress.finish()
    finally:
        progress.close()
    if as_json:
        click.echo(_dumps({"run_dir": str(run_dir), "summary": summary}, indent=1))
    else:
        click.echo(f"run directory: {printable(str(run_dir))}")
        for k, v in summary.items():
            if isinstance(v, float):
                click.echo(f"  {k:22s} {v:.6g}")


@main.command(epilog=_examples("validate"))
@click.argument("spec", type=NamedPath())  # a folder: the spec reader says so in one line
@click.option("--resolved", is_flag=True, help="print the resolved spec (defaults filled, overrides applied)")
@click.option("--json", "as_json", is_flag=True, help="print the resolved spec as JSON")
@common
@user_errors
def validate(spec, resolved, as_json, overrides, plugin_files, debug):
    """Check a SPEC against the installed plugins; report every problem of its keys and values at
    once (unknown keys, types, values out of range, an optimizer's or schedule's hyper-parameters
    among them), then (once those pass) what needs the model built: data files, layer shapes, and
    settings that depend on each other (nesterov with momentum 0, a cosine schedule's min_lr above
    lr or warm-up as long as total_steps).

    SPEC is a spec file or a shipped spec's name (mlp_digits, ...: the files in specs/). A finished
    run's folder or its own spec.toml is checked as a new run from that spec would be."""
    from gengraph.plugins.run.api import check_run_name, load_spec_any
    from gengraph.plugins.run.loading import spec_or_run
    from gengraph.plugins.run.runner import build_checked
    from gengraph.plugins.spec.errors import SpecError, SpecIssue, printable

    _load_plugins(plugin_files)
    # a finished run's own spec.toml is checked as `gengraph run` would read it for a new run (today's
    # rules); when it fails, a note says how the commands that reopen the run read it
    # (a run folder stands for its spec.toml, as for graph and gradcheck: it was refused as "a directory")
    spec, run_dir = spec_or_run(spec)
    try:
        loaded, path, base_dir = load_spec_any(spec, list(overrides))  # as gengraph.validate(): a path or a name
        check_run_name(loaded)  # as `gengraph run SPEC` would use it
        build_checked(loaded, base_dir=base_dir)  # data files and shapes are checked too
    except SpecError as exc:
        if run_dir is None:
            raise
        raise SpecError(exc.issues + [SpecIssue(None, None, None, "", run_spec_note(run_dir))]) from None
    if loaded.raw.get("sweep") is not None:  # every trial of the sweep, its metric and mode too
        from gengraph.plugins.sweep.sweep import plan_sweep

        plan_sweep(str(path), list(overrides), plugin_files=plugin_files)
    if as_json:
        click.echo(_dumps({"valid": True, "spec": loaded.data}, indent=1, default=str))
    elif resolved:
        click.echo(loaded.to_toml(), nl=False)
    else:
        click.echo(f"{printable(str(path or spec))}: valid ({loaded.data['model']['kind']} on {loaded.data['data']['source']})")


def run_spec_note(run_dir) -> str:
    """What `validate` adds to the errors of a finished run's own spec.toml."""
    return (f"note: {run_dir / 'spec.toml'} is the spec of the run in {run_dir}: validate checks it as a new run "
            "would read it; graph, gradcheck, sample and run --resume read it as that run was made (the data "
            "checks of its time; sample and --resume also refuse data files changed since)")


@main.command(epilog=_examples("plugins"))
@click.option("--json", "as_json", is_flag=True, help="machine-readable listing")
@click.option("--plugin", "plugin_files", multiple=True, type=NamedPath(dir_okay=False),
              help="also load a local plugin file")
@click.option("--debug", is_flag=True, help="show full tracebacks")
@user_errors
def plugins(as_json, plugin_files, debug):
    """List installed model kinds (and broken ones), data sources, optimizers and layers."""
    from gengraph.plugins.run.loading import inventory

    _load_plugins(plugin_files)
    inv = inventory()
    if as_json:
        click.echo(json.dumps(inv, indent=1))
        return
    click.echo("model kinds:")
    for name, info in inv["models"].items():
        click.echo(f"  {name:14s} {info['help']}")
    for name, err in inv["broken"].items():
        click.echo(f"  {name:14s} BROKEN: {err}")
    for section in ("data_sources", "optimizers", "schedules", "layers", "losses", "activations", "initializers"):
        click.echo(f"{section.replace('_', ' ')}: {', '.join(inv[section])}")


def _register_extra_commands():
    """Commands defined in their own modules (graph inspection, gradcheck, sweeps, sampling)."""
    import importlib

    for module in ("gengraph.cli.inspect_cmds", "gengraph.cli.sweep_cmd", "gengraph.cli.sample_cmd"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        for cmd in mod.COMMANDS:
            main.add_command(cmd)


_register_extra_commands()
