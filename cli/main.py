"""The `gengraph` click group. Commands import their heavy modules lazily, so
`gengraph --help` never imports CuPy or matplotlib. No model logic lives here."""

from __future__ import annotations

import functools
import json
import click

from gengraph import __version__

EXAMPLES = {
    "run": "  gengraph run                       # the default: an MLP on the shipped digits\n"
           "  gengraph run specs/ols_franke.toml --out runs/ols\n"
           "  gengraph run specs/mlp_digits.toml --set train.optimizer.lr=0.01 --set model.layers[0].units=64",
    "validate": "  gengraph validate specs/mlp_digits.toml --resolved",
    "plugins": "  gengraph plugins --json",
}


def _examples(name):
    return "\b\nExamples:\n" + EXAMPLES[name]


class UserError(click.UsageError):
    """A mistake in a spec, an override or a command line: one message, exit 2."""

    def __init__(self, message):
        super().__init__(message)

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


def user_errors(fn):
    """Turn spec/data mistakes into one clear message (exit 2) and failed runs into exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = ctx.params.get("debug", False)
        from gengraph.engine.errors import UserError as Mistake  # SpecError, DataError, ExprError, ShapeError, ...
        from gengraph.plugins.run.runner import RunInterrupted
        from gengraph.plugins.run.trainer import DivergenceError

        try:
            return fn(*args, **kwargs)
        except RunInterrupted as exc:
            click.echo(f"\n{exc}; continue with --resume", err=True)
            ctx.exit(130)
        except Mistake as exc:
            if debug:
                raise
            raise UserError(str(exc)) from None
        except DivergenceError as exc:
            if debug:
                raise
            raise click.ClickException(f"run failed: {exc}") from None

    return wrapper


def _load_plugins(paths):
    from gengraph.plugins.run.loading import load_plugin_file

    for p in paths:
        load_plugin_file(p)


def _spec_path(spec):
    if spec is not None:
        return spec
    from gengraph.plugins.run.loading import default_spec

    return str(default_spec())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    click.option("--plugin", "plugin_files", multiple=True, type=click.Path(dir_okay=False),
                 help="load a local plugin file (only files named here are ever imported)"),
    click.option("--debug", is_flag=True, help="show full tracebacks"),
]


def common(fn):
    for opt in reversed(_common):
        fn = opt(fn)
    return fn


@main.command(epilog=_examples("run"))
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="run directory (default: output.dir/run.name)")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="override run.device")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False),
              help="continue the run in this directory from its checkpoint (SPEC defaults to its spec.toml)")
@click.option("--quiet", "-q", is_flag=True, help="no progress output")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@common
@user_errors
def run(spec, out_dir, device, resume_dir, quiet, as_json, overrides, plugin_files, debug):
    """Train the model a SPEC declares and write its run directory.

    Without SPEC, runs the built-in default (specs/mlp_digits.toml on the shipped digits).
    Ctrl-C writes a checkpoint and exits 130; --resume continues bit-identically.
    """
    from pathlib import Path

    from gengraph.plugins.run.loading import load
    from gengraph.plugins.run.progress import Progress
    from gengraph.plugins.run.runner import execute

    _load_plugins(plugin_files)
    overrides = list(overrides) + ([f'run.device="{device}"'] if device else [])
    if resume_dir and spec is None:
        spec = str(Path(resume_dir) / "spec.toml")
    path = _spec_path(spec)
    loaded = load(path, overrides)
    name = loaded.data["run"]["name"] or Path(path).stem
    loaded.data["run"]["name"] = name
    run_dir = Path(resume_dir or out_dir or Path(loaded.data["output"]["dir"]) / name)
    progress = Progress(loaded.data["train"]["epochs"], quiet=quiet or as_json)
    try:
        summary = execute(loaded, run_dir, debug=debug, on_epoch=progress.epoch, base_dir=Path(path).parent,
                          resume=bool(resume_dir))
    finally:
        progress.close()
    if as_json:
        click.echo(json.dumps({"run_dir": str(run_dir), "summary": summary}, indent=1))
    elif not quiet:
        click.echo(f"run directory: {run_dir}")
        for k, v in summary.items():
            if isinstance(v, float):
                click.echo(f"  {k:22s} {v:.6g}")


@main.command(epilog=_examples("validate"))
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--resolved", is_flag=True, help="print the resolved spec (defaults filled, overrides applied)")
@click.option("--json", "as_json", is_flag=True, help="print the resolved spec as JSON")
@common
@user_errors
def validate(spec, resolved, as_json, overrides, plugin_files, debug):
    """Check a SPEC against the installed plugins; report every problem at once."""
    from pathlib import Path

    from gengraph.plugins.run.loading import load
    from gengraph.plugins.run.runner import build_checked

    _load_plugins(plugin_files)
    loaded = load(spec, list(overrides))
    build_checked(loaded, base_dir=Path(spec).parent)  # data files and shapes are checked too
    if as_json:
        click.echo(json.dumps({"valid": True, "spec": loaded.data}, indent=1, default=str))
    elif resolved:
        click.echo(loaded.to_toml(), nl=False)
    else:
        click.echo(f"{spec}: valid ({loaded.data['model']['kind']} on {loaded.data['data']['source']})")


@main.command(epilog=_examples("plugins"))
@click.option("--json", "as_json", is_flag=True, help="machine-readable listing")
@click.option("--plugin", "plugin_files", multiple=True, type=click.Path(dir_okay=False),
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
    """Commands defined in their own modules (graph inspection, gradcheck, sweeps)."""
    import importlib

    for module in ("gengraph.cli.inspect_cmds", "gengraph.cli.sweep_cmd"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        for cmd in mod.COMMANDS:
            main.add_command(cmd)


_register_extra_commands()
