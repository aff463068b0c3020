"""`gengraph graph` and `gengraph gradcheck`: look at what the engine computes.

Only parsing, printing and exit codes live here; the tables, exports and the gradient
check are in gengraph.engine (tables, export, gradcheck), model building in gengraph.plugins.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import click

from .main import NamedPath, UserError, _dumps, _load_plugins, check_out_file, common, user_errors, write_out_file

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
    """Load the spec, build data/plugin/graph/model (CPU) and return them. SPEC may also be a run
    folder or a run's own spec.toml (loading.spec_or_run): read as reopening that run (as `gengraph
    sample RUN` and Run.graph read it): the data checks of its time, on the data files as they are
    now, not refused by a data check made after the run was."""
    from contextlib import nullcontext

    from gengraph.plugins.datasets.base import reopening_a_run
    from gengraph.plugins.run.loading import load, spec_or_run
    from gengraph.plugins.run.runner import build_checked

    _load_plugins(plugin_files)
    spec, run_dir = spec_or_run(spec)
    loaded = load(spec, list(overrides) + list(extra_overrides))
    with reopening_a_run() if run_dir is not None else nullcontext():
        data, plugin, graph, model = build_checked(loaded, base_dir=Path(spec).parent)
    return loaded, data, plugin, graph, model


def _spec_label(spec) -> tuple[str, str]:
    """(how the output names SPEC, the stem of a file name made from it): a run folder or a run's
    spec.toml is named by its spec file and its folder's name (runs/vae/spec.toml, vae), as Run.graph
    does; any other SPEC as the user gave it."""
    from gengraph.plugins.run.loading import spec_or_run

    text, run_dir = spec_or_run(spec)
    if run_dir is None:
        return str(spec), Path(str(spec)).stem
    label = text if Path(str(spec)).is_dir() else str(spec)
    return label, run_dir.resolve().name or Path(text).parent.name or "run"


def compiled_programs(loaded, data, plugin, model):
    """Kept for callers of the old location; the code is in gengraph.plugins.run.inspection."""
    from gengraph.plugins.run.inspection import compiled_programs as compiled

    return compiled(loaded, data, plugin, model)


@click.command("graph", epilog=GRAPH_EXAMPLES)
@click.argument("spec", type=NamedPath())  # a run folder: its spec.toml; another folder: one line
@click.option("--program", "program", metavar="NAME",
              help="train_step (default when the model trains by gradient), evaluate, or a program "
                   "the model defines (e.g. sample_step)")
@click.option("--stage", type=click.Choice(["built", "grad", "optimized"]), default="optimized", show_default=True,
              help="built: forward graph of the outputs; grad: with gradient and update nodes, before the passes; "
                   "optimized: after the compiler passes (what runs)")
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "json", "graphml"]), default=None,
              help="output format (default: text; dot with --render; json with --json)")
@click.option("--out", "out_file", type=NamedPath(dir_okay=False), help="write to FILE instead of stdout")
@click.option("--collapse", type=click.IntRange(min=0), metavar="DEPTH",
              help="group nodes by the first DEPTH components of their name scope (one box/row per layer)")
@click.option("--render", type=click.Choice(["png", "svg"]),
              help="draw the DOT with Graphviz's `dot` (exit 1 with install hints when it is missing)")
@click.option("--batch", type=click.IntRange(min=1), default=128, show_default=True,
              help="batch size substituted for unknown dimensions in FLOP and memory estimates")
@click.option("--json", "as_json", is_flag=True,
              help="print one JSON object: the totals (nodes, parameters, FLOPs, bytes, passes) and the graph "
                   "in --format (node-link data for json), or the file written with --out/--render")
@common
@user_errors
def graph_cmd(spec, program, stage, fmt, out_file, collapse, render, batch, as_json, overrides, plugin_files, debug):
    """Print or export the computation graph of one program of SPEC (a spec file or a shipped
    spec's name, e.g. mlp_digits; or a finished run: its folder or its spec.toml, read as the run
    was made: the data checks of its time, on the data files as they are now).

    The text table lists every node (id, op, inputs, shape, dtype, scope, parameter count,
    estimated FLOPs and the spec entry it came from), then totals: nodes by op, parameters,
    FLOPs per step, activation memory, and what each compiler pass removed. DOT output
    clusters nodes by scope and draws backward (grad/...) nodes apart from forward ones.

    With --json, stdout is one JSON object: spec, kind, program, stage, batch, collapse, format,
    the totals (nodes, ops, leaves, backward_nodes, nodes_by_op, parameters, parameter_tensors,
    state, flops, activation_bytes, peak_bytes; passes: name, nodes_before, nodes_after) and
    either "graph" (the graph in --format: node-link data for json, else the text) or "out" (the
    file written; "rendered_by": the `dot` program with --render). An error is
    {"error": MESSAGE, "exit_code": CODE}.

    Exit codes: 0 done; 1 --render without Graphviz (the DOT text is still written) or
    `dot` failed; 2 bad usage or spec.
    """
    if render and fmt not in (None, "dot"):
        raise UserError(f"--render draws DOT; it cannot be combined with --format {fmt}")
    fmt = fmt or ("dot" if render else "json" if as_json else "text")
    if out_file:
        check_out_file(out_file, "--out")  # before the spec is built and compiled
    from gengraph.engine import export, tables
    from gengraph.plugins.run.inspection import InspectError, graph_facts, program_stage

    label, stem = _spec_label(spec)
    loaded, data, plugin, graph, model = _spec_models(spec, overrides, plugin_files, ['run.device="cpu"'])
    try:
        view, program = program_stage(loaded, data, plugin, model, program, stage, label=label)
    except InspectError as exc:
        raise UserError(str(exc)) from None
    if fmt == "text":
        text = tables.summary(view, batch, collapse)
    elif fmt == "dot":
        text = export.to_dot(view, batch, collapse, name=f"{stem}.{program}.{stage}")
    elif fmt == "json":
        text = export.to_json(view, batch, collapse) + "\n"
    else:
        text = export.to_graphml(view, batch, collapse)
    facts = {"spec": label, "kind": loaded.data["model"]["kind"], **graph_facts(view, batch), "collapse": collapse,
             "format": fmt}
    if render:
        if out_file:
            out, exe = _render(text, render, out_file, quiet=as_json)
        else:  # the default name, known now that the program is
            out, exe = _render(text, render, check_out_file(f"{stem}_{program}_{stage}.{render}",
                                                            "--render's output file"),
                               option="--render's output file", quiet=as_json)
        if as_json:
            click.echo(_dumps({**facts, "out": str(out), "rendered_by": exe}, indent=1))
        return
    if out_file:
        write_out_file(out_file, lambda: Path(out_file).write_text(text))
        if as_json:
            click.echo(_dumps({**facts, "out": str(out_file)}, indent=1))
        else:
            click.echo(f"wrote {out_file} ({fmt}, {len(view.nodes)} nodes, program {program}, stage {stage})",
                       err=True)
    elif as_json:
        import json

        click.echo(_dumps({**facts, "graph": json.loads(text) if fmt == "json" else text}, indent=1))
    else:
        click.echo(text, nl=False)


def _render(dot_text: str, fmt: str, out, option: str = "--out", quiet: bool = False) -> tuple[Path, str]:
    """Draw the DOT text into `out` with Graphviz; (the file, the `dot` program that drew it)."""
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
    if not quiet:
        click.echo(f"wrote {out_path} (rendered by {exe})", err=True)
    return out_path, exe


@click.command("gradcheck", epilog=GRADCHECK_EXAMPLES)
@click.argument("spec", type=NamedPath())  # a run folder: its spec.toml; another folder: one line
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
@click.option("--json", "as_json", is_flag=True,
              help="print the report as one JSON object (settings, loss, one entry per parameter, verdict)")
@common
@user_errors
def gradcheck_cmd(spec, param_names, eps, rtol, atol, seed, batch, max_entries, perturb, as_json, overrides,
                  plugin_files, debug):
    """Compare the engine's gradients of SPEC's loss (SPEC: a spec file or a shipped spec's name;
    or a finished run: its folder or its spec.toml, read as the run was made) with central finite
    differences.

    Builds the real model in float64 on the CPU, takes BATCH random training rows and, for
    every parameter, compares the engine's gradient of the model's loss with central
    differences. An entry passes when |engine - numeric| <= atol + rtol * max(|engine|, |numeric|)
    + 8 * float64 eps * S / eps, the rounding error of the differences themselves (S: the
    largest |scalar| the loss is computed from: the loss, its sums and means).
    Random draws and stop_gradient values are computed once and held fixed, so
    stochastic losses are checked as deterministic functions of the parameters.

    With --json, stdout is one JSON object: spec, kind, ok, loss, rows, eps, rtol, atol, seed,
    max_entries, perturb, roundoff_floor, frozen_random, frozen_stop_gradient, params (per
    parameter: name, shape, checked, total, max_abs_err, max_rel_err, ok, zero, result, passed_by)
    and verdict; when a gradient fails, also "error" (the verdict) and "exit_code": 1. Any other
    error is {"error": MESSAGE, "exit_code": CODE}.

    Exit codes: 0 every gradient within tolerance; 1 some gradient is not; 2 bad usage or spec.
    """
    from gengraph.plugins.run.inspection import InspectError, check_gradcheck_options, gradcheck

    try:  # before the model is built, with the messages Run.gradcheck(...) gives
        check_gradcheck_options(eps=eps, rtol=rtol, atol=atol, seed=seed, batch=batch, max_entries=max_entries,
                                perturb=perturb)
    except InspectError as exc:
        raise UserError(str(exc)) from None
    label, _stem = _spec_label(spec)
    loaded, data, plugin, graph, model = _spec_models(spec, overrides, plugin_files,
                                                      ['run.dtype="float64"', 'run.device="cpu"'])
    try:
        report = gradcheck(loaded, data, model, label=label, param_names=param_names, eps=eps, rtol=rtol, atol=atol,
                           seed=seed, batch=batch, max_entries=max_entries, perturb=perturb)
    except InspectError as exc:
        raise UserError(str(exc)) from None
    if report is None:
        kind = loaded.data['model']['kind']
        verdict = f"the {kind} model has no trainable parameters; nothing to check"
        if as_json:
            click.echo(_dumps({"spec": label, "kind": kind, "ok": True, "params": [], "verdict": verdict}, indent=1))
        else:
            click.echo(f"{label}: {verdict}")
        return
    if as_json:  # one object, the failure's "error" and "exit_code" in it (as every --json error has them)
        failed = {} if report.ok else {"error": report.verdict(), "exit_code": 1}
        click.echo(_dumps({**report.as_dict(), **failed}, indent=1))
        if failed:
            click.get_current_context().exit(1)
        return
    for line in report.lines()[:-1]:
        click.echo(line)
    if not report.ok:
        raise click.ClickException(report.verdict())
    click.echo(report.verdict())


COMMANDS = [graph_cmd, gradcheck_cmd]
