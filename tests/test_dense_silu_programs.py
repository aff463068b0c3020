"""A dense SiLU (s = sigmoid(x), then x * s) as compiled: a training program computes both nodes
in one silu_pair call (float32, NumPy; one loop with Numba), with the layer's bias sum where it
has one; a program without the gradient has one silu_lean node, or one silu_bias node that adds
the bias (passes.lean_silu). All give the bits of the plain kernels, with Numba's loops on and off."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gengraph.engine import Graph, compile, grad, ops
from gengraph.engine.ops import cpu_loops
from gengraph.engine.ops.elementwise import _sigmoid_forward, _silu_bias_forward, _silu_lean_forward, silu_pair
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


def _net(dtype, seed=0, depth=2, bias=True):
    """x -> depth x (dense, SiLU) -> dense, squared-error loss; Adam updates."""
    rng = np.random.default_rng(seed)
    g = Graph(dtype, seed=seed)
    x, y = g.input("x", (None, 5)), g.input("y", (None, 2))
    h, params = x, []
    for k, (a, b) in enumerate([(5, 16)] + [(16, 16)] * (depth - 1) + [(16, 2)]):
        w = g.param(f"w{k}", rng.normal(size=(a, b)) * 0.7)
        params.append(w)
        h = h @ w
        if bias:
            c = g.param(f"b{k}", rng.normal(size=(b,)) * 0.1)
            params.append(c)
            h = c + h if k == 1 else h + c  # either order of the sum
        if k < depth:
            h = ops.silu(h)
    loss = ops.mean(ops.square(h - y))
    return g, params, h, loss


def _feeds(dtype, step, n=12):
    rng = np.random.default_rng(100 + step)
    return {"x": (rng.normal(size=(n, 5)) * 4).astype(dtype), "y": rng.normal(size=(n, 2)).astype(dtype)}


def _ops(prog):
    return [n.op for n in prog.nodes]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_training_step_has_the_plain_kernels_bits(loops, dtype, bias):
    runs = []
    for kw in ({}, PLAIN):
        g, params, _, loss = _net(dtype, bias=bias)
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
    assert _ops(fast).count("sigmoid") == 2 and "silu_lean" not in _ops(fast) and "silu_bias" not in _ops(fast)
    fused = "silu_pair" in repr(fast._fn.__globals__)
    assert fused == (dtype == "float32")
    # each layer's sum (the biases are updated leaves that only the sum reads), sigmoid and product
    # in one call: (h, s, y) or (s, y) from it
    calls = [line for line in fast.source.splitlines()
             if re.fullmatch(r"\s+(v\d+, ){%d}= k\d+\(_xp, .*\)" % (3 if bias else 2), line)]
    assert len(calls) == (2 if fused else 0)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_program_without_the_gradient_has_one_node_per_silu(loops, dtype, bias):
    g, params, out, loss = _net(dtype, depth=3, bias=bias)
    fast, plain = compile(g, {"out": out, "loss": loss}), compile(g, {"out": out, "loss": loss}, **PLAIN)
    lean = "silu_bias" if bias else "silu_lean"
    assert _ops(fast).count(lean) == 3 and "sigmoid" not in _ops(fast) and "silu" not in _ops(fast)
    assert _ops(fast).count("add") == (1 if bias else 0)  # the output layer's
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


def test_a_sum_read_elsewhere_keeps_its_node(loops):
    """x + b is an output too: the SiLU is one silu_lean node of the sum, which stays."""
    g = Graph("float32", seed=0)
    x = g.input("x", (None, 8))
    b = g.param("b", np.linspace(-1, 1, 8))
    h = x + b
    y = ops.silu(h)
    prog = compile(g, {"y": y, "h": h})
    assert "silu_lean" in _ops(prog) and "add" in _ops(prog) and "silu_bias" not in _ops(prog)
    xv = (np.random.default_rng(1).normal(size=(6, 8)) * 5).astype(np.float32)
    got, want = prog.run(x=xv), compile(g, {"y": y, "h": h}, **PLAIN).run(x=xv)
    for k in ("y", "h"):
        np.testing.assert_array_equal(got[k], want[k])


def _bias_case(draw_shape, seed, dtype, order):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=draw_shape) * 6).astype(dtype)
    b = (rng.normal(size=draw_shape[-1:]) * 2).astype(dtype)
    if x.size > 2:
        x.reshape(-1)[:2] = [np.inf, np.nan]
    if order == "strided":
        x = np.repeat(x, 2, axis=0)[::2]
    elif order == "F":
        x = np.asfortranarray(x)
    return x, b


@settings(max_examples=60, deadline=None)
@given(shape=st.sampled_from([(1,), (7,), (3, 5), (64, 33), (2, 3, 4), (0, 4)]), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.float32, np.float64]), order=st.sampled_from(["C", "F", "strided"]),
       into=st.sampled_from(["new", "x", "other"]))
def test_silu_bias_gives_the_sum_and_silu_kernels_bits(shape, seed, dtype, order, into):
    """As the two kernels with the same out: the sum into it (or a new array), silu_lean in place."""
    x, b = _bias_case(shape, seed, dtype, order)
    outs = {"new": lambda a: None, "x": lambda a: a, "other": lambda a: np.empty(a.shape, a.dtype)}
    xw = _bias_case(shape, seed, dtype, order)[0]  # x again, its layout too
    h = np.add(xw, b, out=outs[into](xw))
    want = _silu_lean_forward(np, h, out=h)
    x0 = x.copy()
    out = outs[into](x)
    got = _silu_bias_forward(np, x, b, out=out)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == dtype and (out is None or got is out)
    if into != "x":
        np.testing.assert_array_equal(x, x0)  # the input is left alone


@settings(max_examples=60, deadline=None)
@given(shape=st.sampled_from([(1,), (7,), (3, 5), (64, 33), (2, 3, 4)]), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.float32, np.float64]), order=st.sampled_from(["C", "F", "strided"]))
def test_silu_pair_with_a_bias_gives_the_three_kernels_bits(shape, seed, dtype, order):
    x, b = _bias_case(shape, seed, dtype, order)
    h, s, y = silu_pair(np, x, b)
    h0 = np.add(x, b)
    s0 = _sigmoid_forward(np, h0)
    for got, want in ((h, h0), (s, s0), (y, np.multiply(h0, s0))):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == dtype
