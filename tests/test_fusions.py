"""Declared fusions (ops.registry.FUSIONS): one call for a group of pure nodes, where safe.

The classifier head (softmax, softmax cross-entropy, correct over the same logits and labels)
is one `softmax_head` call with the same bits as its three kernels (float32 with Numba: the same row
loops, numba_math.py; elsewhere the NumPy forms); the compiler's safety rules
are tested with fusions declared here."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gengraph.engine import Graph, compile, grad, ops
from gengraph.engine.errors import LabelError
from gengraph.engine.ops import registry
from gengraph.engine.ops.nn import (_correct_forward, _softmax_ce_backward_forward, _softmax_ce_forward, _softmax_forward,
                                    softmax_head)
from gengraph.engine.optimizers import make_optimizer


def _separate(z, labels):
    p = _softmax_forward(np, z, (1,))
    return p, _softmax_ce_forward(np, z, p.copy(), labels), _correct_forward(np, z, labels)


@st.composite
def _logits(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n, c = draw(st.integers(1, 40)), draw(st.integers(1, 12))
    # ties (small integers), ordinary values, and logits 1e4 apart (p[label] underflows to 0:
    # the loss's other formula)
    scale = draw(st.sampled_from([0, 1, 1e4]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    z = rng.integers(-2, 3, size=(n, c)).astype(dtype) if scale == 0 else (rng.normal(size=(n, c)) * scale).astype(dtype)
    return z, rng.integers(0, c, size=n)


@settings(max_examples=150, deadline=None)
@given(_logits(), st.sampled_from([(True, True), (True, False), (False, True)]))
def test_softmax_head_gives_the_three_kernels_bits(case, which):
    z, labels = case
    loss, correct = which
    want = _separate(z, labels)
    want = [want[0]] + ([want[1]] if loss else []) + ([want[2]] if correct else [])
    got = softmax_head(np, z.copy(), labels, loss=loss, correct=correct)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@settings(max_examples=40, deadline=None)
@given(_logits())
def test_softmax_head_of_a_non_contiguous_array_gives_the_kernels_bits(case):
    z, labels = case
    zf = np.asfortranarray(z)  # the head picks from a C-order copy; its softmax reads zf as the kernel does
    for a, b in zip(softmax_head(np, zf, labels), _separate(zf, labels)):
        assert a.tobytes() == b.tobytes()  # the row sums of an F-ordered array round otherwise (1 ulp)
    np.testing.assert_array_equal(zf, z)  # the caller's array untouched


def _outcome(fn):
    try:
        return [np.asarray(a) for a in fn()]
    except Exception as exc:  # noqa: BLE001 - compared below: the same error as the kernels'
        return (type(exc), str(exc))


@pytest.mark.parametrize("count", [1, 3, 7, 9])
@pytest.mark.parametrize("which", [(True, True), (True, False), (False, True)])
def test_softmax_head_with_labels_not_one_per_row_is_the_kernels(count, which):
    """Labels that are not one per row (a single label broadcast to every row, too few, too many):
    what the kernels give or raise (the flat picks summed over the wrong rows or lost the error)."""
    rng = np.random.default_rng(count)
    z, labels = rng.standard_normal((7, 5)), rng.integers(0, 5, size=count)
    loss, correct = which
    got = _outcome(lambda: softmax_head(np, z.copy(), labels, loss=loss, correct=correct))
    p = _softmax_forward(np, z, (1,))
    want = _outcome(lambda: [p] + ([_softmax_ce_forward(np, z, p.copy(), labels)] if loss else [])
                    + ([_correct_forward(np, z, labels)] if correct else []))
    if isinstance(want, tuple):
        assert got == want
    else:
        assert len(got) == len(want) and all(a.tobytes() == b.tobytes() for a, b in zip(got, want))


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint32", "int64", "uint64"])
def test_labels_of_every_integer_type_give_the_int64_results(dtype):
    # uint64 labels: int64 offsets + uint64 labels are float64 in NumPy, no index (IndexError)
    rng = np.random.default_rng(0)
    z, labels = rng.standard_normal((6, 4)), rng.integers(0, 4, size=6)
    for a, b in zip(softmax_head(np, z.copy(), labels.astype(dtype)), softmax_head(np, z.copy(), labels)):
        np.testing.assert_array_equal(a, b)
    p = _softmax_forward(np, z, (1,))
    np.testing.assert_array_equal(_softmax_ce_backward_forward(np, 1.0, p.copy(), labels.astype(dtype), broadcast="mean"),
                                  _softmax_ce_backward_forward(np, 1.0, p.copy(), labels, broadcast="mean"))


@settings(max_examples=80, deadline=None)
@given(_logits(), st.sampled_from([None, "mean", "sum"]), st.sampled_from([(), (3,)]), st.booleans())
def test_softmax_ce_backward_is_g_times_p_minus_one_hot_bit_for_bit(case, broadcast, lead, into_p):
    """The backward kernel (1-D picks at each row's label): per row, g * p, then g less at the
    label, as a loop over the rows computes it; rows of any leading shape, into p or a new array."""
    z, labels = case
    dt = z.dtype.type
    p = _softmax_forward(np, z, (1,))
    if lead:  # (3, n, c) probabilities, (3, n) labels
        p, labels = np.stack([p, p[::-1], p]), np.stack([labels, labels[::-1], labels])
    rng = np.random.default_rng(len(labels))
    g = dt(1.5) if broadcast else rng.normal(size=labels.shape).astype(z.dtype)
    want = p.copy().reshape(-1, p.shape[-1])
    gs = (np.full(labels.size, float(g) / (labels.size if broadcast == "mean" else 1)) if broadcast
          else g.reshape(-1))
    for i, label in enumerate(labels.reshape(-1)):
        want[i] = want[i] * (dt(gs[i]) if broadcast else gs[i])
        want[i, label] = want[i, label] - (dt(gs[i]) if broadcast else gs[i])
    buf = p.copy()
    got = _softmax_ce_backward_forward(np, g, buf, labels, broadcast=broadcast, out=buf if into_p else None)
    assert (got is buf) is into_p and got.shape == p.shape
    np.testing.assert_array_equal(got.reshape(-1, p.shape[-1]), want)
    for bad in (-1, p.shape[-1]):
        wrong = labels.copy()
        wrong.reshape(-1)[-1] = bad
        with pytest.raises(LabelError, match=f"found {bad}"):
            _softmax_ce_backward_forward(np, g, p.copy(), wrong, broadcast=broadcast)


@pytest.mark.parametrize("which", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_softmax_head_called_alone_raises_its_first_kernels_error(which, dtype):
    """Without `first`: the loss's error where it computes the loss, else correct's (float16 takes
    the kernels' own path)."""
    loss, correct = which
    z = np.zeros((3, 4), dtype)
    for bad in (-1, 4):
        labels = np.array([0, bad, 1])
        with pytest.raises(LabelError) as fused:
            softmax_head(np, z, labels, loss=loss, correct=correct)
        with pytest.raises(LabelError) as plain:
            if loss:
                _softmax_ce_forward(np, z, _softmax_forward(np, z, (1,)), labels)
            _correct_forward(np, z, labels)
        assert str(fused.value) == str(plain.value)


def test_softmax_head_other_paths_call_the_kernels():
    """Empty batches and float16 take the kernels' own paths (same values as separately)."""
    for z, labels in ((np.zeros((0, 4)), np.zeros(0, np.int64)),
                      (np.array([[1.0, 2.0, 0.5]], np.float16), np.array([1]))):
        for a, b in zip(softmax_head(np, z, labels), _separate(z, labels)):
            np.testing.assert_array_equal(a, b)


def _classifier(dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    g = Graph(dtype)
    x = g.input("x", (None, 5))
    y = g.input("y", (None,), dtype="int64")
    W = g.param("W", rng.normal(size=(5, 4)))
    b = g.param("b", np.zeros(4))
    z = x @ W + b
    loss = ops.mean(ops.softmax_cross_entropy(z, y))
    acc = ops.mean(ops.correct(z, y))
    grads = grad(loss, [W, b])
    ups = make_optimizer("adam", lr=0.05).updates(g, [W, b], grads)
    return g, [W, b], loss, acc, ups


def _feeds(step, n=16):
    rng = np.random.default_rng(100 + step)
    return {"x": rng.normal(size=(n, 5)), "y": rng.integers(0, 4, size=n)}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_training_step_with_the_fused_head_has_the_unfused_bits(dtype):
    runs = []
    for fuse in (True, False):
        g, params, loss, acc, ups = _classifier(dtype)
        prog = compile(g, {"loss": loss, "acc": acc}, updates=ups, fuse=fuse)
        assert ("softmax_head" in prog.source or "softmax_head" in repr(prog._fn.__globals__)) is fuse
        outs = [prog.run(_feeds(step)) for step in range(4)]
        runs.append((outs, [g.value(p).copy() for p in params], prog.n_kernels))
    (fused_outs, fused_params, fused_n), (plain_outs, plain_params, plain_n) = runs
    assert fused_n == plain_n - 2  # softmax, its loss and the accuracy: one call instead of three
    for a, b in zip(fused_outs, plain_outs):
        assert a["loss"] == b["loss"] and a["acc"] == b["acc"]
    for a, b in zip(fused_params, plain_params):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [-1, 4])
def test_label_errors_are_those_of_the_kernels(bad):
    messages = []
    for fuse in (True, False):
        g, params, loss, acc, ups = _classifier()
        prog = compile(g, {"loss": loss, "acc": acc}, updates=ups, fuse=fuse)
        feeds = _feeds(0)
        feeds["y"][3] = bad
        with pytest.raises(LabelError) as err:
            prog.run(feeds)
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "softmax_cross_entropy" in messages[0]


def _label_error(make_outputs, feeds, **kw):
    g = Graph("float64")
    prog = compile(g, make_outputs(g), **kw)
    with pytest.raises(LabelError) as err:
        prog.run(feeds)
    return str(err.value)


@pytest.mark.parametrize("kw", [{}, {"passes": ()}])
def test_a_bad_label_fails_where_the_plain_schedule_fails(kw):
    """The fused call runs at the place of whichever label-checking member the plain schedule
    runs first, and names its op: an accuracy listed before the loss fails as `correct`; two
    heads fail at the one whose loss runs first; with passes=() (no CSE) a correct goes with the
    loss's softmax, not with a second softmax(z) of the same logits."""
    def acc_first(g):
        z, y = g.input("z", (None, 4)), g.input("y", (None,), dtype="int64")
        return {"acc": ops.mean(ops.correct(z, y)), "loss": ops.mean(ops.softmax_cross_entropy(z, y))}

    def explicit_softmax(g):
        z, y = g.input("z", (None, 4)), g.input("y", (None,), dtype="int64")
        return {"p": ops.softmax(z), "loss": ops.mean(ops.softmax_cross_entropy(z, y)), "acc": ops.mean(ops.correct(z, y))}

    def two_heads(g):
        za, ya = g.input("za", (None, 4)), g.input("ya", (None,), dtype="int64")
        zb, yb = g.input("zb", (None, 3)), g.input("yb", (None,), dtype="int64")
        return {"p_a": ops.softmax(za), "p_b": ops.softmax(zb), "loss_b": ops.mean(ops.softmax_cross_entropy(zb, yb)),
                "loss_a": ops.mean(ops.softmax_cross_entropy(za, ya))}

    z = np.zeros((2, 4))
    cases = [(acc_first, {"z": z, "y": np.array([0, -1])}, "correct"),
             (acc_first, {"z": z, "y": np.array([0, 7])}, "correct"),
             (explicit_softmax, {"z": z, "y": np.array([0, 4])}, "softmax_cross_entropy"),
             (two_heads, {"za": z, "ya": np.array([0, 9]), "zb": np.zeros((2, 3)), "yb": np.array([0, 5])}, "0..2")]
    for make, feeds, expected in cases:
        fused = _label_error(make, feeds, **kw)
        assert fused == _label_error(make, feeds, fuse=False, **kw) == _label_error(make, feeds, debug=True, **kw)
        assert expected in fused


def test_rows_picked_from_no_labels_are_empty_as_unfused():
    """Logits fed one row and labels none (both of unknown batch size): NumPy broadcasts the picks
    to nothing; the fused head returns the kernels' empty rows (it crashed on an empty argmin)."""
    outs = []
    for fuse in (True, False):
        g = Graph("float64")
        z, y = g.input("z", (None, 3)), g.input("y", (None,), dtype="int64")
        prog = compile(g, {"rows": ops.softmax_cross_entropy(z, y), "acc": ops.correct(z, y), "p": ops.softmax(z)},
                       fuse=fuse)
        outs.append(prog.run(z=np.array([[0.0, 1.0, 2.0]]), y=np.zeros(0, np.int64)))
    for key in ("rows", "acc", "p"):
        assert outs[0][key].shape == outs[1][key].shape
        np.testing.assert_array_equal(outs[0][key], outs[1][key])


def test_a_group_is_not_fused_when_another_node_reads_a_member_before_the_anchor(monkeypatch):
    """The call runs at the anchor (here the second member): a node that reads the first member's
    value before that place would find nothing, so the group keeps its kernels."""
    def groups(nodes, xp):
        exps = [n for n in nodes if n.op == "exp"]
        adds = [n for n in nodes if n.op == "add"]
        return [registry.Fused([e, s], _pair, [e.inputs[0], s.inputs[1]], {}, anchor=s)
                for e in exps for s in adds if s.inputs[0] is e.inputs[0]]

    _declared(monkeypatch, groups)
    g = Graph("float64")
    a, c = g.input("a", (3,)), g.input("c", (3,))
    e = ops.exp(a)
    r = ops.sin(e)  # reads exp(a) before a + c
    s = a + c
    x, y = np.array([0.1, 0.2, -0.3]), np.array([1.0, 2.0, 3.0])
    prog = compile(g, {"r": r, "s": s, "e": e}, passes=())
    assert "_pair" not in repr(prog._fn.__globals__)
    np.testing.assert_array_equal(prog.run(a=x, c=y)["r"], np.sin(np.exp(x)))
    prog = compile(g, {"s": s, "e": e}, passes=())  # nobody reads exp(a) before a + c: one call there
    assert "_pair" in repr(prog._fn.__globals__)
    out = prog.run(a=x, c=y)
    np.testing.assert_array_equal(out["e"], np.exp(x))
    np.testing.assert_array_equal(out["s"], x + y)


def test_accuracy_alone_or_softmax_alone_are_not_fused():
    g = Graph("float64")
    z = g.input("z", (None, 3))
    y = g.input("y", (None,), dtype="int64")
    for outputs in ({"acc": ops.correct(z, y)}, {"p": ops.softmax(z)}):
        prog = compile(g, outputs)
        assert "softmax_head" not in repr(prog._fn.__globals__)


def _declared(monkeypatch, match):
    monkeypatch.setitem(registry.FUSIONS, "test_pair", match)


def _pair(xp, a, b):
    """A fused kernel for the test fusion below: (exp(a), a + b)."""
    return np.exp(a), a + b


def _pair_groups(nodes, xp):
    exps = [n for n in nodes if n.op == "exp"]
    adds = [n for n in nodes if n.op == "add"]
    return [registry.Fused([e, s], _pair, [e.inputs[0], s.inputs[1]], {})
            for e in exps for s in adds if s.inputs[0] is e.inputs[0]]


def test_a_group_whose_input_is_computed_after_its_first_member_is_not_fused(monkeypatch):
    """exp(a) is scheduled before b = sin(a) * 2, which a + b reads: one call at exp's place could
    not read b, so the group keeps its two kernels (and the values are right)."""
    _declared(monkeypatch, _pair_groups)
    g = Graph("float64")
    a = g.input("a", (3,))
    e = ops.exp(a)
    b = ops.sin(e) * 2.0  # depends on exp(a): scheduled after it
    s = a + b
    prog = compile(g, {"e": e, "s": s}, passes=())
    assert "_pair" not in repr(prog._fn.__globals__)
    x = np.array([0.1, 0.2, -0.3])
    out = prog.run(a=x)
    np.testing.assert_allclose(out["s"], x + 2.0 * np.sin(np.exp(x)))


def test_a_group_whose_inputs_exist_is_fused_and_one_reading_an_updated_leaf_is_not(monkeypatch):
    _declared(monkeypatch, _pair_groups)
    g = Graph("float64")
    a = g.input("a", (3,))
    c = g.input("c", (3,))
    prog = compile(g, {"e": ops.exp(a), "s": a + c}, passes=())
    assert "_pair" in repr(prog._fn.__globals__)
    x, y = np.array([0.1, 0.2, -0.3]), np.array([1.0, 2.0, 3.0])
    out = prog.run(a=x, c=y)
    np.testing.assert_array_equal(out["e"], np.exp(x))
    np.testing.assert_array_equal(out["s"], x + y)
    # a parameter that the program updates: its readers keep their own kernels
    g = Graph("float64")
    w = g.param("w", np.array([0.5, 1.0, 1.5]))
    c = g.input("c", (3,))
    e, s = ops.exp(w), w + c
    prog = compile(g, {"e": e, "s": s}, updates={w: w * 0.5}, passes=())
    assert "_pair" not in repr(prog._fn.__globals__)
    out = prog.run(c=y)
    np.testing.assert_array_equal(out["s"], np.array([0.5, 1.0, 1.5]) + y)
    np.testing.assert_array_equal(g.value(w), [0.25, 0.5, 0.75])


def test_debug_programs_run_every_kernel_on_its_own():
    g, params, loss, acc, ups = _classifier()
    prog = compile(g, {"loss": loss, "acc": acc}, updates=ups, debug=True)
    assert "softmax_head" not in repr(prog._fn.__globals__)


@settings(max_examples=200, deadline=None)
@given(dtype=st.sampled_from(["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", ">i8", ">i2"]),
       classes=st.integers(1, 400), n=st.integers(0, 20), seed=st.integers(0, 2**32 - 1), bad=st.sampled_from([0, -1, 1]))
def test_the_label_check_of_the_flat_picks_is_the_2d_picks(dtype, classes, n, seed, bad):
    """_label_offsets (one argmax of the labels' bits read unsigned where that covers both ends):
    the flat index of each label, or the LabelError a 2-D pick gives, a negative label's first."""
    from gengraph.engine.ops.nn import _label_offsets

    info = np.iinfo(np.dtype(dtype))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, min(classes, info.max + 1), size=n)
    if n and bad and (bad > 0 or info.min < 0):
        labels[rng.integers(0, n)] = -1 - rng.integers(0, 3) if bad < 0 else min(classes + rng.integers(0, 3), info.max)
    labels = labels.astype(dtype)
    wide = labels.astype(np.int64)
    if n and (wide.min() < 0 or wide.max() >= classes):
        with pytest.raises(LabelError, match=f"found {wide.min() if wide.min() < 0 else wide.max()}$"):
            _label_offsets(labels, classes, "softmax_cross_entropy")
    else:
        np.testing.assert_array_equal(_label_offsets(labels, classes, "op"), np.arange(n) * classes + wide)
