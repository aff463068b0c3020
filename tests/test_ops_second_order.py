"""Gradients of gradients: Hessian-vector products vs finite differences of the gradient.

`hvp_check` builds grad(sum(grad(f, x) * v), x) in the graph and compares it with
(grad f(x + eps v) - grad f(x - eps v)) / (2 eps), for every basis direction v of small
inputs (the full Hessian) and for random directions.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gengraph.engine import Graph, compile, grad, ops
from gradcheck_util import hvp_check

SECOND = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4)


def arrays(shape, lo=-2.0, hi=2.0):
    return hnp.arrays(np.float64, shape, elements=st.floats(lo, hi, allow_nan=False, allow_subnormal=False))


# ops from the brief, with domains where f is smooth
UNARY = {
    "tanh": (ops.tanh, -2.0, 2.0),
    "exp": (ops.exp, -2.0, 2.0),
    "log": (ops.log, 0.3, 3.0),
    "softplus": (ops.softplus, -4.0, 4.0),
    "sigmoid": (ops.sigmoid, -4.0, 4.0),
    "sqrt": (ops.sqrt, 0.3, 3.0),
    "sin": (ops.sin, -3.0, 3.0),
    "cos": (ops.cos, -3.0, 3.0),
    "log1p": (ops.log1p, -0.5, 3.0),
    "expm1": (ops.expm1, -2.0, 2.0),
    "square": (ops.square, -2.0, 2.0),
    "gelu": (ops.gelu, -2.0, 2.0),
    "silu": (ops.silu, -2.0, 2.0),
    "silu_image": (lambda x: ops.silu(ops.reshape(x, (1, 1, 1, -1))), -2.0, 2.0),  # the lean form
    "pow_3": (lambda x: x ** 3, -2.0, 2.0),
    "rpow": (lambda x: 1.5 ** x, -2.0, 2.0),
    "recip": (lambda x: 1.0 / x, 0.3, 3.0),
}


@pytest.mark.parametrize("name", list(UNARY))
@SECOND
@given(data=st.data(), shape=shapes)
def test_unary_hvp(name, data, shape):
    build, lo, hi = UNARY[name]
    x = data.draw(arrays(shape, lo, hi))
    hessian = hvp_check(build, [x])
    # an elementwise op has a diagonal Hessian
    assert hessian is not None
    np.testing.assert_allclose(hessian - np.diag(np.diag(hessian)), 0.0, atol=1e-12)


@SECOND
@given(data=st.data(), shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=3))
def test_mul_hvp_with_broadcasting(data, shapes):
    a, b = (data.draw(arrays(s)) for s in shapes.input_shapes)
    hvp_check(lambda x, y: x * y * x + ops.tanh(x * y), [a, b])


@SECOND
@given(data=st.data(), shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=3))
def test_pow_hvp_both_arguments(data, shapes):
    sa, sb = shapes.input_shapes
    a, b = data.draw(arrays(sa, 0.3, 2.5)), data.draw(arrays(sb, -1.5, 1.5))
    hvp_check(ops.pow, [a, b])


@SECOND
@given(data=st.data(), shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=3))
def test_div_hvp(data, shapes):
    sa, sb = shapes.input_shapes
    a, b = data.draw(arrays(sa)), data.draw(arrays(sb, 0.4, 2.5))
    hvp_check(ops.div, [a, b])


@pytest.mark.parametrize("sa,sb", [((3,), (3,)), ((2, 3), (3, 2)), ((3,), (3, 2)), ((2, 3), (3,)),
                                   ((2, 2, 3), (3, 2))])
def test_matmul_hvp(sa, sb):
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=sa), rng.normal(size=sb)
    # bilinear: only cross terms; tanh on top makes the diagonal blocks nonzero too
    hvp_check(ops.matmul, [a, b])
    hvp_check(lambda x, y: ops.tanh(x @ y), [a, b])


def test_mlp_hvp():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, 3))
    w1, b1, w2 = rng.normal(size=(3, 4)) * 0.7, rng.normal(size=(4,)), rng.normal(size=(4, 2))
    labels = np.array([0, 1, 1, 0, 1])

    def loss(W1, B1, W2):
        h = ops.softplus(W1.graph.constant(x) @ W1 + B1)
        return ops.mean(ops.softmax_cross_entropy(h @ W2, W1.graph.constant(labels, dtype="int64")))

    hvp_check(loss, [w1, b1, w2], max_basis=0, n_random=6)


COMPOSITES = {
    "softmax": (lambda x: ops.softmax(x, axis=-1), (2, 3)),
    "log_softmax_axis0": (lambda x: ops.log_softmax(x, axis=0), (3, 2)),
    "logsumexp": (lambda x: ops.logsumexp(x, axis=1, keepdims=True), (2, 3)),
    "mean_sum": (lambda x: ops.mean(ops.tanh(x), axis=0) * ops.sum(x, axis=0), (3, 2)),
    "max": (lambda x: ops.max(x * x, axis=-1) * x[:, 0], (2, 3)),
    "getitem_concat": (lambda x: ops.concat([x[:, :1] * x[:, 1:2], ops.exp(x[::-1])], axis=1), (3, 2)),
    "take": (lambda x: ops.take(x, x.graph.constant(np.array([2, 0, 2]), dtype="int64"), axis=-1) ** 2, (2, 3)),
    "transpose_reshape": (lambda x: ops.reshape(ops.transpose(ops.sin(x)), (6,)) * ops.reshape(x, (-1,)), (2, 3)),
    "broadcast": (lambda x: ops.broadcast_to(x, (4, 2, 3)) * ops.tanh(ops.sum(x, axis=1, keepdims=True)), (2, 3)),
    "bce": (lambda x: ops.bce_with_logits(x, ops.sigmoid(x[::-1])), (2, 3)),
    "elu_leaky": (lambda x: ops.elu(x + 3.0) * ops.leaky_relu(x - 3.0, slope=0.1), (2, 3)),
    "gaussian_kl": (lambda x: ops.gaussian_logpdf(x[0], x[1], x[2]) + ops.kl_normal_std(x[1], x[2]), (3, 2)),
}


@pytest.mark.parametrize("name", list(COMPOSITES))
def test_composite_hvp(name):
    build, shape = COMPOSITES[name]
    x = np.random.default_rng(5).uniform(-1.5, 1.5, size=shape)
    if name == "max":  # keep a unique maximum of x*x per row
        x = np.array([[0.3, -1.4, 0.8], [1.1, 0.2, -0.5]])
    hvp_check(build, [x])


def test_softmax_cross_entropy_hvp():
    z = np.random.default_rng(6).normal(size=(4, 3))
    labels = np.array([2, 0, 1, 2])
    h = hvp_check(lambda a: ops.softmax_cross_entropy(a, a.graph.constant(labels, dtype="int64")), [z])
    # the Hessian of each row's cross-entropy is R_i (diag(p) - p p^T): each row block sums to zero
    np.testing.assert_allclose(h.reshape(4, 3, 4, 3).sum(axis=-1), 0.0, atol=1e-10)


# --- hand-derived ------------------------------------------------------------------------------
def test_tanh_second_derivative_by_hand():
    x = np.linspace(-2.5, 2.5, 11)
    g = Graph(dtype="float64")
    xn = g.input("x", x.shape)
    d1 = grad(ops.sum(ops.tanh(xn)), xn)
    d2 = grad(ops.sum(d1), xn)  # d1 is elementwise, so this is the diagonal of the Hessian
    first, second = compile(g, [d1, d2]).run(x=x)
    t = np.tanh(x)
    np.testing.assert_allclose(first, 1 - t ** 2, rtol=1e-13)
    np.testing.assert_allclose(second, -2 * t * (1 - t ** 2), rtol=1e-12, atol=1e-15)


def test_higher_derivatives_of_sin_and_exp():
    x = np.linspace(-3.0, 3.0, 7)
    g = Graph(dtype="float64")
    xn = g.input("x", x.shape)
    ds = [ops.sin(xn)]
    for _ in range(4):
        ds.append(grad(ops.sum(ds[-1]), xn))
    e = [ops.exp(0.5 * xn)]
    for _ in range(3):
        e.append(grad(ops.sum(e[-1]), xn))
    out = compile(g, ds + e).run(x=x)
    expected_sin = [np.sin(x), np.cos(x), -np.sin(x), -np.cos(x), np.sin(x)]
    for k, (got, want) in enumerate(zip(out[:5], expected_sin)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=f"d^{k}/dx^{k} sin")
    for k, got in enumerate(out[5:]):
        np.testing.assert_allclose(got, 0.5 ** k * np.exp(0.5 * x), rtol=1e-12, err_msg=f"d^{k}/dx^{k} exp(x/2)")


def test_gradient_penalty_style_double_backward():
    # d/dw of ||d/dx f(x, w)||^2 for f = sum(softplus(x @ w)): checked against finite differences in w
    rng = np.random.default_rng(7)
    x, w = rng.normal(size=(4, 3)), rng.normal(size=(3, 2))

    def penalty(W):
        g = W.graph
        xn = g.constant(x)
        gx = grad(ops.sum(ops.softplus(xn @ W)), xn)
        return ops.sum(gx * gx)

    g = Graph(dtype="float64")
    wn = g.input("w", w.shape)
    dw_prog = compile(g, grad(penalty(wn), wn))
    val_prog = compile(g, penalty(wn))
    analytic = dw_prog.run(w=w)
    numeric = np.zeros_like(w)
    eps = 1e-6
    for i in np.ndindex(w.shape):
        wp, wm = w.copy(), w.copy()
        wp[i] += eps
        wm[i] -= eps
        numeric[i] = (val_prog.run(w=wp) - val_prog.run(w=wm)) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
