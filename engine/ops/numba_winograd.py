"""The tile transforms of Winograd F(4x4, 3x3) (winograd43.py) as loops compiled by Numba.

Each reads its input once and writes its output once, with the padding, the tiling and the
interleave back into the image done by index: as NumPy passes, F(4x4, 3x3)'s transforms
(6x6 tiles of 16 input phases, three to four passes per transformed value) cost what its
GEMMs save, which is why it runs only where these loops do. Each loop works on one image
plane at a time in small scratch rows, so its inner loops run along a row. The transforms
are the matrices of winograd43 written out (tests check them against the matrices).

Imported with numba_loops (cpu_loops.load_loops), on first use; the compiled code is kept on
disk (CACHED, as in numba_loops).
"""

from __future__ import annotations

import numba
import numpy as np

# Numba keys its disk cache by source file: only the package's own name reads and writes it
CACHED = __name__ == "gengraph.engine.ops.numba_winograd"
_jit = numba.njit(cache=CACHED, nogil=True, error_model="numpy")


@_jit
def f43_input(x, top, left, th, tw, v):
    """v (36, C, n * th * tw) = B^T d B of every 6x6 tile d (stride 4) of x (n, C, H, W), x
    padded by top rows and left columns (negative: cropped) and by zeros past its end. Tile
    (i, j) of image k is column (k * th + i) * tw + j; row 6 k' + l' is its element (k', l')."""
    n, c, h, w = x.shape
    width = 4 * tw + 2
    rows = np.zeros((6, width), v.dtype)
    t = np.empty((6, width), v.dtype)
    two, four, five = v.dtype.type(2), v.dtype.type(4), v.dtype.type(5)
    for ch in range(c):
        for img in range(n):
            for i in range(th):
                for k in range(6):  # the tile row's six image rows, zero outside the image
                    r = 4 * i - top + k
                    if 0 <= r < h:
                        for col in range(width):
                            cc = col - left
                            rows[k, col] = x[img, ch, r, cc] if 0 <= cc < w else 0
                    else:
                        for col in range(width):
                            rows[k, col] = 0
                for col in range(width):  # B^T d along the columns of the six rows
                    d0, d1, d2 = rows[0, col], rows[1, col], rows[2, col]
                    d3, d4, d5 = rows[3, col], rows[4, col], rows[5, col]
                    t[0, col] = four * d0 - five * d2 + d4
                    t[1, col] = (d3 + d4) - four * (d1 + d2)
                    t[2, col] = (d4 - d3) + four * (d1 - d2)
                    t[3, col] = (d4 - d2) + two * (d3 - d1)
                    t[4, col] = (d4 - d2) - two * (d3 - d1)
                    t[5, col] = four * d1 - five * d3 + d5
                p = (img * th + i) * tw
                for k in range(6):  # (B^T d) B: each tile's six columns
                    for j in range(tw):
                        b = 4 * j
                        d0, d1, d2 = t[k, b], t[k, b + 1], t[k, b + 2]
                        d3, d4, d5 = t[k, b + 3], t[k, b + 4], t[k, b + 5]
                        v[6 * k, ch, p + j] = four * d0 - five * d2 + d4
                        v[6 * k + 1, ch, p + j] = (d3 + d4) - four * (d1 + d2)
                        v[6 * k + 2, ch, p + j] = (d4 - d3) + four * (d1 - d2)
                        v[6 * k + 3, ch, p + j] = (d4 - d2) + two * (d3 - d1)
                        v[6 * k + 4, ch, p + j] = (d4 - d2) - two * (d3 - d1)
                        v[6 * k + 5, ch, p + j] = four * d1 - five * d3 + d5


@_jit
def f43_output(m, th, tw, y):
    """y (n, O, Ho, Wo) from the GEMMs' products m (36, O, n * th * tw): output tile (i, j) of
    image k, channel o, is A^T M A (4x4) of M = m[:, o, (k * th + i) * tw + j] as 6x6; its rows
    and columns past Ho / Wo are dropped. Both stages run over all of an image's tiles at once
    (long inner loops; per tile row they took 1.7x as long at 28x28), then the tiles are
    interleaved into the image."""
    n, o, ho, wo = y.shape
    nq = th * tw
    r = np.empty((4, 6, nq), m.dtype)
    out = np.empty((4, th, 4 * tw), m.dtype)  # row k of tile (i, j) at out[k, i, 4 j:4 j + 4]
    two, four, eight = m.dtype.type(2), m.dtype.type(4), m.dtype.type(8)
    for oc in range(o):
        for img in range(n):
            p = img * nq
            for col in range(6):  # A^T M along the columns of M
                for q in range(nq):
                    m0, m1, m2 = m[col, oc, p + q], m[6 + col, oc, p + q], m[12 + col, oc, p + q]
                    m3, m4, m5 = m[18 + col, oc, p + q], m[24 + col, oc, p + q], m[30 + col, oc, p + q]
                    a, b, c, d = m1 + m2, m3 + m4, m1 - m2, m3 - m4
                    r[0, col, q] = m0 + a + b
                    r[1, col, q] = c + two * d
                    r[2, col, q] = a + four * b
                    r[3, col, q] = c + eight * d + m5
            for k in range(4):  # (A^T M) A: row k of every tile, laid out as image rows
                for i in range(th):
                    for j in range(tw):
                        q = i * tw + j
                        m0, m1, m2 = r[k, 0, q], r[k, 1, q], r[k, 2, q]
                        m3, m4, m5 = r[k, 3, q], r[k, 4, q], r[k, 5, q]
                        a, b, c, d = m1 + m2, m3 + m4, m1 - m2, m3 - m4
                        out[k, i, 4 * j] = m0 + a + b
                        out[k, i, 4 * j + 1] = c + two * d
                        out[k, i, 4 * j + 2] = a + four * b
                        out[k, i, 4 * j + 3] = c + eight * d + m5
            for i in range(th):  # whole image rows, the columns past Wo dropped
                for k in range(min(4, ho - 4 * i)):
                    row = 4 * i + k
                    for col in range(wo):
                        y[img, oc, row, col] = out[k, i, col]


@_jit
def f43_grad(gy, th, tw, e):
    """e (36, O, n * th * tw) = A G A^T of every 4x4 tile G of gy (n, O, Ho, Wo) (zeros past Ho /
    Wo), laid out as f43_input's v: the weight gradient's factor G^T [sum (A G A^T) * V] G."""
    n, o, ho, wo = gy.shape
    width = 4 * tw
    rows = np.zeros((4, width), e.dtype)
    t = np.empty((6, width), e.dtype)
    two, four, eight = e.dtype.type(2), e.dtype.type(4), e.dtype.type(8)
    for oc in range(o):
        for img in range(n):
            for i in range(th):
                for k in range(4):
                    r = 4 * i + k
                    if r < ho:
                        for col in range(width):
                            rows[k, col] = gy[img, oc, r, col] if col < wo else 0
                    else:
                        for col in range(width):
                            rows[k, col] = 0
                for col in range(width):  # A G along the columns: A's rows (1 0 0 0), (1 1 1 1),
                    g0, g1, g2, g3 = rows[0, col], rows[1, col], rows[2, col], rows[3, col]
                    a, b = g0 + g2, g1 + g3  # (1 -1 1 -1), (1 2 4 8), (1 -2 4 -8), (0 0 0 1)
                    c, d = g0 + four * g2, two * g1 + eight * g3
                    t[0, col] = g0
                    t[1, col] = a + b
                    t[2, col] = a - b
                    t[3, col] = c + d
                    t[4, col] = c - d
                    t[5, col] = g3
                p = (img * th + i) * tw
                for k in range(6):  # (A G) A^T: each tile's four columns
                    for j in range(tw):
                        g0, g1, g2, g3 = t[k, 4 * j], t[k, 4 * j + 1], t[k, 4 * j + 2], t[k, 4 * j + 3]
                        a, b = g0 + g2, g1 + g3
                        c, d = g0 + four * g2, two * g1 + eight * g3
                        e[6 * k, oc, p + j] = g0
                        e[6 * k + 1, oc, p + j] = a + b
                        e[6 * k + 2, oc, p + j] = a - b
                        e[6 * k + 3, oc, p + j] = c + d
                        e[6 * k + 4, oc, p + j] = c - d
                        e[6 * k + 5, oc, p + j] = g3


def warm(dtype) -> None:
    """Compile the three loops for `dtype` (or load them from Numba's cache), as a first call would:
    with the array layouts winograd43 passes, its scratch rows spread apart (a strided view, which
    Numba compiles apart from a contiguous array) where the input and gradient transforms write."""
    x = np.zeros((1, 1, 4, 4), dtype)
    spread = np.zeros((36, 2), dtype)[:, :1].reshape(36, 1, 1)
    f43_input(x, 1, 1, 1, 1, spread)
    f43_output(np.zeros((36, 1, 1), dtype), 1, 1, x)
    f43_grad(x, 1, 1, spread)
