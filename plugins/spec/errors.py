"""The one error type for user mistakes in a spec or a --set override."""

from __future__ import annotations

from dataclasses import dataclass

from gengraph.engine.errors import UserError


@dataclass(frozen=True)
class SpecIssue:
    """One problem, located by file:line:col (each part may be unknown) and dotted key path."""

    file: str | None
    line: int | None
    col: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line, self.col) if p is not None)
        return ": ".join(p for p in (where, self.path, self.message) if p)


class SpecError(UserError):
    """All problems found in a spec, reported at once (one issue per line)."""

    def __init__(self, issues: list[SpecIssue] | SpecIssue):
        self.issues = [issues] if isinstance(issues, SpecIssue) else list(issues)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(i) for i in self.issues)
