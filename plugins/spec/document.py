"""Load a spec file: parse with positions, apply --set overrides, validate, keep both views.

The caller passes the full top-level schema (built from the installed plugins);
this layer only knows TOML, overrides and the ``spec_version`` every spec starts with.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from gengraph.plugins.registry import suggest
from gengraph.plugins.spec.errors import SpecError, SpecIssue
from gengraph.plugins.spec.overrides import apply_overrides
from gengraph.plugins.spec.schema import Table, validate
from gengraph.plugins.spec.toml_positions import MAX_SPEC_BYTES, locate, parse_toml, split_path
from gengraph.plugins.spec.toml_writer import dumps, format_value

SPEC_VERSION = 1


@dataclass
class Spec:
    data: dict  # resolved: validated, defaults filled
    file: str | None
    positions: dict = field(repr=False)
    raw: dict = field(repr=False)  # as written (overrides applied), before defaults
    notes: dict = field(default_factory=dict, repr=False)  # dotted key -> comment for to_toml
    has_lines: bool = field(default=True, repr=False)  # False: written from a dict, whose keys have no line

    def get(self, dotted: str, default=None):
        """The resolved value at a dotted path such as ``model.layers[0].units``."""
        node = self.data
        for token in split_path(dotted):
            try:
                node = node[token]
            except (KeyError, IndexError, TypeError):
                return default
        return node

    def position(self, path: str) -> tuple[str | None, int | None, int | None]:
        """(file, line, col) where path (or its nearest written ancestor) was set."""
        where = locate(self.positions, path, self.file)
        if not self.has_lines and where[0] == self.file:
            return (self.file, None, None)
        return where

    def to_toml(self) -> str:
        return dumps(self.data, comments=self.notes)


def _version_issues(raw: dict, file, positions) -> list[SpecIssue]:
    if "spec_version" not in raw:
        message = f"missing; put `spec_version = {SPEC_VERSION}` at the top of the spec"
        return [SpecIssue(file, 1 if file else None, 1 if file else None, "spec_version", message)]
    version = raw["spec_version"]
    if type(version) is int and version == SPEC_VERSION:
        return []
    where = locate(positions, "spec_version", file)
    message = (
        f"unsupported version {format_value(version)}; "
        f"this gengraph reads spec_version = {SPEC_VERSION}"
    )
    return [SpecIssue(*where, "spec_version", message)]


def spec_from_text(text: str, file: str | None, overrides, schema: Table) -> Spec:
    raw, positions = parse_toml(text, file)
    raw = apply_overrides(raw, list(overrides), known_schema=schema, positions=positions)
    issues = _version_issues(raw, file, positions)
    body = {k: v for k, v in raw.items() if k != "spec_version"}
    try:
        data = validate(schema, body, file=file, positions=positions)
    except SpecError as exc:
        issues += exc.issues
    if issues:
        raise SpecError(_version_typo(issues, raw))
    return Spec({"spec_version": SPEC_VERSION, **data}, file, positions, raw)


def _version_typo(issues: list[SpecIssue], raw: dict) -> list[SpecIssue]:
    """A misspelt spec_version ("sepc_version") is one issue at the typo that says so, instead of
    "spec_version: missing" and "sepc_version: unknown key (known keys: run, data, ...)"."""
    typos = {k for k in raw if "spec_version" not in raw and suggest(k, ["spec_version"]) == "spec_version"}
    if not typos:
        return issues
    out = []
    for i in issues:
        if i.path == "spec_version":
            continue
        if i.path in typos and i.message.startswith("unknown key"):
            i = SpecIssue(i.file, i.line, i.col, i.path, 'unknown key; did you mean "spec_version"?')
        out.append(i)
    return out


def read_spec_text(path) -> str:
    """The text of a spec file: a regular file of at most MAX_SPEC_BYTES, UTF-8; else a SpecError
    (so /dev/zero, a FIFO or a huge file is refused instead of read forever)."""
    file = str(path)

    def fail(message, line=None, col=None):
        return SpecError(SpecIssue(file, line, col, "", message))

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise fail(f"cannot read spec: {what}")
        if st.st_size > MAX_SPEC_BYTES:
            raise fail(f"spec too large ({st.st_size} bytes; at most {MAX_SPEC_BYTES})")
        with open(path, "rb") as fh:
            data = fh.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise fail("spec file not found") from None
    except OSError as exc:
        raise fail(f"cannot read spec: {exc.strerror or exc}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise fail(f"spec too large (more than {MAX_SPEC_BYTES} bytes)")
    try:  # a UTF-8 byte-order mark (Windows editors write one) is no TOML statement: skipped
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise fail(f"not UTF-8 text (byte 0x{data[exc.start]:02x})", line, col) from None


def load_spec(path, overrides=(), *, schema: Table) -> Spec:
    return spec_from_text(read_spec_text(path), str(path), overrides, schema)
