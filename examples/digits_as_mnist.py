"""Write MNIST-format IDX files made from the shipped 8x8 digits, for trying the MNIST specs offline.

    python examples/digits_as_mnist.py data/digits_mnist      # then:
    gengraph run specs/vae_mnist.toml --set data.dir=data/digits_mnist

These are not MNIST. Each 8x8 digit is interpolated to 20x20 (grey levels 0..16 -> 0..255) and
placed in a 28x28 frame, as MNIST centres its digits in a 20x20 box, shifted by up to 2 pixels.
The first 1347 digits make the 60 000 training images and the last 450 the 10 000 test images (no
digit is in both), so figures on these files say how the specs train at MNIST's size and shape, not
what they reach on MNIST.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np

from gengraph.plugins.datasets import load_digits

N_TRAIN, N_TEST, SPLIT = 60_000, 10_000, 1347


def upscale(images: np.ndarray, size: int = 20) -> np.ndarray:
    """(n, 8, 8) -> (n, size, size) by bilinear interpolation (separable, corner-aligned)."""
    pos = np.linspace(0.0, images.shape[-1] - 1, size)
    lo = np.minimum(np.floor(pos).astype(int), images.shape[-1] - 2)
    w = pos - lo
    rows = images[:, lo, :] * (1 - w)[None, :, None] + images[:, lo + 1, :] * w[None, :, None]
    return rows[:, :, lo] * (1 - w) + rows[:, :, lo + 1] * w


def framed(images: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator):
    """n 28x28 uint8 images: random picks of `images`, each shifted by -2..2 pixels in the frame."""
    pick = rng.integers(0, len(images), size=n)
    dy, dx = rng.integers(-2, 3, size=(2, n))
    out = np.zeros((n, 28, 28), dtype=np.uint8)
    for k in range(n):  # 70 000 small copies: fast enough, and plain
        y0, x0 = 4 + dy[k], 4 + dx[k]
        out[k, y0:y0 + 20, x0:x0 + 20] = images[pick[k]]
    return out, labels[pick].astype(np.uint8)


def idx_bytes(a: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, a.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in a.shape) + a.tobytes()


def main(folder: str = "data/digits_mnist", seed: int = 0, n_train: int = N_TRAIN, n_test: int = N_TEST) -> None:
    x, y = load_digits()
    big = np.clip(np.round(upscale(x.reshape(-1, 8, 8)) * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    rng = np.random.default_rng(seed)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for split, (lo, hi), n in (("train", (0, SPLIT), n_train), ("t10k", (SPLIT, len(x)), n_test)):
        images, labels = framed(big[lo:hi], y[lo:hi], n, rng)
        (out / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (out / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    print(f"wrote {n_train} + {n_test} MNIST-format images made from the digits to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
