"""Every differentiable op: VJP vs central finite differences (float64), forward vs NumPy.

Shapes, axes, keepdims and values are drawn by hypothesis; values stay away from kinks
(relu, abs, maximum, clip, ...) and singularities (log, sqrt, div, pow) so that central
differences with eps=1e-6 are exact to ~1e-8.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gengraph.engine import Graph, compile, grad, ops, topo_order
from gengraph.engine.ops.registry import apply
from gradcheck_util import fd_check, forward

CHECK = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- strategies ------------------------------------------------------------------------
def floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def away_from(points, lo=-3.0, hi=3.0, margin=0.05):
    """Floats in [lo, hi] at least `margin` from every kink in `points`."""
    return floats(lo, hi).filter(lambda v: all(abs(v - p) > margin for p in points))


ANY = floats(-3.0, 3.0)
POSITIVE = floats(0.2, 4.0)
NONZERO = away_from([0.0], margin=0.1)

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
nonscalar_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)

# broadcasting pairs that must always be covered, besides the drawn ones
FIXED_PAIRS = [((3, 1), (1, 4)), ((5,), (2, 5)), ((), (3, 4)), ((3, 4), ()), ((2, 1, 3), (4, 1)), ((4,), (4,))]
pair_shapes = st.one_of(
    st.sampled_from(FIXED_PAIRS),
    hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4).map(lambda b: b.input_shapes),
)


def arrays(shape, elements=ANY):
    return hnp.arrays(np.float64, shape, elements=elements)


@st.composite
def axes_for(draw, ndim):
    """None, an int (maybe negative) or a tuple of distinct axes (maybe negative spellings)."""
    if ndim == 0:
        return None
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    spell = lambda a: draw(st.sampled_from([a, a - ndim]))  # noqa: E731
    if kind == "int":
        return spell(draw(st.integers(0, ndim - 1)))
    chosen = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(spell(a) for a in chosen)


def np_axis(axis):
    return axis if axis is None or isinstance(axis, int) else tuple(axis)


# --- elementwise: unary ------------------------------------------------------------------
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


_C = math.sqrt(2.0 / math.pi)

UNARY = {
    # name: (build, numpy reference, element strategy)
    "neg": (ops.neg, np.negative, ANY),
    "exp": (ops.exp, np.exp, ANY),
    "log": (ops.log, np.log, POSITIVE),
    "sqrt": (ops.sqrt, np.sqrt, POSITIVE),
    "abs": (ops.abs, np.abs, NONZERO),
    "square": (ops.square, np.square, ANY),
    "log1p": (ops.log1p, np.log1p, floats(-0.8, 3.0)),
    "expm1": (ops.expm1, np.expm1, ANY),
    "sin": (ops.sin, np.sin, ANY),
    "cos": (ops.cos, np.cos, ANY),
    "tanh": (ops.tanh, np.tanh, ANY),
    "sigmoid": (ops.sigmoid, _sigmoid, floats(-6.0, 6.0)),
    "relu": (ops.relu, lambda x: np.maximum(x, 0.0), NONZERO),
    "leaky_relu": (ops.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x), NONZERO),
    "leaky_relu_0.2": (lambda x: ops.leaky_relu(x, slope=0.2), lambda x: np.where(x > 0, x, 0.2 * x), NONZERO),
    "elu": (ops.elu, lambda x: np.where(x > 0, x, np.expm1(x)), NONZERO),
    "elu_1.5": (lambda x: ops.elu(x, alpha=1.5), lambda x: np.where(x > 0, x, 1.5 * np.expm1(x)), NONZERO),
    "softplus": (ops.softplus, lambda x: np.log1p(np.exp(x)), floats(-6.0, 6.0)),
    "gelu": (ops.gelu, lambda x: 0.5 * x * (1 + np.tanh(_C * (x + 0.044715 * x ** 3))), ANY),
    "silu": (ops.silu, lambda x: x * _sigmoid(x), ANY),
    "log_sigmoid": (ops.log_sigmoid, lambda x: np.log(_sigmoid(x)), floats(-6.0, 6.0)),
    "pow_2": (lambda x: x ** 2, lambda x: x ** 2, ANY),
    "pow_3_negative_base": (lambda x: x ** 3, lambda x: x ** 3, ANY),
    "pow_-1": (lambda x: x ** -1, lambda x: 1.0 / x, NONZERO),
    "pow_0.5": (lambda x: x ** 0.5, np.sqrt, POSITIVE),
    "rpow_2": (lambda x: 2.0 ** x, lambda x: 2.0 ** x, ANY),
    "rdiv": (lambda x: 3.0 / x, lambda x: 3.0 / x, NONZERO),
    "rsub": (lambda x: 1.0 - x, lambda x: 1.0 - x, ANY),
    "scalar_mul_add": (lambda x: 2.5 * x + 1.0, lambda x: 2.5 * x + 1.0, ANY),
}


@pytest.mark.parametrize("name", list(UNARY))
@CHECK
@given(data=st.data(), shape=shapes)
def test_unary_grad_and_value(name, data, shape):
    build, ref, elements = UNARY[name]
    x = data.draw(arrays(shape, elements))
    out = fd_check(build, [x])
    assert out.shape == shape
    np.testing.assert_allclose(out, ref(x), rtol=1e-12, atol=1e-12)


CLIP_BOUNDS = [(-1.0, 0.5), (-0.25, 1.5), (-1.0, 1.5)]


@CHECK
@given(data=st.data(), shape=shapes, bounds=st.sampled_from(CLIP_BOUNDS))
def test_clip(data, shape, bounds):
    lo, hi = bounds
    x = data.draw(arrays(shape, away_from([-1.0, -0.25, 0.5, 1.5])))
    out = fd_check(lambda a: ops.clip(a, lo, hi), [x])
    np.testing.assert_array_equal(out, np.clip(x, lo, hi))


def _lattice(lo_k, hi_k, offset):
    """k*0.3 + offset + jitter in [0, 0.04): two lattices with offsets 0 and 0.15 stay >= 0.11 apart."""
    return st.tuples(st.integers(lo_k, hi_k), floats(0.0, 0.04)).map(lambda t: t[0] * 0.3 + offset + t[1])


@CHECK
@given(data=st.data(),
       shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=4))
def test_clip_with_array_bounds_grad_to_all_inputs(data, shapes):
    sx, slo, shi = shapes.input_shapes
    x = data.draw(arrays(sx, _lattice(-6, 6, 0.0)))
    lo = data.draw(arrays(slo, _lattice(-5, -1, 0.15)))
    hi = data.draw(arrays(shi, _lattice(0, 5, 0.15)))
    out = fd_check(ops.clip, [x, lo, hi])
    np.testing.assert_array_equal(out, np.clip(x, lo, hi))


def test_clip_gradient_is_one_inside_zero_outside():
    x = np.array([-2.0, -0.5, 0.0, 0.3, 2.0])
    g = Graph(dtype="float64")
    xn = g.input("x", x.shape)
    dx = compile(g, grad(ops.sum(ops.clip(xn, -1.0, 1.0)), xn)).run(x=x)
    np.testing.assert_array_equal(dx, [0.0, 1.0, 1.0, 1.0, 0.0])


# --- elementwise: binary, with broadcasting ------------------------------------------------
BINARY = {
    # name: (build, numpy reference, elements of a, elements of b)
    "add": (ops.add, np.add, ANY, ANY),
    "sub": (ops.sub, np.subtract, ANY, ANY),
    "mul": (ops.mul, np.multiply, ANY, ANY),
    "div": (ops.div, np.divide, ANY, away_from([0.0], margin=0.3)),
    "div_positive": (ops.div, np.divide, POSITIVE, POSITIVE),
    "pow": (ops.pow, np.power, POSITIVE, floats(-2.0, 2.0)),
    "operator_sugar": (lambda a, b: (a - b) * a / (b * b + 1.0) - -b, lambda a, b: (a - b) * a / (b * b + 1.0) + b,
                       ANY, ANY),
}


@pytest.mark.parametrize("name", list(BINARY))
@CHECK
@given(data=st.data(), shapes=pair_shapes)
def test_binary_grad_and_value(name, data, shapes):
    build, ref, ea, eb = BINARY[name]
    a = data.draw(arrays(shapes[0], ea))
    b = data.draw(arrays(shapes[1], eb))
    out = fd_check(build, [a, b])
    expected = ref(a, b)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shapes", FIXED_PAIRS)
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_fixed_broadcast_pairs(name, shapes):
    build, ref, _, _ = BINARY[name]
    rng = np.random.default_rng(1)
    a = rng.uniform(0.5, 2.0, size=shapes[0])
    b = rng.uniform(0.5, 2.0, size=shapes[1])
    out = fd_check(build, [a, b])
    np.testing.assert_allclose(out, ref(a, b), rtol=1e-12)


def _separated_pair(shape_a, shape_b):
    """a and b on interleaved lattices: every broadcast pair differs by >= 0.11 (no ties)."""
    jitter = floats(0.0, 0.04)
    ea = st.tuples(st.integers(-5, 5), jitter).map(lambda t: t[0] * 0.3 + t[1])
    eb = st.tuples(st.integers(-5, 5), jitter).map(lambda t: t[0] * 0.3 + 0.15 + t[1])
    return st.tuples(arrays(shape_a, ea), arrays(shape_b, eb))


@pytest.mark.parametrize("name,ref", [("maximum", np.maximum), ("minimum", np.minimum)])
@CHECK
@given(data=st.data(), shapes=pair_shapes, swap=st.booleans())
def test_maximum_minimum(name, ref, data, shapes, swap):
    a, b = data.draw(_separated_pair(*shapes))
    if swap:
        a, b = b, a
    out = fd_check(getattr(ops, name), [a, b])
    np.testing.assert_array_equal(out, ref(a, b))


def test_maximum_tie_is_split_evenly():
    g = Graph(dtype="float64")
    a, b = g.input("a", (3,)), g.input("b", (3,))
    ga, gb = compile(g, grad(ops.sum(ops.maximum(a, b)), [a, b])).run(a=[1.0, 2.0, 3.0], b=[1.0, 0.0, 4.0])
    np.testing.assert_array_equal(ga + gb, [1.0, 1.0, 1.0])  # a tie passes the gradient exactly once
    np.testing.assert_array_equal(ga, [0.5, 1.0, 0.0])  # in halves, as max's reduction and PyTorch


@CHECK
@given(data=st.data(),
       shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=4))
def test_where(data, shapes):
    sc, sa, sb = shapes.input_shapes
    cond = data.draw(hnp.arrays(np.float64, sc, elements=st.sampled_from([0.0, 1.0])))
    a = data.draw(arrays(sa))
    b = data.draw(arrays(sb))
    out = fd_check(lambda x, y: ops.where(x.graph.constant(cond), x, y), [a, b])
    np.testing.assert_array_equal(out, np.where(cond != 0, a, b))


def test_fan_in_sums_gradients():
    # x used by several consumers: gradients from every path add up
    x = np.array([[0.3, -1.2, 2.0], [0.7, 0.1, -0.4]])
    out = fd_check(lambda a: a * a + ops.exp(a) * a - ops.sin(a) / (a * a + 1.0), [x])
    np.testing.assert_allclose(out, x * x + np.exp(x) * x - np.sin(x) / (x * x + 1), rtol=1e-12)


def test_unrelated_param_gets_zero_gradient():
    g = Graph(dtype="float64")
    x = g.input("x", (2, 3))
    w = g.param("w", np.ones((4,)))
    gw, gx = compile(g, grad(ops.sum(ops.exp(x)), [w, x])).run(x=np.zeros((2, 3)))
    np.testing.assert_array_equal(gw, np.zeros(4))
    np.testing.assert_array_equal(gx, np.ones((2, 3)))


def test_stop_gradient_blocks_gradient():
    x = np.array([0.5, -2.0, 3.0])
    g = Graph(dtype="float64")
    xn = g.input("x", x.shape)
    y = ops.sum(xn * ops.stop_gradient(xn))
    value, dx = compile(g, [y, grad(y, xn)]).run(x=x)
    assert value == pytest.approx(np.sum(x * x))
    np.testing.assert_allclose(dx, x)  # not 2x: the stopped factor is a constant


# --- reductions ----------------------------------------------------------------------------
def _np_logsumexp(x, axis, keepdims):
    return np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims))


REDUCTIONS = {
    "sum": (ops.sum, np.sum),
    "mean": (ops.mean, np.mean),
    "logsumexp": (ops.logsumexp, _np_logsumexp),
}


@pytest.mark.parametrize("name", list(REDUCTIONS))
@CHECK
@given(data=st.data(), shape=shapes, keepdims=st.booleans())
def test_reduction(name, data, shape, keepdims):
    build, ref = REDUCTIONS[name]
    axis = data.draw(axes_for(len(shape)))
    x = data.draw(arrays(shape))
    out = fd_check(lambda a: build(a, axis=axis, keepdims=keepdims), [x])
    expected = ref(x, axis=np_axis(axis), keepdims=keepdims)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def _distinct(shape):
    """Values with no ties (pairwise >= 0.1 apart), so max/min have a unique argmax."""
    size = int(np.prod(shape))
    return hnp.arrays(np.int64, shape, elements=st.integers(-40, 40), unique=True).map(
        lambda k: k * 0.1 + 0.013 * np.sign(k)) if size <= 81 else None


@pytest.mark.parametrize("name,ref", [("max", np.max), ("min", np.min)])
@CHECK
@given(data=st.data(), shape=shapes, keepdims=st.booleans())
def test_max_min(name, ref, data, shape, keepdims):
    axis = data.draw(axes_for(len(shape)))
    x = data.draw(_distinct(shape))
    out = fd_check(lambda a: getattr(ops, name)(a, axis=axis, keepdims=keepdims), [x])
    expected = ref(x, axis=np_axis(axis), keepdims=keepdims)
    assert out.shape == np.shape(expected)
    np.testing.assert_array_equal(out, expected)


def test_max_ties_share_gradient():
    g = Graph(dtype="float64")
    x = g.input("x", (2, 3))
    dx = compile(g, grad(ops.sum(ops.max(x, axis=1)), x)).run(x=[[1.0, 3.0, 3.0], [0.0, -1.0, 2.0]])
    np.testing.assert_allclose(dx, [[0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])


def test_logsumexp_large_values_and_axes():
    x = np.array([[1000.0, 1000.0, -1000.0], [-5.0, 0.0, 5.0]])
    out = forward(lambda a: ops.logsumexp(a, axis=-1), [x])
    np.testing.assert_allclose(out, [1000.0 + np.log(2.0), 5.0 + np.log1p(np.exp(-5.0) + np.exp(-10.0))])
    out = forward(lambda a: ops.logsumexp(a, axis=(0, 1), keepdims=True), [x[1:]])
    np.testing.assert_allclose(out, _np_logsumexp(x[1:], axis=(0, 1), keepdims=True))


# --- linear algebra ------------------------------------------------------------------------------
@st.composite
def matmul_shapes(draw):
    n, k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=3)).input_shapes
    kind = draw(st.sampled_from(["vv", "vm", "mv", "mm", "mm", "mm"]))
    if kind == "vv":
        return (k,), (k,)
    if kind == "vm":
        return (k,), batch[1] + (k, m)
    if kind == "mv":
        return batch[0] + (n, k), (k,)
    return batch[0] + (n, k), batch[1] + (k, m)


@CHECK
@given(data=st.data(), shapes=matmul_shapes())
def test_matmul(data, shapes):
    a = data.draw(arrays(shapes[0]))
    b = data.draw(arrays(shapes[1]))
    out = fd_check(lambda x, y: x @ y, [a, b])
    expected = np.matmul(a, b)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sa,sb", [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((3,), (4, 3, 2)),
                                   ((4, 2, 3), (3,)), ((2, 3), (4, 3, 2)), ((4, 1, 2, 3), (5, 3, 2)),
                                   ((4, 2, 3), (4, 3, 5))])
def test_matmul_fixed_shapes(sa, sb):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=sa), rng.normal(size=sb)
    out = fd_check(ops.matmul, [a, b])
    np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)


# --- shape ops ------------------------------------------------------------------------------
@CHECK
@given(data=st.data(), shape=nonscalar_shapes)
def test_transpose(data, shape):
    ndim = len(shape)
    perm = data.draw(st.permutations(range(ndim)))
    spelled = tuple(data.draw(st.sampled_from([a, a - ndim])) for a in perm)
    axes = data.draw(st.sampled_from([spelled, None]))
    x = data.draw(arrays(shape))
    out = fd_check(lambda a: ops.transpose(a, axes=axes), [x])
    np.testing.assert_array_equal(out, np.transpose(x, axes))


def test_mT_swaps_last_two_axes():
    x = np.arange(24.0).reshape(2, 3, 4)
    out = fd_check(ops.mT, [x])
    np.testing.assert_array_equal(out, np.swapaxes(x, -1, -2))


def _prime_factors(n):
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


@st.composite
def reshape_case(draw):
    shape = draw(shapes)
    factors = draw(st.permutations(_prime_factors(int(np.prod(shape)))))
    ndim = draw(st.integers(1, 4))
    groups = [1] * ndim
    for f in factors:
        groups[draw(st.integers(0, ndim - 1))] *= f
    target = tuple(groups)
    if draw(st.booleans()):
        target = tuple(-1 if i == draw(st.integers(0, ndim - 1)) else d for i, d in enumerate(target))
        if target.count(-1) > 1:
            target = tuple(groups)
    return shape, target


@CHECK
@given(data=st.data(), case=reshape_case())
def test_reshape(data, case):
    shape, target = case
    x = data.draw(arrays(shape))
    out = fd_check(lambda a: ops.reshape(a, target), [x])
    np.testing.assert_array_equal(out, x.reshape(target))


@FEW
@given(data=st.data(), shape=nonscalar_shapes)
def test_flatten(data, shape):
    x = data.draw(arrays(shape))
    out = fd_check(ops.flatten, [x])
    np.testing.assert_array_equal(out, x.reshape(shape[0], -1))


@st.composite
def broadcast_case(draw):
    target = draw(nonscalar_shapes)
    drop = draw(st.integers(0, len(target)))
    src = tuple(d if not draw(st.booleans()) else 1 for d in target[drop:])
    return src, target


@CHECK
@given(data=st.data(), case=broadcast_case())
def test_broadcast_to_and_sum_to(data, case):
    src, target = case
    x = data.draw(arrays(src))
    out = fd_check(lambda a: ops.broadcast_to(a, target), [x])
    np.testing.assert_array_equal(out, np.broadcast_to(x, target))
    y = data.draw(arrays(target))
    lead = len(target) - len(src)
    keep = tuple(lead + i for i, d in enumerate(src) if d == 1 and target[lead + i] != 1)
    expected = np.sum(y, axis=keep, keepdims=True) if keep else y
    expected = np.sum(expected, axis=tuple(range(lead))) if lead else expected
    out = fd_check(lambda a: ops.sum_to(a, a.graph.constant(np.zeros(src))), [y])
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    out = fd_check(lambda a: ops.broadcast_like(a, a.graph.constant(np.zeros(target))), [x])
    np.testing.assert_array_equal(out, np.broadcast_to(x, target))


@FEW
@given(data=st.data(), shape=shapes)
def test_expand_dims_and_reshape_like(data, shape):
    ndim_out = len(shape) + data.draw(st.integers(1, 2))
    axis = tuple(sorted(data.draw(st.lists(st.integers(0, ndim_out - 1), min_size=ndim_out - len(shape),
                                           max_size=ndim_out - len(shape), unique=True))))
    x = data.draw(arrays(shape))
    out = fd_check(lambda a: ops.expand_dims(a, axis=axis), [x])
    np.testing.assert_array_equal(out, np.expand_dims(x, axis))
    flat = (int(np.prod(shape)),)
    out = fd_check(lambda a: ops.reshape_like(a, a.graph.constant(np.zeros(flat))), [x])
    np.testing.assert_array_equal(out, x.reshape(flat))


@CHECK
@given(data=st.data(), shape=nonscalar_shapes, count=st.integers(1, 4))
def test_concat(data, shape, count):
    ndim = len(shape)
    axis = data.draw(st.integers(-ndim, ndim - 1))
    parts = []
    for _ in range(count):
        s = list(shape)
        s[axis] = data.draw(st.integers(1, 3))
        parts.append(data.draw(arrays(tuple(s))))
    out = fd_check(lambda *xs: ops.concat(list(xs), axis=axis), parts)
    np.testing.assert_array_equal(out, np.concatenate(parts, axis=axis))


@CHECK
@given(data=st.data(), shape=nonscalar_shapes)
def test_getitem(data, shape):
    index = data.draw(hnp.basic_indices(shape, min_dims=0, allow_newaxis=True, allow_ellipsis=True))
    x = data.draw(arrays(shape))
    out = fd_check(lambda a: a[index], [x])
    np.testing.assert_array_equal(out, x[index])


@pytest.mark.parametrize("index", [np.s_[1:3], np.s_[:, 0], np.s_[..., None], np.s_[::-1, 1:], np.s_[-1],
                                   np.s_[None, 2, ::2]])
def test_getitem_fixed(index):
    x = np.arange(20.0).reshape(4, 5) / 7.0
    out = fd_check(lambda a: a[index] * a[index], [x])
    np.testing.assert_allclose(out, x[index] ** 2)


@CHECK
@given(data=st.data(), shape=nonscalar_shapes,
       idx_shape=hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=5))
def test_take(data, shape, idx_shape):
    ndim = len(shape)
    axis = data.draw(st.integers(-ndim, ndim - 1))
    n = shape[axis]
    idx = data.draw(hnp.arrays(np.int64, idx_shape, elements=st.integers(-n, n - 1)))  # repeats and negatives
    x = data.draw(arrays(shape))
    out = fd_check(lambda a: ops.take(a, a.graph.constant(idx, dtype="int64"), axis=axis), [x])
    np.testing.assert_array_equal(out, np.take(x, idx, axis=axis))


def test_take_gradient_accumulates_repeats():
    g = Graph(dtype="float64")
    emb = g.input("emb", (4, 2))
    idx = g.input("idx", (None,), dtype="int64")
    d = compile(g, grad(ops.sum(ops.take(emb, idx, axis=0)), emb)).run(emb=np.zeros((4, 2)), idx=[0, 2, 2, 2])
    np.testing.assert_array_equal(d, [[1, 1], [0, 0], [3, 3], [0, 0]])


def test_one_hot_and_count():
    g = Graph(dtype="float64")
    y = g.input("y", (None,), dtype="int64")
    x = g.input("x", (None, 3))
    oh, n = compile(g, [ops.one_hot(y, depth=4, dtype="float64"), ops.count(x, axis=(0,))]).run(
        y=[3, 0, 1], x=np.zeros((7, 3)))
    np.testing.assert_array_equal(oh, np.eye(4)[[3, 0, 1]])
    assert oh.dtype == np.float64 and float(n) == 7.0


# --- softmax family and losses ----------------------------------------------------------------
def _np_softmax(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@CHECK
@given(data=st.data(), shape=nonscalar_shapes)
def test_softmax_family(name, data, shape):
    axis = data.draw(axes_for(len(shape)).filter(lambda a: a is not None) | st.just(-1))
    x = data.draw(arrays(shape, floats(-5.0, 5.0)))
    out = fd_check(lambda a: getattr(ops, name)(a, axis=axis), [x])
    expected = _np_softmax(x, np_axis(axis))
    if name == "log_softmax":
        expected = np.log(expected)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)


@CHECK
@given(data=st.data(), batch=hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4),
       classes=st.integers(1, 5))
def test_softmax_cross_entropy(data, batch, classes):
    z = data.draw(arrays(batch + (classes,), floats(-5.0, 5.0)))
    labels = data.draw(hnp.arrays(np.int64, batch, elements=st.integers(0, classes - 1)))
    out = fd_check(lambda a: ops.softmax_cross_entropy(a, a.graph.constant(labels, dtype="int64")), [z])
    lse = _np_logsumexp(z, axis=-1, keepdims=False)
    picked = np.take_along_axis(z, labels[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(out, lse - picked, rtol=1e-10, atol=1e-12)


@CHECK
@given(data=st.data(), batch=hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4),
       classes=st.integers(1, 5))
def test_softmax_minus_one_hot_and_correct(data, batch, classes):
    z = data.draw(arrays(batch + (classes,), floats(-5.0, 5.0)))
    labels = data.draw(hnp.arrays(np.int64, batch, elements=st.integers(0, classes - 1)))
    out = fd_check(lambda a: ops.softmax_minus_one_hot(a, a.graph.constant(labels, dtype="int64")), [z])
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    expected = e / e.sum(axis=-1, keepdims=True) - np.eye(classes)[labels]
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)
    right = forward(lambda a: ops.correct(a, a.graph.constant(labels, dtype="int64")), [z])
    np.testing.assert_array_equal(right, (np.take_along_axis(z, labels[..., None], -1)[..., 0]
                                          >= z.max(axis=-1)).astype(float))


@CHECK
@given(data=st.data(), batch=hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4),
       classes=st.integers(1, 5))
def test_softmax_ce_backward(data, batch, classes):
    """The fused VJP of softmax cross-entropy, g * (p - one_hot), and its own VJPs (w.r.t. g and
    p) vs finite differences; second order through the loss is test_ops_second_order's."""
    g = data.draw(arrays(batch, floats(-2.0, 2.0)))
    p = data.draw(arrays(batch + (classes,), floats(0.05, 1.0)))
    labels = data.draw(hnp.arrays(np.int64, batch, elements=st.integers(0, classes - 1)))
    out = fd_check(lambda a, b: ops.softmax_ce_backward(a, b, b.graph.constant(labels, dtype="int64")), [g, p])
    np.testing.assert_allclose(out, np.asarray(g)[..., None] * (p - np.eye(classes)[labels]), rtol=1e-12, atol=1e-14)


@CHECK
@given(data=st.data(), shape=nonscalar_shapes)
def test_relu_grad(data, shape):
    """relu's fused VJP g * (y > 0): forward exact; gradient w.r.t. g vs finite differences
    (w.r.t. y it is zero away from the kink, declared as none)."""
    g = data.draw(arrays(shape))
    y = data.draw(arrays(shape, NONZERO))
    out = fd_check(ops.relu_grad, [g, y], wrt=[0])
    np.testing.assert_array_equal(out, g * (y > 0))


@CHECK
@given(data=st.data(), shape=shapes)
def test_bce_with_logits(data, shape):
    z = data.draw(arrays(shape, floats(-6.0, 6.0)))
    y = data.draw(arrays(shape, floats(0.0, 1.0)))
    out = fd_check(ops.bce_with_logits, [z, y])
    p = _sigmoid(z)
    np.testing.assert_allclose(out, -(y * np.log(p) + (1 - y) * np.log1p(-p)), rtol=1e-9, atol=1e-12)
    out = fd_check(ops.bernoulli_logpmf, [y, z])
    np.testing.assert_allclose(out, y * np.log(p) + (1 - y) * np.log1p(-p), rtol=1e-9, atol=1e-12)


@CHECK
@given(data=st.data(), shapes=pair_shapes)
def test_bce_with_logits_broadcasting(data, shapes):
    z = data.draw(arrays(shapes[0], floats(-6.0, 6.0)))
    y = data.draw(arrays(shapes[1], floats(0.0, 1.0)))
    out = fd_check(ops.bce_with_logits, [z, y])
    expected = np.logaddexp(0.0, z) - z * y
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)


@CHECK
@given(data=st.data(), shape=shapes)
def test_sum_squares(data, shape):
    x = data.draw(arrays(shape))
    out = fd_check(ops.sum_squares, [x])
    np.testing.assert_allclose(out, np.sum(x ** 2), rtol=1e-12, atol=1e-14)


@CHECK
@given(data=st.data(), shape=shapes, decay=st.floats(0.0, 0.99), square=st.booleans())
def test_ema(data, shape, decay, square):
    m, x = data.draw(arrays(shape)), data.draw(arrays(shape))
    out = fd_check(lambda a, b: ops.ema(a, b, decay=decay, square=square), [m, x])
    np.testing.assert_allclose(out, decay * m + (1 - decay) * (x * x if square else x), rtol=1e-12, atol=1e-14)


@CHECK
@given(data=st.data(), shape=shapes)
def test_adam_step(data, shape):
    p, m = data.draw(arrays(shape)), data.draw(arrays(shape))
    v = data.draw(arrays(shape, floats(0.1, 2.0)))
    step, scale = np.array(0.3), np.array(0.7)
    out = fd_check(lambda *a: ops.adam_step(*a, eps=1e-3), [p, m, v, step, scale])
    np.testing.assert_allclose(out, p - step * m / (np.sqrt(v) / scale + 1e-3), rtol=1e-12, atol=1e-14)


@CHECK
@given(data=st.data(), shapes=pair_shapes)
def test_mse(data, shapes):
    a, b = data.draw(arrays(shapes[0])), data.draw(arrays(shapes[1]))
    out = fd_check(ops.mse, [a, b])
    np.testing.assert_allclose(out, np.mean((a - b) ** 2), rtol=1e-12)


@CHECK
@given(data=st.data(),
       shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=4))
def test_gaussian_logpdf(data, shapes):
    sx, sm, sv = shapes.input_shapes
    x, m, lv = data.draw(arrays(sx)), data.draw(arrays(sm)), data.draw(arrays(sv, floats(-2.0, 2.0)))
    out = fd_check(ops.gaussian_logpdf, [x, m, lv])
    var = np.exp(lv)
    np.testing.assert_allclose(out, -0.5 * np.log(2 * np.pi * var) - (x - m) ** 2 / (2 * var), rtol=1e-10,
                               atol=1e-12)


@CHECK
@given(data=st.data(), shape=shapes)
def test_kl_normal(data, shape):
    mu_q, mu_p = data.draw(arrays(shape)), data.draw(arrays(shape))
    lv_q, lv_p = data.draw(arrays(shape, floats(-2.0, 2.0))), data.draw(arrays(shape, floats(-2.0, 2.0)))
    out = fd_check(ops.kl_normal_std, [mu_q, lv_q])
    np.testing.assert_allclose(out, 0.5 * (np.exp(lv_q) + mu_q ** 2 - 1 - lv_q), rtol=1e-10, atol=1e-12)
    out = fd_check(ops.kl_normal, [mu_q, lv_q, mu_p, lv_p])
    vq, vp = np.exp(lv_q), np.exp(lv_p)
    expected = 0.5 * (np.log(vp / vq) + (vq + (mu_q - mu_p) ** 2) / vp - 1)
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-12)
    # KL of a distribution with itself is zero, and kl_normal(., ., 0, 0) is kl_normal_std
    same = forward(ops.kl_normal, [mu_q, lv_q, mu_q, lv_q])
    np.testing.assert_allclose(same, 0.0, atol=1e-12)
    std = forward(ops.kl_normal, [mu_q, lv_q, np.zeros(shape), np.zeros(shape)])
    np.testing.assert_allclose(std, 0.5 * (np.exp(lv_q) + mu_q ** 2 - 1 - lv_q), rtol=1e-10, atol=1e-12)


@FEW
@given(lr=floats(1e-4, 1.0), step=st.integers(0, 50), beta=floats(0.5, 0.999))
def test_adam_bias_corrections(lr, step, beta):
    """lr / (1 - beta^t) and sqrt(1 - beta^t), t = step + 1, in Python floats (bit-equal to the
    hand-written formulas), and the step size's gradient w.r.t. lr vs finite differences."""
    t = step + 1
    out = fd_check(lambda a, s: ops.adam_step_size(a, s, beta=beta), [np.float64(lr), np.float64(step)], wrt=[0])
    assert float(out) == lr / (1.0 - beta ** t)
    bc = forward(lambda s: ops.adam_bc_sqrt(s, beta=beta), [np.float64(step)])
    assert float(bc) == math.sqrt(1.0 - beta ** t)


# --- one fixed gradient case per differentiable op, and coverage derived from the registry ---------
_R = np.random.default_rng(7)
_X = _R.uniform(0.3, 1.5, (2, 3)) * np.array([[1, -1, 1], [-1, 1, -1]])  # away from 0, both signs
_P = _R.uniform(0.5, 2.0, (2, 3))  # positive
_Y = _R.uniform(-1.0, 1.0, (2, 3))
_IDX = np.array([2, 0, 2])


_IMG = _R.normal(size=(2, 2, 5, 5))  # N, C, H, W: distinct values, so max-pool windows have no ties
_IMG2 = _R.normal(size=(2, 3, 5, 5))
_W = _R.normal(size=(3, 2, 3, 3))


def _const(x, value, dtype="float64"):
    return x.graph.constant(np.asarray(value), dtype=dtype)


GRAD_CASES = {  # op name -> (build(*nodes) -> node using the op, arrays)
    **{name: (getattr(ops, name), [_X]) for name in
       ("abs", "cos", "sin", "exp", "expm1", "square", "neg", "tanh", "sigmoid", "relu", "elu", "leaky_relu",
        "softplus")},
    **{name: (getattr(ops, name), [_P]) for name in ("log", "log1p", "sqrt")},
    **{name: (getattr(ops, name), [_X, _Y]) for name in ("add", "sub", "mul", "maximum", "minimum")},
    "div": (ops.div, [_Y, _X]),
    "pow": (ops.pow, [_P, _Y]),
    "where": (lambda a, b: ops.where(_const(a, _X > 0), a, b), [_X, _Y]),
    "clip": (lambda x, lo, hi: ops.clip(x, lo, hi), [_Y * 0.5, _Y * 0 - 0.6 + 0.3 * (_X > 0), _Y * 0 + 0.8]),
    **{name: (lambda x, name=name: getattr(ops, name)(x, axis=1), [_X]) for name in
       ("sum", "mean", "max", "min", "logsumexp", "softmax", "log_softmax")},
    "sum_squares": (ops.sum_squares, [_X]),
    "expand_dims": (lambda x: ops.expand_dims(x, axis=(0,)), [_X]),
    "broadcast_like": (lambda x: ops.broadcast_like(x, _const(x, np.zeros((4, 2, 3)))), [_X]),
    "reshape_like": (lambda x: ops.reshape_like(x, _const(x, np.zeros((3, 2)))), [_X]),
    "sum_to": (lambda x: ops.sum_to(x, _const(x, np.zeros((1, 3)))), [_X]),
    "reshape": (lambda x: ops.reshape(x, (3, 2)), [_X]),
    "transpose": (lambda x: ops.transpose(x, (1, 2, 0)), [_R.normal(size=(2, 3, 4))]),
    "matmul": (ops.matmul, [_X, _Y.T]),
    "concat": (lambda a, b, c: ops.concat([a, b, c], axis=0), [_X, _Y, _P]),
    "getitem": (lambda x: x[1:, ::2], [_X]),
    "take": (lambda x: ops.take(x, _const(x, _IDX, "int64"), axis=1), [_X]),
    "scatter_index": (lambda g: ops.shape.scatter_index(g, _const(g, np.zeros((4, 3))), index=(slice(1, 3),)), [_X]),
    "take_adjoint": (lambda g: ops.shape.take_adjoint(g, _const(g, np.zeros((2, 4))), _const(g, _IDX, "int64"), axis=1),
                     [_X]),
    "bce_with_logits": (ops.bce_with_logits, [_X, _P / 2.0]),
    "softmax_cross_entropy": (lambda z: ops.softmax_cross_entropy(z, _const(z, [2, 0], "int64")), [_X]),
    "softmax_minus_one_hot": (lambda z: ops.softmax_minus_one_hot(z, _const(z, [2, 0], "int64")), [_X]),
    "ema": (lambda m, x: ops.ema(m, x, decay=0.9), [_X, _Y]),
    "adam_step": (lambda p, m, v, step, scale: ops.adam_step(p, m, v, step, scale, eps=1e-8),
                  [_X, _Y, _P, np.array(0.1), np.array(0.7)]),
    "cast": (lambda x: ops.cast(x, dtype="float64"), [_X]),
    # fused VJPs and optimizer scalars (drawn shapes: test_relu_grad, test_softmax_ce_backward)
    "relu_grad": (ops.relu_grad, [_Y, _X]),
    "l2_norm": (ops.l2_norm, [_X]),
    "unreduce": (lambda g: ops.reduce.unreduce(g, _const(g, np.zeros((2, 4, 3))), axis=(1,), mean=True), [_X]),
    "unreduce_to": (lambda g: ops.reduce.unreduce_to(g, axis=(1,), sizes=(4,), mean=True), [_X]),
    "silu": (ops.silu, [_X]),
    "silu_grad": (lambda g, x: ops.silu_grad(g, x, ops.sigmoid(x)), [_Y, _X]),
    "kl_normal_std": (ops.kl_normal_std, [_X, _Y]),  # drawn shapes: test_kl_normal
    "silu_lean": (ops.silu, [_IMG]),  # silu on an image activation: one node, s recomputed in the VJP
    "silu_grad_x": (ops.silu_grad_x, [_IMG2[:, :2], _IMG]),
    "silu_bias": (ops.elementwise.silu_bias, [_X, _Y[0]]),  # a dense layer's bias and SiLU (passes.lean_silu)
    "softmax_ce_backward": (lambda g, p: ops.softmax_ce_backward(g, p, _const(g, [2, 0], "int64")), [_Y[:, 0], _P]),
    "adam_step_size": (lambda lr: ops.adam_step_size(lr, _const(lr, 3.0), beta=0.9), [np.array(0.01)]),
    # flat buffers (engine/ops/flat.py)
    "pack": (lambda a, b, c: ops.pack(a, b, c), [_X, _Y[0], np.array(0.3)]),
    "unpack": (lambda f: ops.unpack(f, index=1, shapes=((2, 3), (3,))), [_R.normal(size=9)]),
    # image ops (first and second order with drawn sizes: tests/test_ops_conv_grad.py)
    "conv2d": (lambda x, w: ops.conv2d(x, w, stride=2, padding=1), [_IMG, _W]),
    "conv_transpose2d": (lambda x, w: ops.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1),
                         [_IMG, _W.transpose(1, 0, 2, 3)]),
    "conv2d_backward_weight": (lambda gy, x: apply("conv2d_backward_weight", gy, x, kernel=(3, 3), stride=(1, 1),
                                                   padding=(1, 1), dilation=(1, 1), groups=1), [_IMG2, _IMG]),
    "max_pool2d": (lambda x: ops.max_pool2d(x, 2), [_IMG]),
    "max_pool2d_backward": (lambda g: apply("max_pool2d_backward", g, _const(g, _IMG), kernel=(2, 2), stride=(2, 2)),
                            [_R.normal(size=(2, 2, 2, 2))]),
    "max_pool2d_gather": (lambda g: apply("max_pool2d_gather", g, _const(g, _IMG), kernel=(2, 2), stride=(2, 2)),
                          [_IMG]),
    "avg_pool2d": (lambda x: ops.avg_pool2d(x, 2, 1), [_IMG]),
    "avg_pool2d_backward": (lambda g: apply("avg_pool2d_backward", g, kernel=(2, 2), stride=(2, 2), in_hw=(5, 5)),
                            [_R.normal(size=(2, 2, 2, 2))]),
    "upsample_nearest2d": (lambda x: ops.upsample_nearest2d(x, 2), [_IMG]),
    # normalisation: group_norm builds `normalized`, whose VJP is one normalize_grad kernel
    "normalized": (lambda x: ops.group_norm(x, 2, 0.1), [_IMG2[:, :2]]),
    "inv_std": (lambda x: ops.inv_std(x, start=2, eps=0.1), [_IMG]),  # its VJP on its own: normalized gives it ZERO
    "normalize_grad": (lambda g, y, r: ops.normalize_grad(g, y, r, start=2),  # g, y, r independent here
                       [_IMG2[:, :2], _IMG, np.abs(_R.normal(size=(2, 2, 1, 1))) + 0.5]),
    "dropout": (lambda x: apply("dropout", x, _const(x, (_R.random(_IMG.shape) > 0.3) / 0.7)), [_IMG]),
}


def _differentiable_ops():
    from gengraph.engine.ops import OPS

    return sorted(name for name, op in OPS.items() if op.differentiable)


@pytest.mark.parametrize("name", _differentiable_ops())
def test_every_differentiable_op_has_a_gradient_case(name):
    """Derived from the registry: an op with a nonzero VJP and no case in GRAD_CASES fails here."""
    assert name in GRAD_CASES, f'op "{name}" has a VJP but no gradient case in GRAD_CASES (tests/test_ops_grad.py)'
    build, arrays = GRAD_CASES[name]
    seen = set()

    def recording(*nodes):
        out = build(*nodes)
        seen.update(n.op for n in topo_order([out]))
        return out

    fd_check(recording, arrays)
    assert name in seen, f"the gradient case for {name} does not use the op"


def test_reduction_vjps_do_not_keep_their_input_alive():
    # the VJP of mean/sum over static axes needs only the sizes: it must not reference the
    # reduction's input, which would otherwise live from the forward to the backward pass
    # (group norm's square(x - mean) and the conv outputs of a U-Net: hundreds of MiB)
    from gengraph.engine import compile, grad

    g = Graph(dtype="float64")
    x = g.input("x", (None, 3, 8))
    sq = ops.square(x)
    loss = ops.sum(ops.mean(sq, axis=2) * ops.mean(ops.sum(x, axis=(1, 2), keepdims=True)))
    (dx,) = grad(loss, [x])
    prog = compile(g, [dx])
    consumers = [n for n in prog.nodes if any(i.id == sq.id for i in n.inputs)]
    assert [n.op for n in consumers] == ["mean"]  # not unreduce(g, square(x))
    xv = np.random.default_rng(0).normal(size=(2, 3, 8))
    m2 = xv.sum(axis=(1, 2)).mean()
    expected = 2 * xv / 8 * m2 + (xv ** 2).mean(axis=2).sum() / 2  # d/dx of sum(mean(x^2, 2)) * mean(sum(x))
    np.testing.assert_allclose(prog.run(x=xv)[0], expected, rtol=1e-12)
    # unreduce_to's values: g put back along the static axes, divided by their count for a mean
    gv = np.arange(6.0).reshape(2, 3)
    h = Graph(dtype="float64")
    gn = h.input("g", (None, 3))
    out = compile(h, [ops.reduce.unreduce_to(gn, axis=(1,), sizes=(4,), mean=True),
                      ops.reduce.unreduce_to(gn, axis=(0, 2), sizes=(5, 2))]).run(g=gv)
    np.testing.assert_array_equal(out[0], np.repeat(gv[:, None, :] / 4, 4, axis=1))
    assert out[1].shape == (5, 2, 2, 3) and np.all(out[1] == gv[None, :, None, :])
