"""Winograd F(2x2, 3x3) kernels for 3x3, stride-1, dilation-1, ungrouped convolutions.

Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks": a 2x2 output tile
of a 3x3 correlation is Y = A^T [(G g G^T) * (B^T d B)] A over a 4x4 input tile d, so a
convolution becomes 16 independent GEMMs (C_out x C_in) @ (C_in x tiles), one batched
matmul, with 16 instead of 36 multiplies per output tile and channel pair (2.25x fewer).
The weight gradient is the same identity transposed (differentiate Y w.r.t. g):
dg = G^T [sum over tiles (A gy A^T) * (B^T d B)] G, the sum over tiles being the GEMM.

The input is first split into its four phases (even/odd rows x even/odd columns, one
strided copy); a tile's 16 values are then plain shifts of those phases, and the separable
transforms (rows, then columns) are four ufunc calls per stage for all 16 positions, each
over one long contiguous range (with short strided inner loops they took 2x as long). That
needs one junk column per row of tiles (a column shift reads into the next row): the GEMM
runs on th x (tw + 1) tiles and the junk is dropped when the 2x2 outputs are interleaved
back (forward) or multiplied by zeros (weight gradient). On the CPU the batch goes in chunks
of images so that a chunk's tiles and GEMM output stay in cache (4x the input and 4x the
output; im2col.CHUNK_BYTES); on other backends (CuPy) one chunk. Only the xp functions NumPy
and CuPy share are used. conv.py decides when these kernels run (`use_winograd`); they assume a (C_out, C_in, 3, 3) weight.
On NumPy arrays of larger images, where Numba is installed, conv2d_3x3 and the weight gradient
hand over to F(4x4, 3x3) (winograd43.py, `loops_for` decides).
"""

from __future__ import annotations

import threading

import numpy as np

from . import winograd43
from .im2col import image_chunks

# F(2, 3): d (4) -> B^T d; g (3) -> G g; m (4) -> A^T m. Y = A^T [(G g) * (B^T d)] is the
# 2-output correlation of d with g. The adds in _input_transform / _output_transform are
# these matrices written out; tests check them against the matrices.
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)

# Scratch storages kept between calls (per thread, dtype and kernel) when a call needs at most
# this many bytes of them; larger calls allocate their own (see _Buffers).
SCRATCH_MAX_BYTES = 16 << 20
_SCRATCH = threading.local()


def _phase(n_out, pad, r, size):
    """Rows a in [a0, a1) of phase r (padded row 2a + r) that hold data of x, and the first x row:
    padded row R is x row R - pad (rows outside x are zero)."""
    a0 = max(0, (pad - r + 1) // 2)
    a1 = min(n_out, (size - 1 - r + pad) // 2 + 1)
    return a0, max(a0, a1), 2 * a0 + r - pad


def _deinterleave(x, top, left, out):
    """out[r, s, c, n, a, b] = x padded (top, left; negative: cropped) at row 2a + r, column 2b + s.
    Only positions holding data are written: the rest of `out` keeps the zeros it was made with."""
    nr, nb = out.shape[4:]
    for r in range(2):
        a0, a1, src_r = _phase(nr, top, r, x.shape[2])
        for s in range(2):
            b0, b1, src_s = _phase(nb, left, s, x.shape[3])
            if a1 > a0 and b1 > b0:
                src = x[:, :, src_r:src_r + 2 * (a1 - a0) - 1:2, src_s:src_s + 2 * (b1 - b0) - 1:2]
                out[r, s, :, :, a0:a1, b0:b1] = src.transpose(1, 0, 2, 3)


def _input_transform(xp, xd, th, t, v):
    """v (4, 4, L) = B^T d B of the 4x4 tiles, from the phases xd (2, 2, C, n, th + 1, tw + 1).

    Tile (i, j) element (k, l) is xd[k % 2, l % 2, :, :, i + k // 2, j + l // 2]. The tile grid
    is th x (tw + 1) per image, flattened (L = C * n * th * (tw + 1)): its last column is junk
    (it reads the next row), so a column shift is a flat offset of 1 and every add runs over
    one long contiguous range. t (4, 2, L + 1) is scratch, its last element zero."""
    length = v.shape[-1]
    shape = xd.shape[1:4] + (th, xd.shape[5])

    def rows(r, da):  # tile row k = 2 da + r of every tile: (2, C, n, th, tw + 1)
        return xd[r, :, :, :, da:da + th]

    tk = [t[k, :, :length].reshape(shape) for k in range(4)]
    # rows of B^T: (1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)
    xp.subtract(rows(0, 0), rows(0, 1), out=tk[0])
    xp.add(rows(1, 0), rows(0, 1), out=tk[1])
    xp.subtract(rows(0, 1), rows(1, 0), out=tk[2])
    xp.subtract(rows(1, 0), rows(1, 1), out=tk[3])

    def cols(s, db):  # tile column l = 2 db + s, all 4 rows: (4, L)
        return t[:, s, db:db + length]

    xp.subtract(cols(0, 0), cols(0, 1), out=v[:, 0])
    xp.add(cols(1, 0), cols(0, 1), out=v[:, 1])
    xp.subtract(cols(0, 1), cols(1, 0), out=v[:, 2])
    xp.subtract(cols(1, 0), cols(1, 1), out=v[:, 3])


_KRON_CACHE: dict = {}


def _kron_on(xp, which: str, dtype):
    """The (16, 9) filter transform kron(G, G) or the weight gradient's (9, 16) way back, made once per
    backend and dtype (uploaded to the GPU once, not at every convolution)."""
    key = (xp.__name__, which, np.dtype(dtype).str)
    if key not in _KRON_CACHE:
        if which == "filter":
            host = np.kron(G, G)
        else:
            gs = G * np.array([1, 1, 1, -1.0])[:, None]  # G' = diag(1, 1, 1, -1) G
            host = np.kron(gs, gs).T  # G'^T (.) G' flattened
        _KRON_CACHE[key] = xp.asarray(host, dtype=dtype)
    return _KRON_CACHE[key]


def _filter_transform(xp, w):
    """U (16, O, C) = G g G^T of each 3x3 filter of w (O, C, 3, 3)."""
    o, c = w.shape[:2]
    gg = _kron_on(xp, "filter", w.dtype)  # (16, 9)
    return xp.matmul(gg, w.reshape(o * c, 9).T).reshape(16, o, c)


def _output_transform(xp, m):
    """A^T m A of m (4, 4, O, P), in place: output tile element (i, j) ends in m[3 i, 3 j]."""
    xp.add(m[0], m[1], out=m[0])  # rows of A^T: (1, 1, 1, 0) into row 0, (0, 1, -1, -1) into row 3
    xp.add(m[0], m[2], out=m[0])
    xp.subtract(m[1], m[3], out=m[3])
    xp.subtract(m[3], m[2], out=m[3])
    rows = m[0::3]
    xp.add(rows[:, 0], rows[:, 1], out=rows[:, 0])
    xp.add(rows[:, 0], rows[:, 2], out=rows[:, 0])
    xp.subtract(rows[:, 1], rows[:, 3], out=rows[:, 3])
    xp.subtract(rows[:, 3], rows[:, 2], out=rows[:, 3])


class _Buffers:
    """Scratch arrays for the chunks of a call: flat storages at the largest chunk's size, seen
    at each chunk's size through `chunk(nc)`.

    On NumPy the storages are kept per thread and dtype between calls (up to SCRATCH_MAX_BYTES):
    touching fresh pages costs as much as the transforms (64x32->64 at 14x14: 6.6 ms forward
    with new buffers each call vs 4.2 ms kept, depending on how malloc serves them). The phase
    buffer xd and the weight gradient's e must hold zeros where chunks write nothing (padding,
    junk column, odd edges); they are zeroed whenever the layout (channels, chunk, tiles, padding,
    input sizes) is not the one they last held. t's last element (the junk column's read past the end) is zeroed
    for every chunk."""

    def __init__(self, xp, dtype, c, o, nmax, th, tw, grad_out=False):
        self.c, self.o, self.th, self.g, self.grad_out = c, o, th, tw + 1, grad_out
        sizes = {"xd": 4 * c * nmax * (th + 1) * self.g, "t": 8 * (c * nmax * th * self.g + 1),
                 "v": 16 * c * nmax * th * self.g, "out": 16 * o * nmax * th * self.g}
        if xp is np and sum(sizes.values()) * np.dtype(dtype).itemsize <= SCRATCH_MAX_BYTES:
            kept = _SCRATCH.__dict__.setdefault((np.dtype(dtype).str, grad_out), {"layout": None})
        else:
            kept = {"layout": None}
        for name, size in sizes.items():
            if name not in kept or kept[name].size < size:
                kept[name] = xp.empty(size, dtype=dtype)
                kept["layout"] = None
        self.kept = kept

    def chunk(self, nc, where):
        """The arrays xd, t, v and out (m or e) for a chunk of nc images; `where` is what else
        decides which positions hold data (padding, input and gradient sizes)."""
        c, o, th, g, kept = self.c, self.o, self.th, self.g, self.kept
        length, p = c * nc * th * g, nc * th * g
        self.xd = kept["xd"][:4 * c * nc * (th + 1) * g].reshape(2, 2, c, nc, th + 1, g)
        self.t = kept["t"][:8 * (length + 1)].reshape(4, 2, length + 1)
        self.v = kept["v"][:16 * length].reshape(4, 4, length)
        self.out = kept["out"][:16 * o * p].reshape(16, o, p)
        layout = (c, o, nc, th, g, where)
        if kept["layout"] != layout:
            kept["layout"] = layout
            self.xd.fill(0)
            if self.grad_out:
                self.out.fill(0)
        self.t[:, :, length] = 0
        return self


def conv2d_3x3(xp, x, w, padding):
    """conv2d of x (N, C, H, W) with w (O, C, 3, 3), stride 1, padding (ph, pw) per side
    (negative: crop). Same result as the im2col kernel up to rounding."""
    n, c, h, wd = x.shape
    o = w.shape[0]
    ho, wo = h + 2 * padding[0] - 2, wd + 2 * padding[1] - 2
    th, tw = (ho + 1) // 2, (wo + 1) // 2  # odd sizes: the last tile's second row / column is dropped
    dtype = np.result_type(x.dtype, w.dtype)
    loops = winograd43.loops_for(xp, dtype, (ho, wo))
    if loops:  # the larger tile, where its Numba loops run
        return winograd43.conv2d(loops, x, w, padding)
    y = xp.empty((n, o, ho, wo), dtype=dtype)
    if n == 0:  # no chunk to size the buffers by
        return y
    u = _filter_transform(xp, w.astype(dtype, copy=False))
    chunks = image_chunks(xp, n, 16 * (c + o) * th * (tw + 1) * np.dtype(dtype).itemsize)
    buffers = _Buffers(xp, dtype, c, o, chunks[0][1], th, tw)
    for a, b in chunks:
        nc = b - a
        buf = buffers.chunk(nc, (tuple(padding), h, wd))
        _deinterleave(x[a:b], padding[0], padding[1], buf.xd)
        _input_transform(xp, buf.xd, th, buf.t, buf.v)
        xp.matmul(u, buf.v.reshape(16, c, nc * th * (tw + 1)), out=buf.out)
        _output_transform(xp, buf.out.reshape(4, 4, o, -1))
        tiles = buf.out.reshape(4, 4, o, nc, th, tw + 1)
        for i in range(2):  # y[:, :, 2 i' + i, 2 j' + j] = tiles[3 i, 3 j, :, :, i', j']
            for j in range(2):
                rows, cols = (ho - i + 1) // 2, (wo - j + 1) // 2
                y[a:b, :, i::2, j::2] = tiles[3 * i, 3 * j, :, :, :rows, :cols].transpose(1, 0, 2, 3)
    return y


def conv_transpose2d_3x3(xp, x, w, padding):
    """conv_transpose2d at stride 1 of x (N, C_in, H, W) with w (C_in, C_out, 3, 3): the
    conv2d with the flipped kernel, channels swapped, padding 2 - p (negative: crop)."""
    wf = xp.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    return conv2d_3x3(xp, x, wf, (2 - padding[0], 2 - padding[1]))


def _grad_transform(xp, gy, e):
    """e (4, 4, n * th * (tw + 1), O) = A' g A'^T for the 2x2 tiles g of gy (n, O, Ho, Wo), where
    A' = A with its last row negated, (1, 0), (1, 1), (1, -1), (0, 1) (the sign goes into G').
    Channels last, so that the weight gradient's GEMMs (C x tiles) @ (tiles x O) read both
    operands along their rows (1.2-1.3x faster than with the tiles' axis last in both).
    e's junk column and the rows / columns past an odd Ho / Wo keep the zeros e was made with."""
    n, o, ho, wo = gy.shape
    tiles = e.reshape(4, 4, n, (ho + 1) // 2, (wo + 1) // 2 + 1, o)
    for i in range(2):  # A' rows 0 and 3 pick tile rows 0 and 1; columns likewise
        for j in range(2):
            rows, cols = (ho - i + 1) // 2, (wo - j + 1) // 2
            tiles[3 * i, 3 * j, :, :rows, :cols] = gy[:, :, i::2, j::2].transpose(0, 2, 3, 1)
    xp.add(e[0, 0::3], e[3, 0::3], out=e[1, 0::3])
    xp.subtract(e[0, 0::3], e[3, 0::3], out=e[2, 0::3])
    xp.add(e[:, 0], e[:, 3], out=e[:, 1])
    xp.subtract(e[:, 0], e[:, 3], out=e[:, 2])


def conv2d_backward_weight_3x3(xp, gy, x, padding):
    """The weight gradient (O, C, 3, 3) of conv2d(x, w, padding) at stride 1 given its output
    gradient gy (N, O, Ho, Wo): dw = G'^T [sum over tiles (A' gy A'^T) * (B^T d B)] G'."""
    n, c = x.shape[:2]
    o, ho, wo = gy.shape[1:]
    th, tw = (ho + 1) // 2, (wo + 1) // 2
    dtype = np.result_type(gy.dtype, x.dtype)
    if n == 0:  # no chunk to size the buffers by
        return xp.zeros((o, c, 3, 3), dtype=dtype)
    loops = winograd43.loops_for(xp, dtype, (ho, wo))
    if loops:
        return winograd43.conv2d_backward_weight(loops, gy, x, padding)
    acc = xp.zeros((16, c, o), dtype=dtype)  # the transposed gradient: C x O a position
    part = xp.empty((16, c, o), dtype=dtype)
    chunks = image_chunks(xp, n, 16 * (c + o) * th * (tw + 1) * np.dtype(dtype).itemsize)
    buffers = _Buffers(xp, dtype, c, o, chunks[0][1], th, tw, grad_out=True)
    for a, b in chunks:
        nc = b - a
        p = nc * th * (tw + 1)
        buf = buffers.chunk(nc, (tuple(padding), x.shape[2:], gy.shape[2:]))
        _deinterleave(x[a:b], padding[0], padding[1], buf.xd)
        _input_transform(xp, buf.xd, th, buf.t, buf.v)
        e = buf.out.reshape(4, 4, p, o)
        _grad_transform(xp, gy[a:b], e)
        xp.matmul(buf.v.reshape(16, c, p), e.reshape(16, p, o), out=part)
        acc += part
    back = _kron_on(xp, "back", dtype)  # (9, 16): G'^T (.) G' flattened
    return xp.ascontiguousarray(xp.matmul(back, acc.reshape(16, c * o)).reshape(3, 3, c, o).transpose(3, 2, 0, 1))
