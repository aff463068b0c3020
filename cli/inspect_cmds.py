"""`gengraph graph` and `gengraph gradcheck`: look at what the engine computes.

Only parsing, printing and exit codes live here; the tables, exports and the gradient
check are in gengraph.engine (tables, export, gradcheck), model building in gengraph.plugins.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import click

from .main import NamedPath, UserError, _load_plugins, check_out_file, common, user_errors, write_out_file

GRAPH_EXAMPLES = """\b
Examples:
  gengraph graph linear_perceptron                      # optimized train_step, as a table
  gengraph graph mlp_digits --stage built --collapse 1  # forward graph, one row per layer
  gengraph graph mlp_digits --format dot --out g.dot    # Graphviz text
  gengraph graph mlp_digits --render svg --out g.svg    # needs Graphviz's `dot`
  gengraph graph mlp_digits --program evaluate --format json --out g.json
"""

GRADCHECK_EXAMPLES = """\b
Examples:
  gengraph gradcheck mlp_quadratic
  gengraph gradcheck mlp_digits --param output/dense0/W --batch 4
"""

GRAPHVIZ_HELP = ("Graphviz's `dot` program was not found on PATH, so --render cannot draw the graph.\n"
                 "Install Graphviz (Debian/Ubuntu: sudo apt install graphviz; Fedora: sudo dnf install graphviz;\n"
                 "macOS: brew install graphviz; conda: conda install -c conda-forge graphviz;\n"
                 "Windows: https://graphviz.org/download/), or render the DOT text yourself:\n"
                 "  dot -T{fmt} {dot_file} -o {out}")


def _spec_models(spec, overrides, plugin_files, extra_overrides=()):
    """Load the spec, build data/plugin/graph/model (CPU), return them with the spec path."""
    from gengraph.plugins.run.loading import load
    from gengraph.plugins.run.runner import build_checked

    from gengraph.plugins.run.loading import resolve_spec

    _load_plugins(plugin_files)
    spec = resolve_spec(spec)
    loaded = load(spec, list(overrides) + list(extra_overrides))
    data, plugin, graph, model = build_checked(loaded, base_dir=Path(spec).parent)
    return loaded, data, plugin, graph, model


def compiled_programs(loaded, data, plugin, model):
    """Kept for callers of the old location; the code is in gengraph.plugins.run.inspection."""
    from gengraph.plugins.run.inspection import compiled_programs as compiled

    return compiled(loaded, data, plugin, model)


@click.command("graph", epilog=GRAPH_EXAMPLES)
@click.argument("spec", type=NamedPath())  # a folder: the spec reader says so in one line
@click.option("--program", "program", metavar="NAME",
              help="train_step (default when the model trains by gradient), evaluate, or a program "
                   "the model defines (e.g. sample_step)")
@click.option("--stage", type=click.Choice(["built", "grad", "optimized"]), default="optimized", show_default=True,
              help="built: forward graph of the outputs; grad: with gradient and update nodes, before the passes; "
                   "optimized: after the compiler passes (what runs)")
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "json", "graphml"]), default=None,
              help="output format (default: text, or dot with --render)")
@click.option("--out", "out_file", type=NamedPath(dir_okay=False), help="write to FILE instead of stdout")
@click.option("--collapse", type=click.IntRange(min=0), metavar="DEPTH",
              help="group nodes by the first DEPTH components of their name scope (one box/row per layer)")
@click.option("--render", type=click.Choice(["png", "svg"]),
              help="draw the DOT with Graphviz's `dot` (exit 1 with install hints when it is missing)")
@click.option("--batch", type=click.IntRange(min=1), default=128, show_default=True,
              help="batch size substituted for unknown dimensions in FLOP and memory estimates")
@common
@user_errors
def graph_cmd(spec, program, stage, fmt, out_file, collapse, render, batch, overrides, plugin_files, debug):
    """Print or export the computation graph of one program of SPEC (a spec file or a shipped
    spec's name, e.g. mlp_digits).

    The text table lists every node (id, op, inputs, shape, dtype, scope, parameter count,
    estimated FLOPs and the spec entry it came from), then totals: nodes by op, parameters,
    FLOPs per step, activation memory, and what each compiler pass removed. DOT output
    clusters nodes by scope and draws backward (grad/...) nodes apart from forward ones.

    Exit codes: 0 done; 1 --render without Graphviz (the DOT text is still written) or
    `dot` failed; 2 bad usage or spec.
    """
    if render and fmt not in (None, "dot"):
        raise UserError(f"--render draws DOT; it cannot be combined with --format {fmt}")
    fmt = fmt or ("dot" if render else "text")
    if out_file:
        check_out_file(out_file, "--out")  # before the spec is built and compiled
    from gengraph.engine import export, tables
    from gengraph.plugins.run.inspection import InspectError, program_stage

    loaded, data, plugin, graph, model = _spec_models(spec, overrides, plugin_files, ['run.device="cpu"'])
    try:
        view, program = program_stage(loaded, data, plugin, model, program, stage, label=spec)
    except InspectError as exc:
        raise UserError(str(exc)) from None
    if fmt == "text":
        text = tables.summary(view, batch, collapse)
    elif fmt == "dot":
        text = export.to_dot(view, batch, collapse, name=f"{Path(spec).stem}.{program}.{stage}")
    elif fmt == "json":
        text = export.to_json(view, batch, collapse) + "\n"
    else:
        text = export.to_graphml(view, batch, collapse)
    if render:
        if out_file:
            _render(text, render, out_file)
        else:  # the default name, known now that the program is
            _render(text, render, check_out_file(f"{Path(spec).stem}_{program}_{stage}.{render}",
                                                 "--render's output file"), option="--render's output file")
        return
    if out_file:
        write_out_file(out_file, lambda: Path(out_file).write_text(text))
        click.echo(f"wrote {out_file} ({fmt}, {len(view.nodes)} nodes, program {program}, stage {stage})", err=True)
    else:
        click.echo(text, nl=False)


def _render(dot_text: str, fmt: str, out, option: str = "--out") -> None:
    out_path = Path(out)
    write_out_file(out_path, lambda: None, option)  # its folder
    exe = shutil.which("dot")
    if exe is None:
        dot_file = out_path.with_suffix(".dot")
        n = 1
        while dot_file.exists():  # perhaps the user's own DOT export (another --collapse): never replaced
            n += 1
            dot_file = out_path.with_name(f"{out_path.stem}-{n}.dot")
        write_out_file(dot_file, lambda: dot_file.write_text(dot_text), option)
        raise click.ClickException(GRAPHVIZ_HELP.format(fmt=fmt, dot_file=dot_file, out=out_path)
                                   + f"\n(the DOT text was written to {dot_file})")
    proc = subprocess.run([exe, f"-T{fmt}", "-o", str(out_path)], input=dot_text, text=True, capture_output=True)
    if proc.returncode != 0:
        raise click.ClickException(f"Graphviz `dot` failed (exit {proc.returncode}): {proc.stderr.strip()}")
    click.echo(f"wrote {out_path} (rendered by {exe})", err=True)


@click.command("gradcheck", epilog=GRADCHECK_EXAMPLES)
@click.argument("spec", type=NamedPath())  # a folder: the spec reader says so in one line
@click.option("--param", "param_names", multiple=True, metavar="NAME",
              help="check only this parameter (e.g. output/dense0/W); repeatable; default: all")
@click.option("--eps", type=float, default=1e-6, show_default=True, help="finite-difference step")
@click.option("--rtol", type=float, default=1e-5, show_default=True, help="relative tolerance")
@click.option("--atol", type=float, default=1e-8, show_default=True, help="absolute tolerance")
@click.option("--seed", type=int, default=0, show_default=True,
              help="seed choosing the batch rows and the checked entries of large parameters")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="training rows in the batch the loss is evaluated on")
@click.option("--max-entries", type=click.IntRange(min=1), default=50, show_default=True,
              help="parameters with more entries are checked on a random subset of this many")
@click.option("--perturb", type=float, default=0.0, show_default=True, metavar="SD",
              help="check at the initial parameters plus N(0, SD^2) noise on every entry (a zero-initialised "
                   "layer, e.g. a U-Net's output convolution, makes every gradient upstream 0 at the initial values)")
@common
@user_errors
def gradcheck_cmd(spec, param_names, eps, rtol, atol, seed, batch, max_entries, perturb, overrides, plugin_files,
                  debug):
    """Compare the engine's gradients of SPEC's loss (SPEC: a spec file or a shipped spec's name)
    with central finite differences.

    Builds the real model in float64 on the CPU, takes BATCH random training rows and, for
    every parameter, compares the engine's gradient of the model's loss with central
    differences. An entry passes when |engine - numeric| <= atol + rtol * max(|engine|, |numeric|)
    + 8 * float64 eps * S / eps, the rounding error of the differences themselves (S: the
    largest |scalar| the loss is computed from: the loss, its sums and means).
    Random draws and stop_gradient values are computed once and held fixed, so
    stochastic losses are checked as deterministic functions of the parameters.

    Exit codes: 0 every gradient within tolerance; 1 some gradient is not; 2 bad usage or spec.
    """
    from gengraph.plugins.run.inspection import InspectError, check_gradcheck_options, gradcheck

    try:  # before the model is built, with the messages Run.gradcheck(...) gives
        check_gradcheck_options(eps=eps, rtol=rtol, atol=atol, seed=seed, batch=batch, max_entries=max_entries,
                                perturb=perturb)
    except InspectError as exc:
        raise UserError(str(exc)) from None
    loaded, data, plugin, graph, model = _spec_models(spec, overrides, plugin_files,
                                                      ['run.dtype="float64"', 'run.device="cpu"'])
    try:
        report = gradcheck(loaded, data, model, label=spec, param_names=param_names, eps=eps, rtol=rtol, atol=atol,
                           seed=seed, batch=batch, max_entries=max_entries, perturb=perturb)
    except InspectError as exc:
        raise UserError(str(exc)) from None
    if report is None:
        click.echo(f"{spec}: the {loaded.data['model']['kind']} model has no trainable parameters; nothing to check")
        return
    for line in report.lines()[:-1]:
        click.echo(line)
    if not report.ok:
        raise click.ClickException(report.verdict())
    click.echo(report.verdict())


COMMANDS = [graph_cmd, gradcheck_cmd]
