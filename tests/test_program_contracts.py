"""What a compiled program promises whatever the compiler passes did: the values of an
unoptimized evaluation, updates that land, outputs the caller owns, and fed arrays that match
their declaration."""

from __future__ import annotations

import numpy as np
import pytest

from gengraph.engine import Graph, compile, grad, make_optimizer, ops
from gengraph.engine.ops import ShapeError

PLAIN = dict(passes=(), reuse_buffers=False, direct_updates=False)


def test_cse_keeps_two_large_index_arrays_apart():
    # the key of a node's attributes was their repr, which NumPy abbreviates past 1000 elements:
    # x[i1] and x[i2] were merged and the second returned the first's values
    g = Graph(dtype="float64")
    x = g.input("x", (3000,))
    i1 = np.arange(2000)
    i2 = i1.copy()
    i2[1000] = 2999
    a, b = compile(g, [x[i1], x[i2]]).run(x=np.arange(3000.0))
    np.testing.assert_array_equal(a, i1.astype(float))
    np.testing.assert_array_equal(b, i2.astype(float))


def test_cse_keeps_large_index_arrays_beside_slices_apart():
    # an index of a slice and a large array: its exact key holds a slice, which Python 3.11 cannot hash
    g = Graph(dtype="float64")
    x = g.input("x", (2, 3000))
    i1 = np.arange(2000)
    i2 = i1.copy()
    i2[1000] = 2999
    a, b, c = compile(g, [x[0:2, i1], x[0:2, i2], x[0:2, i1.copy()]]).run(x=np.arange(6000.0).reshape(2, 3000))
    np.testing.assert_array_equal(a[1], 3000.0 + i1)
    np.testing.assert_array_equal(b[1], 3000.0 + i2)
    np.testing.assert_array_equal(c, a)


@pytest.mark.parametrize("kw", [{}, PLAIN])
def test_updates_of_0d_leaves_land(kw):
    # 0-d values were computed "straight into" the leaf by kernels that return a new scalar there
    g = Graph(dtype="float64")
    s = g.state("s", 0.0)
    compile(g, [], updates={s: ops.sigmoid(s)}, **kw).run()
    assert float(g.value(s)) == 0.5
    g = Graph(dtype="float64")
    w = g.param("w", 1.0)
    loss = w * w
    opt = make_optimizer("adam", lr=0.1, fused="yes")
    p = compile(g, loss, updates=opt.updates(g, [w], [grad(loss, w)]), **kw)
    p.run()
    p.run()
    assert abs(float(g.value(w)) - 0.8004122286917927) < 1e-12  # Adam: 1 - 0.1 - 0.09959; PyTorch's


def test_fed_arrays_must_match_the_declared_shape():
    g = Graph(dtype="float64")
    a, b = g.input("a", (2, 3)), g.input("b", (None, 3))
    p = compile(g, {"s": a + 1.0, "t": ops.sum(b, axis=1)})
    with pytest.raises(ShapeError, match=r"input 'a': declared shape \(2, 3\), fed an array of shape \(1, 3\)"):
        p.run(a=np.ones((1, 3)), b=np.ones((4, 3)))
    with pytest.raises(ShapeError, match=r"input 'b': declared shape \(\?, 3\), fed an array of shape \(2, 1, 3\)"):
        p.run(a=np.ones((2, 3)), b=np.ones((2, 1, 3)))
    out = p.run(a=np.ones((2, 3)), b=np.ones((5, 3)))  # any batch size
    assert out["t"].shape == (5,) and out["t"][0] == 3.0


def test_fractional_values_fed_to_an_integer_input_are_refused():
    g = Graph(dtype="float64")
    z, y = g.input("z", (None, 3)), g.input("y", (None,), dtype="int64")
    p = compile(g, ops.mean(ops.softmax_cross_entropy(z, y)))
    with pytest.raises(TypeError, match="'y' takes integers"):
        p.run(z=np.zeros((2, 3)), y=np.array([0.5, 1.0]))
    assert abs(float(p.run(z=np.zeros((2, 3)), y=np.array([0.0, 2.0]))) - np.log(3)) < 1e-12  # integral: cast


def test_outputs_are_the_callers_even_when_constant_or_repeated():
    g = Graph(dtype="float64")
    x = g.input("x", (2,))
    c = g.constant(np.array([1.0, 2.0]))
    p = compile(g, {"o": ops.ones_like(x), "c": c, "a": x * 2.0, "b": x * 2.0})
    r = p.run(x=np.ones(2))
    r["o"][:] = 7.0
    r["c"][:] = 7.0
    assert not np.shares_memory(r["a"], r["b"])
    again = p.run(x=np.ones(2))
    np.testing.assert_array_equal(again["o"], [1.0, 1.0])
    np.testing.assert_array_equal(again["c"], [1.0, 2.0])
    np.testing.assert_array_equal(g.value(c), [1.0, 2.0])


@pytest.mark.parametrize("kw", [{}, PLAIN])
def test_float32_with_float64_computes_in_float64(kw):
    # the recorded dtype was the first float input's: a float64 result went into a float32 buffer
    g = Graph(dtype="float64")
    a, b = g.input("a", (3,), dtype="float32"), g.input("b", (3,))
    z = ops.exp(a) + b
    half = a * 0.5  # a scalar constant keeps float32, as NumPy's Python floats do
    assert z.dtype == np.float64 and half.dtype == np.float32
    rz, rh = compile(g, [z, half], **kw).run(a=np.zeros(3, np.float32), b=np.full(3, 1e-9))
    assert rz.dtype == np.float64 and rz[0] == 1.000000001 and rh.dtype == np.float32


@pytest.mark.parametrize("kw", [{}, PLAIN])
def test_float_arithmetic_on_an_integer_input_computes_in_float(kw):
    # relu(int) stayed an int that a float result was then written into (UFuncTypeError), and
    # sigmoid(int) failed on 0.5 cast to an int
    g = Graph(dtype="float64")
    xi = g.input("xi", (3,), dtype="int64")
    a, b = ops.relu(xi) * 0.5, ops.sigmoid(xi)
    ra, rb = compile(g, [a, b], **kw).run(xi=np.array([1, -2, 3]))
    np.testing.assert_array_equal(ra, [0.5, 0.0, 1.5])
    np.testing.assert_allclose(rb, 1.0 / (1.0 + np.exp(-np.array([1.0, -2.0, 3.0]))), rtol=1e-15)
    assert ra.dtype == rb.dtype == np.float64


@pytest.mark.parametrize("kw", [{}, PLAIN])
def test_float_valued_reductions_of_integer_inputs(kw):
    # sum(int) stayed an int recorded as float: `sum(xi) * 0.5` wrote a float into its int buffer
    g = Graph(dtype="float64")
    xi = g.input("xi", (2, 3), dtype="int64")
    outs = [ops.sum(xi, axis=0) * 0.5, ops.mean(xi, axis=1) + 1.0, ops.max(xi, axis=0) * 0.5]
    xs = np.array([[1, -2, 3], [4, 5, 7]])
    got = compile(g, outs, **kw).run(xi=xs)
    for value, want in zip(got, [xs.sum(0) * 0.5, xs.mean(1) + 1.0, xs.max(0) * 0.5]):
        assert value.dtype == np.float64
        np.testing.assert_allclose(value, want, rtol=1e-15)


@pytest.mark.parametrize("kw", [{}, PLAIN])
def test_matmul_of_integers_and_float32_stays_float32(kw):
    # NumPy computes matmul(int64, float32) in float64: a float32 graph got a float64 result (and
    # float64 downstream) although the node recorded float32
    g = Graph(dtype="float32")
    xi, w = g.input("xi", (None, 3), dtype="int64"), g.input("w", (3, 2), dtype="float32")
    y = ops.matmul(xi, w)
    loss = ops.sum(y * y)
    xs, ws = np.array([[1, -2, 3], [4, 5, 7]]), np.arange(6, dtype=np.float32).reshape(3, 2) / 7
    ry, rl, rg = compile(g, [y, loss, grad(loss, w)], **kw).run(xi=xs, w=ws)
    assert y.dtype == ry.dtype == rl.dtype == rg.dtype == np.float32
    want = xs.astype(np.float32) @ ws
    np.testing.assert_allclose(ry, want, rtol=1e-6)
    np.testing.assert_allclose(rg, 2 * xs.T.astype(np.float32) @ want, rtol=1e-5)


def test_convolutions_of_integer_images_stay_float32():
    # conv2d(int64 x, float32 w) was recorded and computed in float64 in a float32 graph
    g = Graph(dtype="float32")
    x = g.input("x", (None, 1, 5, 5), dtype="int64")
    w, wt = g.input("w", (2, 1, 3, 3), dtype="float32"), g.input("wt", (1, 2, 3, 3), dtype="float32")
    y, yt = ops.conv2d(x, w, padding=1), ops.conv_transpose2d(x, wt, stride=2)
    gw = grad(ops.sum(y * y), w)
    xs = np.arange(50).reshape(2, 1, 5, 5) % 7
    ws, wts = np.linspace(-1, 1, 18, dtype=np.float32).reshape(2, 1, 3, 3), np.ones((1, 2, 3, 3), np.float32)
    got = compile(g, [y, yt, gw]).run(x=xs, w=ws, wt=wts)
    assert all(n.dtype == np.float32 for n in (y, yt, gw)) and all(r.dtype == np.float32 for r in got)
    g64 = Graph(dtype="float64")
    x64, w64, wt64 = (g64.input(n, s) for n, s in (("x", (None, 1, 5, 5)), ("w", (2, 1, 3, 3)), ("wt", (1, 2, 3, 3))))
    y64 = ops.conv2d(x64, w64, padding=1)
    want = compile(g64, [y64, ops.conv_transpose2d(x64, wt64, stride=2), grad(ops.sum(y64 * y64), w64)]).run(
        x=xs.astype(float), w=ws.astype(float), wt=wts.astype(float))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
