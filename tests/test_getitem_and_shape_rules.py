"""Indexing gradients with repeated integer-array indices, and the concat / transpose shape rules."""

import numpy as np
import pytest

from gengraph.engine import Graph, compile, grad, ops
from gengraph.engine.ops.registry import ShapeError
from gradcheck_util import fd_check


def _grad_of_weighted_index(x, index, w):
    """d/dx sum(x[index] * w), computed by the engine."""
    g = Graph(dtype="float64")
    xn = g.input("x", x.shape)
    return np.asarray(compile(g, grad(ops.sum(xn[index] * g.constant(w)), xn)).run(x=x))


def _reference(x, index, w):
    out = np.zeros_like(x)
    np.add.at(out, index, w)
    return out


def test_repeated_index_accumulates():
    g = Graph(dtype="float64")
    x = g.input("x", (3,))
    np.testing.assert_array_equal(compile(g, grad(ops.sum(x[[0, 0, 1]]), x)).run(x=np.ones(3)), [2.0, 1.0, 0.0])


@pytest.mark.parametrize("shape,index", [
    ((3,), [0, 0, 1]),
    ((3,), [-1, 2, -1, 0]),  # -1 and 2 are the same element: three contributions
    ((4, 2), [3, 0, 3, 3]),  # an index array on axis 0 of a 2-D array
    ((4, 2), np.array([[1, 1], [0, 1]])),  # a 2-D index array
    ((2, 4), (slice(None), [1, 1, 0])),  # a slice, then an index array
    ((3, 4), ([2, 2], slice(1, 3))),  # an index array, then a slice
    ((3, 4), ([0, 2, 0], [1, 3, 1])),  # two index arrays: the pair (0, 1) twice
])
def test_integer_array_index_gradient_adds_repeats(shape, index):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape)
    w = rng.normal(size=x[index].shape)
    np.testing.assert_allclose(_grad_of_weighted_index(x, index, w), _reference(x, index, w), rtol=1e-15)


def test_repeated_negative_index_by_hand():
    x, w = np.zeros(3), np.array([1.0, 10.0, 100.0, 1000.0])
    np.testing.assert_array_equal(_grad_of_weighted_index(x, [-1, 2, -1, 0], w), [1000.0, 0.0, 111.0])


def test_basic_index_gradient_unchanged():
    # ints and slices keep the plain-assignment path
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4))
    w = rng.normal(size=(2,))
    expected = np.zeros_like(x)
    expected[1:, 2] = w
    np.testing.assert_array_equal(_grad_of_weighted_index(x, (slice(1, None), 2), w), expected)


@pytest.mark.parametrize("index", [[2, 0, 2, 2], (slice(None), [1, 1, 2]), ([0, 0], [-1, 2])])
def test_repeated_index_matches_central_differences(index):
    x = np.random.default_rng(2).normal(size=(3, 3))
    value = fd_check(lambda a: ops.sin(a[index]) * a[index], [x])
    np.testing.assert_allclose(value, np.sin(x[index]) * x[index], rtol=1e-15)


def test_repeated_index_second_order():
    # f = sum(x[idx]^3) = sum_j c_j x_j^3 (c_j: how often j is picked); d/dx sum(grad f * v) = 6 c x v
    x, v = np.array([0.5, -1.5, 2.0]), np.array([1.0, 2.0, -3.0])
    g = Graph(dtype="float64")
    xn, vn = g.input("x", (3,)), g.input("v", (3,))
    first = grad(ops.sum(xn[[0, 0, 1, -3]] ** 3), xn)
    second = grad(ops.sum(first * vn), xn)
    d1, d2 = compile(g, [first, second]).run(x=x, v=v)
    counts = np.array([3.0, 1.0, 0.0])
    np.testing.assert_allclose(d1, 3 * counts * x ** 2, rtol=1e-15)
    np.testing.assert_allclose(d2, 6 * counts * x * v, rtol=1e-15)


# --- concat ----------------------------------------------------------------------------------
def test_concat_refuses_mismatched_other_dimension():
    g = Graph()
    a, b = g.input("a", (2, 3)), g.input("b", (4, 5))
    with pytest.raises(ShapeError) as info:
        ops.concat([a, b], axis=0)
    assert "(2, 3)" in str(info.value) and "(4, 5)" in str(info.value) and "axis 0" in str(info.value)


def test_concat_refuses_out_of_range_axis():
    g = Graph()
    a = g.input("a", (2, 3))
    with pytest.raises(ShapeError, match="axis 2 is out of range for 2 dimensions"):
        ops.concat([a, a], axis=2)  # used to wrap to axis 0


def test_concat_unknown_batch_matches_anything():
    g = Graph(dtype="float64")
    a, b, c = g.input("a", (None, 3)), g.input("b", (None, 2)), g.input("c", (4, 1))
    ab, ac = ops.concat([a, b], axis=1), ops.concat([a, c], axis=-1)
    assert ab.shape == (None, 5) and ac.shape == (4, 4)
    rng = np.random.default_rng(3)
    av, bv, cv = rng.normal(size=(4, 3)), rng.normal(size=(4, 2)), rng.normal(size=(4, 1))
    got_ab, got_ac = compile(g, [ab, ac]).run(a=av, b=bv, c=cv)
    np.testing.assert_array_equal(got_ab, np.concatenate([av, bv], axis=1))
    np.testing.assert_array_equal(got_ac, np.concatenate([av, cv], axis=1))


# --- transpose -------------------------------------------------------------------------------
@pytest.mark.parametrize("axes", [(0, 3), (0, 0), (1,), (-3, 0), (0, 1, 2)])
def test_transpose_refuses_non_permutations(axes):
    g = Graph()
    u = g.input("u", (2, 3))
    with pytest.raises(ShapeError, match=r"must be a permutation of range\(2\)"):
        ops.transpose(u, axes=axes)


@pytest.mark.parametrize("axes,perm", [((1, 0), (1, 0)), ((-1, 0), (1, 0)), ((0, -1), (0, 1)), (None, (1, 0))])
def test_transpose_in_range_axes(axes, perm):
    g = Graph(dtype="float64")
    u = g.input("u", (2, 3))
    y = ops.transpose(u, axes=axes)
    uv = np.arange(6.0).reshape(2, 3)
    assert y.shape == uv.transpose(perm).shape
    np.testing.assert_array_equal(compile(g, y).run(u=uv), uv.transpose(perm))


def test_one_hot_takes_the_class_count_positionally_and_defaults_to_the_graph_dtype():
    # ops.one_hot(y, k) as docs/writing-plugins.md writes it: a TypeError for the missing dtype,
    # and with dtype= the positional k became a graph constant (shape ?x<Node constant#1>)
    g = Graph(dtype="float64")
    y = g.input("y", (None,), dtype="int64")
    h = ops.one_hot(y, 3)
    assert h.shape == (None, 3) and h.dtype == np.float64
    np.testing.assert_array_equal(compile(g, [h]).run(y=np.array([2, 0]))[0], [[0, 0, 1], [1, 0, 0]])
    assert ops.one_hot(y, np.int64(4), dtype="float32").dtype == np.float32
    for bad in (0, 2.5, True, h):
        with pytest.raises(TypeError, match="depth must be a positive int"):
            ops.one_hot(y, bad)
