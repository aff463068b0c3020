"""From a ``[data]`` table to a ready ``Dataset``: the keys every source shares.

``make_dataset(data_spec, seed)`` looks the source up, draws or reads its arrays,
splits off a test set, scales, binarizes and shuffles. Order of the steps:

1. ``source.load(params, data_rng(seed))`` — generators draw from the data stream only;
2. split: ``test_fraction`` of the rows become the test set (rows chosen from a second,
   independent stream; without ``shuffle`` the last rows are the test set). A source
   with a separate test file is not split;
3. ``scale`` x with statistics of the TRAIN split only, applied to both splits
   (``scale_target`` does the same for a regression target);
4. ``binarize``: x > threshold (after scaling) becomes 1.0, else 0.0.

Seeding: the data streams come from ``seeds.stream(seed, "data")``, so they never
depend on how many numbers model initialisation or noise sampling drew; the same seed
gives identical arrays.
"""

from __future__ import annotations

import math

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from gengraph.plugins.spec.errors import SpecError, SpecIssue
from gengraph.plugins.registry import UnknownKind
from gengraph.plugins.spec.schema import REQUIRED, Dispatch, Field, Table, validate
from .base import SCALE_CHOICES, SHARED_FIELDS, DataError, Dataset, as_rows, from_key
from .files import shown, status
from .sources import DATASETS
from gengraph.plugins.blocks import seeds
from gengraph.plugins.blocks.memory import too_big





# ---- seeding -------------------------------------------------------------------------
def _seed_sequence(seed: int) -> np.random.SeedSequence:
    return seeds.stream(seed, "data")


def data_rng(seed: int) -> np.random.Generator:
    """The data stream of a run: what generators draw their examples from."""
    return np.random.default_rng(_seed_sequence(seed))


def split_rng(seed: int) -> np.random.Generator:
    """A second data stream, independent of data_rng's, that chooses the test rows."""
    return np.random.default_rng(_seed_sequence(seed).spawn(1)[0])


# ---- schema --------------------------------------------------------------------------
def shared_keys_schema() -> dict[str, Field]:
    """The shared ``[data]`` keys as schema Fields (name -> Field), ready to merge."""
    return dict(SHARED_FIELDS)


def data_schema(default=None) -> Dispatch:
    """The whole ``[data]`` schema: ``source`` picks the source, whose table checks the rest.

    ``default`` (e.g. ``{"source": "moons"}``) is used when a spec has no ``[data]``;
    without it ``[data]`` is required.
    """
    return Dispatch("source", DATASETS, REQUIRED if default is None else default,
                    "where the examples come from and how they are prepared")


def resolve_params(source, spec: Mapping) -> dict:
    """The source's keys and the shared keys, checked, with defaults filled in.

    The spec loader has normally validated ``[data]`` already (then this changes
    nothing); calling ``make_dataset`` from Python gets the same checks and messages.
    Raises ``SpecError`` for a bad key or value.
    """
    table: Table = source.schema
    # a validated table holds None for optional keys left out: that means "not set"
    given = {k: v for k, v in spec.items() if k != "source" and v is not None}
    return validate(table, given, path="data")


# ---- generated data ------------------------------------------------------------------
def check_generated(name: str, source, params: dict, x: np.ndarray, y: np.ndarray | None) -> None:
    """DataError at the parameter to lower when a generator drew NaN or inf (file data are
    checked as they are read): a float64 overflow (noise = 1e308) would fail much later."""
    bad = [(what, a) for what, a in (("x", x), ("y", y))
           if a is not None and a.dtype.kind == "f" and not np.isfinite(a).all()]
    if not bad:
        return
    what, a = bad[0]
    rows = int((~np.isfinite(a.reshape(len(a), -1))).any(axis=1).sum())
    knobs = _largest_params(source, params)
    lower = ", ".join(f"data.{k} (= {v:g})" for k, v in knobs)
    raise DataError(f'the "{name}" generator drew values that are not finite (NaN or inf) in {what} '
                    f"({rows} of {len(a)} rows): they overflow float64; "
                    + (f"lower {lower}" if knobs else "change its parameters"),
                    key=f"data.{knobs[0][0]}" if knobs else None)


def _largest_params(source, params: dict) -> list[tuple[str, float]]:
    """The source's numeric parameters but n (a list by its largest |value|), largest first,
    down to 1/1000 of the largest: the ones that make the values overflow."""
    def size(v):
        if isinstance(v, (list, tuple)):
            return max((size(u) or 0.0 for u in v), key=abs, default=None)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    found = [(k, s) for k in source.params if k != "n" and (s := size(params.get(k))) not in (None, 0.0)]
    found.sort(key=lambda kv: -abs(kv[1]))
    return [(k, s) for k, s in found if abs(s) >= abs(found[0][1]) / 1000]


# ---- preprocessing -------------------------------------------------------------------
def fit_scaling(method: str, x: np.ndarray) -> dict:
    """Statistics of ``method`` on ``x`` (training rows); constant columns get scale 1.

    Images (n, C, H, W) are scaled as rows of C*H*W features (statistics per pixel).
    """
    if method == "none":
        return {"method": "none"}
    x = as_rows(x)
    if method == "standardize":
        mean, std = _mean_std(x)
        std = np.where(std > 0, std, 1.0)
        return {"method": method, "mean": mean.tolist(), "std": std.tolist()}
    if method == "minmax":
        lo, hi = x.min(axis=0), x.max(axis=0)
    elif method == "minmax_global":
        lo, hi = x.min(), x.max()
    else:
        raise DataError(f"data.scale: expected one of {', '.join(SCALE_CHOICES)}, found {method!r}")
    span = np.where(hi > lo, hi - lo, 1.0)
    return {"method": method, "min": np.asarray(lo).tolist(), "range": span.tolist()}


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations without overflow: the sum of |x| ~ 1e307 and the
    squares of |x| > ~1e154 are inf in float64 (and squares of |x| < ~1e-162 are 0), so compute
    on x / 2^k with 2^k <= max|x| < 2^(k+1) and scale back. A power of two scales exactly:
    ordinary data get the same bits as x.mean() and x.std()."""
    x = np.asarray(x, np.float64)
    peak = np.abs(x).max(axis=0) if len(x) else np.ones(x.shape[1:])
    peak = np.where((peak > 0) & np.isfinite(peak), peak, 1.0)
    unit = np.ldexp(1.0, np.frexp(peak)[1] - 1)  # 2^1024, one above, is inf
    small = x / unit
    return small.mean(axis=0) * unit, small.std(axis=0) * unit


def apply_scaling(stats: dict, a: np.ndarray | None) -> np.ndarray | None:
    if a is None or stats["method"] == "none":
        return a
    if a.ndim > 2:
        return apply_scaling(stats, as_rows(a)).reshape(a.shape)
    if stats["method"] == "standardize":
        return (a - np.asarray(stats["mean"])) / np.asarray(stats["std"])
    return (a - np.asarray(stats["min"])) / np.asarray(stats["range"])


def _split(ds: Dataset, fraction: float, shuffle: bool, rng: np.random.Generator) -> Dataset:
    n = ds.n_train
    n_test = round(fraction * n)  # to the nearest row, halves to even (Python's round)
    if n - n_test < 1:
        raise DataError(f"data.test_fraction = {fraction} leaves no training example out of {n}")
    if fraction > 0 and n_test == 0 and n < 2:
        raise DataError(f"data.test_fraction = {fraction}: {n} example cannot be split into training and test; "
                        "set test_fraction to 0")
    if fraction > 0 and n_test == 0:  # a run without test figures, said nowhere: ask for it by 0
        least = (math.floor(0.5 / n * 1000) + 1) / 1000  # round(f * n) >= 1 needs f * n > 0.5 (0.5 rounds to 0)
        raise DataError(f"data.test_fraction = {fraction} of {n} examples is no test example; raise it to at "
                        f"least {least:g}, or set it to 0 for no test split")
    order = rng.permutation(n) if shuffle else np.arange(n)
    tr, te = order[: n - n_test], order[n - n_test:]
    take = lambda a, idx: None if a is None else a[idx]
    return ds.replace(x_train=ds.x_train[tr], y_train=take(ds.y_train, tr),
                      x_test=ds.x_train[te], y_test=take(ds.y_train, te))


def find_data_path(text: str, base_dir: str | Path | None = None) -> Path:
    """Where a data path of the spec (data.path, data.dir, ...) is read from: a relative path
    beside the spec (base_dir) first, else from the working directory (data/mnist where the
    user runs `gengraph run specs/...`); beside the spec when it is in neither. DataError for a path
    the system cannot look up (too long, a symlink loop, a folder it may not search, ~ of no user)."""
    try:
        p = Path(text).expanduser()
    except RuntimeError:  # "~name/..." where the system has no user "name": it was a traceback
        raise DataError(f"{shown(text)}: cannot expand {text.split('/')[0]!r}: no such user") from None
    if base_dir is None or p.is_absolute():
        status(p)  # for its DataError
        return p
    beside_spec = Path(base_dir) / p
    return beside_spec if status(beside_spec) is not None or status(p) is None else p


def make_dataset(data_spec: Mapping, seed: int, *, base_dir: str | Path | None = None) -> Dataset:
    """Load, split, scale and binarize the data a ``[data]`` table describes.

    ``base_dir`` is where relative file paths are looked up first (the spec's folder), then
    the working directory; default: the working directory only. Raises SpecError for a bad key or value (unknown
    source, misspelt key, value out of range) and DataError for anything wrong with the
    data itself (missing or malformed file, a split that leaves nothing to train on).
    """
    if "source" not in data_spec:
        raise SpecError(SpecIssue(None, None, None, "data.source",
                                  f"missing required key; set it to one of: {', '.join(DATASETS.names())}"))
    name = data_spec["source"]
    try:
        source = DATASETS.get(name)
    except UnknownKind as exc:
        raise SpecError(SpecIssue(None, None, None, "data.source", exc.message())) from None
    params = resolve_params(source, data_spec)
    elsewhere = {}  # key -> the working directory's path of a relative path found in neither place
    for key in getattr(source, "path_keys", ()):
        # an empty path where one is always read (a required key, or a default folder) would be
        # Path("") = the working folder; an optional one (default none: test_path, labels) left empty
        # is not given, the only way TOML and --set have to switch off a key the spec sets
        optional = getattr(source.params.get(key), "default", REQUIRED) is None
        if isinstance(params.get(key), str) and not params[key].strip() and not optional:
            raise DataError("an empty path: set it to a file or folder (relative paths are looked up from the "
                            "spec's folder, then the working directory)", key=f"data.{key}")
        if params.get(key):
            with from_key(f"data.{key}"):
                found = find_data_path(params[key], base_dir)
            if base_dir is not None and found != Path(params[key]).expanduser() and status(found) is None:
                elsewhere[f"data.{key}"] = Path(params[key]).expanduser().absolute()  # beside the spec, nor here
            params[key] = str(found)

    n = params.get("n")
    if isinstance(n, int) and not isinstance(n, bool):
        if (why := too_big(n * 8 * 3 * 2, f"data.n = {n} (at least 3 numbers per row, and a copy)")) is not None:
            raise DataError(why, key="data.n")  # at its line, not the [data] table's
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # generated inf/NaN: check_generated names them
            loaded = source.load(params, data_rng(seed))
    except MemoryError:
        raise DataError(f"the data set of source {name!r} does not fit in memory") from None
    except DataError as exc:
        if exc.key not in elsewhere:
            raise
        # the message names the path beside the spec: say the working directory was searched too
        raise DataError(f"{str(exc).rstrip('.')}. A relative {exc.key} is looked up beside the spec, then in the "
                        f"working directory: {elsewhere[exc.key]} does not exist either", key=exc.key) from None
    if isinstance(loaded, Dataset):
        ds = loaded
    else:
        x, y = loaded
        x = np.asarray(x, dtype=np.float64)
        if source.task == "classification":
            y = np.asarray(y, dtype=np.int64)
        elif y is not None:
            y = np.asarray(y, dtype=np.float64)
        check_generated(name, source, params, x, y)
        ds = Dataset(x, y, None, None, source.task, source.n_classes_for(params))
    ds.meta.setdefault("source", name)
    ds.meta["seed"] = int(seed)
    ds.meta["params"] = {k: v for k, v in params.items() if k not in SHARED_FIELDS}

    shared = {k: params[k] for k in SHARED_FIELDS}
    if ds.x_test is None:
        ds = _split(ds, shared["test_fraction"], shared["shuffle"], split_rng(seed))
        ds.meta["split"] = {"kind": "random" if shared["shuffle"] else "last rows",
                            "test_fraction": shared["test_fraction"]}
    else:
        if shared["shuffle"]:
            order = split_rng(seed).permutation(ds.n_train)
            ds = ds.replace(x_train=ds.x_train[order],
                            y_train=None if ds.y_train is None else ds.y_train[order])
        ds.meta["split"] = {"kind": "file"}

    stats = fit_scaling(shared["scale"], ds.x_train)
    if stats["method"] != "none":
        ds = ds.replace(x_train=apply_scaling(stats, ds.x_train), x_test=apply_scaling(stats, ds.x_test))
        ds.meta["x_scaling"] = stats
    if shared["scale_target"]:
        if ds.task != "regression":
            raise DataError(f'data.scale_target: only for a regression target; source "{name}" '
                            f"gives a {ds.task} task")
        ystats = fit_scaling("standardize", ds.y_train)
        ds = ds.replace(y_train=apply_scaling(ystats, ds.y_train), y_test=apply_scaling(ystats, ds.y_test))
        ds.meta["y_scaling"] = ystats
    if shared["binarize"] is not None:
        t = shared["binarize"]
        lo, hi = float(ds.x_train.min()), float(ds.x_train.max())
        if not lo <= t < hi:  # binarize = -1 or 1.5 on [0, 1] data trained on all-ones or all-zeros images
            raise DataError(f"the threshold {t:g} leaves every training feature "
                            f"{'1' if t < lo else '0'}: the threshold must lie in [{lo:g}, {hi:g}), the range of "
                            f"the {'scaled ' if shared['scale'] != 'none' else ''}training data", key="data.binarize")
        ds = ds.replace(x_train=(ds.x_train > t).astype(np.float64),
                        x_test=(ds.x_test > t).astype(np.float64))
        ds.meta["binarize"] = t
    return ds
