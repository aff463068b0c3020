"""Parse TOML with tomllib and find where each key was written.

tomllib returns values but no positions, so a small scanner walks the (already
valid) text once more and records the (line, col) of every key, table header and
array element under its dotted path: ``train.optimizer.lr``, ``model.layers[2]``.
The scanner is lenient: where it loses track it skips to the next line, so an
unknown position falls back to the nearest ancestor (``position_of``).

A position is ``(line, col)`` in the spec file, or ``(origin, None, None)`` for a
value that came from elsewhere (``--set``); ``locate`` turns either into
``(file, line, col)``.
"""

from __future__ import annotations

import bisect
import re
import tomllib

from gengraph.plugins.spec.errors import SpecError, SpecIssue
from gengraph.plugins.spec.toml_writer import format_key

# --- dotted key paths -----------------------------------------------------------

_KEY = re.compile(r"""\s*(?:([A-Za-z0-9_-]+)|("(?:[^"\\\n]|\\.)*")|('[^'\n]*'))\s*""")
_INDEX = re.compile(r"\s*\[\s*(\d+)\s*\]\s*")


def join_key(parent: str, key: str) -> str:
    k = format_key(key)
    return f"{parent}.{k}" if parent else k


def join_index(parent: str, index: int) -> str:
    return f"{parent}[{index}]"


def build_path(tokens) -> str:
    path = ""
    for t in tokens:
        path = join_index(path, t) if isinstance(t, int) else join_key(path, t)
    return path


def _decode_key(quoted: str) -> str:
    if quoted.startswith("'"):
        return quoted[1:-1]
    try:  # let tomllib decode the escapes of a basic-string key
        return next(iter(tomllib.loads(f"{quoted} = 0")))
    except tomllib.TOMLDecodeError:
        return quoted[1:-1]


def read_path(text: str) -> tuple[list[str | int], int]:
    """Tokens of the dotted path at the start of text (``a."b c"[0].d``) and where it ends."""
    tokens: list[str | int] = []
    pos = 0
    while True:
        m = _KEY.match(text, pos)
        if not m:
            raise ValueError(f"expected a key at column {pos + 1}")
        bare, basic, literal = m.groups()
        tokens.append(bare if bare is not None else _decode_key(basic or literal))
        pos = m.end()
        while (m := _INDEX.match(text, pos)) is not None:
            tokens.append(int(m.group(1)))
            pos = m.end()
        if not text.startswith(".", pos):
            return tokens, pos
        pos += 1


def split_path(text: str) -> list[str | int]:
    tokens, end = read_path(text)
    if end != len(text):
        raise ValueError(f"unexpected {text[end]!r} at column {end + 1}")
    return tokens


def position_of(positions: dict, path: str):
    """The position of path, else of its nearest ancestor that has one, else None."""
    if path in positions:
        return positions[path]
    try:
        tokens = split_path(path)
    except ValueError:
        return None
    for n in range(len(tokens) - 1, 0, -1):
        pos = positions.get(build_path(tokens[:n]))
        if pos is not None:
            return pos
    return None


def locate(positions: dict | None, path: str, file: str | None):
    """(file, line, col) for path; parts that are unknown are None."""
    pos = position_of(positions or {}, path)
    if pos is None:  # not written anywhere (e.g. a missing table): the top of the file
        return (file, 1, 1) if file is not None else (None, None, None)
    return pos if len(pos) == 3 else (file, *pos)


# --- parsing ---------------------------------------------------------------------

_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)")
_AT_END = re.compile(r"\s*\(at end of document\)")


def _decode_error(exc: Exception, text: str, file: str | None) -> SpecError:
    msg = str(exc)
    line, col = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    if (m := _AT.search(msg)) is not None:
        line, col = int(m.group(1)), int(m.group(2))
    elif _AT_END.search(msg):
        line, col = text.count("\n") + 1, len(text) - text.rfind("\n")
    msg = _AT_END.sub("", _AT.sub("", msg))
    source = text.splitlines()[line - 1] if line and 0 < line <= len(text.splitlines()) else ""
    said, col = _explained(msg, source, col)
    return SpecError(SpecIssue(file, line, col, "", f"invalid TOML: {said}"))


def _table_name(parts: str) -> str:
    """tomllib's ('model', 'layers') as model.layers."""
    return ".".join(re.findall(r"'([^']*)'", parts)) or parts


def _explained(msg: str, source: str, col):
    """tomllib's message in the spec's words, with the column of the key where that helps: its
    "Cannot overwrite a value" named no key, "Cannot declare ('run',) twice" showed a Python tuple,
    and "Invalid value" gave no hint that text is quoted."""
    key = re.match(r"\s*([A-Za-z0-9_.\"' -]+?)\s*=", source)
    if msg.startswith("Cannot overwrite a value") and key:
        return f"{key.group(1).strip()} is set twice (a key is given once per table)", source.find(key.group(1)) + 1
    if (m := re.match(r"Cannot declare (\(.*\)) twice", msg)):
        return f"the table [{_table_name(m.group(1))}] is declared twice (give its keys under one header)", col
    if (m := re.match(r"Cannot mutate immutable namespace (\(.*\))", msg)):
        name = _table_name(m.group(1))
        return (f"{name} was given a whole value already (name = [...] or {{...}}), so a [{name}] or "
                f"[[{name}]] table cannot add to it: write it one way"), col
    if msg.startswith("Invalid value") and key:
        value = source.split("=", 1)[1].strip()
        if value and value[0] in "\u201c\u201d\u2018\u2019":
            return f"{msg}: {key.group(1).strip()} is written with curly quotes; TOML text takes straight ones (\")", col
        if value[:1].isalpha() and value.split()[0] not in ("true", "false", "inf", "nan"):
            return f'{msg}: text is quoted in TOML ({key.group(1).strip()} = "{value.split()[0]}")', col
    return msg, col


# --- size bounds: a spec is small; anything far past these is a mistake or an attack -----

MAX_SPEC_BYTES = 1 << 20  # a spec file (and its text) is at most 1 MiB
MAX_DEPTH = 32  # tables and arrays nested at most this deep (dotted-key parts count)
MAX_KEY_CHARS = 256  # one key (one part of a dotted key)

_KEY_PART = r"""(?>(?<![A-Za-z0-9_-])[A-Za-z0-9_-]++|"(?:[^"\\\n]|\\.){0,256}+"|'[^'\n]{0,256}+')"""
# a dotted key with more than MAX_DEPTH parts; tomllib's time grows with the square of that
_LONG_DOTTED = re.compile(rf"{_KEY_PART}(?:[ \t]*\.[ \t]*{_KEY_PART}){{{MAX_DEPTH},}}")


def short_path(path: str, limit: int = 60) -> str:
    """A dotted path cut to `limit` characters for messages."""
    return path if len(path) <= limit else path[: limit - 3] + "..."


def _line_col(text: str, index: int) -> tuple[int, int]:
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def shape_issue(value, path: str = "", depth: int = 0) -> tuple[str, str] | None:
    """(path, message) for the first table/array nested past MAX_DEPTH or key longer than
    MAX_KEY_CHARS in a parsed value, else None; walked without recursion."""
    stack = [(value, path, depth)]
    while stack:
        node, here, d = stack.pop()
        if isinstance(node, (dict, list)) and d >= MAX_DEPTH:
            return here, f"nested too deeply (more than {MAX_DEPTH} levels of tables and arrays)"
        if isinstance(node, dict):
            for k, v in node.items():
                if len(k) > MAX_KEY_CHARS:
                    return here, f"key {short_path(repr(k), 40)} too long ({len(k)} characters; at most {MAX_KEY_CHARS})"
                stack.append((v, f"{here}.{k}" if here else k, d + 1))
        elif isinstance(node, list):
            stack.extend((v, f"{here}[{i}]", d + 1) for i, v in enumerate(node))
    return None


def _bounds_issue(text: str, file: str | None) -> SpecIssue | None:
    """Refuse, before tomllib sees it, text whose parsing would take unbounded time or memory."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SPEC_BYTES:
        return SpecIssue(file, 1, 1, "", f"spec too large ({size} bytes; at most {MAX_SPEC_BYTES})")
    if (m := _LONG_DOTTED.search(text)) is not None:
        line, col = _line_col(text, m.start())
        return SpecIssue(file, line, col, "", f"dotted key with more than {MAX_DEPTH} parts "
                                              f"(nested too deeply; at most {MAX_DEPTH} levels)")
    return None


def parse_toml(text: str, file: str | None = None) -> tuple[dict, dict]:
    """(data, positions) for a TOML document; any parse failure is a SpecError."""
    if (issue := _bounds_issue(text, file)) is not None:
        raise SpecError(issue)
    try:
        data = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or int() of a huge literal
        raise _decode_error(exc, text, file) from None
    except (RecursionError, MemoryError):
        raise SpecError(SpecIssue(file, 1, 1, "", f"invalid TOML: nested too deeply "
                                                  f"(at most {MAX_DEPTH} levels)")) from None
    if (bad := shape_issue(data)) is not None:
        path, message = bad
        first = path.split(".")[0].split("[")[0]
        at = text.find(first) if first else -1
        line, col = _line_col(text, at) if at >= 0 else (1, 1)
        raise SpecError(SpecIssue(file, line, col, short_path(path), message))
    try:
        positions = _Scanner(text).run()
    except ValueError as exc:
        raise _decode_error(exc, text, file) from None
    return data, positions


class _Scanner:
    """Records key positions in text that tomllib has accepted; never raises on it."""

    def __init__(self, text: str):
        self.s, self.i, self.n = text, 0, len(text)
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.positions: dict[str, tuple[int, int]] = {}
        self.table_arrays: dict[str, int] = {}  # resolved [[path]] -> elements seen

    def run(self) -> dict:
        table = ""
        while self._skip(newlines=True) < self.n:
            if self.s.startswith("[", self.i):
                table = self._header()
            else:
                self._keyval(table)
            self._next_line()
        return self.positions

    def _pos(self, i: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.line_starts, i)
        return line, i - self.line_starts[line - 1] + 1

    def _skip(self, newlines: bool) -> int:
        """Skip blanks (and newlines and comments when allowed there); return the new index."""
        s = self.s
        while self.i < self.n:
            c = s[self.i]
            if c in " \t" or (newlines and c in "\r\n"):
                self.i += 1
            elif newlines and c == "#":
                self._next_line()
            else:
                break
        return self.i

    def _next_line(self) -> None:
        end = self.s.find("\n", self.i)
        self.i = self.n if end < 0 else end + 1

    def _keys(self) -> list[tuple[str, int]]:
        """A dotted key as (key, start index) pairs; empty if there is none here."""
        keys = []
        while True:
            self._skip(newlines=False)
            m = _KEY.match(self.s, self.i)
            if not m:
                return keys
            bare, basic, literal = m.groups()
            key = bare if bare is not None else _decode_key(basic or literal)
            keys.append((key, m.start(m.lastindex)))
            self.i = m.end()
            if not self.s.startswith(".", self.i):
                return keys
            self.i += 1

    def _header(self) -> str:
        start = self.i
        array = self.s.startswith("[[", start)
        self.i += 2 if array else 1
        keys = self._keys()
        if not keys:
            return ""
        path = ""
        for key, at in keys[:-1]:
            path = join_key(path, key)
            self.positions.setdefault(path, self._pos(at))
            if path in self.table_arrays:  # [[a]] then [a.b]: b belongs to a's last element
                path = join_index(path, self.table_arrays[path] - 1)
        path = join_key(path, keys[-1][0])
        if array:
            count = self.table_arrays.get(path, 0)
            self.table_arrays[path] = count + 1
            self.positions.setdefault(path, self._pos(start))
            path = join_index(path, count)
        self.positions[path] = self._pos(start)
        return path

    def _keyval(self, table: str) -> bool:
        keys = self._keys()
        path = table
        for key, at in keys[:-1]:
            path = join_key(path, key)
            self.positions.setdefault(path, self._pos(at))
        if not keys or not self.s.startswith("=", self.i):
            return False
        path = join_key(path, keys[-1][0])
        self.positions[path] = self._pos(keys[-1][1])
        self.i += 1
        self._skip(newlines=False)
        self._value(path)
        return True

    def _value(self, path: str) -> None:
        s, i = self.s, self.i
        if s.startswith('"""', i) or s.startswith("'''", i):
            self._multiline_string(s[i])
        elif s.startswith('"', i):
            self._string('"')
        elif s.startswith("'", i):
            self._string("'")
        elif s.startswith("[", i):
            self._array(path)
        elif s.startswith("{", i):
            self._inline_table(path)
        else:  # number, bool, date-time (which may hold a space)
            while self.i < self.n and s[self.i] not in ",]}#\r\n":
                self.i += 1

    def _string(self, quote: str) -> None:
        s, j = self.s, self.i + 1
        while j < self.n and s[j] != quote and s[j] != "\n":
            j += 2 if quote == '"' and s[j] == "\\" else 1
        self.i = min(j + 1, self.n)

    def _multiline_string(self, quote: str) -> None:
        s, j, delim = self.s, self.i + 3, quote * 3
        while j < self.n and not s.startswith(delim, j):
            j += 2 if quote == '"' and s[j] == "\\" else 1
        j += 3
        for _ in range(2):  # up to two quotes may sit right before the closing delimiter
            if j < self.n and s[j] == quote:
                j += 1
        self.i = min(j, self.n)

    def _array(self, path: str) -> None:
        self.i += 1
        index = 0
        while self._skip(newlines=True) < self.n:
            if self.s[self.i] == "]":
                self.i += 1
                return
            item = join_index(path, index)
            self.positions[item] = self._pos(self.i)
            self._value(item)
            index += 1
            self._skip(newlines=True)
            if self.s.startswith(",", self.i):
                self.i += 1
            elif not self.s.startswith("]", self.i):
                return  # lost track; the caller resumes at the next line

    def _inline_table(self, path: str) -> None:
        self.i += 1
        while self._skip(newlines=True) < self.n:
            if self.s[self.i] == "}":
                self.i += 1
                return
            if not self._keyval(path):
                return
            self._skip(newlines=True)
            if self.s.startswith(",", self.i):
                self.i += 1
            elif not self.s.startswith("}", self.i):
                return
