"""The kernels of convolutions whose stride divides the kernel (engine/ops/conv_strided.py):
sub-pixel for the transposed convolution, space to depth for the convolution and its
weight gradient.

Hypothesis draws strides 2..3 with kernels one or two strides wide (so the kernels run),
paddings, every output padding, groups and odd sizes; values are checked against the naive
loops, gradients (which run the kernels again as each other's adjoints) against central
finite differences, and the dispatch rules by spying on them.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gengraph.engine import grad, ops
from gengraph.engine.ops import conv, conv_strided, im2col
from gradcheck_util import fd_check, forward
from test_ops_conv import naive_backward_weight, naive_conv2d, naive_conv_transpose2d
from test_ops_winograd import spy_on_kernels

CASES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FD = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _stride_dividing_kernel(draw):
    """Groups, channels, a stride of 2..3 (1..3 across) and a kernel one or two strides wide."""
    groups = draw(st.integers(1, 2))
    s = (draw(st.integers(2, 3)), draw(st.integers(1, 3)))
    k = tuple(s[a] * draw(st.integers(1, 2)) for a in range(2))
    return dict(n=draw(st.integers(1, 2)), cin=groups * draw(st.integers(1, 3)), cout=groups * draw(st.integers(1, 3)),
                k=k, s=s, groups=groups)


@st.composite
def strided_cases(draw):
    cfg = _stride_dividing_kernel(draw)
    s, k = cfg["s"], cfg["k"]
    hw = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    op = tuple(draw(st.integers(0, s[a] - 1)) for a in range(2))
    # any padding that leaves at least one output pixel
    p = tuple(draw(st.integers(0, min(k[a] - 1, ((hw[a] - 1) * s[a] + k[a] + op[a] - 1) // 2))) for a in range(2))
    return dict(cfg, p=p, op=op, hw=hw)


def _arrays(cfg, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(cfg["n"], cfg["cin"]) + cfg["hw"])
    return x, rng.normal(size=(cfg["cin"], cfg["cout"] // cfg["groups"]) + cfg["k"])


def _spy(monkeypatch):
    return spy_on_kernels(monkeypatch, ("conv_transpose2d_subpixel",))


@CASES
@given(cfg=strided_cases(), seed=st.integers(0, 2**16))
def test_subpixel_matches_naive_loops_and_runs(cfg, seed):
    x, w = _arrays(cfg, seed)
    with pytest.MonkeyPatch.context() as mp:
        calls = _spy(mp)
        got = forward(lambda x, w: ops.conv_transpose2d(x, w, stride=cfg["s"], padding=cfg["p"],
                                                        output_padding=cfg["op"], groups=cfg["groups"]), [x, w])
    assert len(calls) == 1
    want = naive_conv_transpose2d(x, w, cfg["s"], cfg["p"], cfg["op"], (1, 1), cfg["groups"])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-12)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=strided_cases(), seed=st.integers(0, 2**16), n=st.integers(2, 4))
def test_subpixel_in_chunks_of_one_image_matches_naive_loops(cfg, seed, n):
    """Every image its own chunk (CHUNK_BYTES = 1): each chunk's phases land in its own images."""
    x, w = _arrays(dict(cfg, n=n), seed)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(im2col, "CHUNK_BYTES", 1)
        got = conv_strided.conv_transpose2d_subpixel(np, x, w, cfg["s"], cfg["p"], cfg["op"], cfg["groups"])
    want = naive_conv_transpose2d(x, w, cfg["s"], cfg["p"], cfg["op"], (1, 1), cfg["groups"])
    np.testing.assert_allclose(got, want, atol=1e-12)


@FD
@given(cfg=strided_cases(), seed=st.integers(0, 2**16))
def test_gradients_through_the_subpixel_kernel(cfg, seed):
    x, w = _arrays(cfg, seed)
    # conv_transpose2d's own gradients, and conv2d's input gradient (a strided transposed conv)
    fd_check(lambda x, w: ops.conv_transpose2d(x, w, stride=cfg["s"], padding=cfg["p"], output_padding=cfg["op"],
                                               groups=cfg["groups"]), [x, w])
    y = naive_conv_transpose2d(x, w, cfg["s"], cfg["p"], cfg["op"], (1, 1), cfg["groups"])
    wc = np.random.default_rng(seed + 1).normal(size=(cfg["cin"], cfg["cout"] // cfg["groups"]) + cfg["k"])
    fd_check(lambda y, w: ops.conv2d(y, w, stride=cfg["s"], padding=cfg["p"], groups=cfg["groups"]), [y, wc])


@pytest.mark.parametrize("kernel,stride,dilation,runs", [
    ((4, 4), (2, 2), (1, 1), True), ((2, 2), (2, 2), (1, 1), True), ((6, 3), (3, 1), (1, 1), True),
    ((3, 3), (2, 2), (1, 1), False),  # 2 does not divide 3: col2im
    ((4, 4), (1, 1), (1, 1), False),  # stride 1: a conv2d with the flipped kernel
    ((4, 4), (2, 2), (2, 1), False),  # dilated
])
def test_dispatch_rule(kernel, stride, dilation, runs):
    assert conv_strided.stride_divides_kernel(kernel, stride, dilation) is runs


def test_im2col_setting_keeps_the_general_path(monkeypatch):
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(2, 3, 5, 4)), rng.normal(size=(3, 2, 4, 4))
    calls = _spy(monkeypatch)
    run = lambda: forward(lambda x, w: ops.conv_transpose2d(x, w, stride=2, padding=1), [x, w])  # noqa: E731
    auto = run()
    monkeypatch.setattr(conv, "CONV_ALGO", "im2col")
    plain = run()
    assert len(calls) == 1  # the auto run only
    np.testing.assert_allclose(auto, plain, atol=1e-13)
    np.testing.assert_allclose(plain, naive_conv_transpose2d(x, w, (2, 2), (1, 1)), atol=1e-12)


# --- space to depth ------------------------------------------------------------------------
@st.composite
def s2d_cases(draw):
    cfg = _stride_dividing_kernel(draw)
    p = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    hw = tuple(draw(st.integers(max(1, cfg["k"][a] - 2 * p[a]), cfg["k"][a] + 7)) for a in range(2))
    return dict(cfg, p=p, hw=hw)


def _s2d_spy(monkeypatch):
    """Record the space-to-depth kernels' calls, with the channel threshold at 1 (any sizes) and
    the channel-last im2col (which takes the small images they would get) off."""
    monkeypatch.setattr(conv, "SPACE_TO_DEPTH_MIN_CHANNELS", 1)
    monkeypatch.setattr(conv, "use_rows", lambda *args: False)
    return spy_on_kernels(monkeypatch, ("conv2d_space_to_depth", "conv2d_backward_weight_space_to_depth"))


def _s2d_arrays(cfg, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(cfg["n"], cfg["cin"]) + cfg["hw"])
    return x, rng.normal(size=(cfg["cout"], cfg["cin"] // cfg["groups"]) + cfg["k"])


@CASES
@given(cfg=s2d_cases(), seed=st.integers(0, 2**16))
def test_space_to_depth_matches_naive_loops(cfg, seed):
    x, w = _s2d_arrays(cfg, seed)
    s, p, groups = cfg["s"], cfg["p"], cfg["groups"]
    want = naive_conv2d(x, w, s, p, (1, 1), groups)
    gy = np.random.default_rng(seed + 1).normal(size=want.shape)
    with pytest.MonkeyPatch.context() as mp:
        calls = _s2d_spy(mp)
        got = conv._conv2d_forward(np, x, w, s, p, (1, 1), groups)
        dw = conv._conv2d_backward_weight_forward(np, gy, x, cfg["k"], s, p, (1, 1), groups)
    runs = cfg["cin"] >= cfg["cout"]
    assert calls == (["conv2d_space_to_depth", "conv2d_backward_weight_space_to_depth"] if runs else [])
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(dw, naive_backward_weight(gy, x, cfg["k"], s, p, groups), atol=1e-12)


@FD
@given(cfg=s2d_cases(), seed=st.integers(0, 2**16))
def test_gradients_through_the_space_to_depth_kernels(cfg, seed):
    x, w = _s2d_arrays(cfg, seed)
    with pytest.MonkeyPatch.context() as mp:
        _s2d_spy(mp)
        fd_check(lambda x, w: ops.conv2d(x, w, stride=cfg["s"], padding=cfg["p"], groups=cfg["groups"]), [x, w])


# --- the same code on another array module ---------------------------------------------------
def _other_xp():
    """NumPy behind a module object that is not `numpy` itself: the kernels take the branches
    they take on CuPy (no NumPy-only fast paths, one Winograd chunk) with NumPy's arrays."""
    import types

    other = types.ModuleType("numpy")  # its name finds numpy.lib.stride_tricks, as cupy.lib's on CuPy
    other.__getattr__ = lambda name: getattr(np, name)
    return other


@pytest.mark.parametrize("kernel,stride,cin,cout", [
    ((4, 4), (2, 2), 32, 16),  # sub-pixel, space to depth
    ((3, 3), (1, 1), 32, 1),  # col2im into one channel, gy windows per image
    ((5, 5), (1, 1), 32, 3),  # col2im, gy windows channel-major (no Winograd at 5x5)
    ((3, 3), (1, 1), 16, 16),  # Winograd
    ((3, 3), (2, 2), 4, 8),  # im2col, col2im
])
def test_kernels_run_on_a_non_numpy_module(monkeypatch, kernel, stride, cin, cout):
    monkeypatch.setattr(conv, "WINOGRAD_MIN_WORK", 1)
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(3, cin, 9, 8)), rng.normal(size=(cout, cin) + kernel)
    other = _other_xp()
    y = conv._conv2d_forward(np, x, w, stride, (1, 1), (1, 1), 1)
    gy = rng.normal(size=y.shape)
    for xp in (np, other):
        np.testing.assert_allclose(conv._conv2d_forward(xp, x, w, stride, (1, 1), (1, 1), 1), y, rtol=1e-12,
                                   atol=1e-12)
        np.testing.assert_allclose(conv._conv2d_backward_weight_forward(xp, gy, x, kernel, stride, (1, 1), (1, 1), 1),
                                   naive_backward_weight(gy, x, kernel, stride, (1, 1), 1), atol=1e-11)
        op = conv._output_padding(x, gy, kernel, stride, (1, 1), (1, 1))  # back to x's size
        np.testing.assert_allclose(conv._conv_transpose2d_forward(xp, gy, w, stride, (1, 1), op, (1, 1), 1),
                                   naive_conv_transpose2d(gy, w, stride, (1, 1), op), atol=1e-11)


def test_pointwise_kernels_run_on_a_non_numpy_module():
    rng = np.random.default_rng(1)
    x, w, gy = rng.normal(size=(3, 4, 5, 6)), rng.normal(size=(6, 2, 1, 1)), rng.normal(size=(3, 6, 5, 6))
    attrs = dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=2)
    other = _other_xp()
    for xp in (np, other):
        np.testing.assert_allclose(conv._conv2d_forward(xp, x, w, **attrs), naive_conv2d(x, w, groups=2), atol=1e-12)
        np.testing.assert_allclose(conv._conv_transpose2d_forward(xp, gy, w, output_padding=(0, 0), **attrs),
                                   naive_conv_transpose2d(gy, w, groups=2), atol=1e-12)
        np.testing.assert_allclose(conv._conv2d_backward_weight_forward(xp, gy, x, kernel=(1, 1), **attrs),
                                   naive_backward_weight(gy, x, (1, 1), (1, 1), (0, 0), 2), atol=1e-11)


# --- 1x1 convolutions at stride 1 without padding: a channel matmul per image -------------------
@st.composite
def pointwise_cases(draw):
    groups = draw(st.integers(1, 3))
    return dict(n=draw(st.integers(1, 3)), cin=groups * draw(st.integers(1, 3)), cout=groups * draw(st.integers(1, 3)),
                hw=(draw(st.integers(1, 6)), draw(st.integers(1, 6))), groups=groups,
                dilation=(draw(st.integers(1, 3)), draw(st.integers(1, 3))))


def _spy_pointwise(monkeypatch):
    return spy_on_kernels(monkeypatch, ("_pointwise_conv2d", "_pointwise_backward_weight"))


@CASES
@given(cfg=pointwise_cases(), seed=st.integers(0, 2**16))
def test_pointwise_kernels_match_naive_loops_and_run(cfg, seed):
    with pytest.MonkeyPatch.context() as mp:
        _pointwise_kernels_match_naive_loops(cfg, seed, _spy_pointwise(mp))


def _pointwise_kernels_match_naive_loops(cfg, seed, calls):
    rng = np.random.default_rng(seed)
    n, ci, co, g, d = cfg["n"], cfg["cin"], cfg["cout"], cfg["groups"], cfg["dilation"]
    x = rng.normal(size=(n, ci) + cfg["hw"])
    w = rng.normal(size=(co, ci // g, 1, 1))
    wt = rng.normal(size=(ci, co // g, 1, 1))
    gy = rng.normal(size=(n, co) + cfg["hw"])
    attrs = dict(stride=(1, 1), padding=(0, 0), dilation=d, groups=g)
    np.testing.assert_allclose(conv._conv2d_forward(np, x, w, **attrs), naive_conv2d(x, w, dilation=d, groups=g),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(conv._conv_transpose2d_forward(np, x, wt, output_padding=(0, 0), **attrs),
                               naive_conv_transpose2d(x, wt, dilation=d, groups=g), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(conv._conv2d_backward_weight_forward(np, gy, x, kernel=(1, 1), **attrs),
                               naive_backward_weight(gy, x, (1, 1), (1, 1), (0, 0), g, d), rtol=1e-10, atol=1e-10)
    assert calls == ["_pointwise_conv2d", "_pointwise_conv2d", "_pointwise_backward_weight"]


@FD
@given(cfg=pointwise_cases(), seed=st.integers(0, 2**16))
def test_pointwise_gradients_match_finite_differences(cfg, seed):
    """conv2d and conv_transpose2d of 1x1 kernels, their VJPs (the other pointwise kernels) and
    a second-order term against central differences; the pointwise kernels are the ones run."""
    with pytest.MonkeyPatch.context() as mp:
        others = ("_col2im_transpose", "im2col", "conv2d_3x3", "conv_transpose2d_3x3", "conv2d_backward_weight_3x3",
                  "_backward_weight_gy_windows")  # every other kernel: none of them may run
        _pointwise_gradients(cfg, seed, spy_on_kernels(mp, others, _spy_pointwise(mp)))


def _pointwise_gradients(cfg, seed, calls):
    rng = np.random.default_rng(seed)
    g = cfg["groups"]
    x = rng.normal(size=(cfg["n"], cfg["cin"]) + cfg["hw"])
    w = rng.normal(size=(cfg["cout"], cfg["cin"] // g, 1, 1))
    r = rng.normal(size=(cfg["n"], cfg["cout"]) + cfg["hw"])
    fd_check(lambda x, w: ops.sum(ops.conv2d(x, w, groups=g) * r), [x, w])
    fd_check(lambda x, w: ops.sum(ops.conv_transpose2d(x, w, groups=g) ** 2),
             [r, rng.normal(size=(cfg["cout"], cfg["cin"] // g, 1, 1))])
    # the gradient of a gradient: the weight gradient's own VJPs
    fd_check(lambda x, w: ops.sum(grad(ops.sum(ops.conv2d(x, w, groups=g) ** 2), [w])[0] ** 2), [x, w])
    assert set(calls) == {"_pointwise_conv2d", "_pointwise_backward_weight"}


def test_pointwise_runs_only_where_it_applies(monkeypatch):
    calls = _spy_pointwise(monkeypatch)
    x, w = np.ones((1, 2, 3, 3)), np.ones((2, 2, 1, 1))
    conv._conv2d_forward(np, x, w, stride=(2, 2), padding=(0, 0), dilation=(1, 1), groups=1)
    conv._conv2d_forward(np, x, w, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    conv._conv_transpose2d_forward(np, x, w, stride=(2, 2), padding=(0, 0), output_padding=(1, 1), dilation=(1, 1),
                                   groups=1)
    conv._conv2d_backward_weight_forward(np, np.ones((1, 2, 2, 2)), x, kernel=(1, 1), stride=(1, 1), padding=(0, 0),
                                         dilation=(1, 1), groups=1)  # x larger than the windows read
    monkeypatch.setattr(conv, "CONV_ALGO", "im2col")
    conv._conv2d_forward(np, x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)
    assert calls == []
