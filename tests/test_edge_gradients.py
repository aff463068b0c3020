"""Gradients and types at edge inputs, found by differential testing against PyTorch (float64):
clip with lo > hi, higher derivatives of x**k at 0, where() with an integer operand, and
misuse of value_and_grad and dropout in expressions."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gengraph
from gengraph.engine import Graph, compile, grad, ops
from gengraph.engine import expr
from gengraph.engine.expr import ExprError

finite = st.floats(-3, 3, allow_nan=False).filter(lambda v: abs(v) > 1e-3)


def central(f, x, eps=1e-6):
    out = np.zeros_like(x)
    for i in range(x.size):
        up, down = x.copy(), x.copy()
        up.flat[i] += eps
        down.flat[i] -= eps
        out.flat[i] = (f(up) - f(down)) / (2 * eps)
    return out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(finite, finite, finite), min_size=1, max_size=6))
def test_clip_gradients_match_its_forward_for_any_bounds(rows):
    x, lo, hi = (np.array(c, dtype=np.float64) for c in zip(*rows))
    apart = lambda a, b: np.all(np.abs(a - b) > 1e-4)  # noqa: E731  (no tie within a difference step)
    if not (apart(x, lo) and apart(x, hi) and apart(lo, hi)):
        return
    value, g = gengraph.value_and_grad("sum(clip(x, lo, hi) * w)", {"x": x, "lo": lo, "hi": hi, "w": x * 0 + 1.5},
                                       ["x", "lo", "hi"])
    assert value == pytest.approx(1.5 * np.clip(x, lo, hi).sum())
    arrays = {"x": x, "lo": lo, "hi": hi}
    for name in arrays:
        f = lambda v: 1.5 * np.clip(*[v if k == name else arrays[k] for k in arrays]).sum()  # noqa: E731
        np.testing.assert_allclose(g[name], central(f, arrays[name]), atol=1e-6)


def test_clip_with_lo_above_hi_sends_everything_to_hi():
    _, g = gengraph.value_and_grad("sum(clip(x, lo, hi))", {"x": [0.5, 2.0, -1.0], "lo": [1.0] * 3, "hi": [0.0] * 3},
                                   ["x", "lo", "hi"])
    assert g["x"].tolist() == [0, 0, 0] and g["lo"].tolist() == [0, 0, 0] and g["hi"].tolist() == [1, 1, 1]


@pytest.mark.parametrize("k, order", [(0.0, 2), (1.0, 2), (1.0, 3), (2.0, 3), (2.0, 4), (3.0, 4), (3.0, 5)])
def test_higher_derivatives_of_integer_powers_are_finite_at_zero(k, order):
    g = Graph(dtype="float64")
    x = g.input("x", (3,))
    d = x ** k
    for _ in range(order):
        d = grad(ops.sum(d), x)
    points = np.array([-1.5, 0.0, 2.0])
    falling = math.prod(k - i for i in range(order))  # k (k-1) ... (k-order+1)
    expected = [falling * p ** (k - order) if p != 0 else (falling if k == order else 0.0) for p in points]
    np.testing.assert_allclose(compile(g, d).run({"x": points}), expected, rtol=1e-12, atol=0)


def test_where_with_an_integer_operand_keeps_the_recorded_float_dtype():
    g = Graph(dtype="float32")
    a = g.input("a", (3,), dtype=np.float32)
    b = g.input("b", (3,), dtype=np.int64)
    y = ops.where(ops.gt(a, 0.0), a, b)
    out = compile(g, y).run({"a": np.array([1, -1, 2], np.float32), "b": np.array([5, 6, 7])})
    assert y.dtype == np.float32 and out.dtype == np.float32 and out.tolist() == [1, 6, 2]


def test_dropout_takes_no_stream_from_an_expression():
    g = Graph(dtype="float64")
    x = g.input("x", (3, 4))
    with pytest.raises(ExprError, match=r"dropout\(x, p\) takes 1 to 2 arguments, found 3"):
        expr.build("dropout(x, 0.2, 3)", {"x": x})


@pytest.mark.parametrize("args, message", [
    (("sum(x)", {"x": [1.0, 2.0]}, ["y"]), r"wrt names \['y'\] are not inputs \(the inputs: \['x'\]\)"),
    (("x * 2", {"x": [1.0, 2.0]}, ["x"]), r"needs a scalar expression; this one has shape \(2,\)"),
    (("sum(x)", {"x": "ab"}, ["x"]), "input 'x' is not an array of numbers"),
    (("sum(x)", {"x": [[1.0], [2.0, 3.0]]}, ["x"]), "input 'x' is not an array of numbers"),
])
def test_value_and_grad_misuse_is_an_expression_error(args, message):
    with pytest.raises(ExprError, match=message):
        gengraph.value_and_grad(*args)


def test_an_unknown_wrt_name_is_still_a_key_error_and_names_no_column():
    with pytest.raises(KeyError) as info:
        gengraph.value_and_grad("sum(x)", {"x": [1.0]}, ["y"])
    assert isinstance(info.value, ExprError) and "column" not in str(info.value)
    assert str(info.value) == "in expression 'sum(x)': wrt names ['y'] are not inputs (the inputs: ['x'])"


def test_value_and_grad_takes_one_name_as_wrt():
    value, g = gengraph.value_and_grad("sum(x * x)", {"x": [1.0, 2.0]}, "x")
    assert value == 5.0 and g["x"].tolist() == [2.0, 4.0]


@pytest.mark.parametrize("expression", ["logsumexp(x, axis=(0, 0))", "sum(x, axis=(1, -1))", "softmax(x, axis=(0, 0))"])
def test_an_axis_named_twice_is_refused(expression):
    g = Graph(dtype="float64")
    x = g.input("x", (2, 3))
    with pytest.raises(ExprError, match=r"names an axis twice"):
        expr.build(expression, {"x": x})
