"""`gengraph sweep`: run a spec's [sweep] grid or random search; parsing, printing, exit codes.

The sweep itself (expansion, trials, executors, records, plots) lives in
gengraph.plugins.sweep.sweep.
"""

from __future__ import annotations


import click

from .main import NamedPath, UserError, _load_plugins, _report_interrupt, check_out_dir, common, echo_on, user_errors

SWEEP_EXAMPLES = """\b
Examples:
  gengraph sweep sweep_ridge_franke              # degree x lambda grid, 2 local workers
  gengraph sweep ridge_franke --axis model.lam=1e-4,1e-3,1e-2 --axis model.degree=3,5,7
  gengraph sweep sweep_ridge_franke --set data.noise=0.2 --out runs/noisy --workers 1
  gengraph sweep sweep_ridge_franke --resume     # skip trials already recorded ok
  gengraph sweep sweep_ridge_franke --overwrite  # replace the sweep recorded there
  gengraph sweep sweep_ridge_franke --scheduler local-dask --workers 2
  gengraph sweep sweep_ridge_franke --scheduler tcp://127.0.0.1:8786
"""


@click.command(epilog=SWEEP_EXAMPLES)
@click.argument("spec", type=NamedPath())  # a folder: the spec reader says so in one line
@click.option("--axis", "axes", multiple=True, metavar="KEY=V1,V2,...",
              help="add (or replace) a sweep axis, e.g. --axis model.lam=1e-4,1e-3 "
                   "(each value a TOML literal; random sweeps also take KEY={low=1e-4,high=1e-1,log=true})")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="parallel trials: local processes (default: min(2, CPUs); 1 runs in this process), "
                   "or the LocalCluster's worker count with --scheduler local-dask")
@click.option("--scheduler", metavar="tcp://HOST:PORT|local-dask",
              help="run the trials on a Dask distributed cluster (needs: pip install 'gengraph[dask]')")
@click.option("--out", "out_dir", metavar="DIR", type=NamedPath(),
              help="sweep directory (default: output.dir/<sweep.name>, else output.dir/<the spec's file name>-sweep)")
@click.option("--resume", is_flag=True, help="continue the sweep in the sweep directory: skip the trials that "
                                             "sweep.jsonl records as finished ok")
@click.option("--overwrite", is_flag=True, help="replace the sweep already in the sweep directory (its files and "
                                                "the gengraph files of its trial folders only)")
@click.option("--quiet", "-q", is_flag=True, help="print nothing but errors")
@click.option("--json", "as_json", is_flag=True, help="print the summary (sweep.json) as JSON")
@common
@user_errors
def sweep(spec, axes, workers, scheduler, out_dir, resume, overwrite, quiet, as_json, overrides, plugin_files,
          debug):
    """Run every trial of the [sweep] table in SPEC (a spec file or a shipped spec's name, e.g.
    sweep_ridge_franke) and rank them by its metric.

    Each trial is the spec with --set overrides and its own axis values applied,
    checked like --set before anything runs, and run into an ordinary run directory
    OUT/TRIAL/. OUT gets sweep.jsonl (one line per finished trial), summary.txt and
    sweep.json (ranked), and heatmap.png (2-axis grids) or curve.png (1 axis).
    A failed trial is recorded and the others go on; the exit code is then 1.

    \b
    A sweep directory holds one sweep: a directory that holds another sweep is refused
    unless --resume or --overwrite (which removes that sweep's files, never yours), and a
    second process is refused while the first holds the directory's lock (gengraph.lock).
    Ctrl-C (SIGINT) or SIGTERM stops the workers and exits 130 or 143 with the finished
    trials recorded; --resume then runs the rest.
    """
    from gengraph.plugins.run.signals import SignalGuard
    from gengraph.plugins.sweep import sweep as sw

    # a signal while the spec loads and the trials are checked: exit 130/143, no traceback; after
    # the sweep is interrupted, later signals are ignored until the process has exited with its code
    try:
        with SignalGuard(ignore_when_stopped=True):
            _sweep(sw, spec, axes, workers, scheduler, out_dir, resume, overwrite, quiet, as_json, overrides,
                   plugin_files)
    except sw.SweepInterrupted as exc:  # with --json, the JSON object of every other failure on stdout
        _report_interrupt(f"{exc}; continue with --resume", exc.exit_code, as_json, after_output=True)
        click.get_current_context().exit(exc.exit_code)


def _sweep(sw, spec, axes, workers, scheduler, out_dir, resume, overwrite, quiet, as_json, overrides, plugin_files):
    if resume and overwrite:
        raise UserError("--resume continues the sweep in the sweep directory and --overwrite replaces it: pass one")
    if scheduler is not None and scheduler != "local-dask" and "://" not in scheduler:
        raise UserError(f"--scheduler: expected tcp://HOST:PORT or local-dask, found {scheduler!r}")
    from gengraph.plugins.run.loading import resolve_spec

    _load_plugins(plugin_files)
    spec = resolve_spec(spec)
    plan = sw.plan_sweep(spec, list(overrides), list(axes), out_dir=out_dir, plugin_files=plugin_files)
    check_out_dir(plan.out_dir, "--out" if out_dir else "output.dir")
    n_workers = workers or sw.default_workers()
    chatty = not (quiet or as_json)

    def on_start():  # the folder is claimed (locked, not refused): the trials start
        if chatty:
            where = (f"Dask scheduler {scheduler}" if scheduler and scheduler != "local-dask"
                     else f"a local Dask cluster of {n_workers} worker(s)" if scheduler
                     else "this process" if n_workers == 1 else f"{n_workers} local worker processes")
            echo_on(f"{sw.header(plan)}; running on {where}", err=True)

    width = len(str(len(plan.trials)))

    def on_result(record, done, total):
        if not chatty:
            return
        if record.get("skipped"):
            echo_on(f"[{done:>{width}}/{total}] done    {record['trial']} (recorded in sweep.jsonl)", err=True)
            return
        if record["status"] == "ok":
            value = record["metrics"].get(plan.metric)
            shown = f"{plan.metric}={value:.6g}" if isinstance(value, (int, float)) else f"no {plan.metric}"
            echo_on(f"[{done:>{width}}/{total}] ok      {record['trial']}  {shown}  ({record['seconds']:.2f} s)",
                    err=True)
        else:
            echo_on(f"[{done:>{width}}/{total}] FAILED  {record['trial']}: {record['error']}", err=True)

    try:
        result = sw.run_sweep(plan, workers=n_workers, scheduler=scheduler, resume=resume, overwrite=overwrite,
                              on_result=on_result, on_start=on_start,
                              log=lambda *a, **k: echo_on(" ".join(map(str, a)), err=True))
    except sw.DaskUnavailable as exc:
        raise UserError(str(exc)) from None
    except sw.SchedulerError as exc:
        raise click.ClickException(str(exc)) from None
    failure = None  # (message, exit code): in the one JSON document with --json, else an error line
    if result["n_ok"] and not result["metric_found"]:
        failure = (f"sweep.metric: no trial reports {plan.metric!r}; available: "
                   f"{', '.join(result['metrics_available'])} (the trials are recorded: "
                   f"rerun with --resume --set sweep.metric=NAME to rank them)", 2)
    elif result["n_failed"]:
        failure = (f"{result['n_failed']} of {result['n_trials']} trials failed "
                   f"(errors in {plan.out_dir / 'sweep.jsonl'}); --resume reruns only those", 1)
    if as_json:
        from gengraph.plugins.blocks.files import dumps_json

        if failure is not None:
            result = {**result, "error": failure[0], "exit_code": failure[1]}
        echo_on(dumps_json(result, indent=1, default=str))
        if failure is not None:
            click.get_current_context().exit(failure[1])
        return
    if not quiet:
        echo_on("")
        echo_on(sw.summary_text(plan, result, limit=15).rstrip("\n"))
        files = ["sweep.jsonl", "summary.txt", "sweep.json", *result["plots"]]
        echo_on(f"sweep directory: {plan.out_dir} ({', '.join(files)})")
    if failure is not None:
        raise (UserError if failure[1] == 2 else click.ClickException)(failure[0])


COMMANDS = [sweep]
