"""Channel-last im2col kernels: a convolution and its weight gradient over a matrix with one
row per output pixel.

im2col (engine/ops/im2col.py) copies the NCHW windows into a (C * kH * kW, pixels) matrix; the
copy's inner loops run along an output row, W_out values, so on small images most of the
time goes into loop overhead (64 x 32 x 4 x 4, 3x3: 0.28 ms to copy, 0.17 ms of GEMM). Here x
is first copied, zero-padded, to channel-last (N, H, W, C) -- one copy of the input -- whose
windows are rows of kW * C/G contiguous values; the (pixels, kH * kW * C/G) matrix of them is
a copy with long inner loops (0.04 ms there), and BLAS multiplies it by the weight as
(kH * kW * C/G, C_out/G). The batch runs in chunks of images so that each chunk's matrix and
output stay in cache (im2col.CHUNK_BYTES, as winograd.py's do); on other backends (CuPy) one
chunk. conv.py decides when these kernels run (`use_rows`); only functions NumPy and CuPy
share are used.
"""

from __future__ import annotations

import numpy as np

from .im2col import as_strided, image_chunks


def pixel_rows(xp, x, kernel, stride, dilation, padding, out_hw, groups):
    """The (G, N * H_out * W_out, kH * kW * C/G) matrix of x's windows (x: N, C, H, W; padding
    >= 0 per side), row (n, h, w) holding the window of output pixel (h, w) of image n."""
    n, c, h, w = x.shape
    (ph, pw), (ho, wo), (kh, kw) = padding, out_hw, kernel
    cg = c // groups
    xh = xp.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype)
    xh[:, ph:ph + h, pw:pw + w, :] = x.transpose(0, 2, 3, 1)
    sn, sh, sw, sc = xh.strides
    win = as_strided(xp, xh, (groups, n, ho, wo, kh, kw, cg),
                     (cg * sc, sn, sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1], sc))
    return win.reshape(groups, n * ho * wo, kh * kw * cg)


def _chunks(xp, n, out_hw, kernel, cg, og, groups, dtype):
    """image_chunks sized by an image's window matrix and output (the working set of a chunk)."""
    per_image = out_hw[0] * out_hw[1] * (kernel[0] * kernel[1] * cg + og) * groups * np.dtype(dtype).itemsize
    return image_chunks(xp, n, per_image)


def conv2d_rows(xp, x, w, stride, padding, dilation, groups, out_hw):
    """conv2d of x (N, C, H, W) with w (O, C/G, kH, kW), output (N, O, H_out, W_out)."""
    n = x.shape[0]
    o, cg, kh, kw = w.shape
    og, (ho, wo) = o // groups, out_hw
    dtype = np.result_type(x.dtype, w.dtype)
    wm = w.reshape(groups, og, cg, kh, kw).transpose(0, 3, 4, 2, 1).reshape(groups, kh * kw * cg, og)
    y = xp.empty((n, o, ho, wo), dtype=dtype)
    for a, b in _chunks(xp, n, out_hw, (kh, kw), cg, og, groups, dtype):
        out = xp.matmul(pixel_rows(xp, x[a:b], (kh, kw), stride, dilation, padding, out_hw, groups), wm)
        y[a:b] = out.reshape(groups, b - a, ho, wo, og).transpose(1, 0, 4, 2, 3).reshape(b - a, o, ho, wo)
    return y


def conv2d_backward_weight_rows(xp, gy, x, kernel, stride, padding, dilation, groups):
    """The weight gradient (O, C/G, kH, kW) of conv2d(x, w) given its output gradient gy (N, O,
    H_out, W_out): the window matrix, transposed, times gy as (pixels, O/G), summed over chunks."""
    n, c = x.shape[:2]
    o, ho, wo = gy.shape[1:]
    (kh, kw), cg, og = kernel, c // groups, o // groups
    dtype = np.result_type(gy.dtype, x.dtype)
    dw = None
    for a, b in _chunks(xp, n, (ho, wo), kernel, cg, og, groups, dtype):
        rows = pixel_rows(xp, x[a:b], kernel, stride, dilation, padding, (ho, wo), groups)
        gm = gy[a:b].reshape(b - a, groups, og, ho, wo).transpose(1, 0, 3, 4, 2).reshape(groups, (b - a) * ho * wo, og)
        part = xp.matmul(rows.transpose(0, 2, 1), gm)  # (G, kH * kW * C/G, O/G)
        dw = part if dw is None else xp.add(dw, part, out=dw)
    return xp.ascontiguousarray(dw.reshape(groups, kh, kw, cg, og).transpose(0, 4, 3, 1, 2)).reshape(o, cg, kh, kw)
