"""Winograd F(2x2, 3x3) kernels (engine/ops/winograd.py): the transform matrices' identity,
values against naive loops (float64, 1e-10 relative) and the im2col kernels (float32, 1e-4),
odd sizes, every padding, crops, chunking, the dispatch rule and GENGRAPH_CONV_ALGO, and
gradients through the engine with Winograd forced (central differences, first and second order)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gengraph.engine import Graph, compile, grad, ops
from gengraph.engine.ops import conv, im2col, winograd
from gradcheck_util import fd_check, forward, hvp_check
from test_ops_conv import naive_conv2d, naive_conv_transpose2d

CASES = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def naive_backward_weight(gy, x, padding):
    """dw[o, c, i, j] = sum over n, y, z of gy[n, o, y, z] * x_padded[n, c, y + i, z + j]."""
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    n_, o_, ho, wo = gy.shape
    out = np.zeros((o_, x.shape[1], 3, 3))
    for n in range(n_):
        for o in range(o_):
            for y in range(ho):
                for z in range(wo):
                    out[o] += gy[n, o, y, z] * xp[n, :, y:y + 3, z:z + 3]
    return out


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@st.composite
def shapes(draw):
    """batch, channels, an image of 1..9 pixels a side (odd and even) and a padding 0..3 that
    leaves at least one output pixel."""
    p = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    hw = tuple(draw(st.integers(max(1, 3 - 2 * p[a]), 9)) for a in range(2))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 3)), o=draw(st.integers(1, 3)), hw=hw, p=p)


def test_the_1d_transforms_compute_a_two_output_correlation():
    rng = np.random.default_rng(0)
    for _ in range(20):
        d, g = rng.normal(size=4), rng.normal(size=3)
        want = np.array([d[0:3] @ g, d[1:4] @ g])
        np.testing.assert_allclose(winograd.AT @ ((winograd.G @ g) * (winograd.BT @ d)), want, rtol=1e-12)
    # the 2-D form Y = A^T [(G g G^T) * (B^T d B)] A is the 2x2 correlation of a 4x4 tile
    d, g = rng.normal(size=(4, 4)), rng.normal(size=(3, 3))
    y = winograd.AT @ ((winograd.G @ g @ winograd.G.T) * (winograd.BT @ d @ winograd.BT.T)) @ winograd.AT.T
    np.testing.assert_allclose(y, [[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(2)] for i in range(2)], rtol=1e-12)


def test_the_weight_gradient_identity_is_the_transposed_forward():
    # d/dg of sum(gy * Y) = G^T [(A gy A^T) * (B^T d B)] G, with the A', G' sign flip of the kernel
    rng = np.random.default_rng(1)
    d, gy = rng.normal(size=(4, 4)), rng.normal(size=(2, 2))
    want = np.array([[np.sum(gy * d[i:i + 2, j:j + 2]) for j in range(3)] for i in range(3)])
    s = np.diag([1.0, 1, 1, -1])
    a_, g_ = s @ winograd.AT.T, s @ winograd.G  # A' = diag(s) A, G' = diag(s) G
    got = g_.T @ ((a_ @ gy @ a_.T) * (winograd.BT @ d @ winograd.BT.T)) @ g_
    np.testing.assert_allclose(got, want, rtol=1e-12)


@CASES
@given(cfg=shapes(), seed=st.integers(0, 2**16))
def test_conv2d_matches_naive_loops_and_im2col(cfg, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=(cfg["n"], cfg["c"]) + cfg["hw"]), rng.normal(size=(cfg["o"], cfg["c"], 3, 3))
    got = winograd.conv2d_3x3(np, x, w, cfg["p"])
    assert rel(got, naive_conv2d(x, w, padding=cfg["p"])) < 1e-10
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    got32 = winograd.conv2d_3x3(np, x32, w32, cfg["p"])
    assert got32.dtype == np.float32
    # im2col (below the dispatch threshold: these sizes are tiny)
    assert rel(got32, conv._conv2d_forward(np, x32, w32, (1, 1), cfg["p"], (1, 1), 1)) < 1e-4


@CASES
@given(cfg=shapes(), seed=st.integers(0, 2**16))
def test_conv_transpose2d_matches_naive_loops(cfg, seed):
    rng = np.random.default_rng(seed)
    # conv_transpose2d (stride 1) maps H to H + 2 - 2p: draw its input as a conv's output
    hw = tuple(cfg["hw"][a] + 2 * cfg["p"][a] - 2 for a in range(2))
    x, w = rng.normal(size=(cfg["n"], cfg["c"]) + hw), rng.normal(size=(cfg["c"], cfg["o"], 3, 3))
    got = winograd.conv_transpose2d_3x3(np, x, w, cfg["p"])
    assert got.shape == (cfg["n"], cfg["o"]) + cfg["hw"]
    assert rel(got, naive_conv_transpose2d(x, w, padding=cfg["p"])) < 1e-10
    got32 = winograd.conv_transpose2d_3x3(np, x.astype(np.float32), w.astype(np.float32), cfg["p"])
    assert got32.dtype == np.float32 and rel(got32, got) < 1e-4


@CASES
@given(cfg=shapes(), crop=st.tuples(st.integers(0, 2), st.integers(0, 2)), seed=st.integers(0, 2**16))
def test_conv2d_backward_weight_matches_naive_loops(cfg, crop, seed):
    check_backward_weight(cfg, crop, seed, tol32=1e-4)


def check_backward_weight(cfg, crop, seed, tol32):
    """The Winograd weight gradient against the naive loops, float64 and float32 (within tol32)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(cfg["n"], cfg["c"]) + cfg["hw"])
    full = tuple(cfg["hw"][a] + 2 * cfg["p"][a] - 2 for a in range(2))
    # a gradient shorter than the conv's output: x longer than the convolution reads
    # (conv_transpose2d's weight gradient with output_padding) -- the op allows it
    ho, wo = (max(1, full[a] - crop[a]) for a in range(2))
    gy = rng.normal(size=(cfg["n"], cfg["o"], ho, wo))
    got = winograd.conv2d_backward_weight_3x3(np, gy, x, cfg["p"])
    want = naive_backward_weight(np.pad(gy, ((0, 0), (0, 0), (0, full[0] - ho), (0, full[1] - wo))), x, cfg["p"])
    assert got.shape == want.shape and rel(got, want) < 1e-10
    got32 = winograd.conv2d_backward_weight_3x3(np, gy.astype(np.float32), x.astype(np.float32), cfg["p"])
    assert got32.dtype == np.float32 and rel(got32, want) < tol32


@pytest.mark.parametrize("chunk_bytes", [1, 30000])
def test_chunks_of_images_give_the_whole_batch_result(monkeypatch, chunk_bytes):
    # an image's work below is 16 * (3 + 4) channels * 4 x 4 tiles * 8 bytes = 14336 bytes;
    # 1 byte: one image per chunk; 30000 bytes: chunks of 2 images and a ragged last one
    monkeypatch.setattr(im2col, "CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(2)
    x, w, gy = rng.normal(size=(5, 3, 7, 6)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=(5, 4, 7, 6))
    assert len(im2col.image_chunks(np, 5, 14336)) == (5 if chunk_bytes == 1 else 3)
    assert rel(winograd.conv2d_3x3(np, x, w, (1, 1)), naive_conv2d(x, w, padding=(1, 1))) < 1e-10
    assert rel(winograd.conv2d_backward_weight_3x3(np, gy, x, (1, 1)), naive_backward_weight(gy, x, (1, 1))) < 1e-10


def test_any_input_strides():
    rng = np.random.default_rng(3)
    x, w = rng.normal(size=(6, 2, 5, 3)), rng.normal(size=(4, 3, 3, 3))
    xt = x.transpose(1, 3, 0, 2)[:, :, ::-1]  # (2, 3, 6, 5): transposed, negative strides
    want = naive_conv2d(np.ascontiguousarray(xt), w, padding=(1, 0))
    assert rel(winograd.conv2d_3x3(np, xt, w, (1, 0)), want) < 1e-10


def test_dispatch_rule(monkeypatch):
    monkeypatch.setattr(conv, "CONV_ALGO", "auto")  # as without GENGRAPH_CONV_ALGO
    big, small = 64 * 16 * 16 * 10 * 10, 2 * 4 * 4 * 6 * 6
    assert conv.WINOGRAD_MIN_WORK == 2 ** 20 and conv.WINOGRAD_MIN_PIXELS == 100
    f32, c, px = np.float32, conv.WINOGRAD_MIN_CHANNELS, 100
    assert c == 16
    assert conv.use_winograd((3, 3), (1, 1), (1, 1), 1, f32, big, c, px)
    assert conv.use_winograd((3, 3), (1, 1), (1, 1), 1, np.float64, big, c, px)
    assert not conv.use_winograd((3, 3), (1, 1), (1, 1), 1, f32, small, c, px)
    assert not conv.use_winograd((3, 3), (1, 1), (1, 1), 1, f32, big, c - 1, px)  # few input channels: im2col
    assert not conv.use_winograd((3, 3), (1, 1), (1, 1), 1, f32, big, c, px - 1)  # small images: channel-last
    assert not conv.use_winograd((3, 3), (2, 2), (1, 1), 1, f32, big, c, px)  # stride 2
    assert not conv.use_winograd((3, 3), (1, 1), (2, 2), 1, f32, big, c, px)  # dilation 2
    assert not conv.use_winograd((3, 3), (1, 1), (1, 1), 2, f32, big, c, px)  # groups
    assert not conv.use_winograd((5, 5), (1, 1), (1, 1), 1, f32, big, c, px)
    assert not conv.use_winograd((3, 3), (1, 1), (1, 1), 1, np.float16, big, c, px)
    # the channel-last im2col: when its rows of kW * C/G values are at least W_out long
    assert conv.use_rows((3, 3), (1, 1), 16, 48) and not conv.use_rows((3, 3), (1, 1), 16, 49)
    assert conv.use_rows((3, 3), (2, 2), 48, 48) and not conv.use_rows((3, 3), (2, 2), 16, 48)  # dilated: C/G
    monkeypatch.setattr(conv, "CONV_ALGO", "winograd")  # forced: whenever it applies
    assert conv.use_winograd((3, 3), (1, 1), (1, 1), 1, f32, small, 1, 1)
    assert not conv.use_rows((3, 3), (1, 1), 64, 4)
    monkeypatch.setattr(conv, "CONV_ALGO", "im2col")
    assert not conv.use_winograd((3, 3), (1, 1), (1, 1), 1, f32, big, c, px) and not conv.use_rows((3, 3), (1, 1), 64, 4)


def spy_on_kernels(monkeypatch, names, calls=None):
    """Record, by name, every call conv.py makes to these kernel functions (they still run)."""
    calls = [] if calls is None else calls
    for name in names:
        real = getattr(conv, name)
        monkeypatch.setattr(conv, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    return calls


def _spy(monkeypatch):
    """Record which Winograd kernels conv.py calls."""
    return spy_on_kernels(monkeypatch, ("conv2d_3x3", "conv_transpose2d_3x3", "conv2d_backward_weight_3x3"))


def _step(shape_x, shape_w, dtype="float32", **kw):
    rng = np.random.default_rng(4)
    g = Graph(dtype=dtype)
    x, w = g.input("x", shape_x), g.input("w", shape_w)
    y = ops.conv2d(x, w, **kw)
    gx, gw = grad(ops.sum(y * y), [x, w])
    return compile(g, [y, gx, gw]).run(x=rng.normal(size=shape_x), w=rng.normal(size=shape_w))


WINOGRAD = ["conv2d_3x3", "conv_transpose2d_3x3", "conv2d_backward_weight_3x3"]
ROWS = ["conv2d_rows", "conv2d_rows", "conv2d_backward_weight_rows"]  # the input gradient: conv2d, kernel flipped


@pytest.mark.parametrize("algo,shape_x,kw,expect", [
    ("auto", (64, 16, 10, 10), dict(padding=1), WINOGRAD),  # 100 output pixels
    ("auto", (64, 16, 8, 8), dict(padding=1), ROWS),  # the digits U-Net's 16 -> 16 at 8x8: channel-last
    ("auto", (2, 1, 6, 6), dict(padding=1), []),  # one channel (rows of 3 values, W_out 6): im2col
    ("auto", (2, 4, 6, 6), dict(padding=1), ROWS),  # rows of 12 values
    ("auto", (64, 16, 8, 8), dict(padding=1, stride=2), ROWS[:1] + ROWS[2:] + ["_col2im_transpose"]),
    ("im2col", (64, 16, 8, 8), dict(padding=1), []),
    ("im2col", (64, 16, 10, 10), dict(padding=1), []),
    ("winograd", (2, 4, 6, 6), dict(padding=1), WINOGRAD),
    ("winograd", (2, 4, 6, 6), dict(padding=1, groups=2), []),  # does not apply
])
def test_the_ops_run_the_expected_kernels(monkeypatch, algo, shape_x, kw, expect):
    monkeypatch.setattr(conv, "CONV_ALGO", algo)
    calls = spy_on_kernels(monkeypatch, ("conv2d_rows", "conv2d_backward_weight_rows", "_col2im_transpose"),
                           _spy(monkeypatch))
    c = shape_x[1]
    outs = _step(shape_x, (c, c // kw.get("groups", 1), 3, 3), **kw)
    assert sorted(calls) == sorted(expect)
    monkeypatch.setattr(conv, "CONV_ALGO", "im2col")  # same program on im2col: same numbers
    for a, b in zip(outs, _step(shape_x, (c, c // kw.get("groups", 1), 3, 3), **kw)):
        assert rel(a, b) < 1e-4


@pytest.mark.parametrize("cin,cout,want", [
    # image in: the forward and weight gradient copy 1 channel (im2col); the input gradient
    # (32 -> 1 channel) adds into 1 channel (col2im)
    (1, 32, ["_col2im_transpose"]),
    # 1 channel out: the forward adds into it (col2im), the input gradient copies it (im2col),
    # the weight gradient takes its windows of gy (per image)
    (32, 1, ["_col2im_transpose", "_backward_weight_gy_windows"]),
    (32, 32, ["conv2d_3x3", "conv_transpose2d_3x3", "conv2d_backward_weight_3x3"]),
])
def test_thin_convolutions_leave_winograd_for_the_thin_side(monkeypatch, cin, cout, want):
    monkeypatch.setattr(conv, "CONV_ALGO", "auto")
    calls = spy_on_kernels(monkeypatch, ("_col2im_transpose", "_backward_weight_gy_windows"), _spy(monkeypatch))
    outs = _step((64, cin, 24, 24), (cout, cin, 3, 3), padding=1)  # work >= 1.2e6: over WINOGRAD_MIN_WORK
    assert sorted(calls) == sorted(want)
    monkeypatch.setattr(conv, "CONV_ALGO", "im2col")
    for a, b in zip(outs, _step((64, cin, 24, 24), (cout, cin, 3, 3), padding=1)):
        assert rel(a, b) < 1e-5  # float32


@pytest.mark.parametrize("value,want", [("auto", "auto"), ("IM2COL", "im2col"), (" winograd ", "winograd"),
                                        ("", "auto"), (None, "auto")])
def test_conv_algo_environment_variable(monkeypatch, value, want):
    if value is None:
        monkeypatch.delenv("GENGRAPH_CONV_ALGO", raising=False)
    else:
        monkeypatch.setenv("GENGRAPH_CONV_ALGO", value)
    assert conv._algo_from_env() == want


def test_conv_algo_environment_variable_rejects_other_values(monkeypatch):
    monkeypatch.setenv("GENGRAPH_CONV_ALGO", "fft")
    with pytest.raises(ValueError, match="GENGRAPH_CONV_ALGO must be one of auto, im2col, winograd, not 'fft'"):
        conv._algo_from_env()


@pytest.mark.parametrize("padding", [0, 1, 2, 3, (0, 2)])
def test_gradients_with_winograd_forced(monkeypatch, padding):
    monkeypatch.setattr(conv, "CONV_ALGO", "winograd")
    calls = _spy(monkeypatch)
    rng = np.random.default_rng(5)
    x, w = rng.normal(size=(2, 2, 5, 4)), rng.normal(size=(3, 2, 3, 3))
    value = fd_check(lambda x, w: ops.conv2d(x, w, padding=padding), [x, w])
    p = (padding, padding) if isinstance(padding, int) else padding
    assert rel(value, naive_conv2d(x, w, padding=p)) < 1e-10
    # conv2d's VJPs: conv_transpose2d (padding 3: a crop of 1) and conv2d_backward_weight
    assert {"conv2d_3x3", "conv_transpose2d_3x3", "conv2d_backward_weight_3x3"} <= set(calls)
    hvp_check(lambda x, w: ops.square(ops.conv2d(x[:1], w, padding=padding)), [x, w], n_random=2)
    wt, pt = rng.normal(size=(2, 3, 3, 3)), min(min(p), 2)  # padding 3 would leave no output
    out = fd_check(lambda x, w: ops.conv_transpose2d(x, w, padding=pt), [x, wt])
    assert rel(out, naive_conv_transpose2d(x, wt, padding=(pt, pt))) < 1e-10


def test_float32_program_with_winograd_forced(monkeypatch):
    monkeypatch.setattr(conv, "CONV_ALGO", "winograd")
    rng = np.random.default_rng(6)
    x, w = rng.normal(size=(3, 4, 9, 8)), rng.normal(size=(5, 4, 3, 3))
    got = forward(lambda x, w: ops.conv2d(x, w, padding=1), [x, w], dtype="float32")
    assert got.dtype == np.float32 and rel(got, naive_conv2d(x, w, padding=(1, 1))) < 1e-4


def test_scratch_kept_between_calls_is_zeroed_for_a_new_layout():
    # same tile layout (3 x 3 tiles), other padding / sizes: the positions that must be zero move
    rng = np.random.default_rng(7)
    w = rng.normal(size=(2, 2, 3, 3))
    for x, p in [(rng.normal(size=(1, 2, 6, 6)), (1, 1)), (rng.normal(size=(1, 2, 4, 4)), (2, 2)),
                 (rng.normal(size=(1, 2, 8, 8)), (0, 0)), (rng.normal(size=(1, 2, 5, 6)), (1, 1))]:
        assert rel(winograd.conv2d_3x3(np, x, w, p), naive_conv2d(x, w, padding=p)) < 1e-10
    x = rng.normal(size=(1, 2, 6, 6))
    for ho in (6, 5, 6):  # the odd gradient leaves a zero row and column in the kept e
        gy = rng.normal(size=(1, 2, ho, ho))
        want = naive_backward_weight(np.pad(gy, ((0, 0), (0, 0), (0, 6 - ho), (0, 6 - ho))), x, (1, 1))
        assert rel(winograd.conv2d_backward_weight_3x3(np, gy, x, (1, 1)), want) < 1e-10
