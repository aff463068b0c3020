"""The one error type for user mistakes in a spec or a --set override."""

from __future__ import annotations

from dataclasses import dataclass


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


class SpecError(Exception):
    """All problems found in a spec, reported at once (one issue per line)."""

    def __init__(self, issues: list[SpecIssue] | SpecIssue):
        self.issues = [issues] if isinstance(issues, SpecIssue) else list(issues)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(i) for i in self.issues)

    def _render_traceback_(self):
        """IPython/Jupyter show a user's spec mistake as its message, not a traceback."""
        return [f"{type(self).__name__}: {line}" for line in str(self).splitlines()]
