"""Window views and the im2col matrix the convolution and pooling kernels share.

A window view is a strided view of an NCHW array (no copy); the im2col matrix is the one
copy a convolution makes of it, laid out for a single batched BLAS product per group.
Only functions NumPy and CuPy share are used.
"""

from __future__ import annotations

import importlib

import numpy as np

# Working set of one CPU chunk of images (the Winograd kernels' transformed tiles and GEMM
# output, the channel-last kernels' window matrix and output), bytes. Measured on the Winograd
# forward, batch 64, one thread, chunks of k images: 32->64 at 28x28 (1.3 MB an image) 14.9 /
# 13.9 / 13.8 / 19.5 ms for k = 1 / 2 / 4 / 8; at 14x14 (0.34 MB) 6.1 / 4.8 / 4.1 / 3.7 / 3.7
# for k = 1..16; 48->32 at 8x8 (0.1 MB) 3.9 / 2.7 / 1.9 / 1.5 / 1.5: about 3 MB (the CPU's L2 +
# part of L3).
CHUNK_BYTES = 3 << 20


def image_chunks(xp, n, bytes_per_image):
    """Image ranges [a, b) covering 0..n, about CHUNK_BYTES of working set each, so that a
    chunk's intermediates stay in cache; one range off the CPU (CuPy), where each call is a launch."""
    if xp is not np:
        return [(0, n)]
    per = max(1, int(CHUNK_BYTES // max(bytes_per_image, 1)))
    return [(a, min(n, a + per)) for a in range(0, n, per)]


def as_strided(xp, x, shape, strides):
    """The backend's as_strided (numpy.lib.stride_tricks or cupy.lib.stride_tricks): a view, no copy."""
    return importlib.import_module(xp.__name__ + ".lib.stride_tricks").as_strided(x, shape=shape, strides=strides)


def windows(xp, x, kernel, stride, dilation, out_hw):
    """Strided view (N, C, kH, kW, H_out, W_out) of x (N, C, H, W): element (n, c, i, j, h, w)
    is x[n, c, h*sH + i*dH, w*sW + j*dW]. No copy."""
    n, c = x.shape[:2]
    sn, sc, sh, sw = x.strides
    return as_strided(xp, x, (n, c, kernel[0], kernel[1], out_hw[0], out_hw[1]),
                      (sn, sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1]))


def window_slice(i, j, stride, dilation, out_hw):
    """Index of the (N, C, H_out, W_out) strided slice read by kernel tap (i, j)."""
    hi, wj = i * dilation[0], j * dilation[1]
    return (slice(None), slice(None), slice(hi, hi + stride[0] * (out_hw[0] - 1) + 1, stride[0]),
            slice(wj, wj + stride[1] * (out_hw[1] - 1) + 1, stride[1]))


def pad_hw(xp, x, top, bottom, left, right):
    """x (N, C, H, W) with zero rows and columns added around its image axes."""
    if not (top or bottom or left or right):
        return x
    return xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def im2col(xp, x, kernel, stride, dilation, out_hw, groups):
    """The (G, C/G * kH * kW, N * H_out * W_out) matrix of x's windows (x already padded):
    column (n, h, w) of group g holds the window of output pixel (h, w) of image n."""
    n, c = x.shape[:2]
    ho, wo = out_hw
    cols = windows(xp, x, kernel, stride, dilation, out_hw)
    return cols.reshape(n, groups, c // groups, kernel[0], kernel[1], ho, wo).transpose(1, 2, 3, 4, 0, 5, 6).reshape(
        groups, c // groups * kernel[0] * kernel[1], n * ho * wo)
