"""gengraph.blas_setup: OpenBLAS's AVX-512 kernels on AMD CPUs, never over a user's choice."""

import json
import os
import subprocess
import sys

import pytest

from gengraph.blas_setup import SKYLAKEX_FLAGS, choose_coretype

ZEN5 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nflags\t\t: fpu sse2 avx2 " + " ".join(
    sorted(SKYLAKEX_FLAGS)) + " avx512_bf16\n\nprocessor\t: 1\nvendor_id\t: Other\n"
ZEN3 = ZEN5.replace("avx512", "no512")
INTEL = ZEN5.replace("AuthenticAMD", "GenuineIntel")


def test_amd_with_avx512_gets_the_skylakex_kernels():
    assert choose_coretype(ZEN5, {}, numpy_loaded=False) == "SkylakeX"


@pytest.mark.parametrize("cpuinfo", [ZEN3, INTEL, ""])
def test_other_cpus_keep_openblas_detection(cpuinfo):
    assert choose_coretype(cpuinfo, {}, numpy_loaded=False) is None


def test_one_missing_avx512_subset_keeps_detection():
    assert choose_coretype(ZEN5.replace(" avx512vl", ""), {}, numpy_loaded=False) is None


@pytest.mark.parametrize("env", [{"OPENBLAS_CORETYPE": "Haswell"}, {"GENGRAPH_BLAS_TUNING": "0"}])
def test_user_choice_and_opt_out_win(env):
    assert choose_coretype(ZEN5, env, numpy_loaded=False) is None


def test_too_late_once_numpy_is_loaded():
    assert choose_coretype(ZEN5, {}, numpy_loaded=True) is None


def _kernels_after_import(env):
    code = ("import gengraph, numpy, json, os; from threadpoolctl import threadpool_info; "
            "print(json.dumps([os.environ.get('OPENBLAS_CORETYPE'), "
            "[p.get('architecture') for p in threadpool_info() if p['internal_api'] == 'openblas']]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _this_cpu():
    try:
        with open("/proc/cpuinfo") as f:
            return f.read(1 << 16)
    except OSError:
        return ""


@pytest.mark.skipif(choose_coretype(_this_cpu(), {}, False) is None, reason="needs an AMD CPU with AVX-512")
def test_import_gengraph_first_loads_the_avx512_kernels():
    pytest.importorskip("threadpoolctl")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "GENGRAPH_BLAS_TUNING")}
    core, kernels = _kernels_after_import(env)
    assert core == "SkylakeX"
    assert kernels and all(k == "SkylakeX" for k in kernels)
    core, kernels = _kernels_after_import({**env, "OPENBLAS_CORETYPE": "Haswell"})
    assert core == "Haswell" and all(k == "Haswell" for k in kernels)
