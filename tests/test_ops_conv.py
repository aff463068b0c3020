"""Image ops: values against naive nested loops, shape errors, FLOPs, dtypes, dropout's
training switch and the expression-language bindings. (Gradients: test_ops_conv_grad.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gengraph.engine import ExprError, Graph, check_grads, compile, grad, ops, value_and_grad
from gengraph.engine.ops import OPS, ShapeError, conv
from gradcheck_util import fd_check, forward

VALUES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- naive references (loops over every index; tiny shapes only) -----------------------------------
def naive_conv2d(x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    n_, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n_, o, ho, wo))
    og = o // groups
    for n in range(n_):
        for oc in range(o):
            g = oc // og
            for y in range(ho):
                for z in range(wo):
                    for ci in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                a, b = y * stride[0] + i * dilation[0], z * stride[1] + j * dilation[1]
                                out[n, oc, y, z] += w[oc, ci, i, j] * xp[n, g * cg + ci, a, b]
    return out


def naive_conv_transpose2d(x, w, stride=(1, 1), padding=(0, 0), output_padding=(0, 0), dilation=(1, 1), groups=1):
    n_, ci, h, wd = x.shape
    _, cog, kh, kw = w.shape
    cig = ci // groups
    ho = (h - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + output_padding[0] + 1
    wo = (wd - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + output_padding[1] + 1
    out = np.zeros((n_, cog * groups, ho, wo))
    for n in range(n_):
        for c in range(ci):
            g = c // cig
            for y in range(h):
                for z in range(wd):
                    for oc in range(cog):
                        for i in range(kh):
                            for j in range(kw):
                                a = y * stride[0] - padding[0] + i * dilation[0]
                                b = z * stride[1] - padding[1] + j * dilation[1]
                                if 0 <= a < ho and 0 <= b < wo:
                                    out[n, g * cog + oc, a, b] += x[n, c, y, z] * w[c, oc, i, j]
    return out


def naive_backward_weight(gy, x, kernel, stride, padding, groups, dilation=(1, 1)):
    """dw[o, c, i, j] = sum over n, y, z of gy[n, o, y, z] * x_padded[n, g(o)*C/G + c, y*sH + i*dH, z*sW + j*dW]."""
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    n_, o_, ho, wo = gy.shape
    cg, og = x.shape[1] // groups, o_ // groups
    out = np.zeros((o_, cg) + tuple(kernel))
    for o in range(o_):
        chans = slice(o // og * cg, (o // og + 1) * cg)
        for y in range(ho):
            for z in range(wo):
                rows = slice(y * stride[0], y * stride[0] + dilation[0] * (kernel[0] - 1) + 1, dilation[0])
                cols = slice(z * stride[1], z * stride[1] + dilation[1] * (kernel[1] - 1) + 1, dilation[1])
                out[o] += np.einsum("n,nchw->chw", gy[:, o, y, z], xp[:, chans, rows, cols])
    return out


def naive_pool(x, kernel, stride, reduce):
    n_, c, h, wd = x.shape
    ho, wo = (h - kernel[0]) // stride[0] + 1, (wd - kernel[1]) // stride[1] + 1
    out = np.zeros((n_, c, ho, wo))
    for n in range(n_):
        for ch in range(c):
            for y in range(ho):
                for z in range(wo):
                    out[n, ch, y, z] = reduce(x[n, ch, y * stride[0]:y * stride[0] + kernel[0],
                                                z * stride[1]:z * stride[1] + kernel[1]])
    return out


def naive_group_norm(x, groups, eps):
    out = np.empty_like(x)
    cg = x.shape[1] // groups
    for n in range(x.shape[0]):
        for g in range(groups):
            block = x[n, g * cg:(g + 1) * cg]
            out[n, g * cg:(g + 1) * cg] = (block - block.mean()) / math.sqrt(block.var() + eps)
    return out


# --- strategies ------------------------------------------------------------------------------
@st.composite
def conv_configs(draw, transpose=False):
    groups = draw(st.integers(1, 2))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    if transpose:
        p = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
        op = tuple(draw(st.integers(0, max(s[a], d[a]) - 1)) for a in range(2))
        hw = tuple(draw(st.integers(1, 3)) for _ in range(2))
        # keep at least one output pixel
        for a in range(2):
            if (hw[a] - 1) * s[a] - 2 * p[a] + d[a] * (k[a] - 1) + op[a] + 1 < 1:
                p = tuple(0 if b == a else p[b] for b in range(2))
        return dict(n=draw(st.integers(1, 2)), cin=cin, cout=cout, k=k, s=s, p=p, d=d, op=op, hw=hw, groups=groups)
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    hw = tuple(draw(st.integers(max(1, d[a] * (k[a] - 1) + 1 - 2 * p[a]), d[a] * (k[a] - 1) + 4)) for a in range(2))
    return dict(n=draw(st.integers(1, 2)), cin=cin, cout=cout, k=k, s=s, p=p, d=d, hw=hw, groups=groups)


def conv_arrays(cfg, seed, transpose=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(cfg["n"], cfg["cin"]) + cfg["hw"])
    wshape = (cfg["cin"], cfg["cout"] // cfg["groups"]) if transpose else (cfg["cout"], cfg["cin"] // cfg["groups"])
    return x, rng.normal(size=wshape + cfg["k"])


# --- values ------------------------------------------------------------------------------
@VALUES
@given(cfg=conv_configs(), seed=st.integers(0, 2**16))
def test_conv2d_matches_naive_loops(cfg, seed):
    x, w = conv_arrays(cfg, seed)
    got = forward(lambda x, w: ops.conv2d(x, w, stride=cfg["s"], padding=cfg["p"], dilation=cfg["d"],
                                          groups=cfg["groups"]), [x, w])
    np.testing.assert_allclose(got, naive_conv2d(x, w, cfg["s"], cfg["p"], cfg["d"], cfg["groups"]), atol=1e-12)


@VALUES
@given(cfg=conv_configs(transpose=True), seed=st.integers(0, 2**16))
def test_conv_transpose2d_matches_naive_loops(cfg, seed):
    x, w = conv_arrays(cfg, seed, transpose=True)
    got = forward(lambda x, w: ops.conv_transpose2d(x, w, stride=cfg["s"], padding=cfg["p"], output_padding=cfg["op"],
                                                    dilation=cfg["d"], groups=cfg["groups"]), [x, w])
    want = naive_conv_transpose2d(x, w, cfg["s"], cfg["p"], cfg["op"], cfg["d"], cfg["groups"])
    np.testing.assert_allclose(got, want, atol=1e-12)


@VALUES
@given(cfg=conv_configs(), seed=st.integers(0, 2**16), per_image=st.booleans())
def test_weight_gradient_from_gy_windows_matches_naive_loops(cfg, seed, per_image):
    """Both layouts of the stride-1 weight gradient read through gy's windows (the dispatch
    takes them for a gy with fewer channels than x; here every drawn case runs them)."""
    x, w = conv_arrays(cfg, seed)
    s, p, d, groups = (1, 1), cfg["p"], cfg["d"], cfg["groups"]
    y = naive_conv2d(x, w, s, p, d, groups)
    gy = np.random.default_rng(seed + 1).normal(size=y.shape)
    got = conv._backward_weight_gy_windows(np, gy, x, cfg["k"], p, d, groups, per_image)
    np.testing.assert_allclose(got, naive_backward_weight(gy, x, cfg["k"], s, p, groups, d), atol=1e-12)


def test_weight_gradient_of_a_transposed_conv_with_output_padding_reads_only_its_windows():
    """conv_transpose2d's weight gradient is conv2d_backward_weight(x, g) with g larger than the
    correlation needs (output padding): the gy-window kernels took their windows over all of g
    and read past the end of gy (a case hypothesis found: 1 -> 2 channels, dilation 2, output
    padding 1)."""
    rng = np.random.default_rng(0)
    gy, x = rng.normal(size=(2, 1, 3, 1)), rng.normal(size=(2, 2, 3, 4))  # x: 2 columns past the windows
    for per_image in (True, False):
        got = conv._backward_weight_gy_windows(np, gy, x, (1, 2), (0, 0), (1, 2), 1, per_image)
        np.testing.assert_allclose(got, naive_backward_weight(gy, x[..., :3], (1, 2), (1, 1), (0, 0), 1, (1, 2)),
                                   atol=1e-12)
    cfg = dict(n=2, cin=1, cout=2, k=(1, 1), s=(1, 1), p=(0, 0), d=(1, 2), op=(0, 1), hw=(1, 1), groups=1)
    xt, wt = conv_arrays(cfg, 0, transpose=True)
    fd_check(lambda x, w: ops.conv_transpose2d(x, w, output_padding=(0, 1), dilation=(1, 2)), [xt, wt])


@pytest.mark.parametrize("kw", [
    dict(stride=2, padding=0),  # stride 2 on odd widths: the last column is never read
    dict(stride=2, padding=3),  # padding larger than 1 (and than half the kernel)
    dict(groups=3),
    dict(dilation=2, padding=2),
    dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=3),
])
def test_conv2d_odd_cases(kw):
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(2, 6, 7, 9)), rng.normal(size=(3, 6 // kw.get("groups", 1), 3, 3))
    got = forward(lambda x, w: ops.conv2d(x, w, **kw), [x, w])
    pairs = {k: (v, v) if isinstance(v, int) else v for k, v in kw.items() if k != "groups"}
    want = naive_conv2d(x, w, pairs.get("stride", (1, 1)), pairs.get("padding", (0, 0)), pairs.get("dilation", (1, 1)),
                        kw.get("groups", 1))
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_conv_transpose2d_output_padding_one_inverts_the_shape_of_a_strided_conv():
    rng = np.random.default_rng(2)
    x, w = rng.normal(size=(1, 2, 4, 4)), rng.normal(size=(2, 3, 3, 3))
    got = forward(lambda x, w: ops.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1), [x, w])
    assert got.shape == (1, 3, 8, 8)  # conv2d(stride=2, padding=1) maps 8x8 to 4x4
    np.testing.assert_allclose(got, naive_conv_transpose2d(x, w, (2, 2), (1, 1), (1, 1)), atol=1e-12)


@pytest.mark.parametrize("kernel,stride", [(2, None), (3, 2), ((2, 3), (1, 2)), (1, 1)])
def test_pools_match_naive_loops(kernel, stride):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 7, 8))
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    s = k if stride is None else (stride, stride) if isinstance(stride, int) else stride
    got = forward(lambda x: ops.max_pool2d(x, kernel, stride), [x])
    np.testing.assert_allclose(got, naive_pool(x, k, s, np.max), atol=0)
    got = forward(lambda x: ops.avg_pool2d(x, kernel, stride), [x])
    np.testing.assert_allclose(got, naive_pool(x, k, s, np.mean), atol=1e-14)


def test_max_pool_gradient_goes_to_one_winner_on_ties():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = 1.0  # a tie in the first window
    g = Graph(dtype="float64")
    xn = g.input("x", x.shape)
    dx = compile(g, grad(ops.sum(ops.max_pool2d(xn, 2)), xn)).run(x=x)
    want = np.zeros((4, 4))
    want[0, 1] = 1.0  # first maximum in row-major window order, as PyTorch
    want[0, 2] = want[2, 0] = want[2, 2] = 1.0  # all-zero windows: their first element
    np.testing.assert_array_equal(dx[0, 0], want)


def test_views_with_any_strides_as_inputs():
    rng = np.random.default_rng(12)
    x, w = rng.normal(size=(5, 4, 3, 2)), rng.normal(size=(4, 2, 2, 2))
    xt = x.transpose(3, 1, 0, 2)  # what the transpose view below holds: (2, 4, 5, 3)
    got = forward(lambda x, w: ops.conv2d(ops.transpose(x, (3, 1, 0, 2)), w, groups=2), [x, w])
    np.testing.assert_allclose(got, naive_conv2d(xt, w, groups=2), atol=1e-12)
    got = forward(lambda x, w: ops.conv2d(x[:, :, ::-1, :], w, groups=2), [xt, w])  # negative strides
    np.testing.assert_allclose(got, naive_conv2d(xt[:, :, ::-1], w, groups=2), atol=1e-12)
    got = forward(lambda x: ops.max_pool2d(ops.transpose(x, (3, 1, 0, 2)), 2, 1), [x])
    np.testing.assert_array_equal(got, naive_pool(xt, (2, 2), (1, 1), np.max))


def test_upsample_nearest_matches_repeat():
    x = np.random.default_rng(4).normal(size=(2, 3, 3, 4))
    got = forward(lambda x: ops.upsample_nearest2d(x, 3), [x])
    np.testing.assert_array_equal(got, x.repeat(3, axis=2).repeat(3, axis=3))
    got = forward(lambda x: ops.upsample_nearest2d(x, (1, 2)), [x])
    np.testing.assert_array_equal(got, x.repeat(2, axis=3))


@pytest.mark.parametrize("groups,eps", [(1, 1e-5), (2, 1e-3), (4, 0.5)])
def test_norms_match_naive(groups, eps):
    x = np.random.default_rng(5).normal(size=(3, 4, 3, 5)) * 2 + 1
    np.testing.assert_allclose(forward(lambda x: ops.group_norm(x, groups, eps), [x]), naive_group_norm(x, groups, eps),
                               atol=1e-12)
    np.testing.assert_allclose(forward(lambda x: ops.layer_norm(x, eps), [x]), naive_group_norm(x, 1, eps), atol=1e-12)
    flat = x.reshape(3, -1)  # layer_norm of a 2-D input: per row
    want = (flat - flat.mean(1, keepdims=True)) / np.sqrt(flat.var(1, keepdims=True) + eps)
    np.testing.assert_allclose(forward(lambda x: ops.layer_norm(x, eps=eps), [flat]), want, atol=1e-12)


IMAGE_OPS = {
    "conv2d": (lambda x, w: ops.conv2d(x, w, stride=2, padding=1), True),
    "conv_transpose2d": (lambda x, w: ops.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1), True),
    "conv2d_1x1": (lambda x, w: ops.conv2d(x, w[:, :, :1, :1]), True),  # the pointwise kernels
    "conv_transpose2d_1x1": (lambda x, w: ops.conv_transpose2d(x, w[:, :, 1:2, 1:2]), True),
    "conv2d_same_even": (lambda x, w: ops.conv2d(x, w[:, :, :2, :], padding="same"), True),
    "max_pool2d": (lambda x, w: ops.max_pool2d(x, 2), False),
    "avg_pool2d": (lambda x, w: ops.avg_pool2d(x, 3, 1), False),
    "upsample_nearest2d": (lambda x, w: ops.upsample_nearest2d(x, 2), False),
    "group_norm": (lambda x, w: ops.group_norm(x, 2), False),
    "layer_norm": (lambda x, w: ops.layer_norm(x), False),
}


@pytest.mark.parametrize("name", list(IMAGE_OPS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept_and_batch_may_be_unknown(name, dtype):
    build, uses_w = IMAGE_OPS[name]
    rng = np.random.default_rng(6)
    x, w = rng.normal(size=(3, 4, 6, 6)), rng.normal(size=(4, 4, 3, 3))
    g = Graph(dtype=dtype)
    xn, wn = g.input("x", (None, 4, 6, 6)), g.input("w", w.shape)
    y = build(xn, wn)
    assert y.shape[0] is None and y.dtype == np.dtype(dtype)
    dx = grad(ops.sum(y * y), xn)
    out, gx = compile(g, [y, dx]).run(x=x, w=w)
    assert out.dtype == np.dtype(dtype) and gx.dtype == np.dtype(dtype) and gx.shape == x.shape
    assert out.shape[0] == 3 and out.shape[1:] == y.shape[1:]
    if dtype == "float32":
        np.testing.assert_allclose(out, forward(build, {"x": x, "w": w}), rtol=1e-4, atol=1e-4)


# --- shape errors --------------------------------------------------------------------------
@pytest.mark.parametrize("build,message", [
    (lambda x: ops.conv2d(x, x.graph.input("w", (2, 3, 3, 3))), "channel mismatch"),
    (lambda x: ops.conv2d(x, x.graph.input("w", (4, 2, 3, 3)), groups=3), "does not divide the 4 input channels"),
    (lambda x: ops.conv2d(x, x.graph.input("w", (3, 2, 3, 3)), groups=2), "does not divide the 3 output channels"),
    (lambda x: ops.conv2d(x, x.graph.input("w", (2, 4, 7, 3))), "kernel larger than padded input along height"),
    (lambda x: ops.conv2d(x, x.graph.input("w", (2, 4, 3, 3)), dilation=(1, 4)), "along width"),
    (lambda x: ops.conv2d(x, x.graph.input("w", (2, 4, 3))), "weight must be 4-D"),
    (lambda x: ops.conv2d(x, x.graph.input("w", (2, 4, 3, 3)), stride=0), "stride must be >= 1"),
    (lambda x: ops.conv2d(x, x.graph.input("w", (2, 4, 3, 3)), padding=(1, 2, 3)), "pair of ints"),
    (lambda x: ops.conv_transpose2d(x, x.graph.input("w", (3, 2, 3, 3))), "channel mismatch"),
    (lambda x: ops.conv_transpose2d(x, x.graph.input("w", (4, 2, 3, 3)), stride=2, output_padding=2),
     "output_padding"),
    (lambda x: ops.max_pool2d(x, 6), "larger than the input's height"),
    (lambda x: ops.avg_pool2d(x, (1, 9)), "larger than the input's width"),
    (lambda x: ops.group_norm(x, 3), "groups=3 does not divide the 4 channels"),
    (lambda x: ops.dropout(x, 1.0), "p must be a probability"),
    (lambda x: ops.conv2d(x, x.graph.input("w", (1, 4, 0, 3))), "kernel size must be at least 1x1"),
    (lambda x: ops.conv_transpose2d(x, x.graph.input("w", (4, 1, 3, 0))), "kernel size must be at least 1x1"),
])
def test_shape_errors_say_what_is_wrong(build, message):
    g = Graph()
    x = g.input("x", (None, 4, 5, 5))
    with pytest.raises(ShapeError, match=message):
        build(x)


@pytest.mark.parametrize("build", [
    lambda x: ops.conv2d(x, x.graph.input("w", (2, 4, 3, 3)), stride=2, padding=1),
    lambda x: ops.conv_transpose2d(x, x.graph.input("w", (4, 2, 3, 3))),
    lambda x: ops.max_pool2d(x, 2),
    lambda x: ops.avg_pool2d(x, 2),
    lambda x: ops.upsample_nearest2d(x, 2),
    lambda x: ops.group_norm(x, 2),
])
def test_image_ops_need_known_channels_and_sizes(build):
    # only the batch size may be unknown: before, an unknown height passed the shape rule and failed
    # later in grad() or at run time with a TypeError (or group_norm blamed its groups)
    g = Graph()
    x = g.input("x", (None, 4, None, 5))
    with pytest.raises(ShapeError, match=r"\(\?, 4, \?, 5\): only the batch size may be unknown"):
        build(x)


@pytest.mark.parametrize("algo", ["auto", "im2col", "winograd"])
@pytest.mark.parametrize("expression", ["sum(conv2d(x, w, padding=1))", "sum(conv2d(x, w, stride=2))",
                                        "sum(conv_transpose2d(x, w, padding=1))"])
def test_an_empty_batch_has_zero_weight_gradient(expression, algo, monkeypatch):
    monkeypatch.setattr(conv, "CONV_ALGO", algo)
    x, w = np.zeros((0, 4, 5, 5)), np.ones((4, 4, 3, 3))
    value, grads = value_and_grad(expression, {"x": x, "w": w}, ["x", "w"])
    assert value == 0.0 and grads["x"].shape == x.shape
    np.testing.assert_array_equal(grads["w"], np.zeros(w.shape))


def test_max_pool_gradient_goes_to_the_last_nan_of_a_window():
    # a NaN is its window's maximum (np.maximum, PyTorch): its gradient goes there, not to the first
    # tap; PyTorch's window loop takes every NaN it meets, so the last NaN (torch 2.13 gives these values)
    x = np.array([[[[0.0, np.nan, 7.0, 1.0], [4.0, np.nan, 2.0, 3.0]]]])
    value, grads = value_and_grad("sum(max_pool2d(x, 2) * y)", {"x": x, "y": np.array([[[[2.0, 3.0]]]])}, ["x"])
    assert np.isnan(value)
    np.testing.assert_array_equal(grads["x"], [[[[0.0, 0.0, 3.0, 0.0], [0.0, 2.0, 0.0, 0.0]]]])


def test_conv_flops():
    g = Graph()
    x, w = g.input("x", (None, 6, 9, 9)), g.input("w", (8, 3, 3, 3))
    y = ops.conv2d(x, w, stride=2, padding=1, groups=2)
    assert y.shape == (None, 8, 5, 5)
    flops = OPS["conv2d"].flops((16,) + y.shape[1:], (16, 6, 9, 9), w.shape, **y.attrs)
    assert flops == 2 * 16 * 8 * 5 * 5 * (6 // 2) * 3 * 3
    dw, dx = grad(ops.sum(y), [w, x])
    assert OPS[dx.op].flops((16, 6, 9, 9), (16, 8, 5, 5), w.shape, **dx.attrs) == flops
    assert OPS[dw.op].flops(w.shape, (16, 8, 5, 5), (16, 6, 9, 9), **dw.attrs) == flops


# --- dropout -------------------------------------------------------------------------------
def _dropout_graph(p, seed=0, shape=(200, 500)):
    g = Graph(dtype="float64", seed=seed)
    x = g.input("x", (None,) + shape[1:])
    return g, x, ops.dropout(x, p)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_training_masks_and_preserves_the_mean(p):
    g, x, y = _dropout_graph(p)
    dx = grad(ops.sum(y), x)
    a = np.ones((200, 500))
    out, gx = compile(g, [y, dx], training=True).run(x=a)
    n = a.size
    kept = out != 0
    assert set(np.unique(out)) == {0.0, 1.0 / (1.0 - p)}
    # fraction dropped ~ p, mean ~ 1: both within 5 binomial standard errors
    assert abs((~kept).mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert abs(out.mean() - 1.0) < 5 * math.sqrt(p / (1 - p) / n)
    np.testing.assert_array_equal(gx, out)  # d(sum(x * mask))/dx = mask, the same draw as the output


def test_dropout_eval_program_is_exactly_the_identity():
    g, x, y = _dropout_graph(0.5)
    a = np.random.default_rng(0).normal(size=(7, 500))
    dx = grad(ops.sum(y * y), x)
    prog = compile(g, [y, dx])  # no updates: evaluation
    out, gx = prog.run(x=a)
    np.testing.assert_array_equal(out, a)
    np.testing.assert_array_equal(gx, 2 * a)
    assert not prog.training and {n.op for n in prog.nodes}.isdisjoint({"dropout", "dropout_mask"})
    assert ("eval_mode" in [name for name, _, _ in prog.pass_stats])
    out2 = compile(g, y, training=False).run(x=a)
    np.testing.assert_array_equal(out2, a)


def test_dropout_is_on_in_programs_with_updates():
    g = Graph(dtype="float64", seed=1)
    x = g.input("x", (None, 50))
    w = g.param("w", np.ones(50))
    loss = ops.sum(ops.square(ops.dropout(x * w, 0.5)))
    step = compile(g, loss, {w: w - 0.01 * grad(loss, w)})
    assert step.training and "dropout_mask" in {n.op for n in step.nodes}
    evaluate = compile(g, loss)
    a = np.ones((4, 50))
    assert evaluate.run(x=a) == 200.0
    assert step.run(x=a) != 200.0  # 4 * 50 * (mask^2 = 4 or 0): 200 only if exactly half kept


def test_a_sampler_that_only_updates_state_is_not_training():
    g = Graph(dtype="float64", seed=2)
    chain = g.state("chain", np.ones((3, 40)))
    step = compile(g, ops.sum(chain), {chain: ops.dropout(chain, 0.5) * 0.5 + 0.5})
    assert not step.training
    step.run()
    np.testing.assert_array_equal(g.value(chain), np.ones((3, 40)))
    assert compile(g, chain, {chain: ops.dropout(chain, 0.5)}, training=True).training


def test_dropout_mask_is_reproducible_per_seed():
    def masks(seed, runs=2):
        g, x, y = _dropout_graph(0.5, seed=seed, shape=(1, 64))
        prog = compile(g, y, training=True)
        return [prog.run(x=np.ones((3, 64))) for _ in range(runs)]

    a, b, c = masks(7), masks(7), masks(8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])  # the stream advances between runs
    assert not np.array_equal(a[0], c[0])  # another seed, another mask


def test_two_dropouts_draw_independent_masks():
    g = Graph(dtype="float64", seed=0)
    x = g.input("x", (None, 256))
    y1, y2 = ops.dropout(x, 0.5), ops.dropout(x, 0.5)
    m1, m2 = compile(g, [y1, y2], training=True).run(x=np.ones((2, 256)))
    assert not np.array_equal(m1, m2)


# --- expression language --------------------------------------------------------------------
def test_expression_conv_example_matches_naive_and_finite_differences():
    rng = np.random.default_rng(8)
    x, w = rng.normal(size=(2, 3, 7, 7)), rng.normal(size=(4, 3, 3, 3))
    value, grads = value_and_grad("sum(conv2d(x, w, stride=2, padding=1) ** 2)", {"x": x, "w": w}, ["w"])
    np.testing.assert_allclose(value, np.sum(naive_conv2d(x, w, (2, 2), (1, 1)) ** 2), rtol=1e-12)
    assert grads["w"].shape == w.shape
    report = check_grads("sum(conv2d(x, w, stride=2, padding=1) ** 2)", {"x": x, "w": w}, rtol=1e-5, atol=1e-5)
    assert report.ok, str(report)


@pytest.mark.parametrize("expression,reference", [
    ("sum(max_pool2d(x, 2))", lambda x: naive_pool(x, (2, 2), (2, 2), np.max).sum()),
    ("sum(max_pool2d(x, kernel=3, stride=(1, 2)))", lambda x: naive_pool(x, (3, 3), (1, 2), np.max).sum()),
    ("sum(avg_pool2d(x, 2, stride=1) ** 2)",
     lambda x: (naive_pool(x, (2, 2), (1, 1), np.mean) ** 2).sum()),
    ("sum(upsample_nearest2d(x, scale=2) ** 2)", lambda x: 4 * (x ** 2).sum()),
    ("sum(group_norm(x, 2, eps=0.5) * x)", lambda x: (naive_group_norm(x, 2, 0.5) * x).sum()),
    ("sum(group_norm(x, groups=2) * x)", lambda x: (naive_group_norm(x, 2, 1e-5) * x).sum()),
    ("sum(layer_norm(x, eps=1e-3) ** 3)", lambda x: (naive_group_norm(x, 1, 1e-3) ** 3).sum()),
    ("sum(dropout(x, p=0.5) * x)", lambda x: (x * x).sum()),  # value_and_grad evaluates: no dropout
    ("sum(conv_transpose2d(x, w, stride=2, output_padding=1, padding=1) ** 2)",
     lambda x: (naive_conv_transpose2d(x, np.ones((2, 3, 3, 3)), (2, 2), (1, 1), (1, 1)) ** 2).sum()),
    # PyTorch's positional order for the pools, the norms and dropout (not conv2d: torch's 3rd is the bias)
    ("sum(avg_pool2d(x, 2, 1) ** 2)", lambda x: (naive_pool(x, (2, 2), (1, 1), np.mean) ** 2).sum()),
    ("sum(max_pool2d(x, (3, 2), (1, 2)))", lambda x: naive_pool(x, (3, 2), (1, 2), np.max).sum()),
    ("sum(group_norm(x, 2, 0.5) * x)", lambda x: (naive_group_norm(x, 2, 0.5) * x).sum()),
    ("sum(layer_norm(x, 1e-3) ** 3)", lambda x: (naive_group_norm(x, 1, 1e-3) ** 3).sum()),
    ("sum(dropout(x, 0.5) * x)", lambda x: (x * x).sum()),
    ("sum(conv2d(x, w, groups=2, dilation=2) ** 2)",
     lambda x: (naive_conv2d(x, np.ones((2, 1, 3, 3)), dilation=(2, 2), groups=2) ** 2).sum()),
])
def test_expression_image_functions(expression, reference):
    x = np.random.default_rng(9).normal(size=(2, 2, 6, 6))
    inputs = {"x": x, "w": np.ones((2, 3, 3, 3)) if "transpose" in expression else np.ones((2, 1, 3, 3))}
    value, grads = value_and_grad(expression, inputs, ["x"])
    np.testing.assert_allclose(value, reference(x), rtol=1e-10)
    assert grads["x"].shape == x.shape


@pytest.mark.parametrize("kernel,dilation", [((3, 3), (1, 1)), ((4, 2), (1, 1)), ((2, 3), (2, 1)), ((1, 3), (1, 2))])
def test_padding_same_and_valid_match_explicit_padding_and_finite_differences(kernel, dilation):
    """PyTorch's padding="same": d (k - 1) in all, the odd one at the bottom / right."""
    rng = np.random.default_rng(11)
    x, w = rng.normal(size=(2, 2, 6, 5)), rng.normal(size=(3, 2) + kernel)
    total = [d * (k - 1) for d, k in zip(dilation, kernel)]
    padded = np.pad(x, ((0, 0), (0, 0), (total[0] // 2, total[0] - total[0] // 2),
                        (total[1] // 2, total[1] - total[1] // 2)))
    expression = f"sum(conv2d(x, w, padding=\"same\", dilation={dilation}) ** 2)"
    value, grads = value_and_grad(expression, {"x": x, "w": w}, ["x"])
    np.testing.assert_allclose(value, np.sum(naive_conv2d(padded, w, dilation=dilation) ** 2), rtol=1e-12)
    assert grads["x"].shape == x.shape
    report = check_grads(expression, {"x": x, "w": w}, rtol=1e-5, atol=1e-5)
    assert report.ok, str(report)
    g = Graph(dtype="float64")
    y = ops.conv2d(g.input("x", (None, 2, 6, 5)), g.input("w", w.shape), padding="valid", dilation=dilation)
    np.testing.assert_allclose(compile(g, [y]).run(x=x, w=w)[0], naive_conv2d(x, w, dilation=dilation), rtol=1e-12)


@pytest.mark.parametrize("expression,col,message", [
    ("sum(conv2d(x, w, strid=2))", 24, 'keyword "strid" is not allowed in conv2d() (it takes stride=, padding=, '
                                       'dilation=, groups=); did you mean "stride"?'),
    ("max_pool2d(x, 2, eps=1)", 22, 'keyword "eps" is not allowed in max_pool2d() (it takes kernel=, stride=, kernel_size=)'),
    ("sum(x, out=x)", 12, 'keyword "out"'),
    ("exp(x, axis=1)", 13, "exp() (it takes no keywords)"),
    ("conv2d(x, w, stride=x)", 21, "stride= needs a number"),
    ("conv2d(x, w, padding=(1, x))", 22, "padding= needs a number"),
    ("conv2d(x, w, stride=3.5)", 1, "conv2d((2, 2, 6, 6), (2, 2, 3, 3)): stride must be an int or a pair of ints"),
    ("layer_norm(x, eps=-1.0)", 1, "eps must be a number >= 0"),
    ("conv2d(x, w, groups=3)", 1, "does not divide"),
    ("conv2d(x, w, 2)", 1, "conv2d(x, w) takes 2 arguments, found 3; give stride=, padding=, dilation= and groups= "
                           "by keyword"),
    ("avg_pool2d(x, x)", 15, "kernel (argument 2 of avg_pool2d) needs a number or a tuple of numbers"),
    ("avg_pool2d(x, 2, 2, 1)", 1, "avg_pool2d(x, kernel, stride) takes 1 to 3 arguments, found 4"),
    ("avg_pool2d(x, 2, kernel=2)", 18, "kernel of avg_pool2d() is given twice, by position and by keyword"),
    ('conv2d(x, w, padding="same", stride=2)', 1, 'padding="same" needs stride 1'),
    ('conv2d(x, w, padding="full")', 1, 'padding must be an int, a pair of ints, "same" or "valid", not \'full\''),
    ('conv2d(x, "w")', 11, "only numbers are allowed as constants, not str"),
    ("dropout(x, stream=1)", 19, 'keyword "stream" is not allowed in dropout() (it takes p=)'),
])
def test_expression_keyword_errors_name_the_column(expression, col, message):
    from gengraph.engine import expr

    g = Graph()
    env = {"x": g.input("x", (2, 2, 6, 6)), "w": g.input("w", (2, 2, 3, 3))}
    with pytest.raises(ExprError) as info:
        expr.build(expression, env)
    assert info.value.col + 1 == col, str(info.value)
    assert message in info.value.message


def test_torch_agrees_when_available():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(10)
    x, w = rng.normal(size=(2, 4, 9, 8)), rng.normal(size=(6, 2, 3, 3))
    t = lambda a: torch.tensor(a)  # noqa: E731
    conv = lambda x, w: ops.conv2d(x, w, stride=2, padding=2, dilation=2, groups=2)  # noqa: E731
    np.testing.assert_allclose(forward(conv, [x, w]),
                               F.conv2d(t(x), t(w), stride=2, padding=2, dilation=2, groups=2).numpy(), atol=1e-10)
    wt = rng.normal(size=(4, 3, 3, 3))
    np.testing.assert_allclose(
        forward(lambda x, w: ops.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1), [x, wt]),
        F.conv_transpose2d(t(x), t(wt), stride=2, padding=1, output_padding=1).numpy(), atol=1e-10)
    np.testing.assert_allclose(forward(lambda x: ops.max_pool2d(x, 3, 2), [x]), F.max_pool2d(t(x), 3, 2).numpy())
    np.testing.assert_allclose(forward(lambda x: ops.group_norm(x, 2), [x]), F.group_norm(t(x), 2).numpy(), atol=1e-10)


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(IMAGE_OPS))
def test_image_ops_on_cupy_match_numpy(name):
    from gengraph.engine import cupy_available, to_numpy

    if not cupy_available():
        pytest.skip("needs CuPy and an NVIDIA GPU")
    build, _ = IMAGE_OPS[name]
    rng = np.random.default_rng(11)
    data = {"x": rng.normal(size=(3, 4, 6, 6)), "w": rng.normal(size=(4, 4, 3, 3))}
    outs = {}
    for backend in ("numpy", "cupy"):
        g = Graph(dtype="float64")
        x, w = g.input("x", (None, 4, 6, 6)), g.input("w", (4, 4, 3, 3))
        y = build(x, w)
        gx, gw = grad(ops.sum(y * y), [x, w])
        outs[backend] = [to_numpy(v) for v in compile(g, [y, gx, gw], backend=backend).run(data)]
    for a, b in zip(outs["cupy"], outs["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=name)


def _weight_gradient(gy_shape, x_shape, **kw):
    g = Graph(dtype="float64")
    return ops.conv2d_backward_weight(g.input("gy", gy_shape), g.input("x", x_shape), **kw)


@pytest.mark.parametrize("gy_shape, x_shape, kw, message", [
    ((3, 4, 6, 6), (2, 3, 8, 8), {}, "different batch sizes"),  # gy's third image was dropped silently
    ((2, 4, 2, 2), (2, 3, 8, 8), {}, "does not match the convolution"),  # too small a gradient was accepted
    ((2, 4, 7, 6), (2, 3, 8, 8), {}, "does not match the convolution"),
    ((2, 4, 6, 6), (2, 3, 8, 8), {"kernel": (0, 3)}, "kernel"),  # an empty kernel gave a (4, 3, 0, 3) result
    ((2, 4, 3, 3), (2, 3, 8, 8), {"stride": 2, "padding": 1, "kernel": 3, "dilation": 1}, "does not match"),
])
def test_the_weight_gradient_op_checks_its_shapes(gy_shape, x_shape, kw, message):
    kw = {"kernel": (3, 3), **kw}
    with pytest.raises(ShapeError, match=message):
        _weight_gradient(gy_shape, x_shape, **kw)


def test_the_weight_gradient_op_takes_an_int_kernel_and_keeps_valid_shapes():
    # an int kernel was a raw TypeError; the shapes conv2d and conv_transpose2d give still pass
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 3, 9, 9)), rng.standard_normal((4, 3, 3, 3))
    g = Graph(dtype="float64")
    xi, gi = g.input("x", x.shape), g.input("gy", (2, 4, 5, 5))
    dw = ops.conv2d_backward_weight(gi, xi, kernel=3, stride=2, padding=1)
    gy = rng.standard_normal((2, 4, 5, 5))
    got = compile(g, [dw]).run({"x": x, "gy": gy})[0]
    g2 = Graph(dtype="float64")
    wi, xj = g2.param("w", w), g2.input("x", x.shape)
    want = compile(g2, grad(ops.sum(ops.conv2d(xj, wi, stride=2, padding=1) * gy), [wi])).run({"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # conv_transpose2d with output_padding (x longer than the convolution reads): its weight gradient
    _weight_gradient((2, 3, 4, 4), (2, 4, 8, 8), kernel=3, stride=2, padding=1)
    for h in (9, 10):  # 9: output_padding 0, 10: output_padding 1 of a 3x3 stride-2 transposed conv of 5
        _weight_gradient((2, 3, 5, 5), (2, 4, h, h), kernel=3, stride=2, padding=1)


@pytest.mark.parametrize("torch_form, ours", [
    ("max_pool2d(x, kernel_size=2)", "max_pool2d(x, 2)"),
    ("max_pool2d(x, kernel_size=(3, 2), stride=1)", "max_pool2d(x, (3, 2), 1)"),
    ("avg_pool2d(x, kernel_size=3, stride=2)", "avg_pool2d(x, 3, 2)"),
    ("upsample_nearest2d(x, scale_factor=2)", "upsample_nearest2d(x, 2)"),
    ("upsample_nearest2d(x, scale_factor=(1, 3))", "upsample_nearest2d(x, scale=(1, 3))"),
])
def test_pools_and_upsampling_take_pytorchs_keywords(torch_form, ours):
    # PyTorch's kernel_size= and scale_factor= were refused ("keyword not allowed")
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    for e in (f"sum({torch_form} ** 2)", f"sum({ours} ** 2)"):
        value, grads = value_and_grad(e, {"x": x}, ["x"])
        if e.startswith(f"sum({torch_form}"):
            want = (value, grads["x"])
    np.testing.assert_array_equal(want[0], value)
    np.testing.assert_array_equal(want[1], grads["x"])


@pytest.mark.parametrize("expression, message", [
    ("max_pool2d(x, 2, kernel_size=2)", "give kernel= or kernel_size=, not both"),
    ("avg_pool2d(x)", "kernel= is missing"),
    ("upsample_nearest2d(x, 2, scale_factor=2)", "give scale= or scale_factor=, not both"),
])
def test_an_alias_and_its_name_together_or_neither_is_an_error(expression, message):
    with pytest.raises(ExprError, match=message):
        value_and_grad(f"sum({expression})", {"x": np.ones((1, 1, 4, 4))}, ["x"])
