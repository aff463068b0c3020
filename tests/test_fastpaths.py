"""The NumPy fast paths (engine/ops/fastpaths.py) give NumPy's values, never alias or corrupt
a shared cached array, and fall back to the plain call where they do not apply."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gengraph.engine.ops import fastpaths as fp
from gengraph.engine.ops.reduce import _l2_norm_forward, _mean_forward, _sum_forward, _sum_to_forward, _unreduce_to_forward

shapes = st.lists(st.integers(0, 7), min_size=1, max_size=4).map(tuple)
dtypes = st.sampled_from([np.float32, np.float64])


def _array(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _assert_sum_close(got, x, axis, keepdims):
    """got is x summed over axis up to rounding: within 16 eps * sum |x| of the float64 sum (a
    long float32 sum that cancels differs between summation orders by more than 1e-5)."""
    exact = x.astype(np.float64).sum(axis=axis, keepdims=keepdims)
    bound = 16 * np.finfo(x.dtype).eps * np.abs(x).astype(np.float64).sum(axis=axis, keepdims=keepdims)
    if got.ndim == 1 and exact.ndim != 1:  # compared flat
        exact, bound = exact.reshape(-1), bound.reshape(-1)
    assert got.shape == exact.shape and got.dtype == x.dtype
    assert np.all(np.abs(got - exact) <= bound + np.finfo(x.dtype).tiny), np.max(np.abs(got - exact) - bound)


@settings(max_examples=60, deadline=None)
@given(shapes, dtypes, st.integers(0, 4), st.integers(0, 2**16))
def test_sum_leading_and_trailing_equal_numpy(shape, dtype, k, seed):
    x = _array(shape, dtype, seed)
    k = min(k, x.ndim)
    lead = tuple(range(k))
    _assert_sum_close(np.asarray(fp.sum_leading(np, x, k)), x, lead, False)
    trail = tuple(range(x.ndim - k, x.ndim))
    for keep in (False, True):
        _assert_sum_close(np.asarray(fp.sum_trailing(np, x, k, keepdims=keep)), x, trail, keep)


@settings(max_examples=40, deadline=None)
@given(shapes, dtypes, st.integers(0, 2**16))
def test_sum_leading_writes_into_out_views(shape, dtype, seed):
    """The gradient kernels write into views of a flat buffer: the BLAS path must honour out=."""
    x = _array((5,) + shape, dtype, seed)
    buf = np.full(3 + int(np.prod(shape)) + 3, 7.0, dtype)
    out = buf[3:3 + int(np.prod(shape))].reshape(shape)
    r = fp.sum_leading(np, x, 1, out=out)
    assert r is out
    _assert_sum_close(out, x, 0, False)
    assert (buf[:3] == 7).all() and (buf[len(buf) - 3:] == 7).all()  # nothing outside the view touched


def test_size_one_leading_axis_is_a_copy_not_an_alias():
    x = np.arange(6.0).reshape(1, 6)
    r = fp.sum_leading(np, x, 1)
    r += 1.0
    assert (x == np.arange(6.0)).all()


def test_fallbacks_non_contiguous_integer_and_float16():
    x = np.arange(24.0).reshape(4, 6)[:, ::2]  # not contiguous
    np.testing.assert_array_equal(fp.sum_leading(np, x, 1), x.sum(axis=0))
    i = np.arange(24).reshape(4, 6)
    assert fp.sum_leading(np, i, 1).dtype == i.sum(axis=0).dtype
    np.testing.assert_array_equal(fp.sum_trailing(np, i, 1), i.sum(axis=1))
    h = np.ones((300, 4), np.float16)
    assert fp.sum_leading(np, h, 1).dtype == np.float16


@settings(max_examples=40, deadline=None)
@given(shapes, dtypes, st.integers(0, 2**16))
def test_relu_is_exact_and_the_cached_zeros_stay_zero(shape, dtype, seed):
    x = _array(shape, dtype, seed)
    out = np.empty_like(x)
    np.testing.assert_array_equal(fp.relu_forward(np, x), np.maximum(x, 0))
    fp.relu_forward(np, x, out=out)
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    z = fp.zeros_of(x)
    assert not z.flags.writeable and not z.any()
    with pytest.raises(ValueError):
        z[...] = 1.0


def test_relu_of_nan_and_scalars():
    x = np.array([np.nan, -1.0, 2.0, -0.0], np.float32)
    r = fp.relu_forward(np, x)
    assert np.isnan(r[0]) and r[1] == 0 and r[2] == 2 and r[3] == 0
    assert fp.relu_forward(np, np.float64(-3.0)) == 0.0


def test_reduction_kernels_take_the_fast_paths_with_numpys_values():
    x = _array((16, 3, 10), np.float32, 0)
    for axis, keep in (((0,), False), ((0, 1), False), ((2,), False), ((2,), True), ((1, 2), True), ((1,), False),
                       ((0, 1, 2), False)):
        np.testing.assert_allclose(_sum_forward(np, x, axis, keep), x.sum(axis=axis, keepdims=keep), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(_mean_forward(np, x, axis, keep), x.mean(axis=axis, keepdims=keep), rtol=1e-5,
                                   atol=1e-6)
    np.testing.assert_allclose(_sum_to_forward(np, x, 1, (1,)), x.sum(axis=(0, 1), keepdims=True)[0], rtol=1e-5)


def test_unreduce_of_a_scalar_seed_is_one_fill():
    g = np.array(2.0, np.float32)
    r = _unreduce_to_forward(np, g, (0,), (8,), False, True)
    assert r.shape == (8,) and r.dtype == np.float32 and (r == np.float32(0.25)).all()
    r[0] = 5  # a fresh, writable buffer
    g2 = np.arange(3.0)
    np.testing.assert_array_equal(_unreduce_to_forward(np, g2, (1,), (4,), False, False),
                                  np.repeat(g2[:, None], 4, axis=1))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_l2_norm_float_int_and_overflow():
    x = np.array([3.0, 4.0], np.float32)
    r = _l2_norm_forward(np, x)
    assert r == 5.0 and r.dtype == np.float32
    assert _l2_norm_forward(np, np.array([3, 4])) == 5.0
    big = np.array([3e30, 4e30], np.float32)  # the squares overflow float32
    assert np.isclose(_l2_norm_forward(np, big), 5e30, rtol=1e-6)
    assert np.isnan(_l2_norm_forward(np, np.array([1.0, np.nan])))


@pytest.mark.parametrize("zshape,yshape", [((4, 5), (4, 5)), ((2, 4, 5), (4, 5)), ((4, 5), (2, 4, 5)), ((4, 1), (4, 5))])
def test_bce_and_softplus_in_place_keep_values_for_every_broadcast(zshape, yshape):
    from gengraph.engine.ops.elementwise import softplus_forward
    from gengraph.engine.ops.nn import _bce_forward

    rng = np.random.default_rng(0)
    z = (rng.standard_normal(zshape) * 30).astype(np.float32)
    y = (rng.random(yshape) > 0.5).astype(np.float32)
    want = np.logaddexp(0.0, z.astype(np.float64)) - z.astype(np.float64) * y
    got = _bce_forward(np, z, y)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(softplus_forward(np, z), np.logaddexp(0.0, z.astype(np.float64)), rtol=1e-6, atol=1e-6)
    assert float(softplus_forward(np, np.float32(-1e4))) == 0.0


def test_unreduce_over_a_size_one_axis_is_a_view_with_the_same_gradients():
    """The one-sample axis of a VAE: the sum/mean over it unreduced is an expand_dims, no copy."""
    from gengraph.engine import Graph, compile, grad, ops
    from gengraph.engine.passes import EVAL_PASSES

    g = Graph(dtype="float64", seed=0)
    x = g.input("x", (1, None, 3))
    w = g.param("w", np.random.default_rng(0).normal(size=(3,)))
    loss = ops.sum(ops.mean(ops.tanh(x * w), axis=0) ** 2)
    (gw,) = grad(loss, [w])
    (gg,) = grad(ops.sum(gw ** 2), [w])
    fast, plain = compile(g, [loss, gw, gg]), compile(g, [loss, gw, gg], passes=EVAL_PASSES)
    assert "unreduce_to" not in [n.op for n in fast.nodes] and "unreduce_to" in [n.op for n in plain.nodes]
    xv = np.random.default_rng(1).normal(size=(1, 4, 3))
    for a, b in zip(fast.run(x=xv), plain.run(x=xv)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


def test_lean_silu_on_images_gives_the_two_node_forms_values_to_the_bit():
    """silu on a 4-D activation keeps no sigmoid for the backward pass (one node, s recomputed);
    forward, gradient and second order equal the two-node form's exactly, in float32."""
    from gengraph.engine import Graph, compile, grad, ops
    from gengraph.engine.ops.elementwise import _silu

    g = Graph(dtype="float32", seed=0)
    x = g.input("x", (None, 2, 5, 5))
    w = g.param("w", np.random.default_rng(0).normal(size=(3, 2, 3, 3)))
    h = ops.conv2d(x, w, padding=1)
    outs = []
    for act in (ops.silu(h), _silu(h, ops.sigmoid(h))):
        loss = ops.sum(act * act)
        (gw,) = grad(loss, [w])
        (gg,) = grad(ops.sum(gw * gw), [w])
        outs.append((loss, gw, gg))
    assert outs[0][0].inputs[0].inputs[0].op == "silu_lean"
    prog = compile(g, [v for o in outs for v in o])
    vals = prog.run(x=np.random.default_rng(1).normal(size=(3, 2, 5, 5)).astype(np.float32))
    for a, b in zip(vals[:3], vals[3:]):
        np.testing.assert_array_equal(a, b)


def test_small_strided_slices_are_copied_contiguous_large_ones_stay_views():
    from gengraph.engine.ops.shape import _COPY_SLICES_UP_TO, _getitem_forward

    x = np.arange(128 * 32, dtype=np.float32).reshape(128, 32)
    lo = _getitem_forward(np, x, (Ellipsis, slice(None, 16)))
    assert lo.flags.c_contiguous and not np.shares_memory(lo, x)
    np.testing.assert_array_equal(lo, x[:, :16])
    rows = _getitem_forward(np, x, (slice(2, 5),))  # already contiguous: a view, no copy
    assert np.shares_memory(rows, x)
    big = np.zeros((_COPY_SLICES_UP_TO // 4, 16), np.float32)  # its half: twice the limit
    assert np.shares_memory(_getitem_forward(np, big, (Ellipsis, slice(None, 8))), big)
    assert _getitem_forward(np, x, (3, 4)) == x[3, 4]


@st.composite
def short_axis_cases(draw):
    """An array with interior axes of 1..8 (some reduced) among long ones, the reduced axes."""
    ndim = draw(st.integers(2, 6))
    sizes = st.sampled_from([1, 2, 3, 5, 8, 40, 67])
    shape = draw(st.lists(sizes, min_size=ndim, max_size=ndim).map(tuple)
                 .filter(lambda s: np.prod(s) <= 1 << 17))  # at most 128 K elements (1 MiB)
    axis = tuple(sorted(draw(st.sets(st.integers(0, ndim - 1), min_size=1, max_size=ndim))))
    return shape, axis


@settings(max_examples=80, deadline=None)
@given(short_axis_cases(), dtypes, st.booleans(), st.integers(0, 2**16))
def test_sum_short_axes_equals_numpy_and_owns_its_result(case, dtype, keepdims, seed):
    shape, axis = case
    x = _array(shape, dtype, seed)
    got = fp.sum_short_axes(np, x, axis, keepdims)
    if got is not None:
        _assert_sum_close(got, x, axis, keepdims)
        assert not np.shares_memory(got, x)
    _assert_sum_close(_sum_forward(np, x, axis, keepdims), x, axis, keepdims)


def test_long_cancelling_float32_sum_regression():
    """Hypothesis's case of a CI run: 1600 float32 terms summing to -0.72 differ from NumPy's
    pairwise sum by 2.1e-5 (over the old absolute 1e-5), yet are within rounding of the exact sum."""
    x = _array((1, 1, 40, 40, 40), np.float32, 69)
    _assert_sum_close(_sum_forward(np, x, (0, 1, 2, 3), False), x, (0, 1, 2, 3), False)
    wrong = _sum_forward(np, x, (0, 1, 2, 3), False).copy()
    wrong[2] += 1e-2  # a real error is still caught
    with pytest.raises(AssertionError):
        _assert_sum_close(wrong, x, (0, 1, 2, 3), False)


def test_sum_short_axes_takes_the_upsampling_gradient_and_declines_the_rest():
    g6 = _array((4, 8, 14, 2, 14, 2), np.float32, 0)
    got = fp.sum_short_axes(np, g6, (3, 5))
    np.testing.assert_allclose(got, g6.sum(axis=(3, 5)), rtol=1e-6, atol=1e-6)
    assert fp.sum_short_axes(np, g6, (3, 4)) is None  # a long axis
    assert fp.sum_short_axes(np, g6[:1, :1], (3, 5)) is None  # too small to gain
    assert fp.sum_short_axes(np, g6.astype(np.int32), (3, 5)) is None  # integers: NumPy's own sum
    assert fp.sum_short_axes(np, g6[:, :, :, :1], (3,)) is None  # nothing to add


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=2, max_size=5).map(tuple), dtypes, st.integers(1, 3), st.integers(1, 3),
       st.booleans(), st.integers(0, 2**16))
def test_sum_to_over_leading_and_trailing_axes_equals_numpy(shape, dtype, lead, k, view, seed):
    """sum_to with kept trailing axes (a conv bias's gradient) sums them as a gemv: NumPy's
    values, also for a non-contiguous g (the plain reduction) and into an out= view."""
    lead, k = min(lead, len(shape) - 1), min(k, len(shape) - 1)
    keep = tuple(range(len(shape) - k, len(shape)))
    if lead + k > len(shape):
        keep = keep[lead + k - len(shape):]
    x = _array(shape, dtype, seed)
    if view:
        x = np.repeat(x, 2, axis=-1)[..., ::2]  # strided, same values
    axes, shape_out = tuple(range(lead)) + keep, tuple(1 if i in keep else d for i, d in enumerate(shape))[lead:]
    got = _sum_to_forward(np, x, lead, keep)
    _assert_sum_close(got.reshape(-1), x, axes, True)  # (the same values in the same order)
    assert got.shape == shape_out
    buf = np.full(got.size + 2, 7.0, dtype)
    out = buf[1:-1].reshape(shape_out)
    assert _sum_to_forward(np, x, lead, keep, out=out) is out
    _assert_sum_close(out.reshape(-1), x, axes, True)
    assert buf[0] == buf[-1] == 7.0


def test_cached_constants_are_keyed_by_the_exact_dtype_and_found_again():
    # the lookups run several times a step, so a hit must be the same object (no rebuild), and a
    # dtype of another byte order or spelling must not get another's array
    for dtype in ("float32", np.float32, np.dtype("float32"), np.dtype(">f4"), "float64"):
        ones = fp.ones_vector(5, dtype)
        assert ones is fp.ones_vector(5, dtype) and ones.dtype == np.dtype(dtype) and not ones.flags.writeable
        np.testing.assert_array_equal(ones, np.ones(5))
    for dtype in ("<f4", ">f4", "<f8"):
        x = np.ones((3, 2), dtype)
        z = fp.zeros_of(x)
        assert z is fp.zeros_of(x) and z.dtype == x.dtype and z.shape == x.shape and not z.any()
    assert fp.row_offsets(4, 3) is fp.row_offsets(4, 3)
    np.testing.assert_array_equal(fp.row_offsets(4, 3), [0, 3, 6, 9])
    np.testing.assert_array_equal(fp.arange_of(np, 4), np.arange(4))
