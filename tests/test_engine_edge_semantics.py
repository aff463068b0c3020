"""Regression tests for engine defects found by differential testing (optimized vs plain programs).

Each case compares the optimized program with the plain one (no passes, no buffer reuse, no
direct updates) and with NumPy, or checks that a user mistake gets a named error.
"""

import numpy as np
import pytest

from gengraph.engine import ExprError, Graph, ShapeError, compile_graph, grad, ops, value_and_grad
from gengraph.engine.errors import LabelError, UserError

PLAIN = dict(passes=(), reuse_buffers=False, direct_updates=False)


@pytest.mark.parametrize("view", ["transpose", "reshape", "getitem"])
def test_output_view_of_a_direct_update_is_not_the_parameter(view):
    # the update's value is computed straight into w; a view of it returned uncopied was w's memory
    g = Graph(dtype="float64")
    w = g.param("w", np.array([[1.0, 2.0, 3.0]]))
    new = w * 2.0
    out = {"transpose": new.T, "reshape": ops.reshape(new, (3,)), "getitem": new[0]}[view]
    prog = compile_graph(g, {"o": out}, updates={w: new})
    first = prog.run()["o"]
    prog.run()
    assert first.ravel().tolist() == [2.0, 4.0, 6.0]
    assert not np.shares_memory(first, g.value(w))
    assert g.value(w).ravel().tolist() == [4.0, 8.0, 12.0]


@pytest.mark.parametrize("relation", ["gt", "ge", "lt", "le", "eq"])
def test_comparison_of_float32_with_float64_is_float64(relation):
    # the mask was float32 while float64 was recorded: the next float64 kernel then wrote into it
    g = Graph(dtype="float64")
    a = g.input("a", (3,), dtype="float32")
    b = g.input("b", (3,))
    y = getattr(ops, relation)(ops.exp(a), b) * (b + 1e-9)
    feeds = dict(a=np.zeros(3, np.float32), b=np.array([0.5, 1.0, 2.0]))
    cmp = {"gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal, "eq": np.equal}[relation]
    want = cmp(np.exp(feeds["a"]), feeds["b"]) * (feeds["b"] + 1e-9)
    for kw in (PLAIN, {}):
        got = compile_graph(g, y, **kw).run(feeds)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want)


def test_adding_zero_keeps_the_sign_of_zero():
    g = Graph(dtype="float64")
    x = g.input("x", (2,))
    y = 1.0 / (x + 0.0)
    feeds = dict(x=np.array([-0.0, 2.0]))
    with np.errstate(divide="ignore"):
        for kw in (PLAIN, {}):
            assert compile_graph(g, y, **kw).run(feeds).tolist() == [np.inf, 0.5]


def test_adding_negative_zero_is_still_folded():
    g = Graph(dtype="float64")
    x = g.input("x", (2,))
    prog = compile_graph(g, ops.exp(x + (-0.0)))
    assert [n.op for n in prog.nodes if not n.is_leaf] == ["exp"]
    np.testing.assert_array_equal(prog.run(x=np.array([-0.0, 1.0])), np.exp([-0.0, 1.0]))


def test_buffer_reuse_with_unknown_axes_of_different_run_time_sizes():
    # both inputs are declared (None, 3); the optimized program handed the (1, 3) buffer to the
    # (4, 3) sum and NumPy raised "non-broadcastable output operand"
    g = Graph(dtype="float64")
    x, y = g.input("x", (None, 3)), g.input("y", (None, 3))
    out = ops.exp(x) + ops.exp(y)
    for fx, fy in [((1, 3), (4, 3)), ((4, 3), (1, 3)), ((4, 3), (4, 3))]:
        feeds = dict(x=np.full(fx, 0.5), y=np.full(fy, -0.25))
        want = np.exp(feeds["x"]) + np.exp(feeds["y"])
        for kw in (PLAIN, {}):
            np.testing.assert_allclose(compile_graph(g, out, **kw).run(feeds), want, rtol=1e-15)


def test_buffer_reuse_still_applies_when_sizes_agree():
    g = Graph(dtype="float64")
    x, y = g.input("x", (None, 3)), g.input("y", (None, 3))
    prog = compile_graph(g, ops.exp(x) + ops.exp(y))
    add_line = [line for line in prog.source.splitlines() if "out=" in line]
    assert add_line, prog.source  # the sum still writes into a dead exp's buffer when the shapes agree
    feeds = dict(x=np.ones((5, 3)), y=np.zeros((5, 3)))
    np.testing.assert_allclose(prog.run(feeds), np.e + 1.0)


@pytest.mark.parametrize("shapes", [((2, 3), (3,)), ((3,), (2, 3)), ((2, 3), (2, 3, 1))])
def test_concat_of_different_ranks_is_a_shape_error(shapes):
    g = Graph(dtype="float64")
    a, b = g.input("a", shapes[0]), g.input("b", shapes[1])
    with pytest.raises(ShapeError, match="equal rank"):
        ops.concat([a, b], axis=-1)


def test_concat_of_nothing_is_a_shape_error():
    with pytest.raises(ShapeError, match="at least one input"):
        ops.concat([])


def _classifier(op):
    g = Graph(dtype="float64")
    z = g.input("z", (None, 3))
    y = g.input("y", (None,), dtype="int64")
    if op == "loss":
        out = ops.mean(ops.softmax_cross_entropy(z, y))
        return g, [out, grad(out, z)]
    return g, [ops.mean(ops.correct(z, y))]


@pytest.mark.parametrize("op", ["loss", "correct"])
@pytest.mark.parametrize("label", [-1, -3, 3, 7])
def test_class_labels_out_of_range_are_refused(op, label):
    g, outs = _classifier(op)
    z = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]])
    for kw in (PLAIN, {}):
        prog = compile_graph(g, outs, **kw)
        with pytest.raises(LabelError, match=rf"0\.\.2 \(3 classes\), found {label}"):
            prog.run(z=z, y=np.array([0, label]))
    assert issubclass(LabelError, UserError) and issubclass(LabelError, IndexError)


@pytest.mark.parametrize("op", ["loss", "correct"])
def test_class_labels_in_range_give_the_numpy_values(op):
    g, outs = _classifier(op)
    z = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]])
    y = np.array([2, 1])
    got = compile_graph(g, outs).run(z=z, y=y)
    lse = np.log(np.exp(z).sum(axis=1))
    if op == "loss":
        np.testing.assert_allclose(got[0], np.mean(lse - z[[0, 1], y]), rtol=1e-14)
        p = np.exp(z - lse[:, None])
        p[[0, 1], y] -= 1
        np.testing.assert_allclose(got[1], p / 2, rtol=1e-14)
    else:
        assert got[0] == 0.5


def test_update_with_an_unknown_axis_is_refused():
    # a (1, 2) batch was broadcast silently into all four rows of the state
    g = Graph(dtype="float64")
    x = g.input("x", (None, 2))
    s = g.state("s", np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"update of s: shape \(\?, 2\) != \(4, 2\).*unknown axis"):
        compile_graph(g, [], updates={s: x * 2.0})


def test_double_star_in_an_expression_is_named():
    with pytest.raises(ExprError, match=r"\*\* arguments are not allowed in expressions; give sum\(\)'s keywords"):
        value_and_grad("sum(x, **{'axis': 0})", {"x": np.ones((2, 2))}, ["x"])


# --- image ops: argument errors, NumPy scalars, NaN windows ---------------------------------------
@pytest.mark.parametrize("build, message", [
    (lambda x, w: ops.conv2d(x, w, padding=-1), r"conv2d\(\(1, 4, 5, 5\), \(4, 4, 3, 3\)\): padding must be >= 0"),
    (lambda x, w: ops.conv2d(x, w, stride=(1, 0)), r"conv2d\(\(1, 4, 5, 5\), \(4, 4, 3, 3\)\): stride must be >= 1"),
    (lambda x, w: ops.conv2d(x, w, groups=0), r"conv2d\(\(1, 4, 5, 5\), \(4, 4, 3, 3\)\): groups must be a positive"),
    (lambda x, w: ops.conv_transpose2d(x, w, stride=2, output_padding=-1),
     r"conv_transpose2d\(\(1, 4, 5, 5\), \(4, 4, 3, 3\)\): output_padding must be >= 0"),
    (lambda x, w: ops.max_pool2d(x, 0), r"max_pool2d\(\(1, 4, 5, 5\)\): kernel must be >= 1"),
    (lambda x, w: ops.avg_pool2d(x, 2, 0), r"avg_pool2d\(\(1, 4, 5, 5\)\): stride must be >= 1"),
    (lambda x, w: ops.upsample_nearest2d(x, 0), r"upsample_nearest2d\(\(1, 4, 5, 5\)\): scale must be >= 1"),
    # a shape rule's own error keeps its one prefix
    (lambda x, w: ops.conv2d(x, w[:, :2]), r"^conv2d\(\(1, 4, 5, 5\), \(4, 2, 3, 3\)\): channel mismatch"),
])
def test_image_argument_errors_name_the_op_and_shapes(build, message):
    g = Graph(dtype="float64")
    x, w = g.input("x", (1, 4, 5, 5)), g.input("w", (4, 4, 3, 3))
    with pytest.raises(ShapeError, match=message):
        build(x, w)


@pytest.mark.parametrize("expression, prefix", [
    ("sum(group_norm(x, 3))", "group_norm"), ("sum(conv2d(x, w))", "conv2d"), ("sum(max_pool2d(x, 8))", "max_pool2d"),
])
def test_expression_errors_name_the_op_once(expression, prefix):
    inputs = {"x": np.ones((2, 4, 7, 9)), "w": np.ones((6, 2, 3, 3))}
    with pytest.raises(ExprError) as info:
        value_and_grad(expression, inputs, ["x"])
    assert str(info.value).count(f"{prefix}:") + str(info.value).count(f"{prefix}((") == 1, str(info.value)


def test_norms_and_dropout_take_numpy_scalars():
    g = Graph(dtype="float64")
    x = g.input("x", (2, 4, 3, 3))
    data = np.arange(72.0).reshape(2, 4, 3, 3)
    a = compile_graph(g, ops.group_norm(x, np.int64(2), eps=np.float32(1e-5))).run(x=data)
    b = compile_graph(g, ops.group_norm(x, 2, eps=float(np.float32(1e-5)))).run(x=data)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(compile_graph(g, ops.layer_norm(x, np.float64(0.5))).run(x=data),
                                  compile_graph(g, ops.layer_norm(x, 0.5)).run(x=data))
    assert ops.dropout(x, np.float32(0.25)).shape == (2, 4, 3, 3)
    with pytest.raises(ShapeError, match="groups must be a positive int"):
        ops.group_norm(x, np.bool_(True))


def test_a_bad_conv_algorithm_variable_warns_and_runs(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, GENGRAPH_CONV_ALGO="bogus")
    done = subprocess.run([sys.executable, "-c", "import gengraph.engine.ops.conv as c; print(c.CONV_ALGO)"],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "auto"
    assert "GENGRAPH_CONV_ALGO must be one of auto, im2col, winograd, not 'bogus'; using auto" in done.stderr
    assert "Traceback" not in done.stderr


def test_indexing_with_none_adds_an_axis():
    # x[None] lost its index (None attributes were dropped) and raised a TypeError
    g = Graph(dtype="float64")
    x = g.input("x", (3,))
    y = x[None]
    assert y.shape == (1, 3)
    value, gx = compile_graph(g, [y, grad(ops.sum(y * 2.0), x)]).run(x=np.arange(3.0))
    np.testing.assert_array_equal(value, [[0.0, 1.0, 2.0]])
    np.testing.assert_array_equal(gx, [2.0, 2.0, 2.0])


def test_an_attribute_given_positionally_is_named():
    # cast(t, "float64") made the string a constant input: a node of dtype <U7, failing at run time
    g = Graph(dtype="float64")
    t = g.input("t", (2,), dtype="int64")
    with pytest.raises(ShapeError, match=r"cast: argument 2 is 'float64', not an array or a number .*by keyword"):
        ops.cast(t, "float64")
    assert ops.cast(t, dtype="float64").dtype == np.float64
