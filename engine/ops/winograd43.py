"""Winograd F(4x4, 3x3) for 3x3, stride-1, dilation-1, ungrouped convolutions on the CPU where
Numba is installed (its tile transforms are numba_winograd.py's loops).

Lavin & Gray 2016's larger tile: a 4x4 output tile from a 6x6 input tile (interpolation
points 0, 1, -1, 2, -2 and infinity), Y = A^T [(G g G^T) * (B^T d B)] A, 36 multiplies per
tile and channel pair where F(2x2, 3x3) (winograd.py) needs 64 for the same 16 outputs: its
36 GEMMs (C_out x C_in) @ (C_in x tiles) do 1.78x less work, and its transformed tiles take
0.56x the memory. The weight gradient is the same identity transposed:
dg = G^T [sum over tiles (A gy A^T) * (B^T d B)] G.

Its cost is rounding: float32 results are ~20x further from the exact ones than F(2x2, 3x3)'s
(about 5e-6 against 3e-7 of the largest output on unit-scale data), because B and A hold
entries up to 8 and G down to 1/24; float64 ones stay within ~1e-14. The filter transforms are
done in float64 and rounded once. winograd.py runs these kernels where they apply (`loops_for`);
they assume a (C_out, C_in, 3, 3) weight.
"""

from __future__ import annotations

import numpy as np

from .cpu_loops import load_loops
from .im2col import image_chunks

BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
              dtype=np.float64)
_KRON = np.kron(G, G)  # (36, 9): U = G g G^T flattened; its transpose maps the gradient back

# Where F(4x4, 3x3) is faster than F(2x2, 3x3): images of at least MIN_PIXELS output pixels
# (H_out * W_out) whose 4x4 tiles cover at least MIN_TILE_USE of the tiled area with outputs (the
# rest is computed and dropped: 13x13 is tiled as 16x16, 66 %). Float32, one thread, batch 64,
# F(4x4) / F(2x2) time of forward + input gradient + weight gradient (bench/winograd_bench.py,
# 2026-12-01, with the scratch rows of _row_stride): 32 -> 32 channels 1.05 at 10x10, 0.82 at
# 11x11, 0.79 at 12x12, 0.80 at 13x13, 0.61 at 16x16, 0.72 at 20x20, 32 -> 64 0.82 at 28x28,
# 64 -> 64 0.74 at 28x28. At 14x14 (77 % used), each kernel alternating in one process: forward
# 0.69-0.75, input gradient 0.69-0.72. The weight gradient alone (both with their GEMMs' operands
# read along rows: grad_channels_last, winograd._grad_transform), 16 -> 32, 32 -> 32, 32 -> 64,
# 64 -> 64, 128 -> 64: 0.94-1.16 at 10x10, 0.68-0.90 at 11x11, 0.76-0.90 at 13x13, 0.74-0.89 at
# 14x14 (with engine/heap.py's malloc settings, as in a run), 0.55-0.68 at 16x16. Below 100
# pixels the channel-last im2col runs instead of either (conv.WINOGRAD_MIN_PIXELS).
MIN_PIXELS = 11 * 11
MIN_TILE_USE = 0.6


def loops_for(xp, dtype, out_hw):
    """numba_loops (which holds the F(4x4, 3x3) loops) where these kernels should run: NumPy
    arrays of float32 / float64, an output of out_hw = (H_out, W_out) large enough and tiled with
    little waste (MIN_PIXELS, MIN_TILE_USE), Numba loaded; else None."""
    if xp is not np or np.dtype(dtype) not in (np.float32, np.float64):
        return None
    ho, wo = out_hw
    th, tw = _tiles(ho, wo)
    if ho * wo < MIN_PIXELS or ho * wo < MIN_TILE_USE * 16 * th * tw:
        return None
    return load_loops() or None


def _tiles(ho, wo):
    return (ho + 3) // 4, (wo + 3) // 4


def _row_stride(length, item):
    """Elements between the starts of the 36 rows of a scratch array that a loop writes, whose rows
    hold `length` elements: whole 4 KiB pages plus one 64-byte cache line. The input and gradient
    transforms write all 36 rows for each tile, and rows a multiple of 4 KiB apart share an L1
    cache set: at such strides (14 images of 32 channels at 16x16, 28 KiB) the input transform
    ran 2.7x slower, and 1.3-2x at others. The output transform, which reads the rows, runs
    faster on them contiguous (at 24x24: 0.09 against 0.15 ms a chunk), so its rows stay so."""
    return ((length * item + 4095) // 4096 * 4096 + 64) // item


def _rows(buf, length, item, spread):
    """A (36, length) view of flat scratch `buf`: rows _row_stride apart if `spread`, else contiguous."""
    stride = _row_stride(length, item) if spread else length
    return buf[:36 * stride].reshape(36, stride)[:, :length]


def _chunked(n, c, o, th, tw, dtype, gradient=False):
    """Image ranges and, for the largest, scratch for the transformed tiles (36, c, ...) and the
    GEMMs' side (36, o, ...): the products the output transform reads, or for the weight
    `gradient` the transformed output gradient; each seen at a chunk's size through `views`."""
    item = np.dtype(dtype).itemsize
    chunks = image_chunks(np, n, 36 * (c + o) * th * tw * item)
    most = (chunks[0][1] - chunks[0][0]) * th * tw
    v = np.empty(36 * _row_stride(c * most, item), dtype)
    m = np.empty(36 * (_row_stride(o * most, item) if gradient else o * most), dtype)

    def views(a, b):
        k = (b - a) * th * tw
        return _rows(v, c * k, item, True).reshape(36, c, k), _rows(m, o * k, item, gradient).reshape(36, o, k)

    return chunks, views


def _read(x, padding, out_hw, dtype):
    """x cut to the rows and columns the convolution reads (padded rows 0 .. H_out + 1), contiguous in
    dtype, and its padding (top, left) then, >= 0: the last tiles read past H_out + 1, and the
    tile transforms mix every row of a tile into every output of it, so a row the convolution
    must not read (a crop's, or past what a weight gradient's output covers) would leak in
    (an inf there made NaN outputs) where reading it as zero padding adds nothing."""
    (top, left), (ho, wo) = padding, out_hw
    r0, c0 = max(0, -top), max(0, -left)
    x = x[:, :, r0:max(r0, ho + 2 - top), c0:max(c0, wo + 2 - left)]
    return np.ascontiguousarray(x, dtype=dtype), (max(top, 0), max(left, 0))  # one layout per dtype: the loops'


def conv2d(loops, x, w, padding):
    """conv2d of x (N, C, H, W) with w (O, C, 3, 3), stride 1, padding (ph, pw) per side
    (negative: crop)."""
    n, c, h, wd = x.shape
    o = w.shape[0]
    ho, wo = h + 2 * padding[0] - 2, wd + 2 * padding[1] - 2
    dtype = np.result_type(x.dtype, w.dtype)
    y = np.empty((n, o, ho, wo), dtype=dtype)
    if n == 0:
        return y
    x, padding = _read(x, padding, (ho, wo), dtype)
    u = (_KRON @ w.reshape(o * c, 9).T.astype(np.float64)).astype(dtype).reshape(36, o, c)
    th, tw = _tiles(ho, wo)
    chunks, views = _chunked(n, c, o, th, tw, dtype)
    for a, b in chunks:
        v, m = views(a, b)
        loops.f43_input(x[a:b], padding[0], padding[1], th, tw, v)
        np.matmul(u, v, out=m)
        loops.f43_output(m, th, tw, y[a:b])
    return y


def grad_channels_last(c, o) -> bool:
    """Whether the weight gradient lays the transformed output gradient out channel-last, (36,
    tiles, O), so that its GEMMs are (C x tiles) @ (tiles x O) with both operands read along
    rows, instead of (O x tiles) @ (C x tiles)^T. That GEMM runs 1.5-2.7x faster, but f43_grad's
    stores then go O apart: it wins from GRAD_CHANNELS_LAST_MIN input channels, or half of that
    with twice as many output channels (see GRAD_CHANNELS_LAST_MIN's figures)."""
    return c >= GRAD_CHANNELS_LAST_MIN or (2 * c >= GRAD_CHANNELS_LAST_MIN and o >= 2 * c)


# Float32, one thread, batch 64, weight gradient ms, tiles-last / channel-last (C -> O at 28x28;
# at 14x14): 16 -> 32 2.82 / 3.87 (0.96 / 1.26); 32 -> 32 4.38 / 4.98 (1.51 / 1.64); 48 -> 32
# 7.90 / 6.26 (2.60 / 2.01); 64 -> 32 10.3 / 8.4 (3.33 / 2.51); 128 -> 32 20.9 / 16.2 (6.5 /
# 4.6); 16 -> 64 5.05 / 5.9 (1.61 / 1.76); 32 -> 64 8.9 / 8.0 (2.65 / 2.46); 64 -> 64 15.1 /
# 13.1 (4.36 / 3.68); 128 -> 64 27.8 / 23.6 (8.75 / 6.9).
GRAD_CHANNELS_LAST_MIN = 48


def conv2d_backward_weight(loops, gy, x, padding):
    """The weight gradient (O, C, 3, 3) of conv2d(x, w, padding) at stride 1 given its output
    gradient gy (N, O, Ho, Wo); x may extend past the rows and columns the convolution reads."""
    n, c = x.shape[:2]
    o, ho, wo = gy.shape[1:]
    dtype = np.result_type(gy.dtype, x.dtype)
    if n == 0:
        return np.zeros((o, c, 3, 3), dtype=dtype)
    x, padding = _read(x, padding, (ho, wo), dtype)
    gy = np.ascontiguousarray(gy, dtype=dtype)
    th, tw = _tiles(ho, wo)
    last = grad_channels_last(c, o)
    acc = np.zeros((36, c, o) if last else (36, o, c), dtype=dtype)
    part = np.empty_like(acc)
    chunks, views = _chunked(n, c, o, th, tw, dtype, gradient=True)
    for a, b in chunks:
        v, e = views(a, b)
        loops.f43_input(x[a:b], padding[0], padding[1], th, tw, v)
        if last:  # the loop writes e[:, oc, tile] of a transposed view: tile-major memory
            e = e.reshape(36, v.shape[2], o)
            loops.f43_grad(gy[a:b], th, tw, e.transpose(0, 2, 1))
            acc += np.matmul(v, e, out=part)
        else:
            loops.f43_grad(gy[a:b], th, tw, e)
            acc += np.matmul(e, v.transpose(0, 2, 1), out=part)
    dw = _KRON.T @ acc.reshape(36, -1).astype(np.float64)  # (9, C * O or O * C): G^T M G flattened
    dw = dw.astype(dtype).reshape((3, 3, c, o) if last else (3, 3, o, c))
    return np.ascontiguousarray(dw.transpose((3, 2, 0, 1) if last else (2, 3, 0, 1)))
