"""The compiler: passes (prune, CSE, constant folding, simplification), the flat schedule,
in-place updates, dtype preservation and unknown batch sizes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gengraph.engine import Graph, NonFiniteError, compile, grad, ops, topo_order


def kernel_ops(prog):
    return [n.op for n in prog.nodes if not n.is_leaf]


def _mlp(dtype="float64", batch=None):
    g = Graph(dtype=dtype, seed=0)
    rng = np.random.default_rng(0)
    x = g.input("x", (batch, 3))
    y = g.input("y", (batch,), dtype="int64")
    w1 = g.param("w1", rng.normal(size=(3, 5)))
    b1 = g.param("b1", np.zeros(5))
    w2 = g.param("w2", rng.normal(size=(5, 4)))
    h = ops.tanh(x @ w1 + b1)
    loss = ops.mean(ops.softmax_cross_entropy(h @ w2, y))
    return g, x, y, [w1, b1, w2], loss


# --- the schedule: no graph walking at run time ------------------------------------------------
def test_kernel_calls_equal_scheduled_kernels():
    g, x, y, params, loss = _mlp()
    grads = grad(loss, params)
    prog = compile(g, {"loss": loss, "grads": grads[0], "gb": grads[1], "gw2": grads[2]}, count_calls=True)
    feed = dict(x=np.ones((6, 3)), y=np.arange(6) % 4)
    prog.run(**feed)
    # one call per scheduled node, except views of leaves bound once at compile time, transposes
    # written as `.T`, the loss's mean over every row written as a sum / the count, and the softmax
    # that the classifier head's fused call computes with its loss
    assert prog.n_kernels == len(kernel_ops(prog)) - len(prog.no_kernel) > 0
    assert sorted({n.op for n in prog.nodes if n.id in prog.no_kernel}) == ["mean", "softmax", "transpose"]
    assert ".T\n" in prog.source and ".sum(axis=(0,)) / v" in prog.source
    assert prog.kernel_calls == prog.n_kernels
    prog.run(**feed)
    assert prog.kernel_calls == 2 * prog.n_kernels
    # straight-line code: one call per kernel, no loops
    assert "for " not in prog.source and "while " not in prog.source
    assert sum(1 for line in prog.source.splitlines() if " = k" in line) == prog.n_kernels


def test_run_does_no_graph_traversal_or_shape_inference():
    """Profile a run: no frame of the graph IR, the passes, the compiler, autodiff or op shape rules."""
    g, x, y, params, loss = _mlp()
    prog = compile(g, [loss] + grad(loss, params))
    feed = dict(x=np.ones((6, 3)), y=np.arange(6) % 4)
    prog.run(**feed)  # warm
    engine = Path(ops.__file__).resolve().parent.parent
    forbidden = {engine / "graph.py", engine / "passes.py", engine / "compiler.py", engine / "autodiff.py",
                 engine / "ops" / "registry.py"}
    seen = []

    def profiler(frame, event, arg):
        if event == "call":
            seen.append((Path(frame.f_code.co_filename).resolve() if not frame.f_code.co_filename.startswith("<")
                         else frame.f_code.co_filename, frame.f_code.co_name))

    sys.setprofile(profiler)
    try:
        prog.run(**feed)
    finally:
        sys.setprofile(None)
    assert any(name == "run" and str(f).startswith("<gengraph program") for f, name in seen)
    bad = [(str(f), name) for f, name in seen if f in forbidden]
    assert bad == []
    # Python-level calls are bounded by the kernels (each kernel is at most a couple of frames)
    assert len(seen) <= 3 * prog.n_kernels + 20


# --- passes ----------------------------------------------------------------------------------------
def test_cse_merges_repeated_subexpressions():
    g = Graph(dtype="float64")
    x = g.input("x", (None, 3))
    a = ops.exp(x) + ops.exp(x)
    b = ops.exp(x) + ops.exp(x)
    out = ops.sum(a * b, axis=-1)
    built = len(topo_order([out]))
    prog = compile(g, out)
    assert prog.built_nodes == built
    assert kernel_ops(prog) == ["exp", "add", "mul", "sum"]
    assert len(prog.nodes) < built
    assert prog.n_kernels < sum(1 for n in topo_order([out]) if not n.is_leaf)
    cse = {name: (before, after) for name, before, after in prog.pass_stats}["cse"]
    assert cse[1] < cse[0]
    xv = np.random.default_rng(0).normal(size=(4, 3))
    np.testing.assert_allclose(prog.run(x=xv), np.sum((2 * np.exp(xv)) ** 2, axis=-1))


def test_cse_merges_equal_reductions_spelled_differently():
    g = Graph(dtype="float64")
    x = g.input("x", (2, 3, 4))
    out = ops.sum(x, axis=(0, -1)) * ops.sum(x, axis=(2, 0)) + ops.mean(x, axis=-1) * ops.mean(x, axis=2)
    prog = compile(g, out)
    assert kernel_ops(prog).count("sum") == 1 and kernel_ops(prog).count("mean") == 1


def test_cse_keeps_random_draws_apart():
    g = Graph(dtype="float64")
    x = g.input("x", (3,))
    prog = compile(g, ops.random_normal(x, stream=0) - ops.random_normal(x, stream=0))
    assert kernel_ops(prog).count("random_normal") == 2
    assert np.all(prog.run(x=np.zeros(3)) != 0)


def test_pruning_drops_nodes_the_outputs_do_not_need():
    g = Graph(dtype="float64")
    x = g.input("x", (None, 3))
    unused_input = g.input("unused", (2,))
    keep = ops.exp(x)
    ops.sin(x) * ops.cos(x)  # built, never asked for
    ops.log(unused_input)
    prog = compile(g, keep)
    assert kernel_ops(prog) == ["exp"]
    assert prog.feed_names == ["x"]  # an input nobody needs is not required
    np.testing.assert_allclose(prog.run(x=np.zeros((2, 3))), np.ones((2, 3)))


def test_constant_folding():
    g = Graph(dtype="float64")
    x = g.input("x", (None, 3))
    two, three = g.constant(2.0), g.constant(3.0)
    out = (two * three) + x
    prog = compile(g, out)
    assert kernel_ops(prog) == ["add"]
    folded = [n for n in prog.nodes if n.op == "constant"]
    assert [float(g.value(n)) for n in folded] == [6.0]
    np.testing.assert_allclose(prog.run(x=np.ones((2, 3))), np.full((2, 3), 7.0))
    # a whole constant subgraph (exp, matmul, sum) folds to one value
    c = g.constant(np.arange(6.0).reshape(2, 3))
    x2 = g.input("x2", (None, 2))
    out2 = x2 * ops.sum(ops.exp(c) @ ops.transpose(c), axis=0)
    prog2 = compile(g, out2)
    assert kernel_ops(prog2) == ["mul"]
    ref = np.sum(np.exp(np.arange(6.0).reshape(2, 3)) @ np.arange(6.0).reshape(2, 3).T, axis=0)
    np.testing.assert_allclose(prog2.run(x2=np.ones((1, 2)))[0], ref)


def test_constant_folding_leaves_random_ops_alone():
    g = Graph(dtype="float64")
    draw = ops.random_uniform(shape=(3,), graph=g) * g.constant(2.0)
    prog = compile(g, draw)
    assert "random_uniform" in kernel_ops(prog)
    assert not np.array_equal(prog.run(), prog.run())


@pytest.mark.parametrize("build", [
    lambda x: x * 1.0, lambda x: 1.0 * x, lambda x: x + -0.0, lambda x: -0.0 + x, lambda x: x - 0.0,
    lambda x: x / 1.0, lambda x: -(-x), lambda x: ops.transpose(ops.transpose(x)),
    lambda x: ops.transpose(ops.transpose(x, axes=(1, 0, 2)), axes=(1, 0, 2)),
    lambda x: ops.stop_gradient(x), lambda x: ops.transpose(ops.transpose(x * 1.0)) + -0.0,
], ids=["x*1", "1*x", "x+(-0)", "(-0)+x", "x-0", "x/1", "--x", "T(T(x))", "T(T(x),perm)", "stop_gradient", "mixed"])
def test_simplify_removes_identities(build):
    # x + 0.0 is not x for x = -0.0 (it is +0.0): only adding -0.0 is an identity
    g = Graph(dtype="float64")
    x = g.input("x", (2, 3, 4))
    prog = compile(g, build(x))
    assert prog.n_kernels == 0, prog.source
    xv = np.random.default_rng(0).normal(size=(2, 3, 4))
    np.testing.assert_array_equal(prog.run(x=xv), xv)


def test_simplify_merges_transpose_and_reshape_chains():
    g = Graph(dtype="float64")
    x = g.input("x", (2, 3, 4))
    t = ops.transpose(ops.transpose(x, axes=(1, 0, 2)), axes=(0, 2, 1))
    r = ops.reshape(ops.reshape(x, (6, 4)), (4, 6))
    prog = compile(g, [t, r])
    assert kernel_ops(prog) == ["transpose", "reshape"]
    xv = np.arange(24.0).reshape(2, 3, 4)
    out_t, out_r = prog.run(x=xv)
    np.testing.assert_array_equal(out_t, xv.transpose(1, 0, 2).transpose(0, 2, 1))
    np.testing.assert_array_equal(out_r, xv.reshape(4, 6))


def test_simplify_keeps_broadcasting_identities():
    # x * ones((3,)) broadcasts a (2, 1) x to (2, 3): not an identity, must stay
    g = Graph(dtype="float64")
    x = g.input("x", (2, 1))
    prog = compile(g, x * g.constant(np.ones(3)) + 0.0)
    np.testing.assert_array_equal(prog.run(x=[[1.0], [2.0]]), [[1.0] * 3, [2.0] * 3])


@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("batch", [None, 6])
def test_simplify_folds_the_loss_seed_into_softmax_ce_backward(reduce, batch):
    """mean/sum(softmax_cross_entropy)'s VJP: the scalar seed goes into the backward kernel as
    one scalar (broadcast attr) instead of an unreduced row vector; values, gradients and
    gradients of gradients stay those of the plain schedule."""
    from gengraph.engine.passes import EVAL_PASSES

    g = Graph(dtype="float64", seed=0)
    rng = np.random.default_rng(1)
    x = g.input("x", (batch, 3))
    y = g.input("y", (batch,), dtype="int64")
    w = g.param("w", rng.normal(size=(3, 4)))
    loss = getattr(ops, reduce)(ops.softmax_cross_entropy(x @ w, y)) * 1.7
    (gw,) = grad(loss, [w])
    (ggw,) = grad(ops.sum(gw * gw), [w])  # second order through the folded VJP
    feed = dict(x=rng.normal(size=(6, 3)), y=np.array([0, 3, 1, 1, 2, 0]))
    fast = compile(g, [loss, gw, ggw])
    plain = compile(g, [loss, gw, ggw], passes=EVAL_PASSES)  # no simplify: the unfolded VJP
    assert not {"unreduce", "unreduce_to"} & set(kernel_ops(compile(g, [loss, gw])))  # first order: no row vector
    assert {"unreduce", "unreduce_to"} & set(kernel_ops(plain))
    folded = [n for n in fast.nodes if n.op == "softmax_ce_backward"]
    assert folded and all(n.attrs.get("broadcast") == reduce for n in folded)
    for a, b in zip(fast.run(**feed), plain.run(**feed)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)
    # and against central differences of the loss
    wv = g.value(w).copy()
    num = np.zeros_like(wv)
    for i in np.ndindex(*wv.shape):
        for s in (1, -1):
            w2 = wv.copy()
            w2[i] += s * 1e-6
            g.set_value(w, w2)
            num[i] += s * fast.run(**feed)[0] / 2e-6
    g.set_value(w, wv)
    np.testing.assert_allclose(fast.run(**feed)[1], num, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("folded", [True, False])
def test_simplify_turns_the_gradient_of_a_split_head_into_one_concat(folded):
    """x[..., :k] and x[..., k:] used apart (a VAE's mu and log-variance): their gradients'
    two scatters and sum become one concat; a split that does not cover the axis stays."""
    from gengraph.engine.passes import EVAL_PASSES

    g = Graph(dtype="float64", seed=0)
    x = g.input("x", (None, 4))
    w = g.param("w", np.random.default_rng(0).normal(size=(4, 6)))
    h = x @ w
    lo, hi = (h[..., :3], h[..., 3:]) if folded else (h[..., 2:5], h[..., :2])  # the second leaves a gap
    loss = ops.sum(ops.tanh(lo) ** 2) + ops.sum(ops.exp(0.3 * hi))
    (gw,) = grad(loss, [w])
    (gg,) = grad(ops.sum(gw * gw), [w])
    fast, plain = compile(g, [loss, gw, gg]), compile(g, [loss, gw, gg], passes=EVAL_PASSES)
    assert ("concat" in kernel_ops(compile(g, [gw]))) == folded
    xv = np.random.default_rng(1).normal(size=(5, 4))
    for u, v in zip(fast.run(x=xv), plain.run(x=xv)):
        np.testing.assert_allclose(u, v, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("batch", [None, 5])
@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_simplify_multiplies_by_a_spread_seed_as_a_scalar(batch, reduce):
    """A mean (or sum) loss's seed, broadcast back through the VJPs of its reductions (and
    negations), multiplies the other factor as one scalar: no unreduce / unreduce_to array is
    built. Values, gradients and second-order gradients equal the plain schedule's."""
    from gengraph.engine.passes import EVAL_PASSES

    g = Graph(dtype="float64", seed=0)
    rng = np.random.default_rng(2)
    x = g.input("x", (batch, 4))
    w = g.param("w", rng.normal(size=(4, 3)))
    h = x @ w
    per_row = -ops.sum(ops.bce_with_logits(h, ops.sigmoid(x[:, :3])), axis=1) + ops.sum(h * h, axis=1)
    loss = getattr(ops, reduce)(per_row)
    (gw,) = grad(loss, [w])
    (ggw,) = grad(ops.sum(gw * gw), [w])
    fast, plain = compile(g, [loss, gw, ggw]), compile(g, [loss, gw, ggw], passes=EVAL_PASSES)
    assert not {"unreduce", "unreduce_to"} & set(kernel_ops(compile(g, [loss, gw])))
    assert {"unreduce", "unreduce_to"} & set(kernel_ops(compile(g, [loss, gw], passes=EVAL_PASSES)))
    xv = rng.normal(size=(5, 4))
    for u, v in zip(fast.run(x=xv), plain.run(x=xv)):
        np.testing.assert_allclose(u, v, rtol=1e-13, atol=1e-14)


def test_simplify_keeps_a_product_with_a_spread_of_a_non_scalar():
    # the row vector unreduce_to spreads is not one value: the product must keep it
    g = Graph(dtype="float64")
    r = g.input("r", (3,))
    m = g.input("m", (3, 2))
    y = ops.reduce.unreduce_to(r, axis=(1,), sizes=(2,)) * m
    prog = compile(g, y)
    assert "unreduce_to" in kernel_ops(prog)
    rv, mv = np.array([1.0, 2.0, 3.0]), np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(prog.run(r=rv, m=mv), rv[:, None] * mv)


@pytest.mark.parametrize("op", ["sum", "mean"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions_over_axes_of_size_one_are_views(op, keepdims):
    """A sum or mean over a one-sample axis computes nothing: the compiled program reshapes (or
    passes x on), with x's values (NaN and infinities included) and its gradient."""
    g = Graph(dtype="float32")
    x = g.input("x", (1, None, 3))
    w = g.param("w", np.arange(1.0, 4.0))
    r = getattr(ops, op)((x * w) + 1.0, axis=(0,), keepdims=keepdims)
    gw, = grad(ops.sum(ops.square(r)), [w])
    prog = compile(g, [r, gw])
    assert op not in kernel_ops(prog)
    wv = np.arange(1.0, 4.0, dtype=np.float32)
    for xv in (np.array([[[1.5, -2.0, 0.5], [3.0, 0.25, -7.0]]], dtype=np.float32),
               np.array([[[np.nan, -np.inf, 0.5], [np.inf, -0.0, 1e30]]], dtype=np.float32)):
        with np.errstate(all="ignore"):  # inf * 0 in the gradient of the second case
            out, gwv = prog.run(x=xv)
        ref = xv * wv + np.float32(1.0)
        assert out.shape == ((1, 2, 3) if keepdims else (2, 3))
        np.testing.assert_array_equal(out, ref if keepdims else ref[0])
        with np.errstate(all="ignore"):
            np.testing.assert_allclose(gwv, (2 * ref * xv).sum(axis=(0, 1)), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_one_sample_weight_gradient_is_one_2d_product_into_its_flat_view(dtype):
    """A decoder on a one-sample axis (1, batch, features): its weight gradient, a batched product
    of one pair of matrices, runs as a 2-D product written straight into the flat gradient buffer
    (before: a 3-D product, a reshape and a copy), with the plain compile's values."""
    from gengraph.engine.optimizers import make_optimizer

    def build():
        g = Graph(dtype=dtype, seed=0)
        rng = np.random.default_rng(3)
        x = g.input("x", (None, 3))
        W = g.param("W", rng.normal(size=(3, 4)))
        b = g.param("b", rng.normal(size=(4,)))
        h = ops.tanh(ops.expand_dims(x, axis=(0,)) @ W + b)  # (1, batch, 4)
        loss = ops.mean(ops.sum(ops.square(h), axis=(2,)))
        opt = make_optimizer("adam", lr=0.1)
        return g, loss, [W, b], opt.updates(g, [W, b], grad(loss, [W, b]))

    g, loss, params, ups = build()
    prog = compile(g, {"loss": loss}, updates=ups)
    products = [n for n in prog.nodes if n.op == "matmul"]
    assert not [n for n in products if len(n.inputs[0].shape) == len(n.inputs[1].shape) == 3]
    assert [n for n in products if len(n.shape) == 2]  # the weight gradient
    assert "[...] =" not in prog.source  # no copy into the flat gradient
    g2, loss2, params2, ups2 = build()
    plain = compile(g2, {"loss": loss2}, updates=ups2, passes=(), reuse_buffers=False, direct_updates=False)
    xv = np.random.default_rng(4).normal(size=(5, 3)).astype(dtype)
    for _ in range(3):
        np.testing.assert_allclose(prog.run(x=xv)["loss"], plain.run(x=xv)["loss"], rtol=1e-6 if dtype == "float32" else 1e-14)
    assert not np.allclose(g.value(params[0]), np.random.default_rng(3).normal(size=(3, 4)), atol=0.1)  # it trained
    for p, q in zip(params, params2):
        np.testing.assert_allclose(g.value(p), g2.value(q), rtol=1e-5 if dtype == "float32" else 1e-13)


def test_reductions_over_axes_of_other_sizes_keep_their_kernel():
    g = Graph(dtype="float64")
    x = g.input("x", (2, None, 3))
    prog = compile(g, [ops.sum(x, axis=(0,)), ops.mean(x, axis=(0, 2)), ops.sum(x, axis=(2,))])
    assert kernel_ops(prog).count("sum") + kernel_ops(prog).count("mean") == 3
    xv = np.arange(12.0).reshape(2, 2, 3)
    a, b, c = prog.run(x=xv)
    np.testing.assert_array_equal(a, xv.sum(axis=0))
    np.testing.assert_allclose(b, xv.mean(axis=(0, 2)))
    np.testing.assert_array_equal(c, xv.sum(axis=2))


def test_passes_do_not_change_the_users_graph():
    g = Graph(dtype="float64")
    x = g.input("x", (3,))
    y = (x * 1.0 + ops.exp(x)) + ops.exp(x)
    before = [(n.id, n.op, tuple(i.id for i in n.inputs)) for n in topo_order([y])]
    compile(g, y)
    assert [(n.id, n.op, tuple(i.id for i in n.inputs)) for n in topo_order([y])] == before


# --- updates -------------------------------------------------------------------------------------------
def test_updates_in_place_and_outputs_see_old_values():
    g = Graph(dtype="float64")
    x = g.input("x", (None, 2))
    w = g.param("w", np.array([[1.0, 2.0], [3.0, 4.0]]))
    step = g.state("step", np.zeros(()))
    storage = g.values[w.id]
    loss = ops.sum(x @ w)
    gw = grad(loss, w)
    prog = compile(g, {"loss": loss, "w": w, "wT": ops.transpose(w), "row": w[0], "step": step},
                   updates={w: w - 0.5 * gw, step: step + 1.0})
    xv = np.array([[1.0, 1.0]])
    out = prog.run(x=xv)
    assert out["loss"] == 10.0
    np.testing.assert_array_equal(out["w"], [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(out["wT"], [[1.0, 3.0], [2.0, 4.0]])
    np.testing.assert_array_equal(out["row"], [1.0, 2.0])
    assert float(out["step"]) == 0.0
    assert g.values[w.id] is storage  # written in place, same buffer
    np.testing.assert_array_equal(g.value(w), [[0.5, 1.5], [2.5, 3.5]])
    assert float(g.value(step)) == 1.0
    out = prog.run(x=xv)  # the next run sees the update
    assert out["loss"] == 8.0 and float(out["step"]) == 1.0
    # a program compiled earlier sees the same storage
    assert float(compile(g, ops.sum(w)).run()) == 0.0 + 1.0 + 2.0 + 3.0
    # set_value writes through as well
    g.set_value(w, np.zeros((2, 2)))
    assert prog.run(x=xv)["loss"] == 0.0


@pytest.mark.parametrize("order", ["prev_first", "w_first"])
def test_updates_read_values_from_before_the_run(order):
    # prev <- w and w <- w + 10: prev gets the old w whatever the order of the updates
    g = Graph(dtype="float64")
    w = g.param("w", np.array([1.0, 2.0]))
    prev = g.state("prev", np.zeros(2))
    ups = {prev: w, w: w + 10.0} if order == "prev_first" else {w: w + 10.0, prev: w}
    compile(g, [], updates=ups).run()
    np.testing.assert_array_equal(g.value(prev), [1.0, 2.0])
    np.testing.assert_array_equal(g.value(w), [11.0, 12.0])


def test_swap_updates():
    g = Graph(dtype="float64")
    a, b = g.state("a", np.array([1.0, 2.0])), g.state("b", np.array([3.0, 4.0]))
    prog = compile(g, [], updates={a: b, b: a})
    prog.run()
    np.testing.assert_array_equal(g.value(a), [3.0, 4.0])
    np.testing.assert_array_equal(g.value(b), [1.0, 2.0])
    m = g.param("m", np.arange(4.0).reshape(2, 2))
    compile(g, [], updates={m: ops.transpose(m)}).run()
    np.testing.assert_array_equal(g.value(m), [[0.0, 2.0], [1.0, 3.0]])


def test_update_rejects_non_leaf_and_bad_shape():
    g = Graph(dtype="float64")
    x = g.input("x", (2,))
    w = g.param("w", np.zeros(2))
    with pytest.raises(ValueError):
        compile(g, [], updates={x: x + 1.0})
    with pytest.raises(ValueError):
        compile(g, [], updates={w: g.constant(np.zeros(3))})


# --- dtypes and batch sizes ------------------------------------------------------------------------------
def test_float32_stays_float32_end_to_end():
    g = Graph(dtype="float32", seed=1)
    rng = np.random.default_rng(0)
    x = g.input("x", (None, 4))
    labels = g.input("y", (None,), dtype="int64")
    w = g.param("w", rng.normal(size=(4, 3)))
    b = g.param("b", np.zeros(3))
    s = g.state("m", np.zeros((4, 3)))
    z = x @ w + b
    noise = ops.random_normal(z, stream=0)
    h = ops.gelu(z) + ops.silu(z) * ops.sigmoid(z) + 0.1 * noise
    loss = (ops.mean(ops.softmax_cross_entropy(h, labels)) + ops.mean(ops.bce_with_logits(z, ops.softmax(h)))
            + 1e-3 * ops.sum(w ** 2) + ops.mean(ops.logsumexp(h, axis=-1)) + ops.mse(h, ops.log_softmax(z))
            + ops.mean(ops.kl_normal_std(z, ops.clip(h, -1.0, 1.0))) - ops.mean(ops.gaussian_logpdf(h, z, 0.5 * z))
            + ops.mean(ops.max(ops.softplus(z), axis=0)) + ops.mean(ops.sqrt(ops.abs(z) + 1.0)))
    gw, gb = grad(loss, [w, b])
    hvp = grad(ops.sum(gw * gw), w)
    new_m = 0.9 * s + 0.1 * gw
    everything = [n for n in topo_order([loss, gw, gb, hvp, new_m]) if not n.is_leaf]
    assert all(n.dtype == np.float32 for n in everything if n.dtype.kind == "f")
    prog = compile(g, everything, updates={s: new_m, w: w - 0.01 * new_m})
    outs = prog.run(x=rng.normal(size=(5, 4)), y=rng.integers(0, 3, size=5))
    kinds = {np.asarray(o).dtype for o in outs if np.asarray(o).dtype.kind == "f"}
    assert kinds == {np.dtype(np.float32)}, kinds
    assert all(np.all(np.isfinite(o)) for o in outs)
    assert g.values[w.id].dtype == np.float32 and g.values[s.id].dtype == np.float32


def test_none_batch_dimension_two_batch_sizes_one_program():
    g, x, y, params, loss = _mlp(batch=None)
    grads = grad(loss, params)
    prog = compile(g, [loss] + grads)
    w1, b1, w2 = (g.value(p) for p in params)
    rng = np.random.default_rng(1)
    for n in (3, 8):
        xv, yv = rng.normal(size=(n, 3)), rng.integers(0, 4, size=n)
        out = prog.run(x=xv, y=yv)
        # NumPy reference: mean over the *runtime* batch size
        h = np.tanh(xv @ w1 + b1)
        logits = h @ w2
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        ref_loss = -np.mean(np.log(p[np.arange(n), yv]))
        dlogits = (p - np.eye(4)[yv]) / n
        dh = dlogits @ w2.T * (1 - h ** 2)
        np.testing.assert_allclose(out[0], ref_loss, rtol=1e-12)
        np.testing.assert_allclose(out[1], xv.T @ dh, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(out[2], dh.sum(axis=0), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(out[3], h.T @ dlogits, rtol=1e-10, atol=1e-14)


def test_missing_input_is_named():
    g = Graph(dtype="float64")
    x = g.input("x", (None, 2))
    prog = compile(g, ops.sum(x))
    with pytest.raises(KeyError, match="x"):
        prog.run()


def test_debug_mode_names_the_first_non_finite_node():
    g = Graph(dtype="float64")
    x = g.input("x", (2,))
    with g.scope("layer"):
        bad = ops.log(x)
    prog = compile(g, ops.exp(bad) * 2.0, debug=True)
    np.testing.assert_allclose(prog.run(x=[1.0, 2.0]), [2.0, 4.0])
    with np.errstate(divide="ignore", invalid="ignore"), pytest.raises(NonFiniteError, match="layer/log"):
        prog.run(x=[-1.0, 2.0])


def test_unknown_batch_gradients_match_finite_differences():
    """(None, 1) x (None, 3) broadcasting, keepdims reductions over the batch, gather, concat, slicing."""
    from gengraph.engine import central_differences

    g = Graph(dtype="float64")
    x, s = g.input("x", (None, 3)), g.input("s", (None, 1))
    idx = g.input("i", (None,), dtype="int64")
    b = g.param("b", np.ones((1, 3)))
    e = g.param("e", np.arange(12.0).reshape(4, 3) / 10)
    y = ops.concat([x * s + b, ops.take(e, idx, axis=0)], axis=1)
    loss = (ops.mean(ops.logsumexp(y, axis=-1, keepdims=True) * s)
            + ops.sum(y[:, 0] * ops.mean(x, axis=0, keepdims=True)[:, 1]))
    prog = compile(g, [loss] + grad(loss, [x, s, b, e]))
    for n in (2, 5):
        rng = np.random.default_rng(n)
        feed = dict(x=rng.normal(size=(n, 3)), s=rng.normal(size=(n, 1)), i=rng.integers(0, 4, n))
        out = prog.run(**feed)
        assert [o.shape for o in out] == [(), (n, 3), (n, 1), (1, 3), (4, 3)]
        for k, analytic in zip(("x", "s"), out[1:3]):
            numeric = central_differences(lambda: prog.run(**feed)[0], feed[k])
            np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
        for param, analytic in zip((b, e), out[3:]):
            numeric = central_differences(lambda: prog.run(**feed)[0], g.values[param.id])
            np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("bias_shape", [(3, 1, 1), (1, 3, 1, 1), (1, 3, 1, 5)])
def test_inner_broadcasts_are_materialized_with_the_same_values(bias_shape):
    """A conv bias or norm scale broadcast along inner axes ((3, 1, 1) against (N, 3, 4, 5)) is
    materialized over them first (NumPy then broadcasts it along the batch only): the same
    numbers to the bit, first and second order; a batch-shaped operand is left alone."""
    from gengraph.engine.passes import EVAL_PASSES

    g = Graph(dtype="float64", seed=0)
    rng = np.random.default_rng(3)
    x = g.input("x", (None, 3, 4, 5))
    b = g.param("b", rng.normal(size=bias_shape))
    s = g.param("s", rng.normal(size=bias_shape))
    t = g.input("t", (None, 3, 1, 1))  # per example: not materialized (the batch axis is dynamic)
    y = ops.tanh((x + b) * s / (s * s + 1.0) - t)
    loss = ops.sum(y * y) + ops.sum((x * g.constant(np.arange(3.0).reshape(3, 1, 1))) ** 2)
    gb, gs = grad(loss, [b, s])
    (ggb,) = grad(ops.sum(gb * gs), [b])
    fast, plain = compile(g, [loss, gb, gs, ggb]), compile(g, [loss, gb, gs, ggb], passes=EVAL_PASSES)
    spread = [n for n in fast.nodes if n.op == "unreduce_to" and n.inputs[0].op == "param"]
    assert {n.inputs[0].name for n in spread} == {"b", "s"} and all(n.shape[-2:] == (4, 5) for n in spread)
    assert not [n for n in fast.nodes if n.op == "unreduce_to" and n.inputs[0].name == "t"]
    feed = dict(x=rng.normal(size=(6, 3, 4, 5)), t=rng.normal(size=(6, 3, 1, 1)))
    for u, v in zip(fast.run(**feed), plain.run(**feed)):
        np.testing.assert_array_equal(u, v)


def test_inner_broadcasts_materialize_each_operand_once():
    g = Graph(dtype="float64")
    x = g.input("x", (None, 2, 3, 3))
    b = g.param("b", np.ones((2, 1, 1)))
    prog = compile(g, [ops.sum((x + b) * (x - b) / b)])
    assert sum(n.op == "unreduce_to" and n.inputs[0].name == "b" for n in prog.nodes) == 1


@settings(max_examples=40, deadline=None)
@given(shape=st.sampled_from([(), (1,), (7,), (3, 4), (2, 3, 5)]), dtype=st.sampled_from(["float16", "float32", "float64"]),
       keepdims=st.booleans(), partial=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_a_mean_written_as_source_gives_the_kernels_bits(shape, dtype, keepdims, partial, seed):
    """mean over every axis runs as the program's own line (x.sum(axis) / x.size), over some axes
    as its kernel; either way the bits of _mean_forward, the kernel, on NumPy."""
    from gengraph.engine.ops.reduce import _mean_forward

    axis = tuple(range(len(shape)))[: len(shape) - 1 if partial and shape else None]
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype) * 100
    g = Graph()
    xi = g.input("x", shape, dtype)
    prog = compile(g, {"m": ops.mean(xi, axis=axis, keepdims=keepdims)})
    got = prog.run(x=x)["m"]
    want = _mean_forward(np, x, axis, keepdims)
    inlined = len(axis) == len(shape) and not (axis and all(shape[a] == 1 for a in axis))  # size 1: a view
    assert (".size" in prog.source) is inlined
    assert np.asarray(got).dtype == np.asarray(want).dtype and np.shape(got) == np.shape(want)
    np.testing.assert_array_equal(np.asarray(got).view(f"u{np.dtype(dtype).itemsize}"),
                                  np.asarray(want).view(f"u{np.dtype(dtype).itemsize}"))


def test_an_op_source_written_without_the_ranks_keyword_still_runs(monkeypatch):
    # OpDef.source gained ndims=: a source taking only its inputs and attrs failed with a TypeError
    from gengraph.engine.ops import OPS

    monkeypatch.setattr(OPS["transpose"], "source", lambda x, axes: f"{x}.transpose({tuple(axes)!r})")
    g = Graph()
    x = g.input("x", (2, 3))
    prog = compile(g, {"t": ops.transpose(x)})
    assert ".transpose((1, 0))" in prog.source
    np.testing.assert_array_equal(prog.run(x=np.arange(6.0).reshape(2, 3))["t"], np.arange(6.0).reshape(2, 3).T)
