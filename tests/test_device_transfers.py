"""Code paths written for CuPy, checked on the CPU with a stand-in for device arrays.

`Device` behaves as a CuPy array does where these paths depend on it: it is not a NumPy array,
NumPy refuses to convert it implicitly, `.get()` copies it to the host (counted: each call waits
for the device), views keep their `.base` and their data pointer (`.data.ptr`). The real CuPy
tests are tests/test_cupy_backend.py (skipped without a GPU)."""

import sys
import types

import numpy as np
import pytest

from gengraph.engine import Graph, compile_graph, ops
from gengraph.engine.backend import to_floats
from gengraph.engine.errors import LabelError
from gengraph.engine.gradcheck import central_differences
from gengraph.engine.ops import pool
from gengraph.engine.ops.nn import check_host_labels
from gengraph.plugins.blocks.samplers import Step, run_steps


class Device:
    gets = 0

    def __init__(self, a, base=None):
        self._a, self._base = a, base

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed")

    def get(self):
        Device.gets += 1
        return self._a.copy()

    def __getitem__(self, index):
        return Device(self._a[index], self._base if self._base is not None else self)

    def reshape(self, *shape):
        return Device(self._a.reshape(*shape), self._base if self._base is not None else self)

    def astype(self, dtype):
        return Device(self._a.astype(dtype))

    base = property(lambda self: self._base)
    data = property(lambda self: types.SimpleNamespace(ptr=self._a.__array_interface__["data"][0]))
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    dtype = property(lambda self: self._a.dtype)
    flags = property(lambda self: self._a.flags)


@pytest.fixture
def fake_cupy(monkeypatch):
    module = types.SimpleNamespace(float64=np.float64, stack=lambda xs: Device(np.stack([x._a for x in xs])))
    monkeypatch.setitem(sys.modules, "cupy", module)
    Device.gets = 0
    return module


def test_a_steps_device_scalars_come_back_in_one_transfer(fake_cupy):
    # the trainer read loss, gradient norm and every metric with a .get() each: 2 + outputs waits per step
    values = [Device(np.array(1.5, np.float32)), 2.0, Device(np.array(-3.0)), np.float32(4.0), np.array(5.0)]
    assert to_floats(values) == [1.5, 2.0, -3.0, 4.0, 5.0]
    assert Device.gets == 1
    assert to_floats([1.0, np.array(2.0)]) == [1.0, 2.0] and Device.gets == 1


def test_a_graph_moves_back_from_the_device_keeping_flat_buffer_views():
    # Graph.move_to(numpy) called np.asarray on device arrays, which CuPy refuses
    g = Graph(dtype="float64")
    a, b, c = g.param("a", np.zeros(3)), g.param("b", np.zeros((2, 2))), g.param("c", np.zeros(2))
    flat = Device(np.arange(7.0))
    g.values[a.id], g.values[b.id] = flat[0:3], flat[3:7].reshape(2, 2)
    g.values[c.id] = Device(np.array([8.0, 9.0]))
    g.move_to(np)
    assert isinstance(g.values[a.id], np.ndarray) and g.values[a.id].tolist() == [0.0, 1.0, 2.0]
    assert g.values[b.id].tolist() == [[3.0, 4.0], [5.0, 6.0]] and g.values[c.id].tolist() == [8.0, 9.0]
    assert g.values[a.id].base is g.values[b.id].base is not None  # still views of one flat buffer


class ZeroDimViews(np.ndarray):
    """An array whose integer indexing gives a 0-d view, as CuPy's does (NumPy gives a scalar copy)."""

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return np.ndarray.__getitem__(self, slice(index, index + 1)).reshape(())
        return np.ndarray.__getitem__(self, index)


def test_central_differences_when_an_element_is_a_view():
    # old = flat[i] was that view: after flat[i] = old + eps, 'old - eps' was x itself, and the
    # difference quotient half the derivative
    x = np.array([1.0, 2.0, 3.0]).view(ZeroDimViews)
    got = central_differences(lambda: float(np.sum(np.asarray(x) ** 3)), x, 1e-6)
    np.testing.assert_allclose(got, 3 * np.array([1.0, 2.0, 3.0]) ** 2, rtol=1e-8)
    assert np.asarray(x).tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("labels, bad", [([0, 2, -1], -1), ([0, 3], 3), ([[0, 1], [2, 5]], 5)])
def test_labels_fed_to_a_device_program_are_checked_on_the_host(labels, bad):
    with pytest.raises(LabelError, match=rf"input 'y': class labels must lie in 0\.\.2 \(3 classes\), found {bad}"):
        check_host_labels(np.array(labels), 3, "y")
    check_host_labels(np.array([0, 1, 2]), 3, "y")
    check_host_labels(np.zeros(0, np.int64), 3, "y")


def test_a_cross_entropy_label_input_is_recorded_with_its_class_count():
    g = Graph(dtype="float64")
    z, y = g.input("z", (None, 4)), g.input("y", (None,), dtype="int64")
    ops.softmax_cross_entropy(z, y)
    assert g.class_labels == {y.id: 4}
    prog = compile_graph(g, ops.mean(ops.softmax_cross_entropy(z, y)))
    assert prog._label_feeds == {}  # on NumPy the kernels check


class NotNumpy:
    """NumPy under another name: code that branches on `xp is np` takes its device path."""

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.mark.parametrize("with_nan", [False, True])
def test_max_pool_taps_on_the_device_path_equal_numpy(with_nan):
    # on CuPy the NaN pass runs unconditionally (asking nan.any() waited for the device every step)
    x = np.random.default_rng(0).normal(size=(2, 3, 6, 6))
    if with_nan:
        x[0, 1, 2, 3] = x[1, 0, 0, 0] = x[1, 0, 1, 1] = np.nan
    best, idx = pool._max_and_argmax(np, x, (2, 2), (2, 2))
    best_d, idx_d = pool._max_and_argmax(NotNumpy(), x, (2, 2), (2, 2))
    np.testing.assert_array_equal(idx, idx_d)
    np.testing.assert_array_equal(best, best_d)


def test_sampler_steps_keep_the_state_where_the_step_puts_it():
    # the diffusion step copied x back to the host after every timestep; now only snapshots and the end do
    Device.gets = 0
    steps = [Step(t=3, t_next=2, a=1.0, b=0.0, sigma=0.0), Step(t=2, t_next=1, a=1.0, b=0.0, sigma=0.0),
             Step(t=1, t_next=0, a=1.0, b=0.0, sigma=0.0)]
    seen = []

    def step(x, t, noise, a, b, sigma):
        seen.append(type(x).__name__)
        host = x._a if isinstance(x, Device) else x
        return Device(host + t)

    x0, snaps = run_steps(step, steps, np.zeros((2, 2)), np.random.default_rng(0), record=[1])
    assert seen == ["ndarray", "Device", "Device"]
    assert x0.tolist() == [[6.0, 6.0]] * 2 and snaps[1].tolist() == [[5.0, 5.0]] * 2
    assert Device.gets == 2  # the snapshot at t = 1 and the result


def test_dot_labels_show_a_device_constant():
    # np.asarray of a device array raised TypeError, caught: the constant's value was left out
    from gengraph.engine.export import _node_label

    g = Graph(dtype="float64")
    x = g.input("x", (2,))
    y = x * 2.5
    const = next(n for n in y.inputs if n.op == "constant")
    g.values[const.id] = Device(np.array(2.5))
    assert "2.5" in _node_label(const, "forward")


class RecordingXp(NotNumpy):
    """NumPy under another name that records what is uploaded (asarray)."""

    def __init__(self):
        self.uploaded = []

    def asarray(self, a, *args, **kwargs):
        self.uploaded.append(np.asarray(a).dtype)
        return np.asarray(a, *args, **kwargs)


def test_host_feeds_are_checked_and_cast_before_the_upload():
    # a float array fed to an integer input was uploaded, then checked for fractions on the device
    # (one wait per run) and cast there
    g = Graph(dtype="float64")
    t = g.input("t", (None,), dtype="int64")
    prog = compile_graph(g, ops.cast(t, dtype="float64") * 2.0)
    prog.xp = RecordingXp()
    out = prog.run(t=np.array([1.0, 2.0]))
    assert prog.xp.uploaded == [np.dtype(np.int64)] and np.asarray(out).tolist() == [2.0, 4.0]
    with pytest.raises(TypeError, match="takes integers"):
        prog.run(t=np.array([1.5]))
    assert prog.xp.uploaded == [np.dtype(np.int64)]  # refused before anything was uploaded
