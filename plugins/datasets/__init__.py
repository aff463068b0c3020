"""Data sources for ``[data]``: lecture generators, the digits set, CSV/NPZ/IDX files.

>>> from gengraph.plugins.datasets import make_dataset
>>> ds = make_dataset({"source": "moons", "n": 100, "scale": "standardize"}, seed=0)
>>> ds.x_train.shape, ds.x_test.shape, ds.task, ds.n_classes
((80, 2), (20, 2), 'classification', 2)

Sources are registered in ``DATASETS`` by name; each has a one-line ``help``, its own
keys as schema ``Field``s in ``params`` and a ``schema`` (its keys merged with the
shared ones: test_fraction, scale, scale_target, binarize, shuffle), so
``data_schema()`` is simply ``Dispatch("source", DATASETS)``. A third-party
source registers the same way: ``DATASETS.register("mine", MySource())``.
"""

from __future__ import annotations

from .base import REQUIRED, SHARED_FIELDS, DataError, Dataset, Source
from .digits import load_digits
from .files import read_idx
from .generators import franke_function
from .prepare import (
    data_rng,
    data_schema,
    make_dataset,
    resolve_params,
    shared_keys_schema,
    split_rng,
)

from .sources import DATASETS


def get_source(name: str) -> Source:
    """The registered source called name (UnknownKind, with a suggestion, if none)."""
    return DATASETS.get(name)


def describe() -> dict[str, str]:
    """Source name -> one-line help, for listings (``gengraph plugins``, docs)."""
    return {name: DATASETS.get(name).help for name in DATASETS.names()}


__all__ = [
    "DATASETS", "REQUIRED", "SHARED_FIELDS", "DataError", "Dataset", "Source",
    "data_rng", "data_schema", "describe", "franke_function", "get_source", "load_digits",
    "make_dataset", "read_idx", "resolve_params", "shared_keys_schema", "split_rng",
]
