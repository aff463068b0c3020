"""Ops at the edges of their domains: empty axes, derivatives of powers at 0, norms of zero,
tiny and infinite vectors; the conventions follow PyTorch where the limit is undefined."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gengraph.engine import Graph, compile, grad, ops, value_and_grad


def _vg(expression, values, wrt):
    with warnings.catch_warnings():  # masked branches (0 * inf) warn; their values are not used
        warnings.simplefilter("ignore", RuntimeWarning)
        return value_and_grad(expression, values, wrt)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # a mean of nothing is NaN, as NumPy's
@pytest.mark.parametrize("shape,axis", [((2, 0, 3), 1), ((0, 3), 0), ((2, 0, 3), (0, 2)), ((2, 0, 3), None)])
def test_sum_and_mean_over_empty_axes(shape, axis):
    # sum over an empty interior axis raised IndexError (a fast path); the gradient of a mean over
    # an empty array divided by zero
    g = Graph(dtype="float64")
    x = g.input("x", shape)
    s, m = ops.sum(x, axis=axis), ops.mean(x, axis=axis)
    vs, gs, gm = compile(g, [s, grad(ops.sum(s), x), grad(ops.sum(ops.square(m)), x)]).run(x=np.zeros(shape))
    np.testing.assert_array_equal(vs, np.zeros(shape).sum(axis=axis))
    assert gs.shape == shape and gm.shape == shape


def test_higher_derivatives_of_powers_at_zero():
    # b a^(b-1) and a^b log(a) are 0 * inf at a = 0: NaN third derivatives of x**2 before
    x = np.array([0.0, 1.5])
    _, d = _vg("sum(grad(grad(x ** 2, x), x))", {"x": x}, ["x"])
    np.testing.assert_array_equal(d["x"], [0.0, 0.0])
    _, d = _vg("sum(grad(grad(x ** 3, x), x))", {"x": x}, ["x"])  # 6x -> 6
    np.testing.assert_allclose(d["x"], [6.0, 6.0])
    _, d = _vg("sum(grad(sum(x ** 1.0), x))", {"x": x}, ["x"])
    np.testing.assert_array_equal(d["x"], [0.0, 0.0])
    v, d = _vg("sum(x ** y)", {"x": np.array([0.0, 2.0]), "y": np.array([2.0, 0.5])}, ["x", "y"])
    np.testing.assert_allclose(d["x"], [0.0, 0.5 / np.sqrt(2.0)])
    np.testing.assert_allclose(d["y"], [0.0, np.sqrt(2.0) * np.log(2.0)])


def test_pow_mixed_partial_at_exponent_zero_is_kept():
    # d/db of b a^(b-1) at b = 0 is a^(-1): the mask for 0 * inf must not cover a != 0
    _, d = _vg("sum(grad(sum(x ** y), x))", {"x": np.array([2.0]), "y": np.array([0.0])}, ["y"])
    np.testing.assert_allclose(d["y"], [0.5])


@pytest.mark.parametrize("x,norm,gradient", [
    (np.zeros(3), 0.0, np.zeros(3)),  # PyTorch's subgradient; 0 / 0 before
    (np.full(4, 1e-200), 2e-200, np.full(4, 0.5)),  # squares underflow: the norm was 0
    (np.array([3.0, 4.0]), 5.0, np.array([0.6, 0.8])),
])
def test_l2_norm_at_zero_tiny_and_ordinary_vectors(x, norm, gradient):
    g = Graph(dtype="float64")
    xn = g.input("x", x.shape)
    y = ops.l2_norm(xn)
    v, d = compile(g, [y, grad(y, xn)]).run(x=x)
    np.testing.assert_allclose(v, norm, rtol=1e-12)
    np.testing.assert_allclose(d, gradient, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_l2_norm_of_an_infinite_entry_is_inf(dtype):
    g = Graph(dtype=dtype)
    x = g.input("x", (2,))
    p = compile(g, ops.l2_norm(x))
    assert np.isposinf(p.run(x=np.array([np.inf, 1.0], dtype)))  # was NaN (inf / inf when scaled)
    assert np.isnan(p.run(x=np.array([np.nan, np.inf], dtype)))


@pytest.mark.parametrize("name,grad_a,grad_b", [("maximum", [0.5, 0.0, 4.0], [0.5, 2.0, 0.0]),
                                                ("minimum", [0.5, 2.0, 0.0], [0.5, 0.0, 4.0])])
def test_elementwise_max_and_min_split_a_tie(name, grad_a, grad_b):
    # the first argument took a tie's whole gradient, while the max / min reductions (and PyTorch's
    # maximum and minimum) split it
    values = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([1.0, 3.0, 2.0]), "w": np.array([1.0, 2.0, 4.0])}
    _, d = _vg(f"sum({name}(a, b) * w)", values, ["a", "b"])
    np.testing.assert_array_equal(d["a"], grad_a)
    np.testing.assert_array_equal(d["b"], grad_b)
