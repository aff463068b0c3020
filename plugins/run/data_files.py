"""The data files a run reads are the ones it started with.

At run start each data path of the spec (a source's ``path_keys``: data.path, data.test_path,
data.dir, ...) is pinned to the absolute path it was read from, so the run's spec.toml reads
the same file from wherever --resume, `gengraph sample` or `gengraph.load` are invoked (a
relative path was looked up beside the run's spec.toml, then in the working directory); the
text as written stays beside it as a comment. The checkpoint records each file's size and
SHA-256 (`fingerprints`), and a resumed run or a sampled one refuses a file that changed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from gengraph.plugins.datasets import DATASETS, DataError
from gengraph.plugins.datasets.prepare import find_data_path
from gengraph.plugins.registry import UnknownKind
from gengraph.plugins.run.checkpoint import CheckpointError
from gengraph.plugins.spec.toml_writer import format_string


def _source(data_spec: dict):
    try:
        return DATASETS.get(data_spec.get("source"))
    except UnknownKind:
        return None


def path_keys(data_spec: dict) -> tuple[str, ...]:
    """The keys of [data] that name files or folders, for the spec's source."""
    return tuple(getattr(_source(data_spec), "path_keys", ()))


def pin_paths(spec, base_dir) -> None:
    """Rewrite the spec's relative data paths as the absolute paths they are read from (those that
    exist; a missing one keeps its text for the loader's message), noting the text as written."""
    data = spec.data["data"]
    for key in path_keys(data):
        text = data.get(key)
        if not text:
            continue
        try:
            found = find_data_path(text, base_dir)
            exists = found.exists()
        except (DataError, OSError):  # too long, a loop, no access: the loader says so at the key
            continue
        if exists and (absolute := os.path.abspath(found)) != text:
            data[key] = absolute
            spec.notes[f"data.{key}"] = f"as written: {format_string(text)}"


def fingerprints(spec) -> dict:
    """{"data.path": {"path", "size", "sha256", "files"?, "note"?}} of every data file or folder the spec
    names; of a folder, over the files its source reads from it ("files": their names)."""
    data, out = spec.data["data"], {}
    source = _source(data)
    for key in path_keys(data):
        if not data.get(key):
            continue
        path = Path(data[key])
        chosen = source.folder_files(key, path) if hasattr(source, "folder_files") and path.is_dir() else None
        if (print_ := _fingerprint(path, chosen)) is not None:
            note = spec.notes.get(f"data.{key}")
            out[f"data.{key}"] = {**print_, **({"note": note} if note else {})}
    return out


def _fingerprint(path: Path, chosen: list[Path] | None = None) -> dict | None:
    """Size and SHA-256 of a file; of a folder, over the names, sizes and bytes of the files in it
    (`chosen`, those a source reads; default every file, as the records of earlier versions were)."""
    try:
        folder = path.is_dir()
        if not folder:
            files = [path]
        else:
            files = sorted(chosen if chosen is not None else (f for f in path.iterdir() if f.is_file()))
        digest, size = hashlib.sha256(), 0
        for f in files:
            if folder:
                digest.update(f.name.encode() + b"\0")
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
                    size += len(block)
    except OSError:  # unreadable: the loader has already said so, or will
        return None
    chosen_names = {"files": [f.name for f in files]} if folder and chosen is not None else {}
    return {"path": str(path), "size": size, "sha256": digest.hexdigest(), **chosen_names}


def check_unchanged(checkpoint: Path, recorded: dict, spec, now: dict) -> None:
    """CheckpointError naming the file when a data file differs from the one the run started with;
    the notes of the paths as written come back from the checkpoint (a resumed run rewrites spec.toml)."""
    for key, old in recorded.items():
        new = now.get(key)
        if new is None or new["path"] != old.get("path"):
            continue  # another path is another spec: check_fingerprint has refused it already
        seen = new
        if "files" in new and "files" not in old:  # recorded over the whole folder by an earlier version
            seen = _fingerprint(Path(new["path"])) or new
        if (seen["size"], seen["sha256"]) != (old.get("size"), old.get("sha256")):
            raise CheckpointError(
                f"{checkpoint}: {key} = {new['path']}: the data changed since the run started "
                f"({old.get('size')} bytes, SHA-256 {str(old.get('sha256'))[:12]}...; now {seen['size']} bytes, "
                f"{seen['sha256'][:12]}...), and its model was trained on the old data: restore the file, "
                "or start a new run on the new data (another --out, or --overwrite)")
        if isinstance(old.get("note"), str) and key not in spec.notes:
            spec.notes[key] = new["note"] = old["note"]
