"""The float32 loops with an exp and log1p of their own (engine/ops/numba_math.py): sigmoid, SiLU,
SiLU's gradient, softplus and the binary cross-entropy from logits, as the kernels call them,
against float64 references within stated bounds, NaN and infinities included; a dense and an
image SiLU agree to the bit, value and gradient; float64 keeps NumPy's forms; warm compiles
the loops."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gengraph.engine.ops import cpu_loops
from gengraph.engine.ops.elementwise import _sigmoid_forward, _silu_grad_x_forward, _silu_lean_forward, softplus_forward
from gengraph.engine.ops.nn import _bce_forward

pytest.importorskip("numba")

FLT_MIN = float(np.finfo(np.float32).tiny)
# zeros of both signs, a subnormal, where e^-|x| leaves the normal range (-87.34), where e^x
# would overflow a float32 (88.73), huge values, infinities, NaN
SPECIAL = [0.0, -0.0, 1e-40, -87.3, -87.34, -87.5, -104.0, 88.73, -88.73, 1e30, -1e30, np.inf, -np.inf, np.nan]


@pytest.fixture
def loops_on(monkeypatch):
    """Numba's loops on for this test (GENGRAPH_NUMBA may be set off around the suite)."""
    monkeypatch.setenv("GENGRAPH_NUMBA", "1")
    monkeypatch.setattr(cpu_loops, "_LOOPS", None)
    loops = cpu_loops.load_loops()
    assert loops
    return loops


def _f64(*arrays):
    return [np.asarray(a, np.float64) for a in arrays]


def _within(got, ref, bound):
    """got (float32) equals ref (float64) within bound (float64, per value); NaN exactly where
    ref is NaN, infinities equal."""
    assert got.dtype == np.float32
    ref, bound = np.broadcast_to(ref, got.shape).ravel(), np.broadcast_to(bound, got.shape).ravel()
    got = got.astype(np.float64).ravel()
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(got), nan)
    inf = np.isinf(ref)
    np.testing.assert_array_equal(got[inf], ref[inf])
    ok = ~nan & ~inf
    err = np.abs(got[ok] - ref[ok])
    b = bound[ok]
    assert np.all(err <= b), (err.max(), np.argmax(err - b))


def _ulp(v):
    """The float32 ulp of |v| (v float64)."""
    with np.errstate(over="ignore"):
        return np.spacing(np.abs(v).astype(np.float32)).astype(np.float64)


def _sigmoid64(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _softplus64(x):
    with np.errstate(invalid="ignore"):  # NaN in, NaN out
        return np.logaddexp(0.0, x)


def _arrays(rng, shape, n, special):
    arrays = [(rng.standard_normal(shape) * rng.choice([1.0, 6.0, 40.0])).astype(np.float32) for _ in range(n)]
    if special and arrays[0].size:
        for a in arrays:
            a.reshape(-1)[rng.integers(0, a.size, size=max(1, a.size // 3))] = rng.choice(SPECIAL)
    return arrays


CASES = {  # name -> (inputs, kernel(args, out), reference(float64 args) -> (value, error bound))
    "sigmoid": (1, lambda a, out: _sigmoid_forward(np, a[0], out=out),
                lambda x: (_sigmoid64(x), 3 * _ulp(_sigmoid64(x)) + FLT_MIN)),
    "silu": (1, lambda a, out: _silu_lean_forward(np, a[0], out=out),
             lambda x: (x * _sigmoid64(x), 4 * _ulp(x * _sigmoid64(x)) + np.abs(x) * FLT_MIN)),
    "silu_grad_x": (2, lambda a, out: _silu_grad_x_forward(np, a[0], a[1], out=out), None),
    "softplus": (1, lambda a, out: softplus_forward(np, a[0]),
                 lambda x: (_softplus64(x), 3 * _ulp(_softplus64(x)) + FLT_MIN)),
    "bce": (2, lambda a, out: _bce_forward(np, a[0], a[1]), None),
}


def _reference(name, args):
    with np.errstate(invalid="ignore", over="ignore"):  # -inf * 0: NaN, as in float32
        if CASES[name][2] is not None:
            return CASES[name][2](*args)
        if name == "silu_grad_x":  # g s (1 + x (1 - s)): rounding on the size of the terms (cancellation), and
            g, x = args  # s's own error times the slope in s, g (1 + x (1 - 2 s))
            s = _sigmoid64(x)
            bound = (8 * _ulp(np.abs(g) * s * (1 + np.abs(x) * (1 - s))) + 3 * _ulp(s) * np.abs(g) * (1 + np.abs(x))
                     + np.abs(g * x) * FLT_MIN)
            return g * s * (1 + x * (1 - s)), bound
        z, y = args  # softplus(z) - z y
        return _softplus64(z) - z * y, 4 * _ulp(_softplus64(z) + np.abs(z * y)) + FLT_MIN


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(CASES)), shape=st.sampled_from([(0,), (1,), (7,), (33,), (3, 5), (2, 3, 4, 5), (4096,)]),
       where=st.sampled_from(["new", "other", "inplace", "second"]), seed=st.integers(0, 2 ** 16), special=st.booleans())
def test_the_float32_loops_are_within_their_bounds_of_float64(loops_on, name, shape, where, seed, special):
    n, kernel, _ = CASES[name]
    rng = np.random.default_rng(seed)
    args = _arrays(rng, shape, n, special)
    if name == "bce":  # targets in [0, 1]
        args[1] = rng.uniform(0, 1, shape).astype(np.float32)
    if name == "silu_grad_x":  # special values in x only: an infinite g times a sigmoid flushed to 0
        args[0] = _arrays(rng, shape, 1, False)[0]  # is NaN in float32 where float64 has a 1e-45 (test below)
    ref, bound = _reference(name, _f64(*args))
    out = {"new": None, "other": np.full(shape, 7.0, np.float32), "inplace": args[0],
           "second": args[-1]}[where]
    with np.errstate(all="ignore"):
        got = kernel(args, out)
    if out is not None and name not in ("softplus", "bce"):  # those two take no out
        assert got is out
    _within(got, ref, bound)


@pytest.mark.parametrize("name", sorted(CASES))
def test_nan_and_infinities_give_the_limits(loops_on, name):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
    y = np.array([0.5, 1.0, 0.0, 1.0, 0.0], np.float32)
    args = {"silu_grad_x": [np.ones_like(x), x], "bce": [x, y]}.get(name, [x])  # silu_grad_x takes (g, x)
    with np.errstate(all="ignore"):
        got = CASES[name][1](args, None)
    expected = {"sigmoid": [np.nan, 1.0, 0.0, 0.5, 0.5], "silu": [np.nan, np.inf, np.nan, 0.0, 0.0],
                "silu_grad_x": [np.nan, np.nan, np.nan, 0.5, 0.5], "softplus": [np.nan, np.inf, 0.0, np.log(2), np.log(2)],
                "bce": [np.nan, np.nan, np.nan, np.log(2), np.log(2)]}[name]
    np.testing.assert_allclose(got, np.array(expected, np.float32), rtol=2e-7)


def test_the_negative_tail_keeps_its_relative_accuracy(loops_on):
    """sigmoid(-20) is 2.06e-9: the tanh form (0.5 + 0.5 tanh(x / 2)) rounds it to 0 in float32."""
    x = np.array([-20.0, -50.0, -80.0], np.float32)
    got = _sigmoid_forward(np, x)
    np.testing.assert_allclose(got, _sigmoid64(x.astype(np.float64)), rtol=3e-7)
    assert np.all(got > 0)


def test_a_dense_and_an_image_silu_agree_to_the_bit(loops_on):
    """A 2-D SiLU is two nodes (s = sigmoid(x), x * s; its gradient from s), a 4-D one is one
    node whose gradient recomputes s: the same sigmoid either way, so the same bits."""
    from gengraph.engine import Graph, compile, grad, ops

    rng = np.random.default_rng(3)
    x0 = (rng.standard_normal((4, 3, 8, 8)) * 5).astype(np.float32)
    w0 = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    results = []
    for shape in [(4, 3, 8, 8), (12, 64)]:
        g = Graph("float32")
        x = g.param("x", x0.reshape(shape))
        w = g.constant(w0.reshape(shape))
        y = ops.silu(x)
        loss = ops.sum(y * w)
        out = compile(g, {"y": y, "dx": grad(loss, x)}).run()
        results.append([np.asarray(out["y"]).reshape(-1), np.asarray(out["dx"]).reshape(-1)])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    x64 = x0.astype(np.float64).reshape(-1)
    s = _sigmoid64(x64)
    np.testing.assert_allclose(results[0][0], x64 * s, rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_keeps_numpys_forms(loops_on, name, monkeypatch):
    """The loops are float32 code: float64 arrays never reach them."""
    calls = []
    for loop in cpu_loops.FLOAT32_ONLY:
        for full in (loop, loop + "_inplace"):
            monkeypatch.setattr(loops_on, full, lambda *a, full=full: calls.append(full))
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(64) for _ in range(CASES[name][0])]
    ref, bound = _reference(name, args)
    got = CASES[name][1](args, None)
    assert calls == [] and got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-300)


def test_warm_compiles_the_float32_loops(loops_on, monkeypatch):
    from gengraph.engine.ops import numba_math

    seen = []
    for name in numba_math.SIGNATURES:
        for full in (name, name + "_inplace"):
            real = getattr(numba_math, full)
            monkeypatch.setattr(numba_math, full, lambda *a, full=full, real=real: seen.append(full) or real(*a))
    numba_math.warm("float64")
    assert seen == []
    numba_math.warm("float32")
    assert set(seen) == {n + s for n in numba_math.SIGNATURES for s in ("", "_inplace")}


# --- the classifier head's row loops: softmax, cross-entropy, hits ------------------------------
@st.composite
def _logit_rows(draw):
    n, c = draw(st.integers(1, 40)), draw(st.integers(1, 12))
    scale = draw(st.sampled_from([0, 1, 10, 1e4]))  # ties, ordinary, wide, p[label] underflowing
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    z = (rng.integers(-2, 3, size=(n, c)) if scale == 0 else rng.normal(size=(n, c)) * scale).astype(np.float32)
    if draw(st.booleans()):  # a row with a NaN, one with +inf
        z[rng.integers(0, n), rng.integers(0, c)] = np.nan
        z[rng.integers(0, n), rng.integers(0, c)] = np.inf
    return z, rng.integers(0, c, size=n)


def _head64(z, labels):
    """softmax, cross-entropy and hits in float64 (NaN rows NaN, a row with +inf NaN, as in float32)."""
    z = z.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        m = z.max(axis=1, keepdims=True)
        e = np.exp(z - m)
        p = e / e.sum(axis=1, keepdims=True)
        rows = np.arange(len(labels))
        loss = np.log(e.sum(axis=1)) - (z[rows, labels] - m[:, 0])
        hit = (z[rows, labels] >= m[:, 0]).astype(np.float64)
    return p, loss, hit


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_logit_rows())
def test_the_head_loops_are_within_their_bounds_of_float64(loops_on, case):
    """p within (c + 2 + |z - max|) ulps plus the flush (exp, whose argument z - max is rounded
    to float32 first, the sum in order, one division), the loss within (c + 4) float32 epsilons
    of max(1, |loss|), the hits exact."""
    from gengraph.engine.ops.nn import softmax_head

    z, labels = case
    c = z.shape[1]
    p, loss, hit = softmax_head(np, z, labels)
    p64, loss64, hit64 = _head64(z, labels)
    eps = float(np.finfo(np.float32).eps)
    with np.errstate(invalid="ignore"):
        spread = np.abs(z - z.max(axis=1, keepdims=True)).astype(np.float64)
    _within(p, p64, (c + 2 + spread) * _ulp(p64) + FLT_MIN)
    _within(loss, loss64, (c + 4) * eps * np.maximum(1.0, np.abs(loss64)))
    np.testing.assert_array_equal(hit, hit64)


def test_the_head_loops_refuse_a_bad_label_before_writing(loops_on):
    from gengraph.engine.errors import LabelError
    from gengraph.engine.ops.nn import _softmax_ce_forward, _softmax_forward, softmax_head

    z = np.zeros((3, 4), np.float32)
    p = _softmax_forward(np, z, (1,))
    for bad in (-1, 4):
        labels = np.array([0, bad, 1])
        for first in ("softmax_cross_entropy", "correct"):
            with pytest.raises(LabelError, match=f"^{first}: class labels must lie in 0..3 .* found {bad}"):
                softmax_head(np, z, labels, first=first)
        with pytest.raises(LabelError, match=f"found {bad}"):
            _softmax_ce_forward(np, z, p, labels)
        out = np.full(3, 7.0, np.float32)
        assert loops_on.cross_entropy_rows32(z, p, labels, out) == 1 and np.all(out == 7.0)


def test_one_input_loops_skip_the_overlap_checks_but_not_the_others(loops_on, monkeypatch):
    """cpu_loops.unary_loop: a new array or in place without `takes` (one input cannot overlap
    another); a read-only x in place, a strided x and a foreign byte order take NumPy's form;
    another out goes through cpu_loop's checks."""
    x = np.linspace(-30, 30, 64, dtype=np.float32)
    want = _sigmoid64(x.astype(np.float64))
    bound = 3 * _ulp(want) + FLT_MIN
    buf = np.frombuffer(x.tobytes(), np.float32)  # memory another object owns: fine with one input
    _within(_sigmoid_forward(np, buf), want, bound)
    inplace = x.copy()
    assert _sigmoid_forward(np, inplace, out=inplace) is inplace
    _within(inplace, want, bound)
    calls = []
    monkeypatch.setattr(loops_on, "sigmoid32_inplace", lambda *a: calls.append(a))
    frozen = x.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):  # NumPy's own error for a read-only out
        _sigmoid_forward(np, frozen, out=frozen)
    assert calls == []
    half = np.float32(0.5)
    tanh_form = np.tanh(x[::2] * half) * half + half  # NumPy's form, its bits
    np.testing.assert_array_equal(_sigmoid_forward(np, x[::2]), tanh_form)
    np.testing.assert_array_equal(_sigmoid_forward(np, x[::2].astype(">f4")), tanh_form)
    other = np.empty_like(x)
    assert _sigmoid_forward(np, x, out=other) is other
    _within(other, want, bound)
