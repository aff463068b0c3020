"""The UCI hand-written digits (1797 images of 8x8 pixels, 17 grey levels 0..16, 10 classes).

Shipped inside the package as ``data/digits.csv.gz`` (the copy scikit-learn distributes)
and read with ``importlib.resources``, so it works offline and from a wheel.
Attribution (CC BY 4.0): see ``data/DIGITS_LICENSE.txt``; it is also put in
``Dataset.meta["attribution"]``.
"""

from __future__ import annotations

import gzip
import io
from functools import lru_cache
from importlib import resources
from typing import ClassVar

import numpy as np

from .base import DataError, Dataset, Field, Source

ATTRIBUTION = (
    'E. Alpaydin, C. Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine '
    "Learning Repository, 1998, DOI 10.24432/C50P49, licensed under CC BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/)"
)
N_SAMPLES, IMAGE_SHAPE, N_LEVELS = 1797, (1, 8, 8), 16  # images are (C, H, W); pixels 0..N_LEVELS


@lru_cache(maxsize=1)
def _load_raw() -> tuple[np.ndarray, np.ndarray]:
    blob = resources.files(__package__).joinpath("data", "digits.csv.gz").read_bytes()
    table = np.loadtxt(io.StringIO(gzip.decompress(blob).decode("ascii")), delimiter=",",
                       dtype=np.int64)
    x, y = table[:, :-1], table[:, -1]
    if x.shape != (N_SAMPLES, 64) or x.min() < 0 or x.max() > N_LEVELS:
        raise DataError(f"digits.csv.gz: expected {N_SAMPLES} rows of 64 pixels in 0..16, "
                        f"found {x.shape} with values {x.min()}..{x.max()} (damaged install?)")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 images as (1797, 64) float64 (values 0..16) and labels (1797,) int64."""
    x, y = _load_raw()
    return x.astype(np.float64), y.copy()


class Digits(Source):
    name = "digits"
    help = "UCI hand-written digits: 1797 1x8x8 images, grey levels 0..16, 10 classes (CC BY 4.0)"
    task = "classification"
    params: ClassVar[dict[str, Field]] = {
        "classes": Field(list, None, "digits to keep, e.g. [0, 1]; labels become 0..K-1 in this "
                         "order (default: all ten)", item=int, min=0, max=9),
    }

    def load(self, params, rng):
        x, y = load_digits()
        classes = params.get("classes")
        if classes is None:
            classes = list(range(10))
        bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 9]
        if bad or not classes:
            raise DataError(f"data.classes: expected a non-empty list of digits 0..9, found {classes!r}")
        if len(set(classes)) != len(classes):
            raise DataError(f"data.classes: each digit once, found {classes!r}")
        keep = np.isin(y, classes)
        code = np.full(10, -1, dtype=np.int64)
        code[classes] = np.arange(len(classes))
        meta = {"source": self.name, "attribution": ATTRIBUTION, "classes": list(classes),
                "license": "CC BY 4.0", "levels": N_LEVELS + 1}  # as mnist's 256
        names = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
        images = x[keep].reshape((-1,) + IMAGE_SHAPE)
        return Dataset(images, code[y[keep]], None, None, "classification", len(classes),
                       names, IMAGE_SHAPE, meta)


SOURCES = [Digits()]
