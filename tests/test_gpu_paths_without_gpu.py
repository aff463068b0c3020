"""The CuPy paths that a machine without a GPU can still check, with stand-ins that behave as CuPy
does where it differs from NumPy: a device array refuses a NumPy array in `a[...] = value`, CuPy's
random state cannot be saved, its max of nothing raises, its indexing wraps bad labels."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from gengraph.engine import Graph, ops
from gengraph.engine.ops import random as gg_random
from gengraph.engine.ops import reduce as gg_reduce
from gengraph.engine.ops import winograd


class DeviceArray:
    """Enough of a cupy.ndarray for Graph.set_value: `[...] =` refuses a non-scalar NumPy array."""

    def __init__(self, host):
        self.host = np.array(host)
        self.dtype, self.shape = self.host.dtype, self.host.shape

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray) and value.ndim:
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        self.host[key] = value.host if isinstance(value, DeviceArray) else value


@pytest.fixture
def fake_cupy(monkeypatch):
    module = types.SimpleNamespace(asarray=lambda v, dtype=None: DeviceArray(np.asarray(v, dtype=dtype)))
    monkeypatch.setitem(sys.modules, "cupy", module)
    return module


def test_set_value_uploads_a_host_value_to_a_graph_on_the_gpu(fake_cupy):
    # resume, L-BFGS and weight averages write NumPy values into a graph moved to the GPU: it raised
    g = Graph(dtype="float32")
    w = g.param("w", np.zeros((2, 3)))
    g.values[w.id] = DeviceArray(np.zeros((2, 3), np.float32))
    g.set_value(w, np.arange(6.0).reshape(2, 3))
    assert g.values[w.id].host.tolist() == [[0, 1, 2], [3, 4, 5]] and g.values[w.id].host.dtype == np.float32
    g.set_value(w, 1.5)
    assert (g.values[w.id].host == 1.5).all()


class _CupyRandomState:
    def __init__(self, seed):
        self.rs = np.random.RandomState(seed)

    def standard_normal(self, size, dtype):
        return self.rs.standard_normal(size).astype(dtype)

    def random_sample(self, size, dtype):
        return self.rs.random_sample(size).astype(dtype)


FAKE_XP = types.SimpleNamespace(random=types.SimpleNamespace(RandomState=_CupyRandomState), __name__="cupy")


def test_a_cupy_stream_resumes_with_fresh_numbers_the_same_on_every_resume():
    seq = gg_random.stream_seed(0, "noise")
    first = gg_random._Generator(FAKE_XP, seq)
    opening = first.normal((4,), np.float64)
    first.normal((4,), np.float64)
    saved = first.state()
    assert saved == {"cupy_draws": 2}  # it was None: the resumed run replayed the first epoch's noise
    a, b = gg_random._Generator(FAKE_XP, seq), gg_random._Generator(FAKE_XP, seq)
    a.set_state(saved)
    b.set_state(saved)
    after_a, after_b = a.normal((4,), np.float64), b.normal((4,), np.float64)
    assert np.array_equal(after_a, after_b) and not np.array_equal(after_a, opening)
    assert a.state() == {"cupy_draws": 3}


def test_a_checkpoint_of_cupy_streams_is_readable(tmp_path):
    from gengraph.plugins.run.checkpoint import _check_generators
    from gengraph.plugins.run.checkpoint import CheckpointError

    rng = np.random.PCG64(0).state
    meta = {"streams": {"noise": {"cupy_draws": 7}}, "rng": rng, "state": {"epoch_rng": None}}
    _check_generators(tmp_path / "checkpoint.npz", meta)
    meta["streams"]["noise"] = {"cupy_draws": -1}
    with pytest.raises(CheckpointError, match="not a count of CuPy draws"):
        _check_generators(tmp_path / "checkpoint.npz", meta)


def test_the_norm_of_nothing_is_zero_off_the_cpu():
    xp = types.SimpleNamespace(**{k: getattr(np, k) for k in ("max", "abs", "maximum", "where", "isinf", "sqrt",
                                                             "dot", "zeros")})
    assert float(gg_reduce._l2_norm_forward(xp, np.zeros((0, 3), np.float32))) == 0.0


def test_correct_records_its_labels_for_the_host_check():
    # a program on the GPU checks fed labels on the host; labels used only by correct were not checked
    g = Graph(dtype="float32")
    z, y = g.input("z", (None, 3)), g.input("y", (None,), dtype="int64")
    ops.correct(z, y)
    assert g.class_labels == {y.id: 3}


def test_the_winograd_transforms_are_made_once_per_backend_and_dtype():
    assert winograd._kron_on(np, "filter", np.float32) is winograd._kron_on(np, "filter", np.float32)
    assert winograd._kron_on(np, "back", np.float64).shape == (9, 16)


def test_a_cuda_stream_resumed_on_the_cpu_draws_fresh_numbers():
    # run --resume may change run.device: a CUDA checkpoint's stream restarted from its seed on the CPU
    seq = gg_random.stream_seed(0, "noise")
    fresh = gg_random._Generator(np, seq).normal((4,), np.float64)
    resumed = gg_random._Generator(np, seq)
    resumed.set_state({"cupy_draws": 5})
    again = gg_random._Generator(np, seq)
    again.set_state({"cupy_draws": 5})
    drawn = resumed.normal((4,), np.float64)
    assert not np.array_equal(drawn, fresh) and np.array_equal(drawn, again.normal((4,), np.float64))


def test_a_cpu_stream_resumed_on_the_gpu_draws_fresh_numbers():
    seq = gg_random.stream_seed(0, "noise")
    cpu = gg_random._Generator(np, seq)
    cpu.normal((4,), np.float64)
    saved = cpu.state()  # a PCG64 state
    first = gg_random._Generator(FAKE_XP, seq).normal((4,), np.float64)
    gpu, again = gg_random._Generator(FAKE_XP, seq), gg_random._Generator(FAKE_XP, seq)
    gpu.set_state(saved)
    again.set_state(saved)
    drawn = gpu.normal((4,), np.float64)
    assert not np.array_equal(drawn, first) and np.array_equal(drawn, again.normal((4,), np.float64))
