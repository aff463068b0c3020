"""engine/heap.py: glibc's malloc thresholds set once per process, never over the user's own tuning."""

import subprocess
import sys

import pytest

from gengraph.engine import heap


class FakeLibc:
    def __init__(self, ret=1):
        self.calls, self.ret = [], ret

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return self.ret


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(heap, "_done", [])
    for var in heap.USER_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("GENGRAPH_MALLOC_TUNING", raising=False)
    monkeypatch.setattr(heap.platform, "libc_ver", lambda: ("glibc", "2.36"))


def test_sets_the_thresholds_once(fresh):
    libc = FakeLibc()
    assert heap.tune_heap(libc) is True
    assert heap.tune_heap(libc) is True
    assert libc.calls == [(-3, 32 << 20), (-1, 64 << 20)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD


@pytest.mark.parametrize("env", [{"MALLOC_TOP_PAD_": "0"}, {"MALLOC_MMAP_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, {"GENGRAPH_MALLOC_TUNING": "0"}])
def test_never_over_the_users_setting_or_opt_out(fresh, monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    libc = FakeLibc()
    assert heap.tune_heap(libc) is False and libc.calls == []


def test_other_c_libraries_and_failures_leave_malloc_alone(fresh, monkeypatch):
    monkeypatch.setattr(heap.platform, "libc_ver", lambda: ("", ""))
    libc = FakeLibc()
    assert heap.tune_heap(libc) is False and libc.calls == []
    monkeypatch.setattr(heap, "_done", [])
    monkeypatch.setattr(heap.platform, "libc_ver", lambda: ("glibc", "2.36"))
    assert heap.tune_heap(FakeLibc(ret=0)) is False  # mallopt refused


def test_compiling_a_numpy_program_tunes_the_heap_in_a_real_process():
    code = ("from gengraph.engine import Graph, compile, heap; import platform\n"
            "assert heap._done == []\n"
            "g = Graph('float64'); x = g.input('x', (3,)); compile(g, x * 2.0)\n"
            "print(heap._done, platform.libc_ver()[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == ("[True]" if out[1] == "glibc" else "[False]")
