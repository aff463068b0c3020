"""Image ops' gradients against central finite differences (float64), first and second order.

Hypothesis draws shapes, strides, paddings, dilations, groups, kernels and output
paddings; the values come from a drawn seed (normal draws: no ties, so max pooling
stays away from its kinks when the windows' values are spread apart).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gengraph.engine import ops
from gradcheck_util import fd_check, hvp_check
from test_ops_conv import conv_arrays, conv_configs

FD = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECOND = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])

seeds = st.integers(0, 2**16)


def _conv(cfg):
    return lambda x, w: ops.conv2d(x, w, stride=cfg["s"], padding=cfg["p"], dilation=cfg["d"], groups=cfg["groups"])


def _conv_t(cfg):
    return lambda x, w: ops.conv_transpose2d(x, w, stride=cfg["s"], padding=cfg["p"], output_padding=cfg["op"],
                                             dilation=cfg["d"], groups=cfg["groups"])


@FD
@given(cfg=conv_configs(), seed=seeds)
def test_conv2d_grad(cfg, seed):
    out = fd_check(_conv(cfg), list(conv_arrays(cfg, seed)))
    # PyTorch's output size: (H + 2p - d(k - 1) - 1) // s + 1
    hw = tuple((cfg["hw"][a] + 2 * cfg["p"][a] - cfg["d"][a] * (cfg["k"][a] - 1) - 1) // cfg["s"][a] + 1
               for a in range(2))
    assert out.shape == (cfg["n"], cfg["cout"]) + hw


@FD
@given(cfg=conv_configs(transpose=True), seed=seeds)
def test_conv_transpose2d_grad(cfg, seed):
    out = fd_check(_conv_t(cfg), list(conv_arrays(cfg, seed, transpose=True)))
    # PyTorch's output size: (H - 1)s - 2p + d(k - 1) + output_padding + 1
    hw = tuple((cfg["hw"][a] - 1) * cfg["s"][a] - 2 * cfg["p"][a] + cfg["d"][a] * (cfg["k"][a] - 1)
               + cfg["op"][a] + 1 for a in range(2))
    assert out.shape == (cfg["n"], cfg["cout"]) + hw


@st.composite
def pool_cases(draw):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    hw = tuple(draw(st.integers(k[a], k[a] + 4)) for a in range(2))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 2))) + hw, k, s


def _spread(shape, seed):
    """Distinct values at least 0.01 apart (max pooling's kinks are ties)."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01 - 0.3) * rng.choice([-1.0, 1.0])


@FD
@given(case=pool_cases(), seed=seeds)
def test_max_pool2d_grad(case, seed):
    shape, k, s = case
    x = _spread(shape, seed)
    out = fd_check(lambda x: ops.max_pool2d(x, k, s), [x], eps=1e-4)
    assert out.shape == shape[:2] + tuple((shape[2 + a] - k[a]) // s[a] + 1 for a in range(2))
    assert out[..., 0, 0].tolist() == x[..., :k[0], :k[1]].max(axis=(-2, -1)).tolist()


@FD
@given(case=pool_cases(), seed=seeds)
def test_avg_pool2d_grad(case, seed):
    shape, k, s = case
    x = np.random.default_rng(seed).normal(size=shape)
    out = fd_check(lambda x: ops.avg_pool2d(x, k, s), [x])
    assert out.shape == shape[:2] + tuple((shape[2 + a] - k[a]) // s[a] + 1 for a in range(2))
    np.testing.assert_allclose(out[..., 0, 0], x[..., :k[0], :k[1]].mean(axis=(-2, -1)), rtol=1e-12)


@FD
@given(n=st.integers(1, 2), c=st.integers(1, 3), hw=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       scale=st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))), seed=seeds)
def test_upsample_nearest2d_grad(n, c, hw, scale, seed):
    x = np.random.default_rng(seed).normal(size=(n, c) + hw)
    out = fd_check(lambda x: ops.upsample_nearest2d(x, scale), [x])
    sh, sw = (scale, scale) if isinstance(scale, int) else scale
    assert out.tolist() == x.repeat(sh, axis=2).repeat(sw, axis=3).tolist()


@FD
@given(n=st.integers(1, 2), cg=st.integers(1, 3), groups=st.integers(1, 3), hw=st.tuples(st.integers(1, 3),
       st.integers(1, 3)), eps=st.sampled_from([1e-5, 1e-3, 0.1, 1.0]), seed=seeds)
def test_group_norm_grad(n, cg, groups, hw, eps, seed):
    if cg * hw[0] * hw[1] == 1 and eps < 1e-3:
        eps = 1e-3  # one element per group: x - mean == 0 exactly, the gradient is 1/sqrt(eps)-sized
    x = np.random.default_rng(seed).normal(size=(n, cg * groups) + hw)
    out = fd_check(lambda x: ops.group_norm(x, groups, eps), [x])
    by_group = out.reshape(n, groups, -1)  # each group normalised: mean 0
    np.testing.assert_allclose(by_group.mean(axis=-1), 0.0, atol=1e-10)


@FD
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4).map(tuple), eps=st.sampled_from([1e-5, 0.1, 1.0]),
       seed=seeds)
def test_layer_norm_grad(shape, eps, seed):
    if int(np.prod(shape[1:])) == 1 and eps < 1e-3:
        eps = 1e-3
    out = fd_check(lambda x: ops.layer_norm(x, eps), [np.random.default_rng(seed).normal(size=shape)])
    np.testing.assert_allclose(out.reshape(shape[0], -1).mean(axis=1), 0.0, atol=1e-10)
    assert out.shape == shape


@FD
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4).map(tuple), data=st.data(),
       eps=st.sampled_from([1e-3, 0.1, 1.0]), seed=seeds)
def test_inv_std_grad(shape, data, eps, seed):
    """inv_std on its own (group_norm's `normalized` gives it ZERO): its VJP against central
    differences and its value against the formula, over the axes from any start."""
    start = data.draw(st.integers(1, len(shape) - 1))
    x = np.random.default_rng(seed).normal(size=shape) * 2 + 0.5
    out = fd_check(lambda x: ops.inv_std(x, start=start, eps=eps), [x])
    axes = tuple(range(start, len(shape)))
    np.testing.assert_allclose(out, 1 / np.sqrt(x.var(axis=axes, keepdims=True) + eps), rtol=1e-12)


@SECOND
@given(shape=st.sampled_from([(2, 3), (1, 2, 3), (2, 2, 2, 2)]), eps=st.sampled_from([1e-2, 0.5]), seed=seeds)
def test_inv_std_hessian_vector_products(shape, eps, seed):
    x = np.random.default_rng(seed).normal(size=shape)
    hvp_check(lambda x: ops.inv_std(x, start=1, eps=eps), [x], n_random=3, atol=1e-5)


def test_norm_vjp_is_one_fused_kernel():
    """group_norm's and layer_norm's VJP is one normalize_grad node on the full-size arrays, not the
    dozen passes (neg, div, unreduce, sum_to, ...) the chain rule takes through mean/sqrt/div."""
    from gengraph.engine import Graph, grad
    from gengraph.engine.graph import topo_order

    for norm in (lambda x: ops.group_norm(x, 4, 1e-5), lambda x: ops.layer_norm(x)):
        g = Graph(dtype="float32")
        x, r = g.input("x", (None, 8, 6, 6)), g.input("r", (None, 8, 6, 6))
        y = norm(x)
        (gx,) = grad(ops.sum(y * r), [x])
        fused = [n for n in topo_order([gx]) if n.op == "normalize_grad"]
        assert len(fused) == 1, [n.op for n in topo_order([gx])]
        before = {id(n) for n in topo_order([y, fused[0].inputs[0]])}  # forward, and y's gradient
        after = [n.op for n in topo_order([gx]) if id(n) not in before]
        assert set(after) <= {"normalize_grad", "reshape", "reshape_like"}, after


@pytest.mark.parametrize("start", [1, 2])
def test_norm_kernels_on_another_array_module(start):
    """The three kernels use only functions NumPy and CuPy share: behind a module that is not numpy
    (the branches CuPy takes) they give NumPy's values, and each is its formula."""
    from gengraph.engine.ops import OPS
    from test_ops_conv_strided import _other_xp

    rng = np.random.default_rng(start)
    g, y = rng.normal(size=(3, 2, 5, 4)), rng.normal(size=(3, 2, 5, 4))
    x = rng.normal(size=(3, 2, 5, 4)) * 3 + 1
    r = rng.random((3, 2, 1, 1) if start == 2 else (3, 1, 1, 1)) + 0.5
    axes = tuple(range(start, 4))
    want = r * (g - g.mean(axis=axes, keepdims=True) - y * (g * y).mean(axis=axes, keepdims=True))
    centred = x - x.mean(axis=axes, keepdims=True)
    for xp in (np, _other_xp()):
        np.testing.assert_allclose(OPS["normalize_grad"].forward(xp, g, y, r, start=start), want, atol=1e-14)
        np.testing.assert_allclose(OPS["normalized"].forward(xp, x, r, start=start), centred * r, atol=1e-14)
        np.testing.assert_allclose(OPS["inv_std"].forward(xp, x, start=start, eps=0.3),
                                   1 / np.sqrt((centred ** 2).mean(axis=axes, keepdims=True) + 0.3), atol=1e-14)


@SECOND
@given(n=st.integers(1, 2), cg=st.integers(1, 2), groups=st.integers(1, 2), hw=st.tuples(st.integers(1, 3),
       st.integers(2, 3)), eps=st.sampled_from([1e-3, 0.1, 1.0]), layer=st.booleans(), seed=seeds)
def test_norm_hessian_vector_products(n, cg, groups, hw, eps, layer, seed):
    x = np.random.default_rng(seed).normal(size=(n, cg * groups) + hw)
    hvp_check(lambda x: ops.layer_norm(x, eps) if layer else ops.group_norm(x, groups, eps), [x], n_random=3,
              atol=1e-5)


def test_norm_third_order():
    """normalize_grad's own VJPs are graph code: the Hessian-vector products of group_norm's gradient
    (third derivatives of group_norm) match central differences."""
    from gengraph.engine import grad

    rng = np.random.default_rng(3)
    weights = rng.normal(size=(1, 4, 2, 3))

    def first_gradient(x):
        y = ops.group_norm(x, 2, 0.2)
        return grad(ops.sum(y * x.graph.constant(weights)), [x])[0]

    hvp_check(first_gradient, [rng.normal(size=(1, 4, 2, 3))], n_random=3, atol=1e-5)


# --- second order -----------------------------------------------------------------------------
@SECOND
@given(cfg=conv_configs(), seed=seeds)
def test_conv2d_hessian_vector_products(cfg, seed):
    cfg = {**cfg, "n": 1}
    x, w = conv_arrays(cfg, seed)
    # f = sum(conv(x, w) * R) is bilinear; add a square so the x-x and w-w blocks are not zero
    hvp_check(lambda x, w: ops.square(_conv(cfg)(x, w)), [x, w], n_random=3)


@SECOND
@given(cfg=conv_configs(transpose=True), seed=seeds)
def test_conv_transpose2d_hessian_vector_products(cfg, seed):
    cfg = {**cfg, "n": 1}
    x, w = conv_arrays(cfg, seed, transpose=True)
    hvp_check(lambda x, w: ops.square(_conv_t(cfg)(x, w)), [x, w], n_random=3)


def test_pool_and_norm_hessian_vector_products():
    rng = np.random.default_rng(0)
    x = _spread((1, 2, 4, 5), 1)
    hvp_check(lambda x: ops.square(ops.max_pool2d(x, 2, 1)), [x], eps=1e-4, n_random=3)
    hvp_check(lambda x: ops.square(ops.avg_pool2d(x, (2, 3), 1)), [rng.normal(size=(1, 2, 4, 5))], n_random=3)
    hvp_check(lambda x: ops.square(ops.upsample_nearest2d(x, 2)), [rng.normal(size=(1, 2, 2, 3))], n_random=3)
    hessian = hvp_check(lambda x: ops.group_norm(x, 2, 0.1), [rng.normal(size=(1, 4, 2, 2))], n_random=3, atol=1e-5)
    assert hessian is not None and hessian.shape == (16, 16)
    np.testing.assert_allclose(hessian, hessian.T, atol=1e-8)  # a Hessian is symmetric
