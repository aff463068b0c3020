"""The one error type for user mistakes in a spec or a --set override."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gengraph.engine.errors import UserError


_UNSAFE = {c for c in range(0x20)} | {0x7F} | set(range(0x80, 0xA0)) | {0x200E, 0x200F} | \
    set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A))


def with_article(noun: str) -> str:
    """"an array", "a table": a noun for a message, with its indefinite article."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def printable(text: str, keep_newlines: bool = False) -> str:
    """text with control characters (newlines, escape sequences, bidi overrides) written as
    Python escapes, so a user-supplied name can neither split a message nor reach the terminal."""
    text = str(text)
    if not any(ord(c) in _UNSAFE for c in text):
        return text
    return "".join(c if ord(c) not in _UNSAFE or (keep_newlines and c == "\n")
                   else c.encode("unicode_escape").decode("ascii") for c in text)


def first_named(message: str, keys: dict[str, str]) -> str | None:
    """Of `keys` ({word: dotted spec key}), the one whose word the message names first, as a whole
    word ("lr" is not named by "min_lr"), or None: where an error about several keys belongs."""
    hits = [(m.start(), dotted) for word, dotted in keys.items()
            if (m := re.search(rf"(?<![\w.]){re.escape(word)}(?![\w])", message)) is not None]
    return min(hits)[1] if hits else None


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
        return ": ".join(printable(p) for p in (where, self.path, self.message) if p)


class SpecError(UserError):
    """All problems found in a spec, reported at once (one issue per line)."""

    def __init__(self, issues: list[SpecIssue] | SpecIssue):
        self.issues = [issues] if isinstance(issues, SpecIssue) else list(issues)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(i) for i in self.issues)

    def _render_traceback_(self):
        """IPython/Jupyter show a user's spec mistake as its message, not a traceback."""
        return [f"{type(self).__name__}: {line}" for line in str(self).splitlines()]
