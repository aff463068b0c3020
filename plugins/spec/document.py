"""Load a spec file: parse with positions, apply --set overrides, validate, keep both views.

The caller passes the full top-level schema (built from the installed plugins);
this layer only knows TOML, overrides and the ``spec_version`` every spec starts with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gengraph.plugins.spec.errors import SpecError, SpecIssue
from gengraph.plugins.spec.overrides import apply_overrides
from gengraph.plugins.spec.schema import Table, validate
from gengraph.plugins.spec.toml_positions import locate, parse_toml, split_path
from gengraph.plugins.spec.toml_writer import dumps, format_value

SPEC_VERSION = 1


@dataclass
class Spec:
    data: dict  # resolved: validated, defaults filled
    file: str | None
    positions: dict = field(repr=False)
    raw: dict = field(repr=False)  # as written (overrides applied), before defaults

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
        return locate(self.positions, path, self.file)

    def to_toml(self) -> str:
        return dumps(self.data)


def _version_issues(raw: dict, file, positions) -> list[SpecIssue]:
    if "spec_version" not in raw:
        message = f"missing; put `spec_version = {SPEC_VERSION}` at the top of the spec"
        return [SpecIssue(file, None, None, "spec_version", message)]
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
        raise SpecError(issues)
    return Spec({"spec_version": SPEC_VERSION, **data}, file, positions, raw)


def load_spec(path, overrides=(), *, schema: Table) -> Spec:
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(SpecIssue(file, None, None, "", "spec file not found")) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SpecError(SpecIssue(file, None, None, "", f"cannot read spec: {reason}")) from None
    return spec_from_text(text, file, overrides, schema)
