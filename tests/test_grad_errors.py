"""grad is loud: a missing VJP or a VJP of the wrong shape is an error naming the op, never a zero."""

from __future__ import annotations

import numpy as np
import pytest

from gengraph.engine import GradientError, Graph, compile, grad, ops
from gengraph.engine.ops import OPS, ZERO


def test_transpose_vjp_with_a_cyclic_permutation():
    """perm (1, 2, 0) is not its own inverse: the VJP must apply the inverse (2, 0, 1)."""
    x = np.arange(24.0).reshape(2, 3, 4)
    r = np.random.default_rng(0).normal(size=(3, 4, 2))
    g = Graph(dtype="float64")
    xn = g.input("x", x.shape)
    y = ops.transpose(xn, (1, 2, 0))
    assert y.shape == (3, 4, 2)
    dx = grad(ops.sum(y * g.constant(r)), xn)
    assert dx.shape == (2, 3, 4)
    np.testing.assert_array_equal(compile(g, dx).run(x=x), np.transpose(r, (2, 0, 1)))


def test_a_vjp_of_the_wrong_shape_is_an_error_naming_the_op(monkeypatch):
    # the classic bug: applying the permutation itself instead of its inverse
    wrong = (lambda g, y, x, axes: ops.shape._transpose(g, axes=axes),)
    monkeypatch.setattr(OPS["transpose"], "vjp", wrong)
    g = Graph(dtype="float64")
    xn = g.input("x", (2, 3, 4))
    with pytest.raises(GradientError, match=r'op "transpose".*input 0.*\(4, 2, 3\).*\(2, 3, 4\)'):
        grad(ops.sum(ops.transpose(xn, (1, 2, 0))), xn)


def test_a_vjp_that_reduced_its_gradient_is_an_error_naming_the_op(monkeypatch):
    # sum_to said "cannot sum shape () to the larger shape (4, 3)", naming no op
    monkeypatch.setattr(OPS["tanh"], "vjp", (lambda g, y, x: ops.sum(g),))
    g = Graph(dtype="float64")
    xn = g.input("x", (4, 3))
    with pytest.raises(GradientError, match=r'the VJP of op "tanh" for its input 0 \(x\) returned shape \(\), '
                                            r"not the input's shape \(4, 3\)"):
        grad(ops.sum(ops.tanh(xn)), xn)


def test_a_missing_vjp_is_an_error_naming_the_op_and_input(monkeypatch):
    monkeypatch.setattr(OPS["mul"], "vjp", (lambda g, y, a, b: g * b,))  # input 1 has none
    g = Graph(dtype="float64")
    a, b = g.input("a", (3,)), g.input("b", (3,))
    grad(ops.sum(a * b), a)  # b is not needed: fine
    with pytest.raises(GradientError, match=r'op "mul" has no VJP for its input 1 \(b'):
        grad(ops.sum(a * b), b)


def test_declared_zero_derivatives_give_zero_gradients():
    g = Graph(dtype="float64")
    x = g.input("x", (3,))
    y = ops.sum(ops.floor(x) + ops.sign(x) + ops.gt(x, 0.0) + ops.stop_gradient(x))
    np.testing.assert_array_equal(compile(g, grad(y, x)).run(x=np.array([0.5, -1.5, 2.0])), 0.0)
    assert OPS["floor"].vjp == (ZERO,) and not OPS["floor"].differentiable


def test_concat_takes_any_number_of_inputs():
    g = Graph(dtype="float64")
    xs = [g.input(f"x{i}", (2,)) for i in range(70)]  # more than the old 64-input cap
    r = np.arange(140.0)
    y = ops.sum(ops.concat(xs, axis=0) * g.constant(r))
    grads = compile(g, grad(y, xs)).run({f"x{i}": np.zeros(2) for i in range(70)})
    np.testing.assert_array_equal(np.concatenate(grads), r)


def test_cast_between_floats_passes_the_gradient():
    g = Graph(dtype="float64")
    x = g.input("x", (3,))
    y = ops.sum(ops.cast(x, dtype="float32") * 2.0)
    dx = grad(y, x)
    assert dx.dtype == np.float64
    np.testing.assert_array_equal(compile(g, dx).run(x=np.ones(3)), 2.0)
