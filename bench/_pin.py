"""Pin BLAS/OpenMP threads. Must run before NumPy (or torch) is imported.

Scripts call ``pin_from_argv()`` first thing: it reads ``--threads N`` from sys.argv
(default: $GENGRAPH_BENCH_THREADS, else 1) and sets OMP/OPENBLAS/MKL_NUM_THREADS.
"""

from __future__ import annotations

import os
import sys

from gengraph.blas_setup import tune_blas

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")


def pin(n: int) -> int:
    if "numpy" in sys.modules:
        raise RuntimeError("bench: threads must be pinned before numpy is imported")
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    os.environ["GENGRAPH_BENCH_THREADS"] = str(n)
    tune_blas()  # the same BLAS kernels for gengraph and hand-written NumPy (both use NumPy's OpenBLAS)
    if n == 1 and "XLA_FLAGS" not in os.environ:  # JAX: XLA's CPU backend runs its Eigen ops on one thread
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"  # (intra_op_parallelism_threads is no XLA flag: the pinning does it)
    if n == 1 and hasattr(os, "sched_setaffinity"):
        # the flags do not confine XLA: its worker threads still used 1.3 cores in the JAX MLP step;
        # one CPU for the whole process (and every thread it starts) is one thread's worth for all
        usable = os.sched_getaffinity(0)
        os.environ.setdefault("GENGRAPH_BENCH_CPUS_USABLE", str(len(usable)))  # the machine's, for the report
        os.sched_setaffinity(0, {max(usable)})
    return n


def threads_from_argv(argv=None) -> int:
    argv = sys.argv if argv is None else argv
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return int(os.environ.get("GENGRAPH_BENCH_THREADS", "1"))


def pin_from_argv(argv=None) -> int:
    return pin(threads_from_argv(argv))


def pinned_threads() -> int:
    return int(os.environ.get("GENGRAPH_BENCH_THREADS", os.environ.get("OMP_NUM_THREADS", "0")) or 0)
