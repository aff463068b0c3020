"""Files that appear whole or not at all: write to a temporary file, then rename."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np


def finite_json(value):
    """value with NumPy scalars/arrays as Python ones and NaN/+-inf as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return finite_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps_json(value, **kw) -> str:
    """json.dumps that never writes NaN or Infinity (they become null); `default` as json.dumps."""
    return json.dumps(finite_json(value), allow_nan=False, **kw)


def non_finite(metrics: dict) -> list[str]:
    """Names of the float entries of a flat dict of metrics that are NaN or infinite."""
    out = []
    for k, v in metrics.items():
        if isinstance(v, (float, np.floating)) and not math.isfinite(float(v)):
            out.append(f"{k} = {float(v)}")
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write via a temporary file in the same folder and rename: all or nothing."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        # mkstemp creates 0600; a run's files get the mode any new file would get (umask)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk: name the file meant, not the temporary (or nothing)
            raise _naming(exc, path) from None
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """The same error (type, errno, message) with `path` as its file name."""
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path)) if exc.errno else exc


def sha256_bytes(data: bytes | str) -> str:
    """The SHA-256 (hex) of data (text as UTF-8): what a file holding exactly these bytes hashes to."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def sha256_file(path) -> str:
    """The file's SHA-256 (hex); "" when it cannot be read, which matches no recorded digest (so a
    file that cannot be checked is never taken for one that was written)."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return ""


def save_npz(path: Path, arrays: dict) -> None:
    """np.savez into an atomic write (no object arrays, so loading never needs pickle)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write(path, buf.getvalue())


def save_npy(path: Path, array) -> None:
    """np.save into an atomic write (samples.npy and the like)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    atomic_write(path, buf.getvalue())


def save_samples(ctx, data, samples) -> None:
    """A generative run's samples.npy: samples in data units, shaped as the data's examples
    (images (n, C, H, W), else rows); nothing without a run folder."""
    path = ctx.path("samples.npy")
    if path is not None:
        save_npy(path, data.as_examples(np.asarray(samples)))


def writable_dir(path) -> str | None:
    """Create folder `path` (and its parents) and check that a file can be written in it; the
    reason when not (not a folder, read-only, /proc, a NUL byte in the name, ...), else None."""
    text = str(path)
    if "\0" in text:
        return "the path contains a NUL byte"
    p = Path(text)
    try:
        if p.exists() and not p.is_dir():
            return "it exists and is not a folder"
        p.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p, prefix=".probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        return f"cannot write there: {exc.strerror or exc}"
    except ValueError as exc:
        return f"not a usable path: {exc}"
    return None
