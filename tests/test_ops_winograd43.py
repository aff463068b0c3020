"""Winograd F(4x4, 3x3) (engine/ops/winograd43.py, its loops in engine/ops/numba_winograd.py):
the transform matrices' identities, each Numba loop against its matrix, values against naive
loops (float64, 1e-10 relative; float32 within 5e-5 of float64), odd sizes, every padding,
crops, chunks of images, any input strides, when it runs, and gradients through the engine with
it forced (central differences, first and second order)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gengraph.engine.ops import conv, cpu_loops, im2col, winograd, winograd43
from gengraph.engine import ops
from gradcheck_util import fd_check, hvp_check
from test_ops_conv import naive_conv2d, naive_conv_transpose2d
from test_ops_winograd import check_backward_weight, naive_backward_weight, rel

pytest.importorskip("numba")
CASES = settings(max_examples=30, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # `forced` holds for every example
A = winograd43.AT.T


@pytest.fixture
def loops():
    """The Numba loops (Numba is in the test extra; GENGRAPH_NUMBA=0 turns them off)."""
    loops = cpu_loops.load_loops()
    if not loops:
        pytest.skip("the Numba loops are off (GENGRAPH_NUMBA=0)")
    return loops


@pytest.fixture
def forced(loops, monkeypatch):
    """F(4x4, 3x3) at any size."""
    monkeypatch.setattr(winograd43, "MIN_PIXELS", 0)
    monkeypatch.setattr(winograd43, "MIN_TILE_USE", 0.0)
    return loops


def test_the_2d_transforms_compute_a_4x4_correlation():
    rng = np.random.default_rng(0)
    for _ in range(10):
        d, g = rng.normal(size=(6, 6)), rng.normal(size=(3, 3))
        y = winograd43.AT @ ((winograd43.G @ g @ winograd43.G.T) * (winograd43.BT @ d @ winograd43.BT.T)) @ A
        want = [[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(4)] for i in range(4)]
        np.testing.assert_allclose(y, want, rtol=1e-11, atol=1e-11)


def test_the_weight_gradient_identity_is_the_transposed_forward():
    rng = np.random.default_rng(1)
    d, gy = rng.normal(size=(6, 6)), rng.normal(size=(4, 4))
    want = [[np.sum(gy * d[i:i + 4, j:j + 4]) for j in range(3)] for i in range(3)]
    got = winograd43.G.T @ ((A @ gy @ A.T) * (winograd43.BT @ d @ winograd43.BT.T)) @ winograd43.G
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


def test_each_loop_is_its_matrix(forced):
    rng = np.random.default_rng(2)
    d = rng.normal(size=(1, 1, 6, 6))
    v = np.empty((36, 1, 1))
    forced.f43_input(d, 0, 0, 1, 1, v)  # one tile, no padding
    np.testing.assert_allclose(v.reshape(6, 6), winograd43.BT @ d[0, 0] @ winograd43.BT.T, rtol=1e-13, atol=1e-13)
    m = rng.normal(size=(36, 1, 1))
    y = np.empty((1, 1, 4, 4))
    forced.f43_output(m, 1, 1, y)
    np.testing.assert_allclose(y[0, 0], winograd43.AT @ m.reshape(6, 6) @ A, rtol=1e-13, atol=1e-13)
    gy = rng.normal(size=(1, 1, 4, 4))
    e = np.empty((36, 1, 1))
    forced.f43_grad(gy, 1, 1, e)
    np.testing.assert_allclose(e.reshape(6, 6), A @ gy[0, 0] @ A.T, rtol=1e-13, atol=1e-13)


@st.composite
def shapes(draw):
    """batch, channels, an image of 1..13 pixels a side (so 1..4 tiles of 4, ragged) and a padding
    0..3 that leaves at least one output pixel."""
    p = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    hw = tuple(draw(st.integers(max(1, 3 - 2 * p[a]), 13)) for a in range(2))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 3)), o=draw(st.integers(1, 3)), hw=hw, p=p)


@CASES
@given(cfg=shapes(), seed=st.integers(0, 2**16))
def test_conv2d_and_its_transpose_match_naive_loops(forced, cfg, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=(cfg["n"], cfg["c"]) + cfg["hw"]), rng.normal(size=(cfg["o"], cfg["c"], 3, 3))
    got = winograd.conv2d_3x3(np, x, w, cfg["p"])
    assert rel(got, naive_conv2d(x, w, padding=cfg["p"])) < 1e-10
    got32 = winograd.conv2d_3x3(np, x.astype(np.float32), w.astype(np.float32), cfg["p"])
    assert got32.dtype == np.float32 and rel(got32, got) < 5e-5
    # the transposed convolution (stride 1) is conv2d with padding 2 - p: a crop where p = 3
    hw = got.shape[2:]
    xt, wt = rng.normal(size=(cfg["n"], cfg["c"]) + hw), rng.normal(size=(cfg["c"], cfg["o"], 3, 3))
    back = winograd.conv_transpose2d_3x3(np, xt, wt, cfg["p"])
    assert back.shape == (cfg["n"], cfg["o"]) + cfg["hw"]
    assert rel(back, naive_conv_transpose2d(xt, wt, padding=cfg["p"])) < 1e-10


@CASES
@given(cfg=shapes(), crop=st.tuples(st.integers(0, 2), st.integers(0, 2)), seed=st.integers(0, 2**16))
def test_conv2d_backward_weight_matches_naive_loops(forced, cfg, crop, seed):
    check_backward_weight(cfg, crop, seed, tol32=5e-5)  # forced: F(4x4, 3x3) runs at every size


@CASES
@given(cfg=shapes(), crop=st.tuples(st.integers(0, 2), st.integers(0, 2)), seed=st.integers(0, 2**16),
       last=st.booleans())
def test_both_layouts_of_the_transformed_output_gradient_match_naive_loops(forced, cfg, crop, seed, last):
    """The weight gradient with the transformed output gradient channel-last (f43_grad writing a
    transposed view) or tiles-last, whatever the channel counts would choose."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(winograd43, "GRAD_CHANNELS_LAST_MIN", 1 if last else 10 ** 9)
        assert winograd43.grad_channels_last(cfg["c"], cfg["o"]) is last
        check_backward_weight(cfg, crop, seed, tol32=5e-5)


@pytest.mark.parametrize("chunk_bytes", [1, 40000])
def test_chunks_of_images_give_the_whole_batch_result(forced, monkeypatch, chunk_bytes):
    # an image's work: 36 * (3 + 4) channels * 2 x 2 tiles * 8 bytes = 8064 bytes; 1 byte: an
    # image a chunk; 40000: chunks of 4 images and a ragged last one
    monkeypatch.setattr(im2col, "CHUNK_BYTES", chunk_bytes)
    assert len(im2col.image_chunks(np, 5, 8064)) == (5 if chunk_bytes == 1 else 2)
    rng = np.random.default_rng(3)
    x, w, gy = rng.normal(size=(5, 3, 7, 6)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=(5, 4, 7, 6))
    assert rel(winograd.conv2d_3x3(np, x, w, (1, 1)), naive_conv2d(x, w, padding=(1, 1))) < 1e-10
    assert rel(winograd.conv2d_backward_weight_3x3(np, gy, x, (1, 1)), naive_backward_weight(gy, x, (1, 1))) < 1e-10


def test_any_input_strides_and_an_empty_batch(forced):
    rng = np.random.default_rng(4)
    x, w = rng.normal(size=(6, 2, 9, 3)), rng.normal(size=(4, 3, 3, 3))
    xt = x.transpose(1, 3, 0, 2)[:, :, ::-1]  # (2, 3, 6, 9): transposed, negative strides
    assert rel(winograd.conv2d_3x3(np, xt, w, (1, 0)), naive_conv2d(np.ascontiguousarray(xt), w, padding=(1, 0))) < 1e-10
    assert winograd.conv2d_3x3(np, np.zeros((0, 3, 9, 9)), w, (1, 1)).shape == (0, 4, 9, 9)


@pytest.mark.parametrize("padding", [3, 4, (3, 1)])
def test_rows_the_convolution_does_not_read_stay_out(forced, padding):
    # a crop (conv_transpose2d at padding p > 2 is conv2d at 2 - p < 0) and x past what the weight
    # gradient's output covers: the last tiles read such rows, and their transforms mixed an inf
    # there into every output of the tile (NaN), or 1e30 into 1e14
    rng = np.random.default_rng(7)
    p = (padding, padding) if isinstance(padding, int) else padding
    crop = tuple(q - 2 for q in p)  # conv2d's padding 2 - p: the transposed convolution skips these rows and columns
    x, w = rng.normal(size=(2, 3, 17, 18)), rng.normal(size=(3, 4, 3, 3))
    clean = x.copy()
    x[:, :, :crop[0]], x[:, :, -crop[0]:] = np.nan, np.inf
    clean[:, :, :crop[0]] = clean[:, :, -crop[0]:] = 0
    if crop[1] > 0:
        x[:, :, :, :crop[1]], x[:, :, :, x.shape[3] - crop[1]:] = 1e30, -np.inf
        clean[:, :, :, :crop[1]] = clean[:, :, :, clean.shape[3] - crop[1]:] = 0
    got = winograd.conv_transpose2d_3x3(np, x, w, p)
    assert np.isfinite(got).all() and rel(got, naive_conv_transpose2d(clean, w, padding=p)) < 1e-10
    xs, gy = rng.normal(size=(2, 3, 15, 15)), rng.normal(size=(2, 4, 9, 10))  # reads rows 0..10, columns 0..11
    want = naive_backward_weight(gy, xs[:, :, :11, :12], (1, 1))
    xs[:, :, 11:], xs[:, :, :, 12:] = np.inf, np.nan
    got = winograd.conv2d_backward_weight_3x3(np, gy, xs, (1, 1))
    assert np.isfinite(got).all() and rel(got, want) < 1e-10
    assert winograd.conv2d_backward_weight_3x3(np, np.zeros((0, 4, 9, 9)), np.zeros((0, 3, 9, 9)), (1, 1)).shape == \
        (4, 3, 3, 3)


def test_when_it_runs(loops, monkeypatch):
    for hw in [(11, 11), (12, 12), (13, 13), (14, 14), (16, 16), (20, 20), (28, 28), (24, 32), (20, 19),
               (27, 27), (13, 40)]:
        assert winograd43.loops_for(np, np.float32, hw) is loops, hw
    assert winograd43.loops_for(np, np.float64, (28, 28)) is loops
    # small (10x10: 100 pixels), or tiled with much waste (30x5 as 32x8: 59 %): F(2x2, 3x3)
    for hw in [(10, 10), (10, 12), (30, 5)]:
        assert winograd43.loops_for(np, np.float32, hw) is None, hw
    assert winograd43.loops_for(np, np.float16, (28, 28)) is None

    class OtherBackend:  # CuPy: no Numba loops on device arrays
        pass
    assert winograd43.loops_for(OtherBackend, np.float32, (28, 28)) is None
    monkeypatch.setattr(cpu_loops, "_LOOPS", False)  # no Numba, or GENGRAPH_NUMBA=0
    assert winograd43.loops_for(np, np.float32, (28, 28)) is None


def test_the_engine_runs_it_on_large_images(loops, monkeypatch):
    calls = []
    for name in ("conv2d", "conv2d_backward_weight"):
        real = getattr(winograd43, name)
        monkeypatch.setattr(winograd43, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    rng = np.random.default_rng(5)
    x, w = rng.normal(size=(2, 16, 16, 16)), rng.normal(size=(16, 16, 3, 3))  # MIN_PIXELS
    monkeypatch.setattr(conv, "CONV_ALGO", "winograd")
    wino = fd_check(lambda x, w: ops.conv2d(x, w, padding=1), [x, w])
    # forward and the input gradient (a stride-1 transposed convolution) and the weight gradient
    assert calls.count("conv2d") >= 2 and "conv2d_backward_weight" in calls
    assert rel(wino, naive_conv2d(x, w, padding=(1, 1))) < 1e-10


@pytest.mark.parametrize("padding", [0, 1, 2, 3, (0, 2)])
def test_gradients_with_it_forced(forced, monkeypatch, padding):
    monkeypatch.setattr(conv, "CONV_ALGO", "winograd")
    rng = np.random.default_rng(6)
    x, w = rng.normal(size=(2, 2, 6, 5)), rng.normal(size=(3, 2, 3, 3))
    value = fd_check(lambda x, w: ops.conv2d(x, w, padding=padding), [x, w])
    p = (padding, padding) if isinstance(padding, int) else padding
    assert rel(value, naive_conv2d(x, w, padding=p)) < 1e-10
    hvp_check(lambda x, w: ops.square(ops.conv2d(x[:1], w, padding=padding)), [x, w], n_random=2)


def test_scratch_rows_the_loops_write_are_spread_over_cache_sets():
    # rows a multiple of 4 KiB apart share an L1 set: 14 images of 32 channels at 16x16 (28 KiB rows)
    # made the input transform 2.7x slower; written rows start one cache line further on each page
    for item in (4, 8):
        for length in (1, 1024, 7168, 5000):
            stride = winograd43._row_stride(length, item)
            assert stride >= length and (stride * item) % 4096 == 64
    for gradient in (False, True):
        chunks, views = winograd43._chunked(64, 32, 64, 4, 4, np.float32, gradient=gradient)
        assert len(chunks) > 1  # a full chunk and a ragged last one (3 MiB chunks: 14 images)
        for a, b in (chunks[0], chunks[-1]):
            v, m = views(a, b)
            assert v.shape == (36, 32, 16 * (b - a)) and m.shape == (36, 64, 16 * (b - a))
            assert v.strides[0] % 4096 == 64 and v.strides[1:] == (16 * (b - a) * 4, 4)
            # the output transform reads its rows faster contiguous; the gradient transform writes them
            assert m.strides[0] % 4096 == 64 if gradient else m.strides[0] == 64 * 16 * (b - a) * 4
            v[...], m[...] = 1, 2  # views of the scratch, not copies: what the loops write is what the GEMMs read
            assert (views(a, b)[0] == 1).all() and (views(a, b)[1] == 2).all()


def test_warm_compiles_the_layouts_the_kernels_pass(loops):
    # the scratch the input and gradient transforms write is a strided view, which Numba compiles
    # apart from a contiguous array: warm() compiled only the contiguous form, so the first training
    # step still compiled (its time and LLVM memory counted as the step's). A fresh process: in
    # this one other tests may have compiled every layout already.
    import subprocess
    import sys

    code = """
import numpy as np
from gengraph.engine.ops import cpu_loops, numba_winograd, winograd43
kernels = (numba_winograd.f43_input, numba_winograd.f43_output, numba_winograd.f43_grad)
for dtype in (np.float32, np.float64):
    cpu_loops.warm(np.dtype(dtype).name)
    before = [len(k.signatures) for k in kernels]
    rng = np.random.default_rng(8)
    x, w = rng.normal(size=(2, 16, 16, 16)).astype(dtype), rng.normal(size=(16, 16, 3, 3)).astype(dtype)
    winograd43.conv2d(cpu_loops.load_loops(), x, w, (1, 1))
    winograd43.conv2d_backward_weight(cpu_loops.load_loops(), x, x, (1, 1))
    print(before, [len(k.signatures) for k in kernels])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    lines = out.split("\n")[:2]
    assert lines == ["[1, 1, 1] [1, 1, 1]", "[2, 2, 2] [2, 2, 2]"], out
