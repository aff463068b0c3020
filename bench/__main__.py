"""`python -m bench`: the whole benchmark; results in a folder of your choice (default bench-results/).

    python -m bench                    # full run -> bench-results/results.json + results.md
    python -m bench --quick --out DIR  # fewer repetitions, results in DIR
    python -m bench --grid             # + the MLP batch x width grid vs hand-NumPy (1 thread)

One fresh subprocess per thread setting (1 and 2; OMP/OPENBLAS/MKL_NUM_THREADS are set
before NumPy loads, torch.set_num_threads too, XLA's thread pool off at 1 thread) runs
bench.suite: dispatch cost, the three workloads and DDPM sampling, gengraph vs hand-NumPy,
PyTorch (default, fused Adam, torch.compile) and JAX jit, timed alternately. The 1-thread
process also times compilation of every spec and profiles each gengraph train_step. Memory
is measured in one fresh subprocess per (workload, framework) with 1 thread (bench.memory).
Nothing tracked is rewritten unless --readme FILE is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FRAMEWORKS = ("gengraph", "numpy", "torch", "jax")


def _py(args, threads, log=True):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                "NUMEXPR_NUM_THREADS", "GENGRAPH_BENCH_THREADS"):
        env[var] = str(threads)
    cmd = [sys.executable, "-m", *args, "--threads", str(threads)]
    if log:
        print("  $", " ".join(cmd[1:]), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)


def _check(proc, what):
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"bench: {what} failed (exit {proc.returncode})")
    if proc.stderr.strip():
        sys.stderr.write(proc.stderr)


def _thread_counts(ap, text):
    """--threads as positive ints (argparse's one-line error otherwise); a count above the usable
    cores runs, with a warning, since its figures would measure the oversubscription."""
    try:
        counts = [int(t) for t in text.split(",")]
    except ValueError:
        ap.error(f"--threads takes positive integers separated by commas, not {text!r}")
    if not counts or any(n < 1 for n in counts):
        ap.error(f"--threads takes positive integers separated by commas, not {text!r}")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if max(counts) > usable:
        sys.stderr.write(f"bench: warning: --threads {max(counts)} on {usable} usable core(s): the threads will "
                         "share cores, and the ratios measure that\n")
    return counts


def _results_folder(ap, text) -> Path:
    """The --out folder, created, and shown to be writable by writing a file into it."""
    out = Path(text)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".bench-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        ap.error(f"--out {text}: cannot write results there ({exc.strerror or exc})")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (about a minute)")
    ap.add_argument("--threads", default="1,2", help="thread settings, comma-separated (default 1,2)")
    ap.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    ap.add_argument("--no-jax", action="store_true", help="leave JAX out even if installed")
    ap.add_argument("--no-torch-compile", action="store_true", help="leave out the torch.compile row")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--grid", action="store_true", help="also the MLP batch x width grid vs hand-NumPy (1 thread)")
    ap.add_argument("--out", default="bench-results", help="folder for results.json and results.md "
                    "(default bench-results/, created if missing)")
    ap.add_argument("--readme", default="", help="also rewrite the results section of this README (e.g. "
                    "bench/README.md); default: leave every tracked file alone")
    a = ap.parse_args(argv)
    threads = _thread_counts(ap, a.threads)
    out_dir = _results_folder(ap, a.out)  # checked before minutes of benchmarks, not after
    if a.readme:
        from .report import readme_problem

        if (why := readme_problem(Path(a.readme))) is not None:
            ap.error(f"--readme {a.readme}: {why}")
    t0 = time.perf_counter()
    command = "python -m bench" + "".join(f" {x}" for x in (argv if argv is not None else sys.argv[1:]))
    results = {"command": command, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "quick": a.quick, "threads": {}}
    with tempfile.TemporaryDirectory(prefix="gengraph-bench-") as tmp:
        tmp = Path(tmp)
        for n in threads:
            print(f"[bench] suite, {n} thread(s)", flush=True)
            out = tmp / f"suite{n}.json"
            args = ["bench.suite", "--json", str(out)] + (["--quick"] if a.quick else []) + \
                (["--no-torch"] if a.no_torch else []) + (["--no-jax"] if a.no_jax else []) + \
                (["--no-torch-compile"] if a.no_torch_compile else []) + (["--extras"] if n == threads[0] else [])
            _check(_py(args, n), f"bench.suite with {n} thread(s)")
            suite = json.loads(out.read_text())
            results["machine"] = results.get("machine") or suite.pop("machine")
            suite.pop("machine", None)
            for key in ("compile_times", "profile", "microbench"):
                if key in suite:
                    results[key] = suite.pop(key)
            results["threads"][str(n)] = suite
        if a.grid:
            print("[bench] MLP grid, 1 thread", flush=True)
            gout = tmp / "grid.json"
            _check(_py(["bench.grid", "--json", str(gout)] + (["--quick"] if a.quick else []), 1), "bench.grid")
            results["grid"] = json.loads(gout.read_text())
        if not a.no_memory:
            print("[bench] peak memory, one process per workload and framework (1 thread)", flush=True)
            results["memory"] = memory(tmp, a.quick, a.no_torch, a.no_jax)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    from .report import summary_lines, tables, update_readme

    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out_dir / "results.md").write_text(tables(results) + "\n")
    print("\n".join(summary_lines(results)))
    print(f"[bench] wrote {out_dir / 'results.json'} and {out_dir / 'results.md'} ({results['seconds']:.0f} s)")
    if a.readme:
        update_readme(Path(a.readme), results)
        print(f"[bench] rewrote the results section of {a.readme}")


def memory(tmp: Path, quick: bool, no_torch: bool, no_jax: bool = False) -> dict:
    out = {"method": "fresh subprocess per framework, same .npz data for all; rss_import = what importing the "
                     "framework added; rss_setup = model, optimizer state and batches; rss_training = peak RSS "
                     "during the steps (VmHWM reset before them) minus the level before them; rss_peak = ru_maxrss "
                     "of the process; traced_step_peak = tracemalloc peak over 20 steps (NumPy-side allocations; "
                     "not available for torch and jax). MiB.",
           "steps": 100 if quick else 300}
    prep = _py(["bench.memory_prepare", "--data", str(tmp)], 1)
    _check(prep, "bench.memory_prepare")
    for w in ("mlp", "vae", "ddpm"):
        if not (tmp / f"{w}.npz").exists():
            out[w] = {"error": "not prepared"}
            continue
        out[w] = {}
        for f in FRAMEWORKS:
            if (f == "torch" and no_torch) or (f == "jax" and no_jax):
                continue
            p = _py(["bench.memory", "--workload", w, "--framework", f, "--data", str(tmp),
                     "--steps", str(out["steps"])], 1)
            if p.returncode != 0:
                out[w][f] = {"error": (p.stderr.strip().splitlines() or ["?"])[-1]}
            else:
                out[w][f] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


if __name__ == "__main__":
    main()
