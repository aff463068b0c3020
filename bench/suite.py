"""Everything measured at one thread setting, in one process: `python -m bench` runs it once per setting.

    python -m bench.suite --threads 1 [--quick] [--no-torch] [--extras] --json out.json

Dispatch cost per node, the MLP / VAE / DDPM training steps and DDPM sampling (gengraph vs
hand-NumPy vs PyTorch, timed alternately), and with --extras the compile time of every spec
a per-op profile of each gengraph train_step and the microbenchmarks behind the
engine findings (bench/microbench.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench._pin import pin_from_argv  # noqa: E402

if __name__ == "__main__":
    pin_from_argv()

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402


def run(threads, quick=False, torch_enabled=True, extras=False, only=("mlp", "vae", "ddpm"), jax_enabled=True,
        torch_compile=True) -> dict:
    from ._common import load_torch, machine
    from .engine_overhead import dispatch
    from .workloads import load_jax, run_workload

    torch = load_torch(threads, torch_enabled)
    jax = load_jax(jax_enabled)
    t0 = time.perf_counter()
    res = {"machine": machine(), "threads": threads, "torch_used": torch is not None, "loadavg_start": _loadavg(),
           "dispatch": dispatch(quick), "workloads": {}, "errors": {}}
    for name in only:
        try:
            res["workloads"].update(run_workload(name, torch, quick, jax=jax, torch_compile=torch_compile))
        except Exception as exc:  # noqa: BLE001 - one broken workload must not hide the others
            res["errors"][name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
    if extras:
        from .compile_times import compile_times
        from .microbench import run as microbench
        from .profile_program import profile

        res["compile_times"] = compile_times(reps=3 if quick else 5)
        try:
            res["microbench"] = microbench()
        except Exception as exc:  # noqa: BLE001
            res["errors"]["microbench"] = f"{type(exc).__name__}: {exc}"
        res["profile"] = {}
        for name in only:
            try:
                res["profile"][name] = profile(name, steps=100 if quick else 300)
            except Exception as exc:  # noqa: BLE001
                res["errors"][f"profile_{name}"] = f"{type(exc).__name__}: {exc}"
    res["seconds"] = time.perf_counter() - t0
    res["loadavg_end"] = _loadavg()
    return res


def _loadavg():
    """1/5/15-minute load averages: how busy the machine was (other processes compete for cores)."""
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--extras", action="store_true")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--no-torch-compile", action="store_true")
    ap.add_argument("--only", default="mlp,vae,ddpm")
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    res = run(a.threads, a.quick, not a.no_torch, a.extras, tuple(a.only.split(",")), not a.no_jax,
              not a.no_torch_compile)
    Path(a.json).write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
