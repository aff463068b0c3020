"""Pick OpenBLAS's AVX-512 kernels on AMD CPUs that its runtime detection misses.

NumPy's OpenBLAS chooses its kernels by CPU model at load time. On AMD Zen 4 / Zen 5 it
falls back to the Haswell (AVX2) kernels although the CPU runs AVX-512, which halves
float32 matmul speed (convolutions are matmuls: im2col). OpenBLAS reads OPENBLAS_CORETYPE
when the library loads, so this must run before NumPy is imported; `import gengraph` (and
the CLI) call it first. It never overrides a user's OPENBLAS_CORETYPE and does nothing when
GENGRAPH_BLAS_TUNING=0, on other vendors (Intel's AVX-512 parts are detected correctly),
or when NumPy is already loaded (too late; harmless).
"""

from __future__ import annotations

import os
import sys

# The kernels of OpenBLAS's SkylakeX target use exactly these instruction sets.
SKYLAKEX_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})


def choose_coretype(cpuinfo: str, env: dict, numpy_loaded: bool) -> str | None:
    """The OPENBLAS_CORETYPE to set, or None to leave OpenBLAS's own choice."""
    if numpy_loaded or env.get("OPENBLAS_CORETYPE") or env.get("GENGRAPH_BLAS_TUNING") == "0":
        return None
    vendor, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
        if vendor and flags:
            break
    if vendor == "AuthenticAMD" and SKYLAKEX_FLAGS <= flags:
        return "SkylakeX"
    return None


def tune_blas() -> str | None:
    """Set OPENBLAS_CORETYPE for this process (and its children) when `choose_coretype` says so."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            cpuinfo = f.read(1 << 16)  # the first CPU's block is enough
    except OSError:  # not Linux
        return None
    core = choose_coretype(cpuinfo, dict(os.environ), "numpy" in sys.modules)
    if core:
        os.environ["OPENBLAS_CORETYPE"] = core
    return core
