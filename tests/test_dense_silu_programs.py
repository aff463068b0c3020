"""A dense SiLU (s = sigmoid(x), then x * s) as compiled: a training program computes both nodes
in one silu_pair call (float32, NumPy; one loop with Numba), a program without the gradient has
one silu_lean node (passes.lean_silu). Both give the bits of the two plain kernels, with Numba's
loops on and off."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gengraph.engine import Graph, compile, grad, ops
from gengraph.engine.ops import cpu_loops
from gengraph.engine.ops.elementwise import _sigmoid_forward, silu_pair
from gengraph.engine.optimizers import make_optimizer

PLAIN = dict(passes=(), reuse_buffers=False, direct_updates=False, fuse=False)


@pytest.fixture(params=["on", "off"])
def loops(request, monkeypatch):
    """Numba's loops on (where installed) or off, for this test."""
    if request.param == "on":
        pytest.importorskip("numba")
    monkeypatch.setenv("GENGRAPH_NUMBA", "1" if request.param == "on" else "0")
    monkeypatch.setattr(cpu_loops, "_LOOPS", None)
    assert bool(cpu_loops.load_loops()) == (request.param == "on")
    return request.param


def _net(dtype, seed=0, depth=2):
    """x -> depth x (dense, SiLU) -> dense, squared-error loss; Adam updates."""
    rng = np.random.default_rng(seed)
    g = Graph(dtype, seed=seed)
    x, y = g.input("x", (None, 5)), g.input("y", (None, 2))
    h, params = x, []
    for k, (a, b) in enumerate([(5, 16)] + [(16, 16)] * (depth - 1) + [(16, 2)]):
        w = g.param(f"w{k}", rng.normal(size=(a, b)) * 0.7)
        c = g.param(f"b{k}", rng.normal(size=(b,)) * 0.1)
        params += [w, c]
        h = h @ w + c
        if k < depth:
            h = ops.silu(h)
    loss = ops.mean(ops.square(h - y))
    return g, params, h, loss


def _feeds(dtype, step, n=12):
    rng = np.random.default_rng(100 + step)
    return {"x": (rng.normal(size=(n, 5)) * 4).astype(dtype), "y": rng.normal(size=(n, 2)).astype(dtype)}


def _ops(prog):
    return [n.op for n in prog.nodes]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_training_step_has_the_plain_kernels_bits(loops, dtype):
    runs = []
    for kw in ({}, PLAIN):
        g, params, _, loss = _net(dtype)
        grads = grad(loss, params)
        updates = make_optimizer("adam", lr=0.01).updates(g, params, grads)
        prog = compile(g, {"loss": loss}, updates=updates, **kw)
        losses = [float(prog.run(_feeds(dtype, step))["loss"]) for step in range(3)]
        runs.append((losses, [g.value(p).copy() for p in params], prog))
    (losses, fast_params, fast), (plain_losses, plain_params, _) = runs
    assert losses == plain_losses
    for a, b in zip(fast_params, plain_params):
        np.testing.assert_array_equal(a, b)
    # the gradient reads s: both nodes stay, and in float32 one call computes them
    assert _ops(fast).count("sigmoid") == 2 and "silu_lean" not in _ops(fast)
    assert ("silu_pair" in repr(fast._fn.__globals__)) == (dtype == "float32")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_program_without_the_gradient_has_one_node_per_silu(loops, dtype):
    g, params, out, loss = _net(dtype, depth=3)
    fast, plain = compile(g, {"out": out, "loss": loss}), compile(g, {"out": out, "loss": loss}, **PLAIN)
    assert _ops(fast).count("silu_lean") == 3 and "sigmoid" not in _ops(fast) and "silu" not in _ops(fast)
    assert _ops(plain).count("sigmoid") == 3
    feeds = _feeds(dtype, 0, n=40)
    a, b = fast.run(feeds), plain.run(feeds)
    np.testing.assert_array_equal(a["out"], b["out"])
    assert a["loss"] == b["loss"]


def test_a_sigmoid_read_elsewhere_stays_a_node(loops):
    g = Graph("float32", seed=0)
    x = g.input("x", (None, 8))
    s = ops.sigmoid(x)
    y = ops.silu(x)  # builds its own sigmoid(x), which CSE merges with s
    for outputs in ({"y": y, "s": s}, {"y": y, "t": ops.sum(s * 2.0)}):
        prog = compile(g, outputs)
        assert "sigmoid" in _ops(prog) and "silu_lean" not in _ops(prog)
        xv = (np.random.default_rng(1).normal(size=(6, 8)) * 5).astype(np.float32)
        got, want = prog.run(x=xv), compile(g, outputs, **PLAIN).run(x=xv)
        for k in outputs:
            np.testing.assert_array_equal(got[k], want[k])


@settings(max_examples=60, deadline=None)
@given(shape=st.sampled_from([(), (1,), (7,), (3, 5), (64, 33), (2, 3, 4)]), scale=st.sampled_from([0.1, 5.0, 80.0]),
       order=st.sampled_from(["C", "F", "strided"]), seed=st.integers(0, 2**32 - 1))
def test_silu_pair_gives_the_two_kernels_bits(shape, scale, order, seed):
    """With the loops as the suite runs (on where Numba is installed): contiguous arrays take the
    loop, others the kernels' own NumPy forms; either way the kernels' bits."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=shape) * scale).astype(np.float32)
    if x.ndim:
        x.reshape(-1)[:1] = np.inf  # the limits and NaN pass through
        x.reshape(-1)[-1:] = np.nan if x.size > 1 else x.reshape(-1)[-1:]
    if order == "F":
        x = np.asfortranarray(x)
    elif order == "strided" and x.ndim:
        x = np.repeat(x, 2, axis=-1)[..., ::2]
    s, y = silu_pair(np, x)
    s0 = _sigmoid_forward(np, x)
    np.testing.assert_array_equal(np.asarray(s), np.asarray(s0))
    np.testing.assert_array_equal(np.asarray(y), np.multiply(x, s0))
    assert np.asarray(s).dtype == np.asarray(y).dtype == np.float32
