"""The expression language: argument counts and keywords of op builders, static keyword values,
and columns of expressions with leading blanks."""

import numpy as np
import pytest

from gengraph.engine import ExprError, Graph, value_and_grad
from gengraph.engine.expr import build


def _error(expression, inputs=None):
    with pytest.raises(ExprError) as info:
        value_and_grad(expression, inputs or {"x": np.ones(2)}, ["x"])
    return info.value


@pytest.mark.parametrize("expression,col,message", [
    ("sum(maximum(x))", 5, "maximum(a, b) takes 2 arguments, found 1"),
    ("sum(minimum(x, x, x))", 5, "minimum(a, b) takes 2 arguments, found 3"),
    ("sum(clip(x, 1))", 5, "clip(x, lo, hi) takes 3 arguments, found 2"),
    ("sum(bce_with_logits(x))", 5, "bce_with_logits(z, y) takes 2 arguments, found 1"),
    ("x @ x + sum(kl_normal_std(x))", 13, "kl_normal_std(mu, logvar) takes 2 arguments, found 1"),
    ("sum(relu(x, x))", 5, "relu(x) takes 1 argument, found 2"),
])
def test_wrong_argument_count_of_an_op_names_function_arguments_and_column(expression, col, message):
    err = _error(expression)
    assert err.col + 1 == col, str(err)
    assert message in err.message


def test_right_argument_counts_of_op_builders():
    x, y = np.array([-2.0, 0.3, 4.0]), np.array([0.25, 1.0, 0.0])
    value, grads = value_and_grad("sum(maximum(x, 0.5) + clip(x, 0, 1) + bce_with_logits(x, y) + kl_normal_std(x, y))",
                                  {"x": x, "y": y}, ["x"])
    s = 1 / (1 + np.exp(-x))
    bce = np.logaddexp(0, x) - x * y
    kl = 0.5 * (x ** 2 + np.exp(y) - 1 - y)
    np.testing.assert_allclose(value, np.sum(np.maximum(x, 0.5) + np.clip(x, 0, 1) + bce + kl), rtol=1e-14)
    np.testing.assert_allclose(grads["x"], (x > 0.5) + ((x >= 0) & (x <= 1)) + (s - y) + x, rtol=1e-14)


def test_leaky_relu_and_elu_take_their_keywords():
    x = np.array([-2.0, 3.0])
    value, grads = value_and_grad("sum(leaky_relu(x, slope=0.2))", {"x": x}, ["x"])
    np.testing.assert_allclose(value, -0.4 + 3.0, rtol=1e-15)
    np.testing.assert_allclose(grads["x"], [0.2, 1.0], rtol=1e-15)
    value, grads = value_and_grad("sum(elu(x, alpha=0.5))", {"x": x}, ["x"])
    np.testing.assert_allclose(value, 0.5 * np.expm1(-2.0) + 3.0, rtol=1e-15)
    np.testing.assert_allclose(grads["x"], [0.5 * np.exp(-2.0), 1.0], rtol=1e-15)


@pytest.mark.parametrize("expression,col,message", [
    ("sum(leaky_relu(x, alpha=0.2))", 25, 'keyword "alpha" is not allowed in leaky_relu() (it takes slope=)'),
    ('sum(leaky_relu(x, slope="a"))', 25, "slope must be a number, not 'a'"),
    ("sum(elu(x, alpha=True))", 18, "alpha must be a number, not True"),
])
def test_bad_op_keywords(expression, col, message):
    err = _error(expression)
    assert err.col + 1 == col, str(err)
    assert message in err.message


@pytest.mark.parametrize("expression,col", [
    ("   sum(q)", 8),
    ("\t sum(x) + q", 12),
    ("\n  sum(q)", 7),  # the column within the line
    ("  x + )", 7),  # syntax errors: the unmatched parenthesis
    ("   sum(x", 7),
])
def test_columns_with_leading_blanks(expression, col):
    err = _error(expression)
    assert err.col + 1 == col, str(err)


@pytest.mark.parametrize("expression,col,message", [
    ("sum(x, keepdims=1.5)", 17, "keepdims must be True or False, not 1.5"),
    ("sum(x, keepdims=1)", 17, "keepdims must be True or False, not 1"),
    ("sum(x, axis=0.5)", 13, "axis must be an int or a tuple of ints, not 0.5"),
    ("sum(x, axis=(0, 0.5))", 13, "axis must be an int or a tuple of ints"),
    ("sum(x, axis=True)", 13, "axis must be an int or a tuple of ints, not True"),
    ("sum(transpose(x, axes=0))", 23, "axes must be a tuple of ints, not 0"),
    ("sum(x, axis=0, axis=0)", 16, 'keyword "axis" is given twice in sum()'),
    ("sum(x, keepdims=True, keepdims=False)", 23, 'keyword "keepdims" is given twice'),
])
def test_static_keyword_values_are_checked(expression, col, message):
    err = _error(expression, {"x": np.ones((2, 2))})
    assert err.col + 1 == col, str(err)
    assert message in err.message


def test_valid_axis_and_keepdims_still_build():
    g = Graph(dtype="float64")
    env = {"x": g.input("x", (2, 3))}
    assert build("sum(x, axis=-1, keepdims=True)", env).shape == (2, 1)
    assert build("sum(x, axis=(0, 1))", env).shape == ()
    assert build("mean(x, axis=None, keepdims=False)", env).shape == ()
    assert build("transpose(x, axes=(-1, 0))", env).shape == (3, 2)
    x = np.arange(6.0).reshape(2, 3)
    value, grads = value_and_grad("  sum(sum(x, axis=0, keepdims=True) ** 2)", {"x": x}, ["x"])
    np.testing.assert_allclose(value, np.sum(x.sum(0) ** 2), rtol=1e-15)
    np.testing.assert_allclose(grads["x"], np.broadcast_to(2 * x.sum(0), x.shape), rtol=1e-15)


@pytest.mark.parametrize("expression,message", [
    # PyTorch keywords gengraph does not take (its kernel_size= and scale_factor= it takes): the
    # count of the positional arguments was reported instead
    ("sum(max_pool2d(x, padding=1))", 'keyword "padding" is not allowed in max_pool2d()'),
    ("sum(avg_pool2d(x, 2, ceil_mode=1))", 'keyword "ceil_mode" is not allowed in avg_pool2d()'),
    ("sum(upsample_nearest2d(x, size=2))", 'keyword "size" is not allowed in upsample_nearest2d()'),
])
def test_an_unknown_keyword_is_named_before_the_argument_count(expression, message):
    err = _error(expression, {"x": np.ones((1, 1, 4, 4))})
    assert message in err.message and "(it takes " in err.message, err.message


def test_an_ops_own_error_is_not_chained_to_the_expression_error():
    # the internal ShapeError stayed as the ExprError's context: an uncaught error printed the
    # engine's traceback ("During handling of the above exception ...") before the message
    err = _error("sum(conv2d(x, w))", {"x": np.ones((1, 2, 3, 3)), "w": np.ones((2, 2, 5, 5))})
    assert "kernel larger than padded input" in err.message
    assert err.__cause__ is None and err.__suppress_context__


def test_an_argument_given_by_position_and_by_keyword_is_named():
    # it reached the op's builder: "max_pool2d() got multiple values for argument 'kernel'"
    err = _error("sum(max_pool2d(x, 2, kernel=2))", {"x": np.ones((1, 1, 4, 4))})
    assert "kernel of max_pool2d() is given twice, by position and by keyword" in err.message


def test_an_error_deep_inside_an_op_builder_keeps_its_traceback(monkeypatch):
    # the user's mistakes are one message; an error raised inside the engine (a defect) stays the
    # cause of the ExprError, so that its traceback is printed for the report
    from gengraph.engine import expr

    def broken(x, w, **kw):
        return int("not a number")  # stands for a defect inside a builder

    monkeypatch.setitem(expr.FUNCTIONS, "conv2d", broken)
    err = _error("sum(conv2d(x, w))", {"x": np.ones((1, 2, 3, 3)), "w": np.ones((2, 2, 3, 3))})
    assert isinstance(err.__cause__, ValueError) and "not a number" in str(err.__cause__)


def test_group_norm_takes_pytorchs_num_groups_keyword():
    # "keyword "num_groups" is not allowed in group_norm()", though the README named it
    x = np.random.default_rng(0).normal(size=(2, 4, 3, 3))
    by_torch, grads_torch = value_and_grad("sum(group_norm(x, num_groups=2) ** 3)", {"x": x}, ["x"])
    ours, grads = value_and_grad("sum(group_norm(x, 2) ** 3)", {"x": x}, ["x"])
    assert by_torch == ours and np.array_equal(grads_torch["x"], grads["x"])
    assert "give groups= or num_groups=, not both" in _error("sum(group_norm(x, 2, num_groups=2))", {"x": x}).message
    assert "groups= is missing" in _error("sum(group_norm(x))", {"x": x}).message


@pytest.mark.parametrize("expression", ["sum(max_pool2d(x, 2, 2, 2))", "sum(upsample_nearest2d(x, 2, 2))"])
def test_too_many_arguments_do_not_send_the_user_to_another_name_of_one_given(expression):
    # "give kernel_size= by keyword": kernel_size is the kernel, already the second argument
    err = _error(expression, {"x": np.ones((1, 1, 4, 4))})
    assert "arguments, found" in err.message and "by keyword" not in err.message, err.message
