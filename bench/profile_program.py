"""Where a compiled train_step spends its time: per-op kernel times, dtype surprises, glue.

    python bench/profile_program.py --threads 1 [mlp|vae|ddpm] [--steps 300]

Wraps every kernel of the program (``k0``, ``k1``, ... in the generated code's globals)
with a timer, runs the step on real batches, and prints per op: calls per step, time
per step (sum over the op's kernels of each kernel's median call time) and share; then the kernels whose output dtype differs from the node's declared
dtype, float64 arrays computed in a float32 program, and the time outside kernels
(generated-code glue: in-place update copies, ``del``, output tuple, Program.run's feed
handling -- and, on a busy machine, time the process waited for a core) estimated as the
un-instrumented step time minus the kernel total.
Diagnostic only; ``python -m bench`` stores its summary in results.json.
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
import collections  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def _step_fn(name):
    from .workloads import WORKLOADS

    w = WORKLOADS[name](None)
    fns = w.setup(n_batches=50, frameworks=("gengraph",))
    return w, fns["gengraph"], w.gg.programs["train_step"]


def profile(name="mlp", steps=300) -> dict:
    w, step, prog = _step_fn(name)
    for i in range(20):
        step(i)
    # un-instrumented step time
    plain = []
    for r in range(steps // 20):
        t0 = time.perf_counter()
        for i in range(20):
            step(i)
        plain.append((time.perf_counter() - t0) / 20)
    plain_us = statistics.median(plain) * 1e6
    env = prog._fn.__globals__
    ops = [n for n in prog.nodes if not n.is_leaf]
    # kernel name -> node, from the generated source (packs of leaves and elided views call no kernel)
    import re

    byid = {n.id: n for n in prog.nodes}
    kernels = []
    for line in prog.source.splitlines():
        m = re.match(r"\s+v(\d+) = (k\d+)\(", line)
        if m:
            kernels.append((m.group(2), byid[int(m.group(1))]))
    originals = {k: env[k] for k, _ in kernels}
    per_kernel = collections.defaultdict(list)
    issues = {}
    graph_dtype = prog.graph.dtype
    perf = time.perf_counter

    def wrap(i, n, k):
        def f(*a, **kw):
            t = perf()
            r = k(*a, **kw)
            per_kernel[i].append(perf() - t)
            dt = getattr(r, "dtype", None)
            if dt is None:
                issues.setdefault(i, f"{n.op} ({n.label}) returned {type(r).__name__}, not an array")
            elif dt != n.dtype:
                issues.setdefault(i, f"{n.op} ({n.label}) -> {dt}, declared {n.dtype}")
            elif dt == np.float64 and graph_dtype == np.float32 and np.size(r) > 1:
                issues.setdefault(i, f"{n.op} ({n.label}) computes a float64 array of shape {np.shape(r)} "
                                     "in a float32 program")
            return r

        return f

    # timer overhead: a wrapped no-op
    noop = wrap(-1, ops[0], lambda *a: None)
    t0 = perf()
    for _ in range(20000):
        noop()
    timer_us = (perf() - t0) / 20000 * 1e6
    per_kernel.clear()
    issues.clear()
    try:
        for i, (k, n) in enumerate(kernels):
            env[k] = wrap(i, n, originals[k])
        for i in range(steps):
            step(i)
    finally:
        env.update(originals)
    by_op = collections.defaultdict(lambda: [0, 0.0])
    for i, (_k, n) in enumerate(kernels):
        by_op[n.op][0] += 1
        by_op[n.op][1] += statistics.median(per_kernel[i]) * 1e6  # median call: robust to other load
    kernel_us = sum(v[1] for v in by_op.values())
    # the wrapper's own cost is part of the measured kernel time only partly; report both
    table = sorted(((op, c, us) for op, (c, us) in by_op.items()), key=lambda r: -r[2])
    return {
        "workload": name, "kernels_per_step": len(kernels), "step_us_uninstrumented": plain_us,
        "kernel_us_sum": kernel_us, "timer_overhead_us_per_call": timer_us,
        "glue_us_estimate": plain_us - kernel_us,
        "by_op": [{"op": op, "calls": c, "us": round(us, 2), "share": round(us / kernel_us, 4)} for op, c, us in table],
        "dtype_issues": sorted(set(issues.values())),
        "updates": len(prog.updates),
    }


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("workload", nargs="?", default="mlp")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=300)
    a = ap.parse_args(argv)
    r = profile(a.workload, a.steps)
    print(f"{a.workload}: {r['kernels_per_step']} kernels, step {r['step_us_uninstrumented']:.0f} us "
          f"(uninstrumented), kernels {r['kernel_us_sum']:.0f} us (instrumented, timer "
          f"{r['timer_overhead_us_per_call']:.2f} us/call), glue ~{r['glue_us_estimate']:.0f} us")
    for row in r["by_op"]:
        print(f"  {row['op']:24s} {row['calls']:4d} calls {row['us']:9.1f} us {100 * row['share']:5.1f}%")
    for s in r["dtype_issues"]:
        print("  dtype:", s)
    return r


if __name__ == "__main__":
    main()
