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
import functools
import gzip
import io
import itertools
import math
import operator
import os
import stat
import zipfile
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np

from gengraph.plugins.blocks.memory import too_big
from gengraph.plugins.registry import suggest
from .base import REQUIRED, DataError, Dataset, Field, Source, from_key, reopening
from gengraph.plugins.blocks import memory

TASK_FIELD = Field(
    str, "auto",
    'what the target is: "auto" (text targets, and whole-number targets with few distinct values '
    '(at most 50, and at most half the rows, or two) -> classification, else regression), '
    '"regression", "classification", or "unsupervised" (no target)',
    choices=["auto", "regression", "classification", "unsupervised"],
)


# ---- reading bytes -------------------------------------------------------------------
GZIP_CHUNK = 1 << 20  # bytes decompressed at a time: read(limit) allocated the whole limit up front


def shown(path, limit: int = 80) -> str:
    """path for a message, cut to its first `limit` characters (a path of 6000 filled the screen)."""
    text = str(path)
    return text if len(text) <= limit else text[:limit] + "…"


def status(path) -> os.stat_result | None:
    """path's stat, or None where nothing is there; DataError for a path the system cannot look up (too
    long, a symlink loop, a folder without search permission): Path.exists() raised those as OSError,
    which the CLI reported as "validate failed" (exit 1) without the key, echoing the whole path."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL in the name
        return None
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise DataError(f"{shown(path)}: {why[0].lower() + why[1:]}") from None


def read_bytes(path, what: str) -> bytes:
    """The (gunzipped, for *.gz) content of path, or DataError saying what was expected. More than half
    the memory available is refused (the rest is for the arrays read from it)."""
    p = Path(path)
    st = status(p)
    if st is None:
        raise DataError(f"{p}: no such file (expected {what})")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{p}: is not a file (expected {what})")
    limit = memory.available_bytes() // 2
    try:
        if p.suffix == ".gz":
            return _gunzip(p, limit, what)
        if st.st_size > limit:
            raise DataError(f"{p}: holds {st.st_size} bytes, more than half the memory available (expected {what})")
        return p.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:  # zlib.error: damaged compressed data
        raise DataError(f"{p}: cannot read {what}: {exc}") from exc


def _gunzip(p: Path, limit: int, what: str) -> bytes:
    """The decompressed content, read GZIP_CHUNK bytes at a time up to `limit` (a bomb stops there)."""
    out = io.BytesIO()
    with gzip.open(p, "rb") as f:
        while chunk := f.read(GZIP_CHUNK):
            if out.tell() + len(chunk) > limit:
                raise DataError(f"{p}: decompresses to more than {limit} bytes, more than half the "
                                f"memory available (expected {what})")
            out.write(chunk)
    return out.getvalue()  # BytesIO hands over its buffer: no second copy


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
           feature_names=None, image_shape=None, meta=None, test_path=None, test_key="data.test_path",
           test_line=None) -> Dataset:
    """Decide the task, encode class labels as 0..K-1 and build the Dataset. Errors about the test
    targets name `test_path` (the test file, given at `test_key`) where there is one, and the line
    `test_line(row)` says a test row was read from, where the reader knows it."""
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
    files = ((path, "data.path"), (test_path or path, test_key))  # where each target array came from
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
    both = np.concatenate(ys)  # (in the type they are compared in: int and text labels as text)
    if len(ys) > 1 and not reopening():  # a finished run's data are read as it trained on them
        _refuse_unseen(both[:len(ys[0])], both[len(ys[0]):], *files[1], test_line)
    classes = np.unique(both)
    coded = [np.searchsorted(classes, y).astype(np.int64) for y in ys]
    meta["classes"] = [c.item() if hasattr(c, "item") else c for c in classes]
    return Dataset(x_train, coded[0], x_test, coded[1] if len(coded) > 1 else None,
                   "classification", len(classes), feature_names, image_shape, meta)


def _refuse_unseen(y_train, y_test, where, key, line_of=None) -> None:
    """DataError for test labels no training row has: np.unique over both splits made each a class
    without a training example ("3 classes" from train labels 0, 1 and a test file of 5s), unsaid."""
    unseen = ~np.isin(y_test, y_train)
    if not unseen.any():
        return
    labels = [_label(v) for v in np.unique(y_test[unseen])]
    more = f" and {len(labels) - 5} more" if len(labels) > 5 else ""
    first = int(np.flatnonzero(unseen)[0])
    at = f"line {line_of(first)}" if line_of is not None else f"row {first}"
    many = len(labels) > 1
    it = "them" if many else "it"
    raise DataError(f"{where}: test label{'s' if many else ''} {', '.join(labels[:5])}{more} "
                    f"({int(unseen.sum())} of {len(y_test)} rows, the first at {at}) never "
                    f"occur{'' if many else 's'} in the training data: the training split has no example of {it} "
                    f"to learn from; add training rows of {it} or remove those test rows", key=key)


def _label(v) -> str:
    v = v.item() if hasattr(v, "item") else v
    return repr(v) if isinstance(v, (str, bytes)) else str(v)


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


TEXT_CHUNK = 1 << 16  # bytes decoded at a time (io.StringIO holds its text at 4 bytes a character)
BLOCK_ROWS = 256  # rows converted to numbers at a time, the only ones held as strings; blocks of 4096
# rows lived into the GC's oldest generation, whose passes over them doubled the time
HEAD_ROWS = 101  # the first row and the 100 below it, what header = "auto" is decided on


def _text_codec(encoding: str) -> str:
    """The codec data.encoding names; DataError at that key when Python knows none, or it is no text
    encoding (rot13, hex, base64 passed codecs.lookup and then failed bytes.decode with a traceback)."""
    try:
        codec = codecs.lookup(encoding).name
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        raise DataError(f"unknown text encoding {encoding!r} (e.g. \"utf-8\", \"latin-1\", "
                        "\"cp1252\")", key="data.encoding") from None
    try:
        b"a".decode(codec, "ignore")  # (b"" is never decoded: it is "" whatever the codec)
    except (LookupError, UnicodeError):  # LookupError: "is not a text encoding"; UnicodeError: "undefined"
        raise DataError(f"{encoding!r} is not a text encoding (it does not turn bytes into text); "
                        "give the file's encoding, e.g. \"utf-8\", \"latin-1\" or \"cp1252\"",
                        key="data.encoding") from None
    return codec


BOMS = {  # codec -> (byte order mark, codec of the text after it), as bytes.decode reads them
    "utf-8": ((codecs.BOM_UTF8, "utf-8"),),
    "utf-8-sig": ((codecs.BOM_UTF8, "utf-8"),),
    "utf-16": ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")),
    "utf-32": ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be")),
    **{c: ((bom, c),) for c, bom in (("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", codecs.BOM_UTF16_BE),
                                     ("utf-32-le", codecs.BOM_UTF32_LE), ("utf-32-be", codecs.BOM_UTF32_BE))},
}
WIDE = ("utf-16", "utf-32")  # codecs whose text holds NUL bytes: "a" is 61 00 in UTF-16-LE


def _wide_codec(raw: bytes, codec: str) -> str:
    """The codec a UTF-16/32 byte order mark names ("utf-16": _after_bom reads the mark), else
    `codec`: Excel's "Unicode text" export starts with one, also where data.encoding is left at
    "utf-8" (a non-Unicode encoding the user gave is kept). UTF-32-LE's mark is tried first, as it
    starts with UTF-16-LE's."""
    if not codec.startswith("utf"):
        return codec
    for wide, bom in (("utf-32", codecs.BOM_UTF32_LE), ("utf-32", codecs.BOM_UTF32_BE),
                      ("utf-16", codecs.BOM_UTF16_LE), ("utf-16", codecs.BOM_UTF16_BE)):
        if raw.startswith(bom):
            return codec if codec.startswith(wide) and bom in dict(BOMS[codec]) else wide
    return codec


def _after_bom(raw: bytes, codec: str) -> tuple[str, int]:
    """The codec that reads raw, and where its text starts: past a BOM (a UTF-8 one too), and
    UTF-16/32 without one in the byte order its text shows (_byte_order; their incremental
    decoders refuse those: "UTF-16 stream does not start with BOM")."""
    for bom, plain in BOMS.get(codec, ()):
        if raw.startswith(bom):
            return plain, len(bom)
    if codec in ("utf-16", "utf-32"):
        return f"{codec}-{_byte_order(raw, 2 if codec == 'utf-16' else 4)}", 0
    return codec, 0


def _byte_order(raw: bytes, width: int) -> str:
    """"le" or "be" for UTF-16 (width 2) or UTF-32 (4) text without a byte order mark, from where its
    zero bytes fall: a CSV's digits, commas and newlines are code units below 256, whose zero bytes
    come last in little-endian ("1" is 31 00) and first in big-endian (00 31). bytes.decode("utf-16")
    would assume the machine's order and turn a big-endian file into CJK characters. Without such
    code units (no evidence either way) big-endian, as RFC 2781 says for text without a mark."""
    head = np.frombuffer(raw[:4096 - 4096 % width][:len(raw) - len(raw) % width], np.uint8).reshape(-1, width)
    zeros = (head == 0).sum(axis=0)
    return "le" if zeros[-1] > zeros[0] else "be"


def _text_pieces(raw: bytes, codec: str, path, encoding: str):
    """The file's text, decoded TEXT_CHUNK bytes at a time (all at once, the text and the rows made
    from it took ~44x the file's size). Bytes the encoding cannot read are an error at their line
    (they were replaced by U+FFFD, which merged Köln and Kéln into one class)."""
    plain, start = _after_bom(raw, codec)
    decoder = codecs.getincrementaldecoder(plain)()
    for at in range(start, len(raw), TEXT_CHUNK):
        held = len(decoder.getstate()[0])  # bytes of a character the last piece ended inside
        try:
            text = decoder.decode(raw[at:at + TEXT_CHUNK], final=at + TEXT_CHUNK >= len(raw))
        except UnicodeError as exc:  # UnicodeDecodeError, or a codec's own complaint (idna)
            raise DataError(_not_text(raw, path, encoding, codec, exc, at - held)) from None
        yield text


def _not_text(raw: bytes, path, encoding: str, codec: str, exc: UnicodeError, at: int) -> str:
    name = encoding.upper() if codec == "utf-8" else encoding
    advice = 'give the file\'s encoding as data.encoding, e.g. "latin-1" or "cp1252"'
    if not isinstance(exc, UnicodeDecodeError):
        return f"{path}: not {name} text ({exc}); {advice}"
    pos = at + exc.start
    if codec.startswith(WIDE):  # there a 0x0A byte is also part of other characters: count decoded newlines
        line = raw[:pos].decode(codec, "replace").count("\n") + 1
    else:
        line = raw.count(b"\n", 0, pos) + 1
    return f"{path}:{line}: not {name} text (byte 0x{raw[pos]:02X}); {advice}"


def _lines(pieces):
    """The lines of the text in `pieces`, each with its "\\n": cut where io.StringIO cuts them for
    csv.reader (only at "\\n"), wherever the pieces end."""
    rest = []
    for piece in pieces:
        cut = piece.rfind("\n") + 1
        if cut:
            yield from io.StringIO("".join(rest) + piece[:cut])
            rest = []
        rest.append(piece[cut:])
    if tail := "".join(rest):
        yield tail


def _records(raw: bytes, codec: str, delimiter: str, path, encoding: str):
    """(line number, fields) of each row. Blank lines are skipped, and lines starting with # are
    comments before the first row (np.savetxt writes its header that way) and, later, where they do
    not have the first row's number of fields: "#1,0.5,0.2" among rows of three fields is a row whose
    first value is "#1" (such rows were dropped: 21 of 40 rows of a file with labels "#1", "#2")."""
    reader = csv.reader(_lines(_text_pieces(raw, codec, path, encoding)), delimiter=delimiter)
    width = None
    try:
        for fields in reader:
            lead = fields[0].lstrip()[:1] if fields else ""
            if lead in ("", "#") and (not "".join(fields).strip() or (lead == "#" and len(fields) != width)):
                continue
            width = width or len(fields)
            yield reader.line_num, fields
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from exc


def _ends_empty(fields) -> bool:
    return len(fields) > 1 and not fields[-1].strip()


def _has_header(rows) -> bool:
    """header = "auto": the first row is column names when it has text where the rows below it have
    numbers; a file whose columns below the first row are all text falls back to "the first row
    is not all numbers". (Text labels in a file without a header made its first row the header.)"""
    first, below = rows[0][1], [f for _, f in rows[1:101]]
    numeric = [j for j in range(len(first)) if below and all(j < len(f) and _number(f[j]) for f in below)]
    if numeric:
        return any(not _number(first[j]) for j in numeric)
    return not all(_number(f) for f in first)


class _Table:
    """A CSV file's layout, from a first pass that keeps no more than HEAD_ROWS rows: the column names
    (None without a header), the number of columns and of data rows; `rows()` reads the data rows
    again, one at a time."""

    def __init__(self, path, records, names, width: int, n: int):
        self.path, self._records, self.names, self.width, self.n = path, records, names, width, n

    def rows(self):
        return itertools.islice(self._records(), 1 if self.names is not None else 0, None)

    def line_of(self, row: int) -> int:
        """The line data row `row` was read from (read again: only for an error message)."""
        return next(itertools.islice(self.rows(), row, None))[0]


def _read_csv(path, delimiter: str, header, encoding: str = "utf-8") -> _Table:
    raw = read_bytes(path, "a CSV file")
    given = _text_codec(encoding)
    codec = _wide_codec(raw, given)
    if not codec.startswith(WIDE) and b"\0" in raw[:65536]:  # NUL bytes are text only in UTF-16/32
        raise DataError(f"{path}: expected a CSV text file, found binary data (a NUL byte); a UTF-16 text "
                        'file (Excel\'s "Unicode text") without a byte order mark needs data.encoding = "utf-16"')
    records = functools.partial(_records, raw, codec, delimiter, path, encoding if codec == given else codec)
    head, first_line, rest_empty, n = _scan(records())
    if not head:
        raise DataError(f"{path}: expected rows of comma-separated numbers, found no data")
    drop = _drops_trailing_empty(head, rest_empty)
    head = [(line, f[:-1] if drop and _ends_empty(f) else f) for line, f in head]
    if header == "auto":
        header = _has_header(head)
    names = head[0][1] if header else None
    if header and n == 1:
        raise DataError(f"{path}: expected data rows after the header line, found none")
    width = len(head[0][1])
    _check_ragged(path, first_line, width, drop, names, delimiter, records)
    return _Table(path, records, names, width, n - bool(header))


def _scan(rows):
    """A first pass over the rows: the first HEAD_ROWS (stripped); of the others only their shape:
    {number of fields: line of the first row past the first with that many}, whether every row past
    the first ends in an empty field, and the number of rows."""
    rows = iter(rows)
    head = [(line, [f.strip() for f in fields]) for line, fields in itertools.islice(rows, HEAD_ROWS)]
    first_line = {}
    for line, fields in head[1:]:
        first_line.setdefault(len(fields), line)
    rest_empty, n = all(_ends_empty(f) for _, f in head[1:]), len(head)
    for n, (line, fields) in enumerate(rows, len(head) + 1):
        first_line.setdefault(len(fields), line)
        if rest_empty and (len(fields) < 2 or fields[-1].strip()):
            rest_empty = False
    return head, first_line, rest_empty, n


def _drops_trailing_empty(head, rest_empty: bool) -> bool:
    """Rows written with a delimiter at the end of each line ("a,b,label,") end in an empty field that
    is no column (it became the target, and the real label a feature): every row ends in one, or every
    row but a header that is one field shorter."""
    first = head[0][1]
    return rest_empty and (_ends_empty(first) or (len(head) > 1 and len(first) == len(head[1][1]) - 1))


def _check_ragged(path, first_line: dict, width: int, drop: bool, names, delimiter: str, records) -> None:
    """DataError at the first row (past the first) with other than `width` fields (+1 where a trailing
    delimiter is dropped)."""
    line, found = min(((line, k - drop) for k, line in first_line.items() if k != width + drop), default=(0, 0))
    if line:
        hint = _delimiter_hint(records, line, delimiter)
        if not hint and delimiter == "," and found <= 1:
            hint = " (is the delimiter right?)"
        raise DataError(f"{path}:{line}: expected {width} fields{' (as in the header)' if names else ''}, found "
                        f"{found}{hint}")


COMMON_DELIMITERS = (",", ";", "\t", "|")


def _delimiter_hint(records, line: int, delimiter: str) -> str:
    """' (is the delimiter right? data.delimiter = ";")' where another common delimiter splits the first
    row and the one at `line` into as many fields (more than one): a European file (a;b;y, 1,5;2;0) read
    with "," was only "expected 1 fields, found 3". Both rows are read again: only for the message."""
    rows = records()
    first = next(rows)[1]
    bad = next((fields for at, fields in rows if at == line), None)
    if bad is None:
        return ""
    for d in COMMON_DELIMITERS:
        counts = {len(next(csv.reader([delimiter.join(f)], delimiter=d))) for f in (first, bad)}
        if d != delimiter and len(counts) == 1 and counts.pop() > 1:
            return f' (is the delimiter right? data.delimiter = "{d.encode("unicode_escape").decode()}")'
    return ""


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


def _in_order_of(names, ref_names, path) -> list[int]:
    """For each of the training file's columns, where the test file has it, matched by name (they were
    matched by position: a test file with columns b,a,y was read as a,b,y)."""
    if names == ref_names:
        return list(range(len(names)))
    if sorted(names) != sorted(ref_names) or len(set(names)) != len(names):
        raise DataError(f"{path}: columns {', '.join(names)} do not match the training file's "
                        f"{', '.join(ref_names)}")
    return [names.index(n) for n in ref_names]


def _column(names, j) -> str:
    return f"{names[j]!r} ({j})" if names else str(j)


def _blocks(rows):
    """(index of the first row, line numbers, fields) of BLOCK_ROWS rows at a time."""
    rows, i = iter(rows), 0
    while block := list(itertools.islice(rows, BLOCK_ROWS)):
        lines, fields = zip(*block)
        yield i, lines, fields
        i += len(block)


def _cells(rows, at: list[int]):
    """The fields at positions `at` of each row, row after row."""
    pick = operator.itemgetter(*at)
    return map(pick, rows) if len(at) == 1 else itertools.chain.from_iterable(map(pick, rows))


def _columns(table: _Table, cols: list[int], at: list[int], names, target: _Target | None):
    """The feature columns (`cols`, read at positions `at` of each row) as float64, and the target's
    values into `target`, in one more pass over the rows, block by block."""
    x = np.empty((table.n, len(cols)), dtype=np.float64)
    for i, lines, rows in _blocks(table.rows()):
        try:
            part = np.fromiter(map(float, _cells(rows, at)), np.float64, count=len(rows) * len(at))
        except ValueError:
            part = None
        if part is None or not np.isfinite(part).all():
            _bad_feature(table.path, lines, rows, cols, at, names)
        x[i:i + len(rows)] = part.reshape(len(rows), len(at))
        if target is not None:
            target.add(i, lines, rows)
    return x


def _bad_feature(path, lines, rows, cols, at, names):
    """DataError at the first value of a block (row by row) that is no number, or not a finite one."""
    for line, fields in zip(lines, rows):
        for j, k in zip(cols, at):
            try:
                v = float(fields[k])
            except ValueError:
                v = None
            if v is None or not math.isfinite(v):
                what = "a number" if v is None else "a finite number (not NaN, infinity or past 1.8e308)"
                raise DataError(f"{path}:{line}: column {_column(names, j)}: expected {what}, "
                                f"found {fields[k].strip()!r}")


class _Target:
    """The target column (position `at` of each row), block by block: int64 while every value is a
    whole number that fits, else float64, else text (read in a pass of its own), as all the values
    at once went int -> float -> str; DataError at a missing or non-finite value."""

    def __init__(self, table: _Table, at: int, col: str):
        self.table, self.at, self.col = table, at, col
        self.y = np.empty(table.n, dtype=np.int64)
        self.text = False
        self.bad = None  # (line, value) of the first value that is not finite

    def add(self, i: int, lines, rows) -> None:
        if self.text:
            return
        texts = [fields[self.at] for fields in rows]
        if self.y.dtype == np.int64:
            try:
                self.y[i:i + len(texts)] = np.fromiter(map(int, texts), np.int64, count=len(texts))
                return
            except (ValueError, OverflowError):
                self.y = self.y.astype(np.float64)  # the values so far, as float() reads them
        try:
            part = np.fromiter(map(float, texts), np.float64, count=len(texts))
        except ValueError:
            self.text, self.y = True, None  # read again as text, in values()
            return
        self.y[i:i + len(texts)] = part
        if self.bad is None and not np.isfinite(part).all():
            k = int(np.flatnonzero(~np.isfinite(part))[0])
            self.bad = lines[k], texts[k].strip()

    def values(self) -> np.ndarray:
        if self.text:
            return self._labels()
        if self.bad is not None:
            raise DataError(f"{self.table.path}:{self.bad[0]}: column {self.col} (the target): expected a finite "
                            f"number, found {self.bad[1]!r}")
        return self.y

    def _labels(self) -> np.ndarray:
        """Text labels; a missing value is an error (one "NA" among numeric targets made them all text:
        a regression became many classes)."""
        parts = []
        for _, lines, rows in _blocks(self.table.rows()):
            texts = [fields[self.at].strip() for fields in rows]
            gap = next((k for k, v in enumerate(texts) if v.lower() in MISSING), None)
            if gap is not None:
                raise DataError(f"{self.table.path}:{lines[gap]}: column {self.col} (the target): missing value "
                                f"{texts[gap]!r}; fill it in or remove the row")
            parts.append(np.array(texts, dtype=str))
        return np.concatenate(parts)


def _csv_arrays(path, params, ref_names=None, ref_width=None):
    table = _read_csv(path, params["delimiter"], params["header"], params.get("encoding", "utf-8"))
    width, names, order = table.width, table.names, list(range(table.width))
    if ref_width is not None and width != ref_width:
        raise DataError(f"{path}: expected {ref_width} columns like the training file, found {width}")
    if ref_names is not None and names is not None:
        order, names = _in_order_of(names, ref_names, path), list(ref_names)
    unsupervised = params["task"] == "unsupervised"
    t = None if unsupervised else _target_index(params["target"], names, width, path)
    cols = [j for j in range(width) if j != t]
    if not cols:
        raise DataError(f"{path}: expected feature columns besides the target, found {width} column(s) in all"
                        f"{' (is the delimiter right?)' if width == 1 else ''}")
    # the arrays, and the copy the train/test split makes of them, before anything is allocated
    if (why := too_big(2 * 8 * table.n * width, f"{table.n} rows of {width} numbers")) is not None:
        raise DataError(f"{path}: {why}")
    target = None if t is None else _Target(table, order[t], _column(names, t))
    x = _columns(table, cols, [order[j] for j in cols], names, target)
    y = None if target is None else target.values()
    feature_names = [names[j] for j in cols] if names else None
    return x, y, feature_names, width, names, table.line_of


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
            x, y, names, width, columns, _ = _csv_arrays(path, params)
        x_te = y_te = test_line = None
        if params.get("test_path"):
            with from_key("data.test_path"):
                x_te, y_te, _, _, _, test_line = _csv_arrays(params["test_path"], params, ref_names=columns,
                                                             ref_width=width)
        y_task = params["task"]
        if y is not None and y_te is not None and y.dtype.kind != y_te.dtype.kind:
            # e.g. "1" in train but "1.5" or "one" in test: compare as floats, or as text
            kind = str if "U" in (y.dtype.kind, y_te.dtype.kind) else np.float64
            y, y_te = y.astype(kind), y_te.astype(kind)
        return finish(x, y, x_te, y_te, task=y_task, source=self.name, path=path,
                      feature_names=names, test_path=params.get("test_path"), test_line=test_line)


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
    _refuse_channels_last(x, p, params["x_key"])
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
        "x_key": Field(str, "x", "name of the feature array in the archive: rows (n, features), or images "
                       "(n, H, W) or (n, C, H, W) (square channel-last (n, H, W, C) arrays are refused: transpose "
                       "them); more axes are flattened"),
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


def _refuse_channels_last(x: np.ndarray, path, key: str) -> None:
    """DataError for square (N, H, W, C) images (last axis 1, 3 or 4; axes 1 and 2 equal and larger;
    axes 2 and 3 not): read as (N, C, H, W) they became C=H, H=W, W=C, scrambled pixels said nowhere
    ("images 8x8x3"). A square (N, C, H, W) array (16 channels of 4x4) is not one; a run's own data
    are read as they were (reopening)."""
    if x.ndim != 4 or reopening():
        return
    _, a, b, c = x.shape
    if c in (1, 3, 4) and a == b > 4 and b != c:
        raise DataError(f"{path}: array {key!r} has shape {x.shape}, images with the channels last (N, H, W, C); "
                        f"gengraph reads 4-d arrays as (N, C, H, W): convert with "
                        f"np.transpose({key}, (0, 3, 1, 2)) (or np.moveaxis({key}, -1, 1)) and save the archive again")


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


_IDX_CODES = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}  # native dtype -> type code


def idx_bytes(a) -> bytes:
    """The IDX encoding of array `a` (read_idx's inverse): its magic number from the dtype
    (uint8, int8, int16, int32, float32 or float64), the sizes, the data big-endian. For making
    MNIST-format files of one's own data, or synthetic ones."""
    a = np.asarray(a)
    code = _IDX_CODES.get(a.dtype.newbyteorder("="))
    if code is None or a.ndim == 0:
        raise ValueError(f"IDX holds arrays of {', '.join(sorted(d.name for d in _IDX_CODES))} with at least one "
                         f"dimension, not a {a.ndim}-d {a.dtype.name} array")
    head = bytes([0, 0, code, a.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in a.shape)
    return head + a.astype(IDX_TYPES[code]).tobytes()


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
                      path=params["images"], image_shape=image_shape, test_path=params.get("test_labels"),
                      test_key="data.test_labels")


SOURCES = [CSV(), NPZ(), IDX()]
