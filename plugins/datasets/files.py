"""File sources: ``csv``, ``npz`` and ``idx`` (MNIST's format).

Each returns a ``Dataset``. Without a ``test_path`` (``test_images`` for idx) its
``x_test`` is None and ``make_dataset`` splits off ``test_fraction`` of the rows at
random; with one, the file is the test set and nothing is split. Any missing or
malformed file raises ``DataError`` naming the file and saying what was expected and
what was found. Relative paths are resolved by ``make_dataset`` against its
``base_dir`` (the spec's folder when the spec loader passes it), and where nothing is
there, the working directory. A name ending in ``.gz`` is read through gzip.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import math
import zipfile
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np

from gengraph.plugins.blocks.memory import too_big
from gengraph.plugins.registry import suggest
from .base import REQUIRED, DataError, Dataset, Field, Source, from_key
from gengraph.plugins.blocks import memory

TASK_FIELD = Field(
    str, "auto",
    'what the target is: "auto" (text or whole-number targets -> classification, '
    'else regression), "regression", "classification", or "unsupervised" (no target)',
    choices=["auto", "regression", "classification", "unsupervised"],
)


# ---- reading bytes -------------------------------------------------------------------
def read_bytes(path, what: str) -> bytes:
    """The (gunzipped, for *.gz) content of path, or DataError saying what was expected."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file (expected {what})")
    if not p.is_file():
        raise DataError(f"{p}: is not a file (expected {what})")
    try:
        if p.suffix == ".gz":
            limit = memory.available_bytes() // 2
            with gzip.open(p, "rb") as f:
                data = f.read(limit + 1)
            if len(data) > limit:
                raise DataError(f"{p}: decompresses to more than {limit} bytes, more than half the "
                                f"memory available (expected {what})")
            return data
        return p.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:  # zlib.error: damaged compressed data
        raise DataError(f"{p}: cannot read {what}: {exc}") from exc


# ---- task and labels -----------------------------------------------------------------
def _is_integral(y: np.ndarray) -> bool:
    return y.dtype.kind in "iub"


MAX_AUTO_CLASSES = 50


def _whole_numbers(y: np.ndarray) -> bool:
    """Integers, or floats that are all whole numbers (labels written 0.0, 1.0)."""
    if y.dtype.kind == "f":
        return bool(np.all(np.isfinite(y)) and np.all(y == np.round(y)))
    return _is_integral(y)


def _few_integer_values(y: np.ndarray) -> bool:
    """task = "auto" reads whole-number targets as class labels only when there are few distinct
    values (at most MAX_AUTO_CLASSES, and fewer than half the rows); counts or prices stay regression."""
    if y.ndim != 1 or not _whole_numbers(y):
        return False
    distinct = len(np.unique(y))
    return distinct <= MAX_AUTO_CLASSES and (distinct <= 2 or distinct <= len(y) // 2)


def check_finite(x: np.ndarray, path, what: str, *, row_of=None) -> None:
    """DataError naming the file, row and column of the first NaN/inf in a 2-D array."""
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        row = f"line {row_of[i]}" if row_of is not None else f"row {i}"
        raise DataError(f"{path}: {what}, {row}, column {j}: expected a finite number, found {float(x[i, j])!r}"
                        " (NaN, infinity or a value too large for a float)")


def finish(x_train, y_train, x_test, y_test, *, task: str, source: str, path,
           feature_names=None, image_shape=None, meta=None, test_path=None) -> Dataset:
    """Decide the task, encode class labels as 0..K-1 and build the Dataset. Errors about the test
    targets name `test_path` (the test file) where there is one."""
    meta = dict(meta or {})
    meta.setdefault("source", source)
    meta["path"] = str(path)
    if task == "unsupervised" or y_train is None:
        if task not in ("auto", "unsupervised"):
            raise DataError(f"{path}: task is {task!r} but the file has no target")
        return Dataset(x_train, None, x_test, None, "unsupervised", None,
                       feature_names, image_shape, meta)
    if task == "auto":
        textual = y_train.dtype.kind in "USO"
        task = "classification" if textual or _few_integer_values(y_train) else "regression"
        meta["task_inferred"] = True
    files = ((path, "data.path"), (test_path or path, "data.test_path"))  # where each target array came from
    if task == "regression":
        y_train, y_test = (None if y is None else _numeric_targets(y, where, key)
                           for y, (where, key) in zip((y_train, y_test), files))
        for y, (where, key) in zip((y_train, y_test), files):
            if y is not None and not np.all(np.isfinite(y)):
                row = int(np.flatnonzero(~np.isfinite(y.reshape(len(y), -1)).any(axis=1))[0])
                raise DataError(f"{where}: target of row {row}: expected a finite number, "
                                f"found {y.reshape(len(y), -1)[row].tolist()}", key=key)
        return Dataset(x_train, y_train, x_test, y_test, "regression", None,
                       feature_names, image_shape, meta)
    # classification: labels -> 0..K-1 in sorted order of the original values
    ys = [y_train] + ([y_test] if y_test is not None else [])
    if any(y.ndim != 1 for y in ys):
        raise DataError(f"{path}: class labels must be one per row, found shape {y_train.shape}")
    for y, (where, key) in zip(ys, files):
        if y.dtype.kind == "f" and not _whole_numbers(y):  # each file's labels, the test file's too
            raise DataError(f"{where}: classification needs whole-number or text labels, "
                            "found fractional values (set task = \"regression\"?)", key=key)
    ys = [y.astype(np.int64) if y.dtype.kind == "f" else y for y in ys]
    classes = np.unique(np.concatenate(ys))
    coded = [np.searchsorted(classes, y).astype(np.int64) for y in ys]
    meta["classes"] = [c.item() if hasattr(c, "item") else c for c in classes]
    return Dataset(x_train, coded[0], x_test, coded[1] if len(coded) > 1 else None,
                   "classification", len(classes), feature_names, image_shape, meta)


def _numeric_targets(y, where, key):
    """y as float64 regression targets; text that is no number (or complex, dates) is an error."""
    if y.dtype.kind in "cmMV":
        raise DataError(f"{where}: regression needs numeric targets, found dtype {y.dtype}", key=key)
    try:
        return y.astype(np.float64)
    except (ValueError, OverflowError):
        row = next(i for i, v in enumerate(y.reshape(len(y), -1)) if not all(_number(str(e)) for e in v))
        raise DataError(f"{where}: regression needs numeric targets, found "
                        f"{y.reshape(len(y), -1)[row].tolist()} in row {row}", key=key) from None


# ---- csv -----------------------------------------------------------------------------
def _number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


MISSING = {"", "na", "n/a", "null", "?"}  # spellings of a missing value in a target column ("nan" is a float)


def _decode(raw: bytes, path, encoding: str) -> str:
    """The file's text; bytes the encoding cannot read are an error at their line (they were
    replaced by U+FFFD, which merged labels such as Köln and Kéln into one class)."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"data.encoding: unknown text encoding {encoding!r} (e.g. \"utf-8\", \"latin-1\", "
                        "\"cp1252\")") from None
    try:
        return raw.decode("utf-8-sig" if codec == "utf-8" else codec)
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not {encoding.upper() if codec == 'utf-8' else encoding} text (byte "
                        f"0x{raw[exc.start]:02X}); give the file's encoding as data.encoding, e.g. "
                        "\"latin-1\" or \"cp1252\"") from None


def _drop_trailing_empty_column(rows):
    """Rows written with a delimiter at the end of each line ("a,b,label,") end in an empty field
    that is no column: drop it (it became the target, and the real label a feature)."""
    ends_empty = [len(f) > 1 and f[-1] == "" for _, f in rows]
    if all(ends_empty) or (len(rows) > 1 and all(ends_empty[1:]) and len(rows[0][1]) == len(rows[1][1]) - 1):
        return [(line, f[:-1] if empty else f) for (line, f), empty in zip(rows, ends_empty)]
    return rows


def _has_header(rows) -> bool:
    """header = "auto": the first row is column names when it has text where the rows below it have
    numbers; a file whose columns below the first row are all text falls back to "the first row
    is not all numbers". (Text labels in a file without a header made its first row the header.)"""
    first, below = rows[0][1], [f for _, f in rows[1:101]]
    numeric = [j for j in range(len(first)) if below and all(j < len(f) and _number(f[j]) for f in below)]
    if numeric:
        return any(not _number(first[j]) for j in numeric)
    return not all(_number(f) for f in first)


def _read_csv(path, delimiter: str, header, encoding: str = "utf-8") -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """Header (or None) and the data rows with their line numbers. Lines starting with # are
    comments before the first row (np.savetxt writes its header that way) and, later, where they do
    not have the rows' number of fields: "#1,0.5,0.2" among rows of three fields is a row whose
    first value is "#1" (such rows were dropped: 21 of 40 rows of a file with labels "#1", "#2")."""
    raw = read_bytes(path, "a CSV file")
    if b"\0" in raw[:65536]:
        raise DataError(f"{path}: expected a CSV text file, found binary data (a NUL byte)")
    text = _decode(raw, path, encoding)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    rows, hashed = [], []
    try:
        for fields in reader:
            if not fields or all(not f.strip() for f in fields):
                continue
            commented = fields[0].lstrip().startswith("#")
            if commented and not rows:
                continue
            hashed.append(commented)
            rows.append((reader.line_num, [f.strip() for f in fields]))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from exc
    if rows:
        width = len(rows[0][1])
        rows = [r for r, h in zip(rows, hashed) if not h or len(r[1]) == width]
    if not rows:
        raise DataError(f"{path}: expected rows of comma-separated numbers, found no data")
    rows = _drop_trailing_empty_column(rows)
    if header == "auto":
        header = _has_header(rows)
    names = None
    if header:
        names = rows.pop(0)[1]
        if not rows:
            raise DataError(f"{path}: expected data rows after the header line, found none")
    width = len(names) if names is not None else len(rows[0][1])
    for line, fields in rows:
        if len(fields) != width:
            raise DataError(f"{path}:{line}: expected {width} fields"
                            f"{' (as in the header)' if names else ''}, found {len(fields)}"
                            f"{'' if delimiter != ',' or len(fields) > 1 else ' (is the delimiter right?)'}")
    return names, rows


def _target_index(target, names, width, path) -> int:
    if isinstance(target, bool):
        raise DataError(f"data.target: expected a column name or index, found {target!r}")
    if isinstance(target, int):
        if not -width <= target < width:
            raise DataError(f"{path}: target column {target} is out of range: the file has {width} columns")
        return target % width
    if names is None:
        if str(target).lstrip("-").isdigit():
            return _target_index(int(target), names, width, path)
        raise DataError(f"{path}: target {target!r} is a column name but the file has no header line")
    if target not in names:
        hint = suggest(target, names)
        raise DataError(f"{path}: no column named {target!r}"
                        + (f'; did you mean "{hint}"?' if hint else "")
                        + f" (columns: {', '.join(names)})")
    twice = [j for j, n in enumerate(names) if n == target]
    if len(twice) > 1:
        raise DataError(f"{path}: the header names {target!r} twice (columns {twice[0]} and {twice[1]}); "
                        "rename one, or give data.target as a column index")
    return names.index(target)


def _in_order_of(names, rows, ref_names, path):
    """A test file's columns in the training file's order, matched by name (they were matched by
    position: a test file with columns b,a,y was read as a,b,y)."""
    if names == ref_names:
        return rows
    if sorted(names) != sorted(ref_names) or len(set(names)) != len(names):
        raise DataError(f"{path}: columns {', '.join(names)} do not match the training file's "
                        f"{', '.join(ref_names)}")
    order = [names.index(n) for n in ref_names]
    return [(line, [fields[j] for j in order]) for line, fields in rows]


def _csv_arrays(path, params, ref_names=None, ref_width=None):
    names, rows = _read_csv(path, params["delimiter"], params["header"], params.get("encoding", "utf-8"))
    width = len(rows[0][1])
    if ref_width is not None and width != ref_width:
        raise DataError(f"{path}: expected {ref_width} columns like the training file, found {width}")
    if ref_names is not None and names is not None:
        rows, names = _in_order_of(names, rows, ref_names, path), list(ref_names)
    unsupervised = params["task"] == "unsupervised"
    t = None if unsupervised else _target_index(params["target"], names, width, path)
    cols = [j for j in range(width) if j != t]
    if not cols:
        raise DataError(f"{path}: expected feature columns besides the target, found {width} column(s) in all"
                        f"{' (is the delimiter right?)' if width == 1 else ''}")
    x = np.empty((len(rows), len(cols)), dtype=np.float64)
    for i, (line, fields) in enumerate(rows):
        for k, j in enumerate(cols):
            try:
                x[i, k] = v = float(fields[j])
            except ValueError:
                v = None
            if v is None or not math.isfinite(v):
                col = f"{names[j]!r} ({j})" if names else str(j)
                what = "a number" if v is None else "a finite number (not NaN, infinity or past 1.8e308)"
                raise DataError(f"{path}:{line}: column {col}: expected {what}, "
                                f"found {fields[j]!r}") from None
    y = None
    if t is not None:
        raw = [fields[t] for _, fields in rows]
        col = f"{names[t]!r} ({t})" if names else str(t)
        gap = next((i for i, v in enumerate(raw) if v.lower() in MISSING), None)
        if gap is not None:  # one "NA" made every target text: a regression became many classes
            raise DataError(f"{path}:{rows[gap][0]}: column {col} (the target): missing value {raw[gap]!r}; "
                            "fill it in or remove the row")
        try:
            y = np.array([int(v) for v in raw], dtype=np.int64)
        except (ValueError, OverflowError):
            try:
                y = np.array([float(v) for v in raw], dtype=np.float64)
            except ValueError:
                y = np.array(raw, dtype=str)
            if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
                i = int(np.flatnonzero(~np.isfinite(y))[0])
                raise DataError(f"{path}:{rows[i][0]}: column {col} (the target): expected a finite number, "
                                f"found {raw[i]!r}")
    feature_names = [names[j] for j in cols] if names else None
    return x, y, feature_names, width, names


class CSV(Source):
    name = "csv"
    help = ("a table of numbers from a CSV file: one row per example, the target in one column (lines starting "
            "with # before the data are comments; a delimiter at the end of every line is ignored)")
    params: ClassVar[dict[str, Field]] = {
        "path": Field(str, REQUIRED, "CSV file with the (training) data; *.gz is read through gzip"),
        "target": Field((int, str), -1, "target column: a name from the header or an index (default: the last)"),
        "header": Field((bool, str), "auto",
                        'whether the first line holds column names: true, false or "auto" (if it has text '
                        'where the lines below have numbers)',
                        choices=["auto", True, False]),
        "delimiter": Field(str, ",", "field separator"),
        "encoding": Field(str, "utf-8", 'text encoding of the files (e.g. "latin-1", "cp1252"); a UTF-8 BOM is '
                                        "skipped"),
        "test_path": Field(str, None, "optional CSV file with the test set, its columns matched to the "
                                      "training file's by header name (then nothing is split at random)"),
        "task": TASK_FIELD,
    }
    path_keys = ("path", "test_path")

    def load(self, params, rng):
        if len(params["delimiter"]) != 1:
            raise DataError(f"data.delimiter: expected one character, found {params['delimiter']!r}")
        path = params["path"]
        with from_key("data.path"):
            x, y, names, width, columns = _csv_arrays(path, params)
        x_te = y_te = None
        if params.get("test_path"):
            with from_key("data.test_path"):
                x_te, y_te, _, _, _ = _csv_arrays(params["test_path"], params, ref_names=columns, ref_width=width)
        y_task = params["task"]
        if y is not None and y_te is not None and y.dtype.kind != y_te.dtype.kind:
            # e.g. "1" in train but "1.5" or "one" in test: compare as floats, or as text
            kind = str if "U" in (y.dtype.kind, y_te.dtype.kind) else np.float64
            y, y_te = y.astype(kind), y_te.astype(kind)
        return finish(x, y, x_te, y_te, task=y_task, source=self.name, path=path,
                      feature_names=names, test_path=params.get("test_path"))


# ---- npz -----------------------------------------------------------------------------
def _npz_headers(p: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """name -> (shape, dtype) of each array in an .npz, read from the member headers only,
    so a huge or compressed-bomb array is refused before anything is decompressed in full."""
    if not p.is_file():
        raise DataError(f"{p}: is not a file (expected a NumPy .npz archive)")
    with open(p, "rb") as fh:
        magic = fh.read(6)
    if magic == b"\x93NUMPY":
        raise DataError(f"{p}: expected a .npz archive of named arrays, found a single .npy array")
    if not zipfile.is_zipfile(p):
        raise DataError(f"{p}: not a NumPy .npz archive (expected a zip of .npy arrays, as np.savez writes)")
    out = {}
    try:
        with zipfile.ZipFile(p) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _fortran, dtype = read(fh)
                out[info.filename[:-4]] = (tuple(shape), dtype)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file fails in zlib, tokenize, ...: all mean the same
        raise DataError(f"{p}: not a readable NumPy .npz archive: {type(exc).__name__}: {exc}") from None
    return out


def _npz_arrays(path, params, ref_features=None):
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file (expected a NumPy .npz archive)")
    headers = _npz_headers(p)
    for key in (params["x_key"], params["y_key"]):
        if key in headers:
            shape, dtype = headers[key]
            if dtype.hasobject:
                raise DataError(f"{p}: array {key!r} holds pickled Python objects, which are never loaded; "
                                "expected a numeric array")
            why = too_big(math.prod(shape) * max(dtype.itemsize, 8) * 2, f"array {key!r} of shape {shape}")
            if why:
                raise DataError(f"{p}: {why}")
    try:
        archive = np.load(p, allow_pickle=False)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - see _npz_headers
        raise DataError(f"{p}: expected a NumPy .npz archive without pickled objects, "
                        f"could not read it: {type(exc).__name__}: {exc}") from None
    if not hasattr(archive, "files"):
        raise DataError(f"{p}: expected a .npz archive of named arrays, found a single .npy array")
    try:
        keys = list(archive.files)
        if params["x_key"] not in keys:
            raise DataError(f"{p}: expected an array named {params['x_key']!r} (x_key), "
                            f"found {', '.join(keys) or 'no arrays'}")
        y = None
        if params["task"] != "unsupervised":
            if params["y_key"] not in keys:
                raise DataError(f"{p}: expected an array named {params['y_key']!r} (y_key), "
                                f"found {', '.join(keys) or 'no arrays'}; for data without "
                                'targets set task = "unsupervised"')
            y = archive[params["y_key"]]
        x = archive[params["x_key"]]
    except (DataError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged member (zlib.error, a bad CRC, ...)
        raise DataError(f"{p}: expected arrays without pickled objects, could not read them: "
                        f"{type(exc).__name__}: {exc}") from None
    finally:
        archive.close()
    if x.dtype.kind not in "biuf":
        raise DataError(f"{p}: array {params['x_key']!r} must be numeric, found dtype {x.dtype}")
    if x.ndim == 0:
        raise DataError(f"{p}: array {params['x_key']!r} must have one row per example, found a scalar")
    if x.shape[0] == 0 or math.prod(x.shape[1:]) == 0:
        raise DataError(f"{p}: array {params['x_key']!r} has shape {x.shape}: expected at least one row "
                        "and one feature")
    x, image_shape = as_images(x)
    x = x.astype(np.float64)
    check_finite(x.reshape(len(x), -1), p, f"array {params['x_key']!r}")
    n_features = int(np.prod(x.shape[1:], dtype=np.int64))
    if ref_features is not None and n_features != ref_features:
        raise DataError(f"{p}: expected {ref_features} features like the training file, found {n_features}")
    if y is not None:
        if y.dtype.kind not in "biufUS":  # complex lost its imaginary part, dates became day numbers
            raise DataError(f"{p}: array {params['y_key']!r} must hold numbers or text labels, found dtype "
                            f"{y.dtype}")
        if y.ndim == 0 or len(y) != len(x):
            raise DataError(f"{p}: expected {len(x)} targets in {params['y_key']!r} (one per row of "
                            f"{params['x_key']!r}), found shape {y.shape}")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
    return x, y, image_shape


class NPZ(Source):
    name = "npz"
    help = "arrays from a NumPy .npz archive (x: one row per example, y: targets)"
    params: ClassVar[dict[str, Field]] = {
        "path": Field(str, REQUIRED, ".npz file with the (training) arrays"),
        "x_key": Field(str, "x", "name of the feature array in the archive (extra axes are flattened)"),
        "y_key": Field(str, "y", "name of the target array in the archive"),
        "test_path": Field(str, None, "optional .npz file with the test set, same keys (then nothing is split)"),
        "task": TASK_FIELD,
    }
    path_keys = ("path", "test_path")

    def load(self, params, rng):
        with from_key("data.path"):
            x, y, image_shape = _npz_arrays(params["path"], params)
        x_te = y_te = None
        if params.get("test_path"):
            with from_key("data.test_path"):
                x_te, y_te, _ = _npz_arrays(params["test_path"], params,
                                            ref_features=int(np.prod(x.shape[1:], dtype=np.int64)))
            if x_te.shape[1:] != x.shape[1:]:
                x_te = x_te.reshape((len(x_te),) + x.shape[1:])
        return finish(x, y, x_te, y_te, task=params["task"], source=self.name, path=params["path"],
                      image_shape=image_shape, test_path=params.get("test_path"))


def as_images(x: np.ndarray):
    """(n, H, W) -> (n, 1, H, W) and (n, C, H, W) kept, with image_shape (C, H, W);
    (n, features) kept (image_shape None); more axes are flattened."""
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim == 4:
        return x, tuple(int(s) for s in x.shape[1:])
    return (x.reshape(len(x), -1) if x.ndim != 2 else x), None


# ---- idx (MNIST) ---------------------------------------------------------------------
IDX_TYPES = {
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


def read_idx(path, what: str = "an IDX file", ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (the MNIST format), checking the magic number and the size.

    The magic number is 0x00 0x00 TYPE NDIM (big-endian), followed by NDIM 4-byte
    big-endian sizes and the data. ``ndim`` is the number of dimensions expected
    (3 for MNIST images, 1 for labels).
    """
    data = read_bytes(path, what)
    if len(data) < 4:
        raise DataError(f"{path}: expected {what} starting with a 4-byte IDX magic number, "
                        f"found {len(data)} bytes")
    magic = int.from_bytes(data[:4], "big")
    z0, z1, code, nd = data[0], data[1], data[2], data[3]
    want = (f"0x000008{ndim:02X}" if ndim is not None else "0x0000TTNN")
    if z0 != 0 or z1 != 0 or code not in IDX_TYPES or nd == 0:
        raise DataError(f"{path}: bad IDX magic number 0x{magic:08X}; expected {want} for {what}"
                        " (is it an IDX file? gzip-compressed files must end in .gz)")
    if ndim is not None and nd != ndim:
        raise DataError(f"{path}: bad IDX magic number 0x{magic:08X}: expected {ndim} dimension(s) "
                        f"for {what} ({want}), found {nd}")
    head = 4 + 4 * nd
    if len(data) < head:
        raise DataError(f"{path}: truncated IDX header: expected {head} bytes, found {len(data)}")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(nd))
    dtype = IDX_TYPES[code]
    if 0 in shape:
        raise DataError(f"{path}: IDX header says shape {shape}: expected at least one "
                        f"{'image' if ndim == 3 else 'item'} and no zero dimension")
    need = head + math.prod(shape) * dtype.itemsize
    if len(data) != need:
        raise DataError(f"{path}: IDX header says shape {shape} of {dtype.name} ({need} bytes in all), "
                        f"found {len(data)} bytes")
    out = np.frombuffer(data, dtype=dtype, offset=head).reshape(shape)
    if dtype.kind == "f":
        check_finite(out.reshape(shape[0], -1), path, "IDX item")
    return out


def _idx_pair(images, labels, keys=("data.images", "data.labels")):
    with from_key(keys[0]):
        x = read_idx(images, "an IDX images file", ndim=3)
    y = None
    if labels:
        with from_key(keys[1]):
            y = read_idx(labels, "an IDX labels file", ndim=1)
            if len(y) != len(x):
                raise DataError(f"{labels}: expected {len(x)} labels (one per image in {images}), found {len(y)}")
            if y.dtype.kind == "f" and not _whole_numbers(y):  # 7.7 was truncated to class 7
                raise DataError(f"{labels}: labels must be whole numbers, found {y[y != np.round(y)][0]:g}")
    return x, y


class IDX(Source):
    name = "idx"
    help = "images and labels in the IDX format of MNIST (gzip read for *.gz)"
    params: ClassVar[dict[str, Field]] = {
        "images": Field(str, REQUIRED, "IDX file of training images (magic 0x00000803), e.g. train-images-idx3-ubyte.gz"),
        "labels": Field(str, None, "IDX file of training labels (magic 0x00000801); leave out for unsupervised use"),
        "test_images": Field(str, None, "optional IDX file of test images (then nothing is split at random)"),
        "test_labels": Field(str, None, "IDX file of test labels, with test_images"),
    }
    path_keys = ("images", "labels", "test_images", "test_labels")

    def load(self, params, rng):
        x, y = _idx_pair(params["images"], params.get("labels"))
        x_te = y_te = None
        if params.get("test_labels") and not params.get("test_images"):
            raise DataError("data.test_labels is set but data.test_images is not")
        if params.get("test_images"):
            if bool(params.get("labels")) != bool(params.get("test_labels")):
                raise DataError("data.labels and data.test_labels go together: give both or neither")
            x_te, y_te = _idx_pair(params["test_images"], params.get("test_labels"),
                                   ("data.test_images", "data.test_labels"))
            if x_te.shape[1:] != x.shape[1:]:
                raise DataError(f"{params['test_images']}: expected images of shape {x.shape[1:]} "
                                f"like the training images, found {x_te.shape[1:]}")
        image_shape = (1,) + tuple(int(s) for s in x.shape[1:])  # (C, H, W)
        flat = lambda a: None if a is None else a.reshape((len(a),) + image_shape).astype(np.float64)
        labels = lambda a: None if a is None else a.astype(np.int64)
        task = "classification" if y is not None else "unsupervised"
        return finish(flat(x), labels(y), flat(x_te), labels(y_te), task=task, source=self.name,
                      path=params["images"], image_shape=image_shape)


SOURCES = [CSV(), NPZ(), IDX()]
