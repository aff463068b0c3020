"""The optimized compile computes what the plain one does, and its optimizations happen.

The default compile runs the passes, reuses dead buffers and writes updates straight
into their leaves; ``passes=(), reuse_buffers=False, direct_updates=False`` computes node
by node as built. Random small graphs (elementwise, broadcasting, reductions, matmul,
gradients, updates) must give equal outputs and equal updated values through both.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gengraph.engine import Graph, ShapeError, compile, grad, ops

PLAIN = dict(passes=(), reuse_buffers=False, direct_updates=False)

UNARY = ("tanh", "sigmoid", "relu", "square", "neg", "sin", "exp_tanh", "T", "sum0", "sum1k", "mean_all")
BINARY = ("add", "sub", "mul", "maximum", "matmul_w")


def _unary(kind, x):
    if kind == "exp_tanh":
        return ops.exp(ops.tanh(x))
    if kind == "T":
        return x.T
    if kind == "sum0":
        return ops.sum(x, axis=0) if x.ndim else x
    if kind == "sum1k":
        return ops.sum(x, axis=-1, keepdims=True) if x.ndim else x
    if kind == "mean_all":
        return ops.mean(x)
    return getattr(ops, kind)(x)


def _build(recipe, n_out, upd_kinds, batch):
    g = Graph(dtype="float64", seed=3)
    rng = np.random.default_rng(11)
    x = g.input("x", (batch, 3))  # a known batch size: None would broadcast against anything at build time
    w = g.param("w", rng.normal(size=(3, 3)) * 0.5)
    b = g.param("b", rng.normal(size=(3,)))
    s = g.state("s", rng.normal(size=(3,)))
    pool = [x, w, b, s, x @ w + b]
    for kind, i, j in recipe:
        a, c = pool[i % len(pool)], pool[j % len(pool)]
        try:
            if kind in UNARY:
                out = _unary(kind, a)
            elif kind == "matmul_w":
                out = a @ w if a.ndim >= 1 and a.shape[-1] == 3 else a * 2.0
            else:
                out = getattr(ops, kind)(a, c)
        except ShapeError:
            continue
        pool.append(out)
    loss = ops.sum(pool[-1]) + ops.sum(ops.square(pool[-2]))
    outputs = {f"o{k}": pool[-1 - k] for k in range(min(n_out, len(pool)))}
    gw, gb = grad(loss, [w, b])
    outputs["gw"] = gw
    updates = {}
    if "w" in upd_kinds:
        updates[w] = w - 0.1 * gw
    if "b" in upd_kinds:
        updates[b] = b * 0.5 + gb
    if "s" in upd_kinds:
        updates[s] = ops.sigmoid(s + ops.mean(w, axis=0))
    feeds = {"x": np.random.default_rng(5).normal(size=(batch, 3))}
    return g, outputs, updates, feeds, (w, b, s)


recipes = st.lists(st.tuples(st.sampled_from(UNARY + BINARY), st.integers(0, 50), st.integers(0, 50)),
                   min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=recipes, n_out=st.integers(1, 3), upd=st.sets(st.sampled_from("wbs")), batch=st.integers(1, 4))
def test_optimized_compile_equals_plain_compile(recipe, n_out, upd, batch):
    results = []
    for options in ({}, PLAIN):
        g, outputs, updates, feeds, leaves = _build(recipe, n_out, upd, batch)
        prog = compile(g, outputs, updates, **options)
        runs = [prog.numpy(feeds) for _ in range(2)]  # the second run sees the first's updates
        results.append((runs, [g.value(leaf) for leaf in leaves]))
    (runs_a, leaves_a), (runs_b, leaves_b) = results
    for ra, rb in zip(runs_a, runs_b):
        for k in ra:
            np.testing.assert_allclose(ra[k], rb[k], rtol=1e-10, atol=1e-12, err_msg=k)
    for la, lb in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(la, lb, rtol=1e-10, atol=1e-12)


def test_direct_update_of_a_leaf_read_by_the_next_kernel():
    """w is updated in place; s's update, computed right after, must still read the old w."""
    for order in ("ws", "sw"):
        g = Graph(dtype="float64")
        w = g.param("w", np.array([1.0, 2.0]))
        s = g.state("s", np.zeros(2))
        ups = {w: w * 0.5, s: w + 1.0}
        prog = compile(g, [], dict(sorted(ups.items(), key=lambda kv: order.index(kv[0].name))))
        prog.run()
        np.testing.assert_array_equal(g.value(w), [0.5, 1.0])
        np.testing.assert_array_equal(g.value(s), [2.0, 3.0])  # w_old + 1, not w_new + 1
    # the same through a view of w read after the in-place kernel
    g = Graph(dtype="float64")
    w = g.param("w", np.array([[1.0, 2.0]]))
    s = g.state("s", np.zeros((2, 1)))
    compile(g, [], {w: ops.relu(w * 0.5), s: w.T + 1.0}).run()
    np.testing.assert_array_equal(g.value(w), [[0.5, 1.0]])
    np.testing.assert_array_equal(g.value(s), [[2.0], [3.0]])


def _mlp_train_step(**options):
    g = Graph(dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    x = g.input("x", (None, 4))
    y = g.input("y", (None,), dtype="int64")
    w1, b1 = g.param("w1", rng.normal(size=(4, 8))), g.param("b1", np.zeros(8))
    w2, b2 = g.param("w2", rng.normal(size=(8, 3))), g.param("b2", np.zeros(3))
    h = ops.relu(x @ w1 + b1)
    h2 = ops.sigmoid(h * 2.0 - 1.0)
    loss = ops.mean(ops.softmax_cross_entropy(h2 @ w2 + b2, y))
    params = [w1, b1, w2, b2]
    updates = {p: p - 0.1 * gp for p, gp in zip(params, grad(loss, params))}
    return compile(g, {"loss": loss}, updates, **options)


def test_buffer_reuse_and_direct_updates_happen_on_an_mlp_step():
    src = _mlp_train_step().source
    body = [ln.strip() for ln in src.splitlines()[1:]]
    # some kernel writes into a dead intermediate's buffer (v..), some update into its leaf (c..)
    reused = [ln for ln in body if ", out=v" in ln]
    direct = [ln for ln in body if ", out=c" in ln]
    assert reused, src
    assert len(direct) >= 3, src  # every parameter's "p - 0.1 * grad" is computed into p itself
    assert sum("[...] = " in ln for ln in body) <= 1, src
    plain = _mlp_train_step(reuse_buffers=False, direct_updates=False).source
    assert "out=" not in plain and plain.count("[...] = ") == 4


def test_recompiling_does_not_grow_the_graph():
    g = Graph(dtype="float64")
    x = g.input("x", (None, 3))
    w = g.param("w", np.ones(3))
    y = ops.mean(ops.exp(x * w)) + ops.sum(ops.exp(g.constant(np.ones(2)) * 2.0))
    gw = grad(y, w)
    compile(g, [y, gw])
    sizes = {(len(g.nodes), len(g.values))}
    for _ in range(5):
        compile(g, [y, gw])
        sizes.add((len(g.nodes), len(g.values)))
    assert len(sizes) == 1, sizes


@pytest.mark.parametrize("options", [{}, PLAIN])
def test_plain_compile_has_no_passes(options):
    g = Graph(dtype="float64")
    x = g.input("x", (2,))
    y = x * 1.0 + 0.0
    prog = compile(g, y, **options)
    assert (prog.pass_stats == []) == bool(options)
    np.testing.assert_array_equal(prog.run(x=np.array([1.0, 2.0])), [1.0, 2.0])


# --- kernel calls with their attrs spelled out --------------------------------------------------
@given(st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=5)
                    | st.floats(allow_nan=True, allow_infinity=True),
                    lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=6))
@settings(max_examples=200, deadline=None)
def test_literal_attrs_round_trip_exactly_or_decline(value):
    from gengraph.engine.codegen import _literal

    src = _literal(value)
    if src:
        back = eval(src, {})  # our own literal source
        assert type(back) is type(value) and repr(back) == repr(value)
    else:  # only non-finite floats (inside tuples too) have no literal
        assert "nan" in repr(value) or "inf" in repr(value)


def test_kernels_get_literal_attrs_and_fall_back_to_bound_ones():
    g = Graph(dtype="float64")
    x, m = g.input("x", (None, 3)), g.input("m", (None, 3))
    y = ops.sum(ops.ema(m, x, decay=np.float64(0.25)), axis=1)  # axis: a literal; a NumPy float: bound
    prog = compile(g, y)
    calls = [ln for ln in prog.source.splitlines() if "= k" in ln]
    assert any("axis=(1,)" in ln and "_xp" in ln for ln in calls)
    assert any("_xp" not in ln and "decay" not in ln for ln in calls)  # the ema: its attrs bound at compile time
    xv, mv = np.array([[-1.0, 0.25, 7.0], [2.0, -3.0, 0.0]]), np.ones((2, 3))
    np.testing.assert_allclose(prog.run(x=xv, m=mv), (0.25 * mv + 0.75 * xv).sum(axis=1), rtol=1e-15)
