"""Write a resolved spec back as TOML that tomllib reads back to the same dict.

Scalars and plain arrays go inline; nested tables become ``[a.b]`` sections and
non-empty arrays whose elements are all tables become ``[[a.b]]``. None values
(optional keys left unset) are omitted, since TOML has no null.
"""

from __future__ import annotations

import datetime as dt
import math
import re

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def format_string(s: str) -> str:
    """A TOML basic string; other control characters become \\uXXXX (TOML forbids them raw)."""
    body = "".join(
        _ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in s
    )
    return f'"{body}"'


def format_key(key: str) -> str:
    """A key as written in TOML (and in dotted paths): bare when possible, else quoted."""
    return key if _BARE_KEY.fullmatch(key) else format_string(key)


def format_value(v) -> str:
    """An inline TOML value (used for whole files and for quoting values in messages)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)  # repr round-trips and always has "." or an exponent
    if isinstance(v, str):
        return format_string(v)
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if isinstance(v, dict):
        items = [f"{format_key(k)} = {format_value(x)}" for k, x in v.items() if x is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} as TOML")


def _is_table_array(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _comment(text: str | None) -> str:
    """A trailing comment on one line (TOML comments take no control characters)."""
    if not text:
        return ""
    return "  # " + "".join(c if c == "\t" or (ord(c) >= 0x20 and ord(c) != 0x7F) else " " for c in text)


def _section(out: list[str], keys: list[str], table: dict, header: str | None, comments: dict) -> None:
    if header is not None:
        out.extend(["", header])
    for k, v in table.items():
        if v is not None and not isinstance(v, dict) and not _is_table_array(v):
            note = comments.get(".".join([*keys, format_key(k)]))
            out.append(f"{format_key(k)} = {format_value(v)}{_comment(note)}")
    for k, v in table.items():
        sub = [*keys, format_key(k)]
        if isinstance(v, dict):
            _section(out, sub, v, f"[{'.'.join(sub)}]", comments)
        elif _is_table_array(v):
            for element in v:
                _section(out, sub, element, f"[[{'.'.join(sub)}]]", {})


def dumps(data: dict, comments: dict | None = None) -> str:
    """TOML text of data; comments: dotted key (e.g. "data.path") -> a note written after its value."""
    out: list[str] = []
    _section(out, [], data, None, comments or {})
    return "\n".join(out).lstrip("\n") + "\n"
