"""The channel-last im2col kernels (engine/ops/conv_rows.py) and the rule that picks them.

Hypothesis draws kernels, strides, paddings, dilations, groups and odd sizes; values are
checked against the naive loops (float64), in one chunk and one image per chunk, on NumPy and
on a non-NumPy module (CuPy's branches); gradients of ops forced onto these kernels (they run
again as each other's adjoints) against central finite differences, with a second-order term.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gengraph.engine import grad, ops
from gengraph.engine.ops import conv, conv_rows, im2col
from gradcheck_util import fd_check
from test_ops_conv import naive_backward_weight, naive_conv2d, naive_conv_transpose2d
from test_ops_conv_strided import _other_xp
from test_ops_winograd import spy_on_kernels

CASES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FD = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROWS = ("conv2d_rows", "conv2d_backward_weight_rows")


@st.composite
def cases(draw):
    groups = draw(st.integers(1, 3))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    # any input size that leaves at least one output pixel
    hw = tuple(draw(st.integers(max(1, d[a] * (k[a] - 1) + 1 - 2 * p[a]), 9)) for a in range(2))
    return dict(n=draw(st.integers(1, 3)), cin=groups * draw(st.integers(1, 3)), cout=groups * draw(st.integers(1, 3)),
                groups=groups, k=k, s=s, d=d, p=p, hw=hw)


def _arrays(cfg, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(cfg["n"], cfg["cin"]) + cfg["hw"])
    w = rng.normal(size=(cfg["cout"], cfg["cin"] // cfg["groups"]) + cfg["k"])
    out_hw = tuple(conv.conv_out_size(cfg["hw"][a], cfg["k"][a], cfg["s"][a], cfg["p"][a], cfg["d"][a])
                   for a in range(2))
    gy = rng.normal(size=(cfg["n"], cfg["cout"]) + out_hw)
    return x, w, gy, out_hw


def _check_kernels(xp, cfg, seed):
    x, w, gy, out_hw = _arrays(cfg, seed)
    s, p, d, g = cfg["s"], cfg["p"], cfg["d"], cfg["groups"]
    np.testing.assert_allclose(conv_rows.conv2d_rows(xp, x, w, s, p, d, g, out_hw),
                               naive_conv2d(x, w, s, p, d, g), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(conv_rows.conv2d_backward_weight_rows(xp, gy, x, cfg["k"], s, p, d, g),
                               naive_backward_weight(gy, x, cfg["k"], s, p, g, d), rtol=1e-10, atol=1e-10)


@CASES
@given(cfg=cases(), seed=st.integers(0, 2**16), per_image=st.booleans())
def test_kernels_match_naive_loops(cfg, seed, per_image):
    with pytest.MonkeyPatch.context() as mp:
        if per_image:  # one image per chunk: the chunks' outputs and weight-gradient sums
            mp.setattr(im2col, "CHUNK_BYTES", 1)
        _check_kernels(np, cfg, seed)


@settings(max_examples=20, deadline=None)
@given(cfg=cases(), seed=st.integers(0, 2**16))
def test_kernels_run_on_a_non_numpy_module(cfg, seed):
    _check_kernels(_other_xp(), cfg, seed)


def test_chunks_cover_the_batch_once():
    assert im2col.image_chunks(np, 10, im2col.CHUNK_BYTES // 3) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert im2col.image_chunks(np, 5, 10 * im2col.CHUNK_BYTES) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert im2col.image_chunks(_other_xp(), 7, 1) == [(0, 7)]


def test_weight_gradient_reads_only_the_windows():
    """x larger than the windows read (a transposed convolution's weight gradient with output
    padding): the rows past the last window do not enter the sum."""
    rng = np.random.default_rng(5)
    x, gy = rng.normal(size=(2, 4, 8, 7)), rng.normal(size=(2, 6, 3, 3))
    got = conv_rows.conv2d_backward_weight_rows(np, gy, x, (3, 3), (2, 2), (0, 0), (1, 1), 2)
    want = naive_backward_weight(gy, x[:, :, :7, :7], (3, 3), (2, 2), (0, 0), 2)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _force_rows(mp):
    """Every convolution kernel that can be the channel-last one is: no Winograd, col2im, gy
    windows, space to depth or 1x1 matmul."""
    mp.setattr(conv, "use_rows", lambda *args: True)
    mp.setattr(conv, "use_winograd", lambda *args: False)
    mp.setattr(conv, "_col2im_wins", lambda *args: False)
    mp.setattr(conv, "_pointwise", lambda *args: False)
    return spy_on_kernels(mp, ROWS)


@FD
@given(cfg=cases(), seed=st.integers(0, 2**16))
def test_gradients_through_the_kernels_match_finite_differences(cfg, seed):
    x, w, gy, _ = _arrays(cfg, seed)
    attrs = dict(stride=cfg["s"], padding=cfg["p"], dilation=cfg["d"], groups=cfg["groups"])
    with pytest.MonkeyPatch.context() as mp:
        calls = _force_rows(mp)
        fd_check(lambda x, w: ops.sum(ops.conv2d(x, w, **attrs) * gy), [x, w])
        # the gradient of a gradient: the weight gradient's own VJPs
        fd_check(lambda x, w: ops.sum(grad(ops.sum(ops.conv2d(x, w, **attrs) ** 2), [w])[0] ** 2), [x, w])
    og = cfg["cout"] // cfg["groups"]
    per_image = cfg["s"] == (1, 1) and cfg["cout"] < cfg["cin"] and og * cfg["k"][0] * cfg["k"][1] <= 16
    assert set(calls) == ({"conv2d_rows"} if per_image else set(ROWS))  # per image: gy's windows, 1 matmul each


def test_stride_one_transposed_convolution_runs_as_the_rows_conv2d(monkeypatch):
    rng = np.random.default_rng(2)
    x, w = rng.normal(size=(2, 32, 6, 5)), rng.normal(size=(32, 8, 3, 3))
    calls = spy_on_kernels(monkeypatch, ROWS)
    monkeypatch.setattr(conv, "CONV_ALGO", "auto")
    got = conv._conv_transpose2d_forward(np, x, w, (1, 1), (1, 1), (0, 0), (1, 1), 1)
    assert calls == ["conv2d_rows"]
    np.testing.assert_allclose(got, naive_conv_transpose2d(x, w, padding=(1, 1)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cin,cout,hw,stride,want", [
    (32, 32, (4, 4), 1, ["conv2d_rows", "conv2d_rows", "conv2d_backward_weight_rows"]),
    (16, 32, (28, 28), 2, ["conv2d_rows", "conv2d_backward_weight_rows"]),  # strided: 48-value rows, W_out 14
    (32, 1, (8, 8), 1, []),  # into one channel: col2im forward, gy windows per image, im2col of gy (1 channel)
    (3, 32, (28, 28), 1, []),  # an image in: 9-value rows against W_out 28: im2col
])
def test_the_model_sizes_run_the_expected_kernels(monkeypatch, cin, cout, hw, stride, want):
    monkeypatch.setattr(conv, "CONV_ALGO", "auto")
    calls = spy_on_kernels(monkeypatch, ROWS)
    rng = np.random.default_rng(3)
    x, w = rng.normal(size=(2, cin) + hw).astype(np.float32), rng.normal(size=(cout, cin, 3, 3)).astype(np.float32)
    y = conv._conv2d_forward(np, x, w, (stride,) * 2, (1, 1), (1, 1), 1)
    gy = rng.normal(size=y.shape).astype(np.float32)
    conv._conv2d_backward_weight_forward(np, gy, x, (3, 3), (stride,) * 2, (1, 1), (1, 1), 1)
    if stride == 1:
        conv._conv_transpose2d_forward(np, gy, w, (1, 1), (1, 1), (0, 0), (1, 1), 1)
    assert sorted(calls) == sorted(want)
    np.testing.assert_allclose(y, naive_conv2d(x.astype(float), w.astype(float), (stride,) * 2, (1, 1)),
                               rtol=1e-4, atol=1e-4)
