"""Numerical stability of the logit-space ops, and the seeded random ops.

Logits up to |1e4| must give finite values and gradients in float32 and float64, equal
to their limits (softplus(1e4) = 1e4, bce_with_logits(1e4, 0) = 1e4 with gradient 1, ...).
No FloatingPointError for overflow, invalid or divide-by-zero is allowed on the way
(underflow to 0 is the correct answer far in the tails).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gengraph.engine import Graph, compile, grad, ops

DTYPES = ["float32", "float64"]
EXTREME = np.array([-1e4, -1e3, -88.0, -50.0, -1.0, 0.0, 1.0, 50.0, 88.0, 1e3, 1e4])
STRICT = dict(over="raise", invalid="raise", divide="raise")


def _run(dtype, build, x, extra=None):
    """Value of build(x) and its gradient d sum(build(x) * R)/dx (R = 1, 2, 3, ...), under strict errstate."""
    g = Graph(dtype=dtype)
    xn = g.input("x", x.shape)
    y = build(xn)
    r = np.arange(1, int(np.prod(y.shape)) + 1, dtype=np.float64).reshape(y.shape)
    loss = ops.sum(y * g.constant(r))
    prog = compile(g, [y, grad(loss, xn)])
    with np.errstate(**STRICT):
        value, dx = prog.run({"x": x, **(extra or {})})
    assert value.dtype == np.dtype(dtype) and dx.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(value)), value
    assert np.all(np.isfinite(dx)), dx
    return value.astype(np.float64), dx.astype(np.float64), r


def _tol(dtype):
    return dict(rtol=2e-6, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)


def _sigmoid_ref(z):
    return np.exp(-np.logaddexp(0.0, -z))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_softplus_log_sigmoid_extremes(dtype):
    z = EXTREME.astype(dtype)
    zz = z.astype(np.float64)
    r = np.arange(1, z.size + 1)
    value, dx, _ = _run(dtype, ops.sigmoid, z)
    np.testing.assert_allclose(value, _sigmoid_ref(zz), **_tol(dtype))
    np.testing.assert_allclose(dx, r * _sigmoid_ref(zz) * _sigmoid_ref(-zz), **_tol(dtype))
    assert value[0] == 0.0 and value[-1] == 1.0

    value, dx, _ = _run(dtype, ops.softplus, z)
    np.testing.assert_allclose(value, np.logaddexp(0.0, zz), **_tol(dtype))
    np.testing.assert_allclose(dx, r * _sigmoid_ref(zz), **_tol(dtype))
    assert value[-1] == 1e4 and value[0] == 0.0 and dx[-1] == r[-1] and dx[0] == 0.0

    value, dx, _ = _run(dtype, ops.log_sigmoid, z)
    np.testing.assert_allclose(value, -np.logaddexp(0.0, -zz), **_tol(dtype))
    np.testing.assert_allclose(dx, r * _sigmoid_ref(-zz), **_tol(dtype))
    assert value[0] == -1e4 and dx[0] == r[0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("y,z,loss,dz", [(0.0, 1e4, 1e4, 1.0), (1.0, -1e4, 1e4, -1.0), (1.0, 1e4, 0.0, 0.0),
                                         (0.0, -1e4, 0.0, 0.0), (0.5, 1e4, 5e3, 0.5), (0.5, -1e4, 5e3, -0.5)])
def test_bce_with_logits_limits(dtype, y, z, loss, dz):
    value, dx, _ = _run(dtype, lambda a: ops.bce_with_logits(a, a.graph.constant(np.full((), y))),
                        np.array(z, dtype=dtype))
    assert value == loss
    assert dx == dz
    # bernoulli_logpmf is its negative
    value, dx, _ = _run(dtype, lambda a: ops.bernoulli_logpmf(a.graph.constant(np.full((), y)), a),
                        np.array(z, dtype=dtype))
    assert value == -loss and dx == -dz


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_family_extremes(dtype):
    z = np.array([[1e4, -1e4, 0.0, 1e4], [-1e4, -1e4, -1e4, -1e4], [3.0, 1e3, -1e3, 2.0]], dtype=dtype)
    zz = z.astype(np.float64)
    m = zz.max(axis=-1, keepdims=True)
    e = np.exp(zz - m)
    lse = m + np.log(np.sum(e, axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    log_p = (zz - m) - np.log(np.sum(e, axis=-1, keepdims=True))

    value, dx, r = _run(dtype, lambda a: ops.logsumexp(a, axis=-1), z)
    np.testing.assert_allclose(value, lse[:, 0], **_tol(dtype))
    np.testing.assert_allclose(dx, r[:, None] * p, **_tol(dtype))
    assert value[0] == pytest.approx(1e4 + np.log(2.0), rel=1e-7)

    value, dx, r = _run(dtype, ops.softmax, z)
    np.testing.assert_allclose(value, p, **_tol(dtype))
    np.testing.assert_allclose(dx, p * (r - np.sum(r * p, axis=-1, keepdims=True)), **_tol(dtype))
    np.testing.assert_allclose(value.sum(axis=-1), 1.0, rtol=1e-6)

    value, dx, r = _run(dtype, ops.log_softmax, z)
    np.testing.assert_allclose(value, log_p, **_tol(dtype))
    np.testing.assert_allclose(dx, r - p * r.sum(axis=-1, keepdims=True), **_tol(dtype))
    assert value[0, 1] == pytest.approx(-2e4 - np.log(2.0), rel=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_extremes(dtype):
    z = np.array([[1e4, -1e4, 0.0], [1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [5e3, 5e3, -1e4]], dtype=dtype)
    labels = np.array([0, 1, 2, 0])
    g = Graph(dtype=dtype)
    zn, yn = g.input("z", (None, 3)), g.input("y", (None,), dtype="int64")
    per = ops.softmax_cross_entropy(zn, yn)
    loss = ops.sum(per)
    prog = compile(g, [per, grad(loss, zn)])
    with np.errstate(**STRICT):
        value, dz = prog.run(z=z, y=labels)
    assert value.dtype == np.dtype(dtype) and dz.dtype == np.dtype(dtype)
    np.testing.assert_allclose(value, [0.0, 2e4, np.log(3.0), np.log(2.0)], rtol=1e-6)
    np.testing.assert_allclose(dz, [[0, 0, 0], [1, -1, 0], [1 / 3, 1 / 3, -2 / 3], [-0.5, 0.5, 0]], atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), dtype=st.sampled_from(DTYPES), shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=5))
def test_logit_ops_finite_for_large_drawn_logits(data, dtype, shape):
    z = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-1e4, 1e4, allow_nan=False))).astype(dtype)
    zz = z.astype(np.float64)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-10, atol=1e-10)
    for build, ref in [(ops.softplus, lambda a: np.logaddexp(0.0, a)),
                       (ops.sigmoid, _sigmoid_ref),
                       (lambda a: ops.logsumexp(a, axis=-1), lambda a: np.logaddexp.reduce(a, axis=-1)),
                       (ops.log_softmax, lambda a: a - np.logaddexp.reduce(a, axis=-1, keepdims=True)),
                       (ops.softmax, lambda a: np.exp(a - np.logaddexp.reduce(a, axis=-1, keepdims=True))),
                       (lambda a: ops.bce_with_logits(a, ops.zeros_like(a)), lambda a: np.logaddexp(0.0, a))]:
        value, _, _ = _run(dtype, build, z)  # asserts finite values and gradients
        want = ref(zz)
        np.testing.assert_allclose(value, want, rtol=tol["rtol"], atol=tol["atol"] * max(1.0, np.abs(want).max()))


# --- random ops ----------------------------------------------------------------------------------
def _draws(seed, stream, shape=(4, 3), dtype="float64", kind=ops.random_normal):
    g = Graph(dtype=dtype, seed=seed)
    return compile(g, kind(shape=shape, stream=stream, graph=g)).run()


def test_same_seed_and_stream_give_same_numbers():
    np.testing.assert_array_equal(_draws(0, 1), _draws(0, 1))
    np.testing.assert_array_equal(_draws(7, 3, kind=ops.random_uniform), _draws(7, 3, kind=ops.random_uniform))


def test_different_streams_or_seeds_differ():
    a, b, c = _draws(0, 1), _draws(0, 2), _draws(1, 1)
    assert not np.allclose(a, b) and not np.allclose(a, c)


def test_program_draws_fresh_numbers_each_run_and_nodes_do_not_share():
    g = Graph(dtype="float64", seed=3)
    x = g.input("x", (None, 5))
    e1 = ops.random_normal(x, stream=4)
    e2 = ops.random_normal(x, stream=4)  # same stream, separate node: not merged by CSE
    prog = compile(g, [e1, e2])
    first = prog.run(x=np.zeros((2, 5)))
    second = prog.run(x=np.zeros((6, 5)))
    assert first[0].shape == (2, 5) and second[0].shape == (6, 5)
    assert not np.allclose(first[0], first[1])
    assert not np.allclose(first[0], second[0][:2])
    # a fresh graph with the same seed replays the same sequence
    g2 = Graph(dtype="float64", seed=3)
    x2 = g2.input("x", (None, 5))
    again = compile(g2, [ops.random_normal(x2, stream=4), ops.random_normal(x2, stream=4)]).run(x=np.zeros((2, 5)))
    np.testing.assert_array_equal(again[0], first[0])
    np.testing.assert_array_equal(again[1], first[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_normal_and_uniform_moments(dtype):
    n = 100_000
    z = _draws(11, 0, shape=(n,), dtype=dtype)
    assert z.dtype == np.dtype(dtype)
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1.0) < 5 * np.sqrt(2.0 / n)
    u = _draws(11, 1, shape=(n,), dtype=dtype, kind=ops.random_uniform)
    assert u.dtype == np.dtype(dtype) and u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 0.002


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.05, 0.3, 0.5, 1.0])
def test_bernoulli_frequency(dtype, p):
    n = 100_000
    g = Graph(dtype=dtype, seed=5)
    probs = g.input("p", (None,))
    draws = compile(g, ops.bernoulli(probs, stream=2)).run(p=np.full(n, p))
    assert draws.dtype == np.dtype(dtype)
    assert set(np.unique(draws)) <= {0.0, 1.0}
    assert abs(draws.mean() - p) <= 5 * np.sqrt(p * (1 - p) / n)


def test_reparameterized_noise_gradient_is_the_noise():
    # d/dmu and d/dsigma of sum(mu + sigma * eps) are 1 and eps, for the eps drawn in the same run
    g = Graph(dtype="float64", seed=2)
    mu, sigma = g.param("mu", np.zeros(6)), g.param("sigma", np.ones(6))
    eps = ops.random_normal(mu, stream=1)
    dmu, dsigma = grad(ops.sum(mu + sigma * eps), [mu, sigma])
    e, a, b = compile(g, [eps, dmu, dsigma]).run()
    np.testing.assert_array_equal(a, np.ones(6))
    np.testing.assert_array_equal(b, e)
    assert np.std(e) > 0


def test_logsumexp_of_all_minus_inf_row_is_minus_inf():
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, -np.inf, 1.0], [1.0, 2.0, 3.0]])
    g = Graph(dtype="float64")
    xn = g.input("x", x.shape)
    y = ops.logsumexp(xn, axis=-1)
    dx = grad(ops.sum(y * g.constant(np.array([0.0, 1.0, 1.0]))), xn)
    with np.errstate(divide="ignore", invalid="ignore"):
        value, gx = compile(g, [y, dx]).numpy({"x": x})
    assert value[0] == -np.inf  # not nan
    np.testing.assert_allclose(value[1:], [np.logaddexp(0.0, 1.0), np.logaddexp.reduce([1.0, 2.0, 3.0])], rtol=1e-14)
    # where defined, the gradient is softmax: an -inf entry gets exactly 0, finite rows sum to 1
    e = np.exp([0.0, 1.0]) / np.exp([0.0, 1.0]).sum()
    np.testing.assert_allclose(gx[1], [e[0], 0.0, e[1]], rtol=1e-14)
    np.testing.assert_allclose(gx[2], np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum(), rtol=1e-14)
    assert np.isfinite(gx[1:]).all()


@pytest.mark.parametrize("z", [-40.0, -100.0, -700.0])
def test_softplus_is_exp_for_large_negative_inputs(z):
    g = Graph(dtype="float64")
    x = g.input("x", ())
    value = compile(g, ops.softplus(x)).numpy({"x": np.array(z)})
    np.testing.assert_allclose(value, np.exp(z), rtol=1e-12)  # log1p(e^z) = e^z (1 - e^z/2 + ...)
    # log_sigmoid(-z) = -softplus(z) keeps the same relative precision
    g = Graph(dtype="float64")
    x = g.input("x", ())
    np.testing.assert_allclose(compile(g, ops.log_sigmoid(x)).numpy({"x": np.array(-z)}), -np.exp(z), rtol=1e-12)
