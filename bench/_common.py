"""Timing, torch discovery and machine description shared by the benchmark scripts.

Import only after ``bench._pin`` has set the thread counts (this module imports NumPy).
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time

import numpy as np

from ._pin import pinned_threads

FRAMEWORKS = ("gengraph", "numpy", "torch")


def load_torch(threads: int | None = None, enabled: bool = True):
    """torch with its thread pools pinned, or None if it is not installed (or disabled)."""
    if not enabled or os.environ.get("GENGRAPH_BENCH_NO_TORCH"):
        return None
    try:
        import torch
    except ImportError:
        return None
    n = threads or pinned_threads() or 1
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    return torch


PAUSE_S = 0.05  # between blocks: worker threads a framework leaves spinning (OpenMP, XLA's pool) go idle


def balanced_orders(n: int) -> list[list[int]]:
    """A Williams design: rows of 0..n-1 in which each index comes first equally often and right
    after each other index equally often (n rows for even n, 2n for odd n)."""
    first, lo, hi = [0], 1, n - 1
    while len(first) < n:  # 0, 1, n-1, 2, n-2, ...
        first.append(lo)
        lo += 1
        if len(first) < n:
            first.append(hi)
            hi -= 1
    rows = [[(j + r) % n for j in first] for r in range(n)]
    return rows + [row[::-1] for row in rows] if n % 2 else rows


def interleaved(fns: dict, reps: int, block: int, warmup: int = 1, cpu: dict | None = None,
                pause: float | None = None) -> dict:
    """Time each callable alternately, `reps` rounds of `block` calls, each round in the order of
    the next row of a balanced Latin square (`balanced_orders`): every framework runs first
    equally often and, within the rounds, right after every other equally often (the rounds
    run back to back, and each boundary adds one pair: for the suite's 6 frameworks each one
    follows one other in 2 of its 6 blocks, where the cyclic rotation made it 5 of 6). A fixed
    order gave whichever ran first, right after the last framework's block, 5-10 % more time
    (gengraph / hand-NumPy 1.05 first, 0.95 second); a cyclic rotation (A, B, C, then B, C, A, ...) still put each framework
    after the same one in most rounds: hand-NumPy ran right after gengraph, on the batches
    gengraph had just read, in 5 of 6 rounds of the suite (MLP: hand-NumPy 0.246-0.249 ms a step
    so, 0.264-0.267 with a shuffled order; gengraph 0.27 either way).

    With more than one thread pinned, each block starts after a pause (PAUSE_S; `pause`
    overrides): at 2 threads on 2 cores, PyTorch's OpenMP workers and XLA's threads kept
    spinning after their framework's block and took a core from whatever was timed next
    (gengraph, first in each round: 2.0x hand-NumPy on the MLP in the suite, 1.0x with no other
    framework in the process). At 1 thread nothing spins, and the pause would only start every
    block with cold caches.

    fns: name -> callable(i) doing one step on batch i. Returns name -> list of seconds per
    call, one entry per round (warm-up rounds excluded). The batch index advances the same
    way for every framework, so all do the same work. With `cpu` (a dict), the process CPU time
    per call (time.process_time: every thread of the process, not time spent waiting for a core
    that other processes hold) is recorded there the same way: on a shared machine it is the
    steadier measure of the work done (at one thread it is the step's time without the waiting).
    """
    if pause is None:
        pause = PAUSE_S if pinned_threads() > 1 else 0.0
    times = {k: [] for k in fns}
    if cpu is not None:
        cpu.update({k: [] for k in fns})
    gc.collect()
    counters = {k: 0 for k in fns}
    names = list(fns)
    orders = balanced_orders(len(names))
    for r in range(warmup + reps):
        for name in (names[j] for j in orders[r % len(orders)]):
            fn = fns[name]
            if pause:
                time.sleep(pause)
            i0 = counters[name]
            c0 = time.process_time()
            t0 = time.perf_counter()
            for i in range(i0, i0 + block):
                fn(i)
            dt = time.perf_counter() - t0
            dc = time.process_time() - c0
            counters[name] = i0 + block
            if r >= warmup:
                times[name].append(dt / block)
                if cpu is not None:
                    cpu[name].append(dc / block)
    return times


def summarize(samples: list[float]) -> dict:
    s = sorted(samples)
    q = lambda p: s[min(len(s) - 1, max(0, int(round(p * (len(s) - 1)))))]  # noqa: E731
    return {"median_us": statistics.median(s) * 1e6, "p25_us": q(0.25) * 1e6, "p75_us": q(0.75) * 1e6,
            "min_us": s[0] * 1e6, "n": len(s)}


def ratios(stats: dict, base="gengraph") -> dict:
    """gengraph's median divided by each peer's median (< 1: gengraph is faster)."""
    out = {}
    for k, v in stats.items():
        if k != base and v:
            out[f"{base}/{k}"] = stats[base]["median_us"] / v["median_us"]
    return out


def machine() -> dict:
    info = {"python": sys.version.split()[0], "numpy": np.__version__, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            # before a 1-thread run pinned this process to one CPU (bench/_pin.py)
            "cpus_usable": int(os.environ.get("GENGRAPH_BENCH_CPUS_USABLE", 0)) or (
                len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None),
            "threads": pinned_threads()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["blas"] = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except Exception:  # noqa: BLE001
        pass
    try:  # which kernels OpenBLAS runs (gengraph.blas_setup may have chosen them)
        from threadpoolctl import threadpool_info

        info["blas_kernels"] = [p.get("architecture") for p in threadpool_info() if p.get("internal_api") == "openblas"]
    except Exception:  # noqa: BLE001
        pass
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    try:
        import jax

        info["jax"] = jax.__version__
    except ImportError:
        info["jax"] = None
    try:
        import gengraph

        info["gengraph"] = gengraph.__version__
    except ImportError:
        pass
    return info


def rel_diff(a, b) -> float:
    """max |a - b| / max(max |b|, tiny): a norm-wise relative difference."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)) if a.size else 0.0


def stream_rng(seed: int, stream: int) -> np.random.Generator:
    """The same generator gengraph's RandomStreams uses for `stream` of a graph seeded `seed`.

    The hand-NumPy and PyTorch versions draw their noise from it, so all three frameworks
    see identical random numbers and their loss curves can be compared step by step.
    """
    from gengraph.engine.ops.random import stream_seed

    return np.random.Generator(np.random.PCG64(stream_seed(seed, stream)))
