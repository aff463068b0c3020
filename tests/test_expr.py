"""The expression language and the public value_and_grad / check_grads entry points."""

import numpy as np
import pytest

from gengraph.engine import ExprError, check_grads, value_and_grad
from gengraph.engine.expr import names


def test_value_and_grad_matches_hand_derived_gradient():
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(5, 3)), rng.normal(size=(3, 2))
    value, grads = value_and_grad("sum(tanh(x @ w) ** 2)", {"x": x, "w": w}, ["w", "x"])
    h = np.tanh(x @ w)
    dz = 2 * h * (1 - h ** 2)
    assert value.dtype == np.float64
    np.testing.assert_allclose(value, np.sum(h ** 2), rtol=1e-14)
    np.testing.assert_allclose(grads["w"], x.T @ dz, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grads["x"], dz @ w.T, rtol=1e-12, atol=1e-14)


def test_second_order_expression():
    # d/dx sum(grad(sum(x^3), x) * v) = 6 x v
    rng = np.random.default_rng(1)
    x, v = rng.normal(size=(4,)), rng.normal(size=(4,))
    value, grads = value_and_grad("sum(grad(sum(x ** 3), x) * v)", {"x": x, "v": v}, ["x", "v"])
    np.testing.assert_allclose(value, np.sum(3 * x ** 2 * v), rtol=1e-13)
    np.testing.assert_allclose(grads["x"], 6 * x * v, rtol=1e-13)
    np.testing.assert_allclose(grads["v"], 3 * x ** 2, rtol=1e-13)


def test_rbm_style_energy_expression_gradients():
    rng = np.random.default_rng(2)
    inputs = {"x": rng.normal(size=3), "a": rng.normal(size=3), "h": rng.random(2), "b": rng.normal(size=2),
              "W": rng.normal(size=(3, 2)), "sigma": rng.random(3) + 0.5}
    expr = "sum((x - a)**2 / (2*sigma**2)) - h @ b - (x / sigma**2) @ W @ h"
    value, grads = value_and_grad(expr, inputs, ["W", "a"])
    x, a, h, b, W, s = (inputs[k] for k in ("x", "a", "h", "b", "W", "sigma"))
    np.testing.assert_allclose(value, np.sum((x - a) ** 2 / (2 * s ** 2)) - h @ b - (x / s ** 2) @ W @ h)
    np.testing.assert_allclose(grads["W"], -np.outer(x / s ** 2, h), rtol=1e-13)
    np.testing.assert_allclose(grads["a"], -(x - a) / s ** 2, rtol=1e-13)


def test_check_grads_passes_and_reports_per_input():
    rng = np.random.default_rng(3)
    report = check_grads("mean(logsumexp(x @ w, axis=1)) + sum(softplus(w))",
                         {"x": rng.normal(size=(4, 3)), "w": rng.normal(size=(3, 2))})
    assert report.ok
    assert [r.name for r in report.rows] == ["x", "w"]
    assert max(r.max_abs_err for r in report.rows) < 1e-7


def test_check_grads_catches_a_wrong_gradient():
    from gengraph.engine.ops.registry import OPS

    op = OPS["tanh"]
    saved = op.vjp
    op.vjp = (lambda g, y, x: g * (1.0 - y),)  # deliberately wrong
    try:
        report = check_grads("sum(tanh(x))", {"x": np.linspace(-1, 1, 5)})
    finally:
        op.vjp = saved
    assert not report.ok
    with pytest.raises(AssertionError):
        report.assert_ok()


def test_check_grads_allows_the_differences_own_rounding():
    # second order of x^3 upsampled: exactly 576 x^3, which the engine gives to ~4e-12; the
    # loss of ~2e5 rounds to ~3e-11, ~3e-5 once divided by eps, and the check said FAIL
    x = np.random.default_rng(0).normal(size=(2, 4, 7, 9))
    expression = "sum(grad(sum(upsample_nearest2d(x, 2) ** 3), x) ** 2)"
    _, grads = value_and_grad(expression, {"x": x}, ["x"])
    np.testing.assert_allclose(grads["x"], 576 * x ** 3, rtol=1e-12, atol=1e-10)
    report = check_grads(expression, {"x": x})
    assert report.ok, report
    assert 1e-5 < report.roundoff_floor < 1e-3 and report.scale > 1e4
    assert f"+ {report.roundoff_floor:.3g}, what central differences can resolve" in str(report)  # the table says it
    # the floor scales with the output, not with a large scalar inside it that the output barely
    # depends on: a gradient wrong by a factor 2 (x for x^2's 2x) still fails
    x3 = {"x": np.array([0.5, -1.0, 2.0])}
    for wrong in ("sum(x * stop_gradient(x))", "sum(x * stop_gradient(x) * 1e9) * 1e-9",
                  "sum(x * stop_gradient(x)) + 0 * sum(stop_gradient(x) * 1e9)"):
        report = check_grads(wrong, x3)
        assert not report.ok and report.roundoff_floor < 1e-7, (wrong, report)


@pytest.mark.parametrize("bad, col, words", [
    ("__import__('os')", 1, "not allowed"),
    ("x.T", 1, "attribute"),
    ("(lambda: x)()", 1, "call"),
    ("[a for a in x]", 1, "listcomp"),
    ("x[0]", 1, "subscript"),
    ("'abc'", 1, "only numbers"),
    ("exx(x)", 1, 'did you mean "exp"'),
    ("sum(x, axis=y)", 13, "axis="),
    ("sum(x, out=x)", 12, 'keyword "out"'),
    ("x +* 2", 4, "syntax error"),
    ("x if x else x", 1, "ifexp"),
    ("yy + x", 1, 'unknown variable "yy"'),
])
def test_rejected_expressions_name_the_column(bad, col, words):
    with pytest.raises(ExprError) as info:
        value_and_grad(bad, {"x": np.ones(3)}, ["x"])
    assert f"column {col}" in str(info.value)
    assert words in str(info.value)
    assert repr(bad) in str(info.value)


def test_names_lists_variables_not_functions():
    assert names("sum(tanh(x @ W) + b)") == {"x", "W", "b"}
