"""Convolutions (NCHW activations, OIHW weights, PyTorch's semantics and keyword names).

conv2d is im2col through a strided view of the padded input plus ONE batched BLAS
matmul (batched over groups). Its adjoints: w.r.t. the input a conv_transpose2d (one
matmul, then col2im: kH*kW strided adds), w.r.t. the weight a correlation of the input
with the output gradient (`conv2d_backward_weight`, one batched matmul). These three
registered ops close under differentiation, so the gradient of a gradient works:

    conv2d(x, w)                  dx: conv_transpose2d(g, w)   dw: conv2d_backward_weight(g, x)
    conv_transpose2d(x, w)        dx: conv2d(g, w)             dw: conv2d_backward_weight(x, g)
    conv2d_backward_weight(gy, x) dgy: conv2d(x, gg)           dx: conv_transpose2d(gy, gg)

Each of the three kernels has a second algorithm for 3x3, stride-1, dilation-1, ungrouped
float32/float64 convolutions: Winograd F(2x2, 3x3) (engine/ops/winograd.py, 2.25x fewer
multiplies). It runs when it applies and the work N * C_in * C_out * H_out * W_out is at
least WINOGRAD_MIN_WORK (below that its ~30 array calls cost more than they save; measured
in bench/winograd_bench.py). A transposed convolution whose stride (> 1) divides its kernel
runs the sub-pixel kernel instead of col2im, and a convolution or weight gradient with such a
stride the space-to-depth kernels instead of im2col (engine/ops/conv_strided.py). A 1x1
convolution at stride 1 without padding is a channel matmul per image in all three kernels.
Where a window row of the channel-last input (kW * C/G values) is at least as long as an
output row, the convolution and its weight gradient run the channel-last im2col of
engine/ops/conv_rows.py instead of im2col, and on small images (under WINOGRAD_MIN_PIXELS
output pixels) instead of Winograd too. The environment
variable GENGRAPH_CONV_ALGO, read once at import, overrides the rule: "auto" (the default),
"im2col" (only the im2col/col2im kernels: never Winograd, sub-pixel or channel-last) or "winograd"
(Winograd whenever it applies); tests set the module's CONV_ALGO instead.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from .conv_rows import conv2d_backward_weight_rows, conv2d_rows
from .conv_strided import (conv2d_backward_weight_space_to_depth, conv2d_space_to_depth, conv_transpose2d_subpixel,
                           stride_divides_kernel)
from .fastpaths import sum_leading
from .im2col import im2col, pad_hw, window_slice, windows
from .registry import ShapeError, _fmt, check_image, defop, expression_function, float_dtype, named_errors, size_of
from .winograd import conv2d_3x3, conv2d_backward_weight_3x3, conv_transpose2d_3x3

CONV_ALGOS = ("auto", "im2col", "winograd")
# N * C_in * C_out * H_out * W_out from which Winograd is faster. Winograd / im2col time of the
# three kernels together, float32, one thread, batch 1..64, 2..64 channels, 4x4..16x16 (process
# CPU time, alternated): 1.1-2.1 below 2**16, 0.87-1.13 at 2**18, 0.78-0.90 at 2**20 (1.01 with
# 8 channels), 0.67-0.81 at 2**22..2**24; bench/winograd_bench.py has the model sizes.
WINOGRAD_MIN_WORK = 1 << 20
# Input channels of the correlation (the channels an im2col copies k*k times) from which
# Winograd is faster: with few, im2col is a small copy and Winograd's per-tile transforms on
# the other side's many channels dominate. Float32, one thread, batch 64, 28x28, im2col /
# Winograd ms (forward; input gradient; weight gradient) for C_in -> C_out: 1 -> 32 0.48 / 8.66;
# 32 -> 1 input gradient (1 channel in) 0.44 / 8.56; 3 -> 32 1.18 / 2.77; 8 -> 32 3.05 / 3.52;
# 16 -> 32 7.27 / 5.20; 32 -> 8 11.37 / 4.44 (the weight gradient alike: 1.77 / 3.96 at 3,
# 3.71 / 3.73 at 8, 7.77 / 5.26 at 16 input channels).
WINOGRAD_MIN_CHANNELS = 16
# Output pixels (H_out * W_out) from which Winograd is faster than the channel-last im2col of
# conv_rows.py: its 2x2 tiles (plus a junk column per tile row) waste more of a small image.
# Float32, one thread, batch 64, forward + input gradient + weight gradient ms, Winograd /
# channel-last: 32 -> 32 at 4x4 1.29 / 0.66, 16 -> 16 at 8x8 1.23 / 0.92, 64 -> 64 at 7x7
# 7.89 / 6.63, 32 -> 64 at 10x10 6.86 / 7.19, 32 -> 32 at 12x12 5.58 / 5.60, 32 -> 64 at
# 14x14 12.27 / 14.63.
WINOGRAD_MIN_PIXELS = 100
# Input channels from which a strided convolution takes the space-to-depth kernel (_space_to_depth_wins).
SPACE_TO_DEPTH_MIN_CHANNELS = 16


def _algo_from_env():
    algo = os.environ.get("GENGRAPH_CONV_ALGO", "auto").strip().lower() or "auto"
    if algo not in CONV_ALGOS:
        raise ValueError(f"GENGRAPH_CONV_ALGO must be one of {', '.join(CONV_ALGOS)}, not {algo!r}")
    return algo


try:
    CONV_ALGO = _algo_from_env()
except ValueError as _exc:  # read at import: a traceback here would stop every command, convolutions or not
    warnings.warn(f"{_exc}; using auto", stacklevel=2)
    CONV_ALGO = "auto"


def use_winograd(kernel, stride, dilation, groups, dtype, work, channels, pixels):
    """Whether a convolution with these attributes, this much work (N * C_in * C_out * H_out *
    W_out) and output pixels (H_out * W_out) runs on the Winograd kernels (CONV_ALGO,
    WINOGRAD_MIN_WORK, WINOGRAD_MIN_PIXELS and, for the channels an im2col would copy,
    WINOGRAD_MIN_CHANNELS decide)."""
    if CONV_ALGO == "im2col":
        return False
    applies = (tuple(kernel) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) and groups == 1
               and np.dtype(dtype) in (np.float32, np.float64))
    return applies and (CONV_ALGO == "winograd" or (work >= WINOGRAD_MIN_WORK and channels >= WINOGRAD_MIN_CHANNELS
                                                     and pixels >= WINOGRAD_MIN_PIXELS))


def use_rows(kernel, dilation, channels, out_width):
    """Whether the channel-last im2col (conv_rows.py) replaces im2col: its copy runs inner loops
    of kW * C/G values (C/G when dilated) where im2col's run W_out, so it wins when those are at
    least as long. Float32, one thread, batch 64, 3x3 forward ms, im2col / channel-last: 1 -> 32
    at 28x28 0.44 / 1.84, 8 -> 32 3.42 / 3.86, 16 -> 32 7.17 / 6.25, 32 -> 32 at 8x8 1.41 /
    0.84; stride 2: 32 -> 32 at 28x28 4.23 / 2.78, 4x4 kernels 8.58 / 4.88 (space-to-depth
    5.90)."""
    run = channels * (kernel[1] if dilation[1] == 1 else 1)
    return CONV_ALGO == "auto" and run >= out_width


# --- helpers shared with the pools ---------------------------------------------------------
def pair(value, name, minimum=0):
    """An int or a 2-sequence of ints -> (int, int), each >= minimum."""
    if isinstance(value, (bool, np.bool_)):
        raise ShapeError(f"{name} must be an int or a pair of ints, not {value!r}")
    if isinstance(value, (int, np.integer)):
        out = (int(value), int(value))
    else:
        try:
            out = tuple(value)
        except TypeError:
            raise ShapeError(f"{name} must be an int or a pair of ints, not {value!r}") from None
        if len(out) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in out):
            raise ShapeError(f"{name} must be an int or a pair of ints, not {value!r}")
        out = (int(out[0]), int(out[1]))
    if min(out) < minimum:
        raise ShapeError(f"{name} must be >= {minimum}, got {value!r}")
    return out


def _pad(xp, x, padding):
    return pad_hw(xp, x, padding[0], padding[0], padding[1], padding[1])


def _flipped_padding(kernel, padding, dilation):
    """The padding d*(k-1)-p under which a stride-1 convolution and its transposed form (the
    kernel flipped, the channels swapped) compute the same correlation, per axis."""
    return tuple(dilation[a] * (kernel[a] - 1) - padding[a] for a in range(2))


def conv_out_size(size, k, s, p, d):
    """Output length of a convolution along one axis (None stays None)."""
    if size is None:
        return None
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


# --- kernels -----------------------------------------------------------------------------
def _col2im_wins(c_in, c_out, winograd, rows):
    """At stride 1, whether the output-side form (one matmul over the input pixels, then col2im
    adds) runs instead of im2col or Winograd: im2col copies C_in * k * k values a pixel, col2im
    adds C_out * k * k, and Winograd only loses to it when C_out is a few channels. Float32, one
    thread, batch 64, 3x3 at 28x28, im2col / Winograd / col2im ms: 32 -> 1 9.2 / 3.0 / 1.1;
    32 -> 8 11.7 / 4.5 / 4.3; 32 -> 16 13.3 / 5.7 / 9.4; 16 -> 8 4.6 / 2.4 / 3.0; 64 -> 32 at
    14x14 8.4 / 4.3 / 6.7. The channel-last im2col (`rows`, where Winograd does not run) loses
    to it only at fewer output channels: at 8x8, channel-last / col2im 32 -> 8 0.38 / 0.60,
    32 -> 4 0.39 / 0.33, 32 -> 1 0.21 / 0.10."""
    if CONV_ALGO == "im2col":
        return False
    if rows and not winograd:
        return 8 * c_out <= c_in
    return 4 * c_out <= c_in or (c_out < c_in and not winograd)


def _space_to_depth_wins(kernel, stride, dilation, c_in, c_out):
    """Whether a strided convolution (or its weight gradient) runs the space-to-depth kernel:
    it saves im2col's copy of C_in * k * k values a pixel but adds a pass over C_out per tap,
    so it needs C_in >= C_out and enough input channels. Float32, one thread, batch 64, 4x4
    stride 2, im2col / space-to-depth ms (forward, weight gradient): 32 -> 32 at 28x28 8.5 / 6.4,
    8.6 / 6.4; 64 -> 32 at 14x14 4.3 / 3.7, 4.3 / 3.6; 32 -> 64 2.8 / 3.0, 2.8 / 2.9; 1 -> 32 at
    28x28 0.23 / 0.51, 0.29 / 0.61."""
    return (CONV_ALGO != "im2col" and stride_divides_kernel(kernel, stride, dilation)
            and c_in >= max(c_out, SPACE_TO_DEPTH_MIN_CHANNELS))


def _pointwise(kernel, stride, padding):
    """A 1x1 convolution at stride 1 without padding (a U-Net's skip projection): a matmul over
    the channels of each image as it lies in NCHW, no im2col copy and no output transpose
    (64x64 -> 32 at 28x28, batch 64: forward 3.9 -> 2.3 ms, input gradient 2.6 -> 2.1, weight
    gradient 4.3 -> 2.8; one GEMM of that size is 2.5 ms)."""
    return CONV_ALGO != "im2col" and tuple(kernel) == (1, 1) and stride == (1, 1) and padding == (0, 0)


def _pointwise_conv2d(xp, x, w, groups):
    n, c, h, wd = x.shape
    o = w.shape[0]
    y = xp.matmul(w.reshape(groups, o // groups, c // groups), x.reshape(n, groups, c // groups, h * wd))
    return y.reshape(n, o, h, wd)


def _pointwise_backward_weight(xp, gy, x, groups):
    n, c, h, wd = x.shape
    o = gy.shape[1]
    per_image = xp.matmul(gy.reshape(n, groups, o // groups, h * wd),
                          x.reshape(n, groups, c // groups, h * wd).transpose(0, 1, 3, 2))  # (N, G, O/G, C/G)
    return sum_leading(xp, per_image, 1).reshape(o, c // groups, 1, 1)


def _conv2d_forward(xp, x, w, stride, padding, dilation, groups):
    n, c = x.shape[:2]
    o, cg, kh, kw = w.shape
    if _pointwise((kh, kw), stride, padding):
        return _pointwise_conv2d(xp, x, w, groups)
    ho = conv_out_size(x.shape[2], kh, stride[0], padding[0], dilation[0])
    wo = conv_out_size(x.shape[3], kw, stride[1], padding[1], dilation[1])
    dtype = np.result_type(x.dtype, w.dtype)
    wino = use_winograd((kh, kw), stride, dilation, groups, dtype, n * c * o * ho * wo, c, ho * wo)
    rows = use_rows((kh, kw), dilation, cg, wo)
    pad_t = _flipped_padding((kh, kw), padding, dilation)  # the transposed form's
    if stride == (1, 1) and min(pad_t) >= 0 and _col2im_wins(c, o, wino, rows):
        return _col2im_transpose(xp, x, _flip_swap(xp, w, groups), stride, pad_t, (0, 0), dilation, groups)
    if wino:
        return conv2d_3x3(xp, x, w, padding)
    if rows:
        return conv2d_rows(xp, x, w, stride, padding, dilation, groups, (ho, wo))
    if _space_to_depth_wins((kh, kw), stride, dilation, c, o):
        return conv2d_space_to_depth(xp, x, w, stride, padding, groups, (ho, wo))
    cols = im2col(xp, _pad(xp, x, padding), (kh, kw), stride, dilation, (ho, wo), groups)  # the one copy
    out = xp.matmul(w.reshape(groups, o // groups, cg * kh * kw), cols)  # (G, O/G, N * H_out * W_out)
    return out.reshape(groups, o // groups, n, ho, wo).transpose(2, 0, 1, 3, 4).reshape(n, o, ho, wo)


def _conv_transpose2d_forward(xp, x, w, stride, padding, output_padding, dilation, groups):
    n, ci, h, wd = x.shape
    _, cog, kh, kw = w.shape
    if _pointwise((kh, kw), stride, padding) and output_padding == (0, 0):
        return _pointwise_conv2d(xp, x, _flip_swap(xp, w, groups), groups)  # (at 1x1 the swap alone)
    pad = _flipped_padding((kh, kw), padding, dilation)
    ho, wo = (conv_out_size(s, k, 1, p, d) for s, k, p, d in zip((h, wd), (kh, kw), pad, dilation))  # as a conv
    wino = output_padding == (0, 0) and use_winograd((kh, kw), stride, dilation, groups,
                                                     np.result_type(x.dtype, w.dtype), n * ci * cog * ho * wo, ci, ho * wo)
    as_conv = stride == (1, 1) and output_padding == (0, 0) and min(pad) >= 0
    rows = as_conv and use_rows((kh, kw), dilation, ci // groups, wo)
    if as_conv and _col2im_wins(ci, cog * groups, wino, rows):  # into a few channels: col2im's adds are few
        return _col2im_transpose(xp, x, w, stride, padding, output_padding, dilation, groups)
    if wino:
        return conv_transpose2d_3x3(xp, x, w, padding)
    if as_conv:
        # stride 1 (conv2d's input gradient, ...): a conv2d with the flipped kernel, channels
        # swapped per group, and padding d*(k-1)-p -- im2col + one matmul, no col2im adds
        return _conv2d_forward(xp, x, _flip_swap(xp, w, groups), (1, 1), pad, dilation, groups)
    if CONV_ALGO != "im2col" and stride_divides_kernel((kh, kw), stride, dilation):
        return conv_transpose2d_subpixel(xp, x, w, stride, padding, output_padding, groups)
    return _col2im_transpose(xp, x, w, stride, padding, output_padding, dilation, groups)


def _col2im_transpose(xp, x, w, stride, padding, output_padding, dilation, groups):
    """The general transposed convolution: one matmul (every tap of every input pixel), then
    col2im -- one strided add per kernel tap into the (uncropped) output -- and the crop."""
    n, ci, h, wd = x.shape
    _, cog, kh, kw = w.shape
    cig = ci // groups
    wm = w.reshape(groups, cig, cog * kh * kw).transpose(0, 2, 1)  # (G, C_out/G * kH * kW, C_in/G)
    xm = x.reshape(n, groups, cig, h * wd).transpose(1, 2, 0, 3).reshape(groups, cig, n * h * wd)
    cols = xp.matmul(wm, xm).reshape(groups, cog, kh, kw, n, h, wd)
    hp = (h - 1) * stride[0] + dilation[0] * (kh - 1) + 1 + output_padding[0]
    wp = (wd - 1) * stride[1] + dilation[1] * (kw - 1) + 1 + output_padding[1]
    buf = xp.zeros((n, groups, cog, hp, wp), dtype=cols.dtype)
    view = buf.transpose(1, 2, 0, 3, 4)  # (G, C_out/G, N, Hp, Wp), a view of buf
    for i in range(kh):  # col2im: one strided add per kernel tap
        for j in range(kw):
            index = (slice(None),) + window_slice(i, j, stride, dilation, (h, wd))
            view[index] += cols[:, :, i, j]
    ph, pw = padding
    out = buf.reshape(n, groups * cog, hp, wp)
    if ph or pw:
        out = xp.ascontiguousarray(out[:, :, ph:hp - ph, pw:wp - pw])
    return out


def _flip_swap(xp, w, groups):
    """A conv2d weight (O, C/G, kH, kW) as the transposed convolution's (C, O/G, kH, kW) that
    computes the same correlation at stride 1 (and back): kernel flipped, channels swapped per group."""
    a, bg, kh, kw = w.shape
    wf = w.reshape(groups, a // groups, bg, kh, kw)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
    return xp.ascontiguousarray(wf).reshape(groups * bg, a // groups, kh, kw)


def _conv2d_backward_weight_forward(xp, gy, x, kernel, stride, padding, dilation, groups):
    n, c = x.shape[:2]
    o, ho, wo = gy.shape[1:]
    kh, kw = kernel
    cg, og = c // groups, o // groups
    if n == 0:  # no image: the chunked kernels below would sum nothing
        return xp.zeros((o, cg, kh, kw), dtype=np.result_type(gy.dtype, x.dtype))
    if _pointwise(kernel, stride, padding) and x.shape[2:] == gy.shape[2:]:
        return _pointwise_backward_weight(xp, gy, x, groups)
    wino = use_winograd(kernel, stride, dilation, groups, np.result_type(gy.dtype, x.dtype), n * c * o * ho * wo, c,
                        ho * wo)
    rows = use_rows(kernel, dilation, cg, wo)
    if stride == (1, 1) and CONV_ALGO != "im2col" and o < c:
        per_image = og * kh * kw <= 16
        # channel-major, it only ties with Winograd (32 -> 1: 4.1 / 4.4 ms; im2col 9.0) and loses
        # to the channel-last im2col (32 -> 8 at 8x8: 0.65 / 0.42 ms)
        if per_image or not (wino or rows):
            return _backward_weight_gy_windows(xp, gy, x, kernel, padding, dilation, groups, per_image)
    if wino:
        return conv2d_backward_weight_3x3(xp, gy, x, padding)
    if rows:
        return conv2d_backward_weight_rows(xp, gy, x, kernel, stride, padding, dilation, groups)
    if _space_to_depth_wins(kernel, stride, dilation, c, o):
        return conv2d_backward_weight_space_to_depth(xp, gy, x, kernel, stride, padding, groups)
    # the forward's im2col matrix; BLAS reads it transposed
    cols = im2col(xp, _pad(xp, x, padding), kernel, stride, dilation, (ho, wo), groups)
    gm = gy.reshape(n, groups, og, ho * wo).transpose(1, 2, 0, 3).reshape(groups, og, n * ho * wo)
    return xp.matmul(gm, cols.transpose(0, 2, 1)).reshape(o, cg, kh, kw)


def _backward_weight_gy_windows(xp, gy, x, kernel, padding, dilation, groups, per_image):
    """The stride-1 weight gradient with the windows taken of gy instead of x (for gy with
    fewer channels, the smaller copy): dw[o, c, i, j] = sum over the padded input's pixels
    (u, v) of xpad[c, u, v] * gy[o, u - i*dH, v - j*dW], gy padded by d*(k-1) on each side
    and read through flipped windows. per_image: one small matmul per image on x as it lies
    (NCHW), summed over the batch -- for a gy of a channel or two, where even the channel-major
    copy of x costs more (32 -> 1 at 28x28: 1.3 ms, Winograd 2.8, channel-major 4.1); else x
    goes channel-major and one matmul does all images."""
    n, c = x.shape[:2]
    o, ho, wo = gy.shape[1:]
    kh, kw = kernel
    cg, og = c // groups, o // groups
    eh, ew = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
    # the padded input's pixels some window reads: x may extend past them (the weight gradient
    # of a transposed convolution with output padding), and those rows and columns are not read
    hp, wp = ho + eh, wo + ew
    xpad = _pad(xp, x, padding)[:, :, :hp, :wp]
    gyp = pad_hw(xp, gy, eh, eh, ew, ew)
    if per_image:
        win = windows(xp, gyp, kernel, (1, 1), dilation, (hp, wp))
        cols = xp.ascontiguousarray(win.reshape(n, groups, og * kh * kw, hp * wp).transpose(0, 1, 3, 2))
        dw = sum_leading(xp, xp.matmul(xpad.reshape(n, groups, cg, hp * wp), cols), 1)  # (G, C/G, O/G * k * k)
        dw = dw.reshape(groups, cg, og, kh, kw).transpose(0, 2, 1, 3, 4)
    else:
        cols = im2col(xp, gyp, kernel, (1, 1), dilation, (hp, wp), groups)  # (G, O/G * k * k, N * Hp * Wp)
        xm = xpad.reshape(n, groups, cg, hp * wp).transpose(1, 2, 0, 3).reshape(groups, cg, n * hp * wp)
        dw = xp.matmul(cols, xm.transpose(0, 2, 1))  # (G, O/G * k * k, C/G)
        dw = dw.reshape(groups, og, kh, kw, cg).transpose(0, 1, 4, 2, 3)
    return xp.ascontiguousarray(dw[..., ::-1, ::-1]).reshape(o, cg, kh, kw)  # taps were read flipped


# --- shape rules -------------------------------------------------------------------------
def _check_weight(w):
    if w.ndim != 4:
        raise ShapeError(f"weight must be 4-D (OIHW), got shape {_fmt(w.shape)}")
    if min(w.shape[2:]) < 1:
        raise ShapeError(f"weight {_fmt(w.shape)}: the kernel size must be at least 1x1")


def _check_spatial(h, k, s, p, d, axis):
    span = d * (k - 1) + 1
    if h + 2 * p < span:
        raise ShapeError(f"kernel larger than padded input along {axis}: kernel {k} with dilation {d} "
                         f"spans {span}, padded input is {h} + 2*{p} = {h + 2 * p}")
    return conv_out_size(h, k, s, p, d)


def _conv2d_shape(x, w, stride, padding, dilation, groups):
    check_image("input", x)
    _check_weight(w)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    if groups < 1:
        raise ShapeError(f"groups must be >= 1, got {groups}")
    if c % groups:
        raise ShapeError(f"groups={groups} does not divide the {c} input channels")
    if o % groups:
        raise ShapeError(f"groups={groups} does not divide the {o} output channels of the weight")
    if cg * groups != c:
        raise ShapeError(f"channel mismatch: input has {c} channels, weight {_fmt(w.shape)} with groups={groups} "
                         f"expects {cg * groups}")
    ho = _check_spatial(h, kh, stride[0], padding[0], dilation[0], "height")
    wo = _check_spatial(wd, kw, stride[1], padding[1], dilation[1], "width")
    return (n, o, ho, wo), float_dtype(x, w)


def transpose_out_size(size, k, s, p, op, d):
    if size is None:
        return None
    return (size - 1) * s - 2 * p + d * (k - 1) + op + 1


def _conv_transpose2d_shape(x, w, stride, padding, output_padding, dilation, groups):
    check_image("input", x)
    _check_weight(w)
    n, c, h, wd = x.shape
    ci, cog, kh, kw = w.shape
    if groups < 1:
        raise ShapeError(f"groups must be >= 1, got {groups}")
    if ci % groups:
        raise ShapeError(f"groups={groups} does not divide the weight's {ci} input channels")
    if c != ci:
        raise ShapeError(f"channel mismatch: input has {c} channels, weight {_fmt(w.shape)} expects {ci} "
                         "(conv_transpose2d weights are (C_in, C_out/groups, kH, kW))")
    for a in range(2):
        if not output_padding[a] < max(stride[a], dilation[a]):
            raise ShapeError(f"output_padding {output_padding} must be smaller than stride or dilation "
                             f"({stride}, {dilation})")
    out = []
    for a, size in enumerate((h, wd)):
        o = transpose_out_size(size, (kh, kw)[a], stride[a], padding[a], output_padding[a], dilation[a])
        if o < 1:
            raise ShapeError(f"padding {padding} leaves no output ({'height' if a == 0 else 'width'} {o})")
        out.append(o)
    return (n, cog * groups, out[0], out[1]), float_dtype(x, w)


def _backward_weight_shape(gy, x, kernel, stride, padding, dilation, groups):
    check_image("gradient", gy)
    check_image("input", x)
    c, o = x.shape[1], gy.shape[1]
    if c % groups or o % groups:
        raise ShapeError(f"groups={groups} must divide the channels ({c} in, {o} out)")
    if None not in (gy.shape[0], x.shape[0]) and gy.shape[0] != x.shape[0]:
        raise ShapeError(f"gradient {_fmt(gy.shape)} and input {_fmt(x.shape)} have different batch sizes")
    for a in range(2):
        # the input the convolution reads to give gy's size, and at most max(stride, dilation) - 1
        # more (conv2d's own remainder, or conv_transpose2d's output_padding, < max(stride, dilation))
        need = (gy.shape[2 + a] - 1) * stride[a] + dilation[a] * (kernel[a] - 1) + 1 - 2 * padding[a]
        if not need <= x.shape[2 + a] < need + max(stride[a], dilation[a]):
            raise ShapeError(f"gradient {_fmt(gy.shape)} does not match the convolution of {_fmt(x.shape)} "
                             f"(kernel {tuple(kernel)}, stride {tuple(stride)}, padding {tuple(padding)}, "
                             f"dilation {tuple(dilation)})")
    return (o, c // groups) + tuple(kernel), float_dtype(gy, x)


# --- FLOPs (multiply-adds counted twice) ---------------------------------------------------
def _conv2d_flops(out, x, w, **attrs):
    return 2 * size_of(out) * size_of(w[1:])


def _conv_transpose2d_flops(out, x, w, **attrs):
    return 2 * size_of(x) * size_of(w[1:])


def _backward_weight_flops(out, gy, x, **attrs):
    return 2 * size_of(gy) * size_of(out[1:])


# --- VJPs (graph code over the three ops) -------------------------------------------------
def _output_padding(target, g, kernel, stride, padding, dilation):
    """output_padding for which conv_transpose2d of g (shaped like a conv output) has the
    spatial size of `target` (the conv input): the rows/columns the conv never read."""
    out = []
    for a in range(2):
        base = transpose_out_size(g.shape[2 + a], kernel[a], stride[a], padding[a], 0, dilation[a])
        out.append(target.shape[2 + a] - base)
    return tuple(out)


def _conv2d_vjp_x(g, y, x, w, stride, padding, dilation, groups):
    op = _output_padding(x, g, w.shape[2:], stride, padding, dilation)
    return _conv_transpose2d(g, w, stride=stride, padding=padding, output_padding=op, dilation=dilation,
                             groups=groups)


def _conv2d_vjp_w(g, y, x, w, stride, padding, dilation, groups):
    return conv2d_backward_weight(g, x, kernel=tuple(w.shape[2:]), stride=stride, padding=padding,
                                  dilation=dilation, groups=groups)


def _crop_like(z, like):
    """z[:, :, :H, :W] with like's H, W: with output_padding >= stride (allowed when dilation
    is larger) a conv of conv_transpose2d's output is longer than its input."""
    if tuple(z.shape[2:]) == tuple(like.shape[2:]):
        return z
    return z[:, :, :like.shape[2], :like.shape[3]]


def _convt_vjp_x(g, y, x, w, stride, padding, output_padding, dilation, groups):
    return _crop_like(_conv2d(g, w, stride=stride, padding=padding, dilation=dilation, groups=groups), x)


def _convt_vjp_w(g, y, x, w, stride, padding, output_padding, dilation, groups):
    # y = conv_transpose2d(x, w) is the input-adjoint of conv2d(., w): <g, y> = <conv2d(g, w), x>
    return conv2d_backward_weight(x, g, kernel=tuple(w.shape[2:]), stride=stride, padding=padding,
                                  dilation=dilation, groups=groups)


def _bw_vjp_gy(gg, y, gy, x, kernel, stride, padding, dilation, groups):
    return _crop_like(_conv2d(x, gg, stride=stride, padding=padding, dilation=dilation, groups=groups), gy)


def _bw_vjp_x(gg, y, gy, x, kernel, stride, padding, dilation, groups):
    op = _output_padding(x, gy, kernel, stride, padding, dilation)
    return _conv_transpose2d(gy, gg, stride=stride, padding=padding, output_padding=op, dilation=dilation,
                             groups=groups)


_conv2d = defop("conv2d", _conv2d_forward, _conv2d_shape, (_conv2d_vjp_x, _conv2d_vjp_w), flops=_conv2d_flops,
                float_inputs=True, doc="2-D convolution (cross-correlation), NCHW input, OIHW weight")
_conv_transpose2d = defop("conv_transpose2d", _conv_transpose2d_forward, _conv_transpose2d_shape,
                          (_convt_vjp_x, _convt_vjp_w), flops=_conv_transpose2d_flops,
                          float_inputs=True, doc="2-D transposed convolution, weight (C_in, C_out/groups, kH, kW)")
_conv2d_backward_weight = defop(
    "conv2d_backward_weight", _conv2d_backward_weight_forward, _backward_weight_shape, (_bw_vjp_gy, _bw_vjp_x),
    flops=_backward_weight_flops, float_inputs=True,
    doc="the weight gradient of conv2d: correlation of the input x with the output gradient gy")


@named_errors
def conv2d_backward_weight(gy, x, kernel, stride=1, padding=0, dilation=1, groups=1):
    """The weight gradient of conv2d(x, w, stride, padding, dilation, groups) with w's kernel
    size `kernel` (an int or a pair), given the output gradient gy: (C_out, C_in/groups, kH, kW)."""
    return _conv2d_backward_weight(gy, x, kernel=pair(kernel, "kernel", 1), stride=pair(stride, "stride", 1),
                                   padding=pair(padding, "padding"), dilation=pair(dilation, "dilation", 1),
                                   groups=_int(groups, "groups"))


# --- public builders (PyTorch's argument names) --------------------------------------------
@expression_function
@named_errors
def conv2d(x, w, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d without bias: x (N, C_in, H, W), w (C_out, C_in/groups, kH, kW).
    padding: p, (pH, pW), "valid" (none) or "same" (stride 1: output sized like the input)."""
    stride, dilation = pair(stride, "stride", 1), pair(dilation, "dilation", 1)
    crop = (0, 0)
    if isinstance(padding, str):
        padding, crop = string_padding(padding, w.shape[2:], stride, dilation)
    y = _conv2d(x, w, stride=stride, padding=pair(padding, "padding", 0), dilation=dilation,
                groups=_int(groups, "groups"))
    return y[:, :, crop[0]:, crop[1]:] if any(crop) else y


def string_padding(padding, kernel, stride, dilation):
    """(padding per side, rows / columns to crop at the top / left) of PyTorch's padding="valid"
    or "same". "same" pads d (k - 1) in all, the odd one at the bottom / right (as PyTorch): an
    even span is padded alike on both sides and its extra first row / column cropped."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding != "same":
        raise ShapeError(f'padding must be an int, a pair of ints, "same" or "valid", not {padding!r}')
    if stride != (1, 1):
        raise ShapeError(f'padding="same" needs stride 1, not {stride} (PyTorch\'s rule: pad explicitly '
                         f"for a strided convolution)")
    if None in tuple(kernel):
        raise ShapeError('padding="same" needs the kernel size known when the graph is built')
    total = tuple(d * (k - 1) for d, k in zip(dilation, kernel))
    return tuple((t + 1) // 2 for t in total), tuple(t % 2 for t in total)


@expression_function
@named_errors
def conv_transpose2d(x, w, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """torch.nn.functional.conv_transpose2d without bias: x (N, C_in, H, W), w (C_in, C_out/groups, kH, kW)."""
    return _conv_transpose2d(x, w, stride=pair(stride, "stride", 1), padding=pair(padding, "padding", 0),
                             output_padding=pair(output_padding, "output_padding", 0),
                             dilation=pair(dilation, "dilation", 1), groups=_int(groups, "groups"))


def _int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ShapeError(f"{name} must be a positive int, not {value!r}")
    return int(value)
