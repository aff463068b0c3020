"""`gengraph sample RUN_DIR`: draw new examples from a finished generative run.

Only parsing, printing and exit codes live here; the rebuilding and the sampling are in
gengraph.plugins.run.sampling, the pictures in gengraph.plugins.blocks.plots.
"""

from __future__ import annotations

import traceback

import io
from pathlib import Path

import click

from .main import NamedPath, UserError, _dumps, _load_plugins, check_out_file, user_errors, write_out_file

EXAMPLES = """\b
Examples:
  gengraph sample runs/vae_digits --n 64 --out samples.png           # an image grid
  gengraph sample runs/diffusion_cfg_digits --sampler ddim --steps 20 --label 3 --out s.png  # 20 DDIM steps
  gengraph sample runs/rbm_gaussian --n 1000 --out samples.npy
  gengraph sample runs/ebm_moons --n 5                                 # the numbers, on stdout
"""


@click.command("sample", epilog=EXAMPLES)
@click.argument("run_dir", type=NamedPath(file_okay=False))
@click.option("--n", "n", type=click.IntRange(min=1), default=64, show_default=True, help="number of samples")
@click.option("--label", type=int, help="class 0..K-1 of a class-conditional model")
@click.option("--guidance", type=float, help="classifier-free guidance weight (class-conditional kinds that take it)")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim"]), help="diffusion: reverse sampler (default: the spec's)")
@click.option("--steps", type=click.IntRange(min=1),
              help="sampling steps: diffusion (ddim), Gibbs sweeps (rbm), Langevin steps (ebm); default: the spec's")
@click.option("--seed", type=int, help="random seed (default: the run's seed, which reproduces its samples.npy)")
@click.option("--out", "out_file", type=NamedPath(dir_okay=False),
              help="FILE.npy (the array) or FILE.png (an image grid, or a scatter over the data for 2-D data); "
                   "default: the numbers on stdout")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="sample on this device (default: the run's)")
@click.option("--json", "as_json", is_flag=True,
              help="print one JSON object: the samples (or the file written with --out), their shape, seed, kind")
@click.option("--plugin", "plugin_files", multiple=True, type=NamedPath(dir_okay=False),
              help="load a local plugin file (for runs of a kind defined there)")
@click.option("--debug", is_flag=True, help="show full tracebacks")
@user_errors
def sample_cmd(run_dir, n, label, guidance, sampler, steps, seed, out_file, device, as_json, plugin_files, debug):
    """Draw N new examples from the finished generative run in RUN_DIR.

    The model is rebuilt from RUN_DIR/spec.toml and loaded from RUN_DIR/checkpoint.npz;
    samples are in data units (the preprocessing undone). With the run's seed, the same
    N and the spec's sampler this is exactly the run's samples.npy.

    With --json, stdout is one JSON object: run_dir, kind, n, shape, seed (the one used), label,
    options (the sampler options given), note (an unfinished run; else absent), and "samples"
    (nested lists, data units; NaN as null) or, with --out, "out" and "written". An error is
    {"error": MESSAGE, "exit_code": CODE}.

    Exit codes: 0 done; 2 not a run directory, no checkpoint, a kind that does not
    sample, or an option the kind does not take.
    """
    import numpy as np

    from gengraph.plugins.run.sampling import SampleError, check_seed, open_run, sample_from

    suffix = Path(out_file).suffix.lower() if out_file else None
    if suffix not in (None, ".npy", ".png"):
        raise UserError(f"--out {out_file}: expected a .npy or .png file")
    try:
        check_seed(seed)  # before the run is rebuilt, with the message Run.sample(seed=...) gives
    except SampleError as exc:
        raise UserError(str(exc)) from None
    if out_file is not None:
        check_out_file(out_file, "--out")  # before sampling, which may take long
    if device == "cuda":  # said of --device here, before the run is rebuilt
        from gengraph.engine.backend import BackendError, get_backend

        try:
            get_backend("cupy")
        except BackendError as exc:
            raise UserError(f"--device cuda: {exc}") from None
    _load_plugins(plugin_files)
    options = {"guidance": guidance, "sampler": sampler, "steps": steps}
    try:
        run = open_run(run_dir, backend=device)
        if run.note and not as_json:  # (with --json: in the object)
            click.echo(f"note: {run.note}", err=True)
        samples = sample_from(run, n, label=label, seed=seed, **options)
        if suffix == ".png":
            _check_plottable(run, samples)
    except SampleError as exc:
        if debug:
            traceback.print_exc()  # and still the one-line message and exit code 2
        raise UserError(str(exc)) from None
    facts = {"run_dir": str(run_dir), "kind": run.kind, "n": int(len(samples)), "shape": list(samples.shape),
             "seed": run.spec.data["run"]["seed"] if seed is None else int(seed), "label": label,
             "options": {k: v for k, v in options.items() if v is not None},
             **({"note": run.note} if run.note else {})}
    if out_file is None and as_json:
        click.echo(_dumps({**facts, "samples": samples}))  # one line: an indent puts each number on its own
        return
    if out_file is None:
        click.echo(f"# {len(samples)} samples from {run_dir} ({run.kind}), shape {samples.shape}", err=True)
        buf = io.StringIO()
        np.savetxt(buf, samples.reshape(len(samples), -1), fmt="%.6g")
        click.echo(buf.getvalue(), nl=False)
        return
    out = Path(out_file)
    if suffix == ".npy":
        from gengraph.plugins.blocks.files import save_npy

        write_out_file(out, lambda: save_npy(out, samples))
        what = f"array {samples.shape}"
    else:
        what = write_out_file(out, lambda: write_png(run, samples, out, label=label))
    if as_json:
        click.echo(_dumps({**facts, "out": str(out), "written": what}, indent=1))
        return
    click.echo(f"wrote {out} ({what}, {len(samples)} samples from {run.kind})", err=True)


def _check_plottable(run, samples):
    from gengraph.plugins.run.display import unplottable
    from gengraph.plugins.run.sampling import SampleError

    if (why := unplottable(run.data, samples)) is not None:
        raise SampleError(f"{why} (write --out FILE.npy instead)")


def write_png(run, samples, path, *, label=None) -> str:
    from gengraph.plugins.run.display import write_sample_png

    title = f"{run.kind} samples" + (f" (label {label})" if label is not None else "")
    return write_sample_png(samples, run.data, path, title=title)


COMMANDS = [sample_cmd]
