"""Kernels for strided convolutions whose stride (> 1) divides the kernel (4x4 stride 2, ...).

Transposed convolution: the sub-pixel kernel.
A transposed convolution with stride s writes kernel tap i of input pixel h to full-output
row h*s + i. Split the full output by phase r = row mod s: row q*s + r receives the taps
i = r + t*s (t = 0 .. k/s - 1) of input rows q - t, so every phase is an ordinary stride-1
correlation of the input with a k/s x k/s sub-kernel, and all phases read the same
k/s x k/s input windows. Per image, one matmul of the (small) input's windows with the s*s
sub-kernels stacked along the output channels computes every phase, and s*s strided copies
interleave the phases into the output and drop the crop; the images go in chunks that stay
in cache. Against the general path (one matmul per tap followed by kH*kW strided col2im adds
over the large output) this saves the adds and the (C_out * kH * kW) x (N * H * W)
intermediate. Float32, one thread, batch 64, 4x4 kernels, stride 2, ms: 32->32 channels
14 -> 28 pixels 12.8 (one matmul over the whole batch, channel-major) -> 7.2 (image-major,
chunks of 1.4 MB; 12.1 with 2.8 MB chunks, 15.4 with 5.6 MB), 128->64 at 7 -> 14 21.0 -> 14.5,
64->64 at 14 -> 28 31.7 -> 23.4, 32->1 at 14 -> 28 1.6 -> 1.2. When s does not divide k
the sub-kernels would need zero taps (k = 3, s = 2: 16/9 of the multiplies) and the general
path is as fast or faster, so conv.py runs these kernels only when `stride_divides_kernel`.

Convolution and its weight gradient: space to depth. Row h*s + i of the padded input, with
tap i = t*s + a, is row h + t of phase a, so a stride-s k x k correlation is a stride-1
(k/s) x (k/s) correlation of the s*s phases (C * s * s channels, one copy of the input in
channel-major order). A stride-1 correlation needs no im2col at all: over the flattened
(image, row, column) axis, tap (t, u) reads the phases shifted by t * W_q + u, a plain
column range that BLAS reads in place, so each tap is one matmul (accumulated for the
forward, one block of the weight gradient each). Outputs at the right and bottom edges of
each image's grid read into the next row or image and are dropped (forward) or multiplied
by zero (weight gradient). Float32, one thread, batch 64, 32 -> 32 channels, 4x4 stride 2 at
28x28: forward 8.7 -> 6.5 ms, weight gradient 9.2 -> 6.2 ms against im2col.
"""

from __future__ import annotations

import numpy as np

from .im2col import as_strided, image_chunks, pad_hw, windows


def stride_divides_kernel(kernel, stride, dilation):
    """Whether these kernels run: a stride > 1 that divides the kernel, no dilation."""
    return (tuple(dilation) == (1, 1) and max(stride) > 1
            and kernel[0] % stride[0] == 0 and kernel[1] % stride[1] == 0)


def _phase_span(r, s, p, size):
    """(first output index, first phase-grid index, count) of phase r's rows in the cropped
    output: full rows q*s + r with p <= q*s + r < p + size land at q*s + r - p."""
    first = (r - p) % s
    return first, (first + p - r) // s, len(range(first, size, s))


def conv_transpose2d_subpixel(xp, x, w, stride, padding, output_padding, groups):
    n, ci, h, wd = x.shape
    _, cog, kh, kw = w.shape
    cig = ci // groups
    (sh, sw), (ph, pw) = stride, padding
    mh, mw = kh // sh, kw // sw  # sub-kernel size
    hp = (h - 1) * sh + kh + output_padding[0]  # full (uncropped) output size
    wp = (wd - 1) * sw + kw + output_padding[1]
    ho, wo = hp - 2 * ph, wp - 2 * pw
    qh, qw = -(-hp // sh), -(-wp // sw)  # phase grid: full row q*s + r for q < qh
    # stacked sub-kernels (G, (r, s, C_out/G), (C_in/G, j, l)): tap r + t*s, window offset j = m - 1 - t
    wc = w.reshape(groups, cig, cog, mh, sh, mw, sw)[:, :, :, ::-1, :, ::-1, :].transpose(0, 4, 6, 2, 1, 3, 5)
    wc = wc.reshape(groups, sh * sw * cog, cig * mh * mw)
    win = windows(xp, pad_hw(xp, x, mh - 1, qh - h, mw - 1, qw - wd), (mh, mw), (1, 1), (1, 1), (qh, qw))
    dtype = np.result_type(x.dtype, w.dtype)
    out = xp.empty((n, groups, cog, ho, wo), dtype=dtype)
    spans = [(_phase_span(r, sh, ph, ho), _phase_span(s, sw, pw, wo)) for r in range(sh) for s in range(sw)]
    per_image = groups * (cig * mh * mw + sh * sw * cog) * qh * qw * np.dtype(dtype).itemsize
    # image-major, in chunks of images whose window matrices and phases stay in cache: the
    # interleaving copies then read whole rows (channel-major over the batch they gathered across
    # images, half the kernel's time); chunks of half the usual working set (measured below)
    for a, b in image_chunks(xp, n, 2 * per_image):
        cols = xp.ascontiguousarray(win[a:b]).reshape(b - a, groups, cig * mh * mw, qh * qw)
        phases = xp.matmul(wc, cols).reshape(b - a, groups, sh * sw, cog, qh, qw)
        for k, ((r0, q0, nq), (s0, p0, npx)) in enumerate(spans):
            out[a:b, :, :, r0::sh, s0::sw] = phases[:, :, k, :, q0:q0 + nq, p0:p0 + npx]
    return out.reshape(n, groups * cog, ho, wo)


# --- space to depth ----------------------------------------------------------------------
def _phases(xp, x, kernel, stride, padding, out_hw, groups):
    """x's padded phases in channel-major order, (G, C/G * s * s, N * H_q * W_q), with the
    phase grid H_q = H_out + k/s - 1 (exactly the rows the windows read); H_q, W_q; and the
    span of grid positions every tap's shifted column range can read."""
    n, c, h, wd = x.shape
    (sh, sw), (ph, pw) = stride, padding
    qh, qw = out_hw[0] + kernel[0] // sh - 1, out_hw[1] + kernel[1] // sw - 1
    bottom, right = qh * sh - h - ph, qw * sw - wd - pw
    x = x[:, :, :h + min(bottom, 0), :wd + min(right, 0)]  # rows past the last window: never read
    xpad = pad_hw(xp, x, ph, max(bottom, 0), pw, max(right, 0))
    z = xpad.reshape(n, groups, c // groups, qh, sh, qw, sw).transpose(1, 2, 4, 6, 0, 3, 5)
    span = n * qh * qw - ((kernel[0] // sh - 1) * qw + kernel[1] // sw - 1)
    return xp.ascontiguousarray(z).reshape(groups, c // groups * sh * sw, n * qh * qw), qh, qw, span


def _taps(kernel, stride, qw):
    """(t, u, column offset) of each tap of the (k/s) x (k/s) stride-1 correlation."""
    for t in range(kernel[0] // stride[0]):
        for u in range(kernel[1] // stride[1]):
            yield t, u, t * qw + u


def conv2d_space_to_depth(xp, x, w, stride, padding, groups, out_hw):
    n = x.shape[0]
    o, cg, kh, kw = w.shape
    (sh, sw), (mh, mw) = stride, (kh // stride[0], kw // stride[1])
    z, qh, qw, span = _phases(xp, x, (kh, kw), stride, padding, out_hw, groups)
    # per tap (t, u): (G, O/G, C/G * s * s) in the phases' channel order (c, a, b)
    wt = w.reshape(groups, o // groups, cg, mh, sh, mw, sw).transpose(3, 5, 0, 1, 2, 4, 6)
    wt = xp.ascontiguousarray(wt).reshape(mh, mw, groups, o // groups, cg * sh * sw)
    acc = tmp = None
    for t, u, off in _taps((kh, kw), stride, qw):
        if acc is None:
            acc = xp.matmul(wt[t, u], z[:, :, off:off + span])
        else:
            tmp = xp.matmul(wt[t, u], z[:, :, off:off + span], out=tmp)
            acc += tmp
    # output (n, h, w) sits at grid position n*H_q*W_q + h*W_q + w of each row of acc
    item = acc.itemsize
    grid = as_strided(xp, acc, (groups, o // groups, n) + tuple(out_hw),
                      (acc.strides[0], acc.strides[1], qh * qw * item, qw * item, item))
    return xp.ascontiguousarray(grid.transpose(2, 0, 1, 3, 4)).reshape((n, o) + tuple(out_hw))


def conv2d_backward_weight_space_to_depth(xp, gy, x, kernel, stride, padding, groups):
    n, c = x.shape[:2]
    o, ho, wo = gy.shape[1:]
    cg, og = c // groups, o // groups
    (sh, sw), (mh, mw) = stride, (kernel[0] // stride[0], kernel[1] // stride[1])
    z, qh, qw, span = _phases(xp, x, kernel, stride, padding, (ho, wo), groups)
    g = xp.zeros((groups, og, n, qh, qw), dtype=gy.dtype)  # gy on the phase grid, zero off it
    g[:, :, :, :ho, :wo] = gy.reshape(n, groups, og, ho, wo).transpose(1, 2, 0, 3, 4)
    g = g.reshape(groups, og, n * qh * qw)[:, :, :span]
    dw = xp.empty((mh, mw, groups, og, cg * sh * sw), dtype=xp.result_type(gy.dtype, x.dtype))
    for t, u, off in _taps(kernel, stride, qw):
        xp.matmul(g, z[:, :, off:off + span].transpose(0, 2, 1), out=dw[t, u])
    # (t, u, G, O/G, c, a, b) -> (O, C/G, t*s + a, u*s + b)
    dw = dw.reshape(mh, mw, groups, og, cg, sh, sw).transpose(2, 3, 4, 0, 5, 1, 6)
    return xp.ascontiguousarray(dw).reshape(o, cg, kernel[0], kernel[1])
