"""The pieces every data source shares: the Dataset record, DataError, and Source.

A *source* is an object registered in ``DATASETS`` under a name (``linear``, ``moons``,
``digits``, ``csv``, ...). It declares its own ``[data]`` keys as schema ``Field``s in
``params``; its ``schema`` is those merged with the shared keys, so that
``Dispatch("source", DATASETS)`` validates a whole ``[data]`` table. ``load`` turns
validated parameters into arrays:

* a generator's ``load(params, rng)`` returns ``(x, y)`` drawn from ``rng``;
* a file source's ``load(params, rng)`` returns a ``Dataset`` whose ``x_test`` is None
  unless the user named a separate test file (then nothing is split at random).

``prepare.make_dataset`` does everything that is common: the train/test split, scaling,
binarizing and shuffling.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from gengraph.engine.errors import UserError
from gengraph.plugins.spec.schema import REQUIRED, Field, Table  # noqa: F401  (REQUIRED re-exported for sources)

TASKS = ("regression", "classification", "unsupervised")
SCALE_CHOICES = ["none", "standardize", "minmax", "minmax_global"]


def as_rows(a: np.ndarray) -> np.ndarray:
    """Examples as rows (n, C*H*W); also for n = 0, where reshape(n, -1) is ambiguous."""
    return a.reshape(len(a), int(np.prod(a.shape[1:], dtype=np.int64)))


class DataError(UserError):
    """A data source could not produce its arrays: missing or malformed file, bad option.

    The message names the file (where there is one) and says what was expected and
    what was found. `key` is the spec key that named the file or value (data.path,
    data.test_path, data.n), where it is known, so that the error points at that key's line or
    --set (else at the [data] table).
    """

    def __init__(self, message: str = "", key: str | None = None):
        super().__init__(message)
        self.key = key


# Set while a finished run's own spec is read again (`gengraph sample`, `--resume`): its data are
# what it trained on, so a limit its files do not meet (a run made before such limits were
# refused) is kept as that run kept it, instead of a refusal the run's spec cannot get around.
_REOPENING = ContextVar("gengraph_reopening_a_run", default=False)


@contextmanager
def reopening_a_run():
    token = _REOPENING.set(True)
    try:
        yield
    finally:
        _REOPENING.reset(token)


def reopening() -> bool:
    """Whether the data are being read for a finished run's own spec (see reopening_a_run)."""
    return _REOPENING.get()


@contextmanager
def from_key(key: str):
    """DataErrors raised inside the block come from the file spec key `key` names (unless an
    inner block said more precisely)."""
    try:
        yield
    except DataError as exc:
        if exc.key is None:
            exc.key = key
        raise


@dataclass
class Dataset:
    """Train and test arrays plus what a model or a report needs to know about them.

    ``x_*`` are float arrays of shape (n, features), or (n, C, H, W) for images, whose
    shape (C, H, W) is also recorded in ``image_shape`` (digits 1x8x8, MNIST 1x28x28).
    ``flat()`` gives the same data with rows of C*H*W features (what models are fed;
    image networks reshape them back in the graph). ``y_*`` are 1-D: class indices
    0..n_classes-1 (int64) for classification, floats for regression (2-D (n, k) only
    for several regression targets), optional labels or None for unsupervised sets.
    """

    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    task: str
    n_classes: int | None = None
    feature_names: list[str] | None = None
    image_shape: tuple | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, not {self.task!r}")

    # ---- sizes ---------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        return int(np.prod(self.x_train.shape[1:], dtype=np.int64))

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return 0 if self.x_test is None else int(self.x_test.shape[0])

    def replace(self, **changes) -> Dataset:
        return dataclasses.replace(self, **changes)

    def flat(self) -> Dataset:
        """The same data with x as rows (n, C*H*W) (C-order, so NCHW images reshape back for free)."""
        if self.x_train.ndim <= 2:
            return self
        rows = lambda a: None if a is None else as_rows(a)  # noqa: E731
        return self.replace(x_train=rows(self.x_train), x_test=rows(self.x_test))

    def as_examples(self, x):
        """Rows (n, features) back in the data's own example shape: (n, C, H, W) for image data
        (the inverse of flat()). Samples leave a run so (samples.npy, `Run.sample`); rows
        that are not images of this data are returned as they are."""
        shape = self.image_shape
        if shape is None or x.ndim != 2 or x.shape[1] != int(np.prod(shape, dtype=np.int64)):
            return x
        return x.reshape((x.shape[0],) + tuple(int(s) for s in shape))

    # ---- undoing the preprocessing (for reports and plots) -----------------------------
    def unscale_x(self, x):
        """Map scaled features (e.g. a generative model's samples) back to data units.

        Binarized features are their own data units (0/1): the scaling ran before the
        threshold, so inverting it would turn a 1 into the scale (16 for the digits)."""
        if self.meta.get("binarize") is not None:
            return x
        return _invert(self.meta.get("x_scaling"), x)

    def x_log_jacobian(self) -> float:
        """sum_j log(scale_j) of the x scaling (x' = (x - shift) / scale; nats): a density of the
        scaled data p'(x') is p(x) = p'(x') / prod_j scale_j in data units, so a negative
        log-likelihood per example in data units is the scaled one plus this. 0 without scaling
        or for binarized data (whose likelihood is a pmf)."""
        stats = self.meta.get("x_scaling")
        if self.meta.get("binarize") is not None or not stats or stats.get("method", "none") == "none":
            return 0.0
        scale = np.asarray(stats["std"] if stats["method"] == "standardize" else stats["range"], np.float64)
        return float(np.log(scale).sum() if scale.ndim else self.n_features * np.log(scale))

    def unscale_y(self, y):
        """Map scaled regression targets or predictions back to data units."""
        return _invert(self.meta.get("y_scaling"), y)

    def summary(self) -> str:
        parts = [f"{self.meta.get('source', 'data')}: {self.task}",
                 f"train {self.n_train}x{self.n_features}", f"test {self.n_test}"]
        if self.n_classes:
            parts.append(f"{self.n_classes} classes")
        if self.image_shape:
            parts.append("images " + "x".join(map(str, self.image_shape)))
        return ", ".join(parts)


def _invert(stats: dict | None, a):
    if not stats or stats.get("method", "none") == "none":
        return a
    a = np.asarray(a)
    if a.ndim > 2:  # images: the statistics are per feature of the flattened rows
        return _invert(stats, as_rows(a)).reshape(a.shape)
    if stats["method"] in ("standardize",):
        return a * np.asarray(stats["std"]) + np.asarray(stats["mean"])
    # minmax and minmax_global: x' = (x - min) / range
    return a * np.asarray(stats["range"]) + np.asarray(stats["min"])


class Source:
    """Base class for data sources; subclasses set name, help, task and params."""

    name: str = ""
    help: str = ""
    #: task of the arrays this source produces (file sources decide per file)
    task: str = "unsupervised"
    n_classes: int | None = None
    #: the source's own keys; the shared keys (test_fraction, scale, ...) are added
    params: ClassVar[dict[str, Field]] = {}

    @property
    def schema(self) -> Table:
        """The full ``[data]`` table for this source: own keys merged with shared keys."""

        return Table({**self.params, **SHARED_FIELDS}, help=self.help)

    def load(self, params: dict, rng: np.random.Generator):
        raise NotImplementedError

    def n_classes_for(self, params: dict) -> int | None:
        """Number of classes a generator's labels can take (may depend on params)."""
        return self.n_classes

    def folder_files(self, key: str, folder: Path) -> list[Path] | None:
        """The files in the folder at data.KEY that `load` reads, for the run's record of its data
        (a resumed run refuses them changed); None: every file in the folder."""
        return None

    def __repr__(self) -> str:
        return f"<data source {self.name!r}: {self.help}>"


# Keys every source accepts besides its own (split, scaling, binarizing, shuffling).
SHARED_FIELDS: dict[str, Field] = {
    "test_fraction": Field(float, 0.2, "fraction of the examples held out as the test set "
                           "(ignored when the source has a separate test file)", min=0.0, max=0.9),
    "scale": Field(str, "none", 'feature scaling fitted on the training split: "none", '
                   '"standardize" (zero mean, unit variance per feature; std of the training split, ddof 0), "minmax" (each feature to '
                   '[0, 1]) or "minmax_global" (one range for all features, e.g. pixels to [0, 1])',
                   choices=SCALE_CHOICES),
    "scale_target": Field(bool, False, "standardize a regression target too (training statistics)"),
    "binarize": Field((int, float), None, "threshold: after scaling, features above it become 1.0, "
                      "the others 0.0 (default: off)"),
    "shuffle": Field(bool, True, "shuffle the examples before splitting; if false the last rows "
                     "are the test set"),
}
