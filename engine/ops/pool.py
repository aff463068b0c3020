"""Pooling and upsampling over NCHW activations (PyTorch's semantics, no padding).

Every kernel loops over the kH*kW taps of the window, each tap one strided slice of the
whole batch (no copy): forwards combine the slices, adjoints add into them. Max pooling
routes the gradient to one winner per window (the first maximum in row-major window
order, as PyTorch does on ties):

    max_pool2d(x)                dx: max_pool2d_backward(g, x)
    max_pool2d_backward(g, x)    dg: max_pool2d_gather(gg, x)   (x: zero almost everywhere)
    max_pool2d_gather(g, x)      dg: max_pool2d_backward(gg, x)
    avg_pool2d(x)                dx: avg_pool2d_backward(g)     and back again
"""

from __future__ import annotations

import numpy as np

from .conv import conv_out_size, pair
from .im2col import window_slice
from .reduce import sum
from .registry import (ZERO, ShapeError, check_image, defop, either_keyword, expression_function, float_dtype,
                       named_errors, size_of)
from .shape import reshape

_ONE = (1, 1)


def _out_hw(x, kernel, stride):
    return tuple(conv_out_size(x.shape[2 + a], kernel[a], stride[a], 0, 1) for a in range(2))


def _pool_shape(x, kernel, stride):
    check_image("input", x)
    for a in range(2):
        size = x.shape[2 + a]
        if size < kernel[a]:
            raise ShapeError(f"kernel {kernel} larger than the input's {'height' if a == 0 else 'width'} {size}")
    return x.shape[:2] + _out_hw(x, kernel, stride), float_dtype(x)


def _taps(x, kernel, stride):
    """(tap number i*kW + j, the (N, C, H_out, W_out) strided slice of x that tap reads)."""
    out_hw = _out_hw(x, kernel, stride)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            yield i * kernel[1] + j, x[window_slice(i, j, stride, _ONE, out_hw)]


def _max_and_argmax(xp, x, kernel, stride):
    """Window maxima and the tap of each window's first maximum (one pass of kH*kW strided
    slices: several times faster than reducing a window view over two strided axes). A NaN is
    its window's maximum, as in np.maximum and PyTorch, and as in PyTorch (whose window loop
    takes every NaN it meets) the window's last NaN is its tap."""
    taps = _taps(x, kernel, stride)
    _, best = next(taps)
    best = best.copy()
    idx = xp.zeros(best.shape, dtype=xp.int32)
    for t, v in taps:
        better = v > best  # strict: ties keep the earlier tap
        xp.maximum(best, v, out=best)
        idx += better * (t - idx)  # branch-free: masked writes are several times slower
    nan = best != best
    # rare on NumPy: one more pass over the taps, first to last, so the last NaN wins; on CuPy the
    # pass always runs (asking whether there is a NaN would wait for the device every step)
    if xp is not np or nan.any():
        for t, v in _taps(x, kernel, stride):
            idx = xp.where(nan & (v != v), xp.int32(t), idx)
    return best, idx


# --- max pooling -----------------------------------------------------------------------------
def _max_forward(xp, x, kernel, stride):
    taps = _taps(x, kernel, stride)
    out = next(taps)[1].copy()
    for _, v in taps:
        xp.maximum(out, v, out=out)
    return out


def _max_backward_forward(xp, g, x, kernel, stride):
    idx = _max_and_argmax(xp, x, kernel, stride)[1]
    dx = xp.zeros(x.shape, dtype=g.dtype)
    for t, view in _taps(dx, kernel, stride):
        view += g * (idx == t)  # branch-free (xp.where is ~3x slower on random masks)
    return dx


def _max_gather_forward(xp, g, x, kernel, stride):
    idx = _max_and_argmax(xp, x, kernel, stride)[1]
    out = xp.zeros(idx.shape, dtype=g.dtype)
    for t, view in _taps(g, kernel, stride):
        out += view * (idx == t)
    return out


def _like_x(g, x, kernel, stride):
    return x.shape, float_dtype(g)


def _like_pool(g, x, kernel, stride):
    return _pool_shape(x, kernel, stride)[0], float_dtype(g)


_max_pool2d = defop("max_pool2d", _max_forward, _pool_shape,
                    (lambda g, y, x, kernel, stride: max_pool2d_backward(g, x, kernel=kernel, stride=stride),),
                    flops=lambda out, x, kernel, stride: size_of(out) * kernel[0] * kernel[1],
                    doc="maximum over kH x kW windows")
max_pool2d_backward = defop(
    "max_pool2d_backward", _max_backward_forward, _like_x,
    (lambda gg, y, g, x, kernel, stride: max_pool2d_gather(gg, x, kernel=kernel, stride=stride), ZERO),
    doc="g scattered to each window's (first) maximum of x: the adjoint of max_pool2d")
max_pool2d_gather = defop(
    "max_pool2d_gather", _max_gather_forward, _like_pool,
    (lambda gg, y, g, x, kernel, stride: max_pool2d_backward(gg, x, kernel=kernel, stride=stride), ZERO),
    doc="g read at each window's (first) maximum of x: the adjoint of max_pool2d_backward")


# --- average pooling -------------------------------------------------------------------------
def _avg_forward(xp, x, kernel, stride):
    taps = _taps(x, kernel, stride)
    out = next(taps)[1].copy()
    for _, v in taps:
        out += v
    out *= x.dtype.type(1.0 / (kernel[0] * kernel[1]))
    return out


def _avg_backward_forward(xp, g, kernel, stride, in_hw):
    dx = xp.zeros(g.shape[:2] + tuple(in_hw), dtype=g.dtype)
    share = g * g.dtype.type(1.0 / (kernel[0] * kernel[1]))
    for _, view in _taps(dx, kernel, stride):
        view += share
    return dx


_avg_pool2d = defop("avg_pool2d", _avg_forward, _pool_shape,
                    (lambda g, y, x, kernel, stride: avg_pool2d_backward(g, kernel=kernel, stride=stride,
                                                                         in_hw=tuple(x.shape[2:])),),
                    flops=lambda out, x, kernel, stride: size_of(out) * kernel[0] * kernel[1],
                    doc="mean over kH x kW windows")
avg_pool2d_backward = defop(
    "avg_pool2d_backward", _avg_backward_forward,
    lambda g, kernel, stride, in_hw: (g.shape[:2] + tuple(in_hw), float_dtype(g)),
    (lambda gg, y, g, kernel, stride, in_hw: _avg_pool2d(gg, kernel=kernel, stride=stride),),
    doc="g spread evenly over each window: the adjoint of avg_pool2d")


@expression_function
@named_errors
def max_pool2d(x, kernel=None, stride=None, *, kernel_size=None):
    """torch.nn.functional.max_pool2d(x, kernel, stride) without padding; stride defaults to kernel.
    kernel_size= (PyTorch's keyword) is kernel= too."""
    kernel = pair(either_keyword(kernel, kernel_size, "kernel", "kernel_size"), "kernel", 1)
    return _max_pool2d(x, kernel=kernel, stride=kernel if stride is None else pair(stride, "stride", 1))


@expression_function
@named_errors
def avg_pool2d(x, kernel=None, stride=None, *, kernel_size=None):
    """torch.nn.functional.avg_pool2d(x, kernel, stride) without padding; stride defaults to kernel.
    kernel_size= (PyTorch's keyword) is kernel= too."""
    kernel = pair(either_keyword(kernel, kernel_size, "kernel", "kernel_size"), "kernel", 1)
    return _avg_pool2d(x, kernel=kernel, stride=kernel if stride is None else pair(stride, "stride", 1))


# --- nearest-neighbour upsampling ------------------------------------------------------------
def _upsample_forward(xp, x, scale):
    n, c, h, w = x.shape
    sh, sw = scale
    out = xp.empty((n, c, h, sh, w, sw), dtype=x.dtype)  # owned and writable (a reshaped broadcast may be a view)
    # x into the first output row of each block, one column phase at a time, then that row
    # copied whole: 3x faster than one broadcast assignment, whose inner loop is `scale` long
    # (64x64x14x14 by 2: 3.3 -> 1.1 ms)
    for j in range(sw):
        out[:, :, :, 0, :, j] = x
    for i in range(1, sh):
        out[:, :, :, i] = out[:, :, :, 0]
    return out.reshape(n, c, h * sh, w * sw)


def _upsample_shape(x, scale):
    check_image("input", x)
    n, c, h, w = x.shape
    return (n, c, h * scale[0], w * scale[1]), float_dtype(x)


def _upsample_vjp(g, y, x, scale):
    n, c, h, w = x.shape
    return sum(reshape(g, (None, c, h, scale[0], w, scale[1])), axis=(3, 5))


_upsample = defop("upsample_nearest2d", _upsample_forward, _upsample_shape, (_upsample_vjp,),
                  doc="each pixel repeated scale x scale times")


@expression_function
@named_errors
def upsample_nearest2d(x, scale=None, *, scale_factor=None):
    """torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest") for integer scales;
    scale_factor= (PyTorch's keyword) is scale= too."""
    return _upsample(x, scale=pair(either_keyword(scale, scale_factor, "scale", "scale_factor"), "scale", 1))


# static (non-graph) arguments, for the expression language (the keyword-only aliases by keyword)
max_pool2d.static_args = avg_pool2d.static_args = ("kernel", "stride", "kernel_size")
max_pool2d.aliases = avg_pool2d.aliases = ("kernel_size",)  # another name for kernel
upsample_nearest2d.static_args = ("scale", "scale_factor")
upsample_nearest2d.aliases = ("scale_factor",)
