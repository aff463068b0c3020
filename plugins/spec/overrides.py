"""Command-line overrides ``--set a.b[0].c=VALUE``, applied before validation.

VALUE is read as a TOML literal (``64``, ``true``, ``[1, 2]``, ``{kind="sgd"}``) and
kept as plain text when it is not one. Unknown keys are set anyway so that
``validate`` reports them with a suggestion; their positions then read ``--set``.
"""

from __future__ import annotations

import copy
import re
import tomllib

from gengraph.plugins.spec.errors import SpecError, SpecIssue, with_article
from gengraph.plugins.registry import UnknownKind
from gengraph.plugins.spec.schema import Dispatch, Field, ListOf, Table, type_of
from gengraph.plugins.spec.toml_positions import (
    MAX_DEPTH, MAX_KEY_CHARS, MAX_SPEC_BYTES, build_path, read_path, shape_issue, short_path,
)

ORIGIN = "--set"  # the "file" of issues about values that came from overrides
_EXAMPLE = "expected KEY=VALUE, e.g. --set train.epochs=5"


def _error(key: str, message: str) -> SpecError:
    return SpecError(SpecIssue(None, None, None, f"{ORIGIN} {key}".rstrip(), message))


def _literal(raw: str):
    try:
        doc = tomllib.loads(f"v = {raw}")
    except tomllib.TOMLDecodeError as exc:
        if raw[:1] in ('"', "'"):  # an unclosed or broken quoted string: a typo, never a name
            return _Malformed(raw, _columns_in_value(str(exc)), refuse=True)
        if raw[:1] in ("{", "["):  # perhaps meant as a TOML table or list: the text, with
            # TOML's reason (its column counted in the value, not in the "v = VALUE" line parsed), which
            # a key that is no string field reports (a string field takes the text, as ever)
            return _Malformed(raw, _columns_in_value(str(exc)))
        return raw  # a bare word is the plain string it reads as
    except (RecursionError, MemoryError):
        return _TOO_DEEP
    return doc["v"] if list(doc) == ["v"] else raw  # "1\nx = 2" must not sneak in a key


_TOO_DEEP = object()


def _columns_in_value(message: str) -> str:
    """TOML's message with its column counted in the value, not in the "v = VALUE" line parsed."""
    return re.sub(r"\(at line 1, column (\d+)\)", lambda m: f"(at column {int(m[1]) - 4})", message)


class _Malformed(str):
    """An override's text that does not parse as the TOML string, table or list it starts like;
    `toml_error` is TOML's reason (schema messages add it when the key wants no string)."""

    def __new__(cls, text: str, toml_error: str, refuse: bool = False):
        self = super().__new__(cls, text)
        self.toml_error, self.refuse = toml_error, refuse
        return self

    def __reduce__(self):  # copies (the schema deep-copies values) keep the reason
        return (_Malformed, (str(self), self.toml_error, self.refuse))


def _parse(text: str):
    if len(text) > MAX_SPEC_BYTES:
        raise _error(short_path(text.partition("=")[0].strip()), f"override too long ({len(text)} characters)")
    try:
        tokens, end = read_path(text)
        if "=" in text and not text.startswith("=", end):
            raise ValueError(f"unexpected {text[end]!r} at column {end + 1}")
    except ValueError as exc:
        key_text = text.partition("=")[0].strip()
        if re.search(r"\[\s*-", key_text):  # layers[-1]: Python's last element
            raise _error(key_text, "a list index counts from 0 (negative indices are not taken): write the "
                                   "element's position, e.g. model.layers[2]") from None
        raise _error(key_text, f"malformed key path ({exc}); {_EXAMPLE}") from None
    if not text.startswith("=", end):
        raise _error(text[:end].strip(), _EXAMPLE)
    raw = text[end + 1 :].strip()
    key = short_path(text[:end].strip())
    if len(tokens) > MAX_DEPTH:
        raise _error(key, f"key path nested too deeply ({len(tokens)} parts; at most {MAX_DEPTH})")
    if any(isinstance(t, str) and len(t) > MAX_KEY_CHARS for t in tokens):
        raise _error(key, f"key too long (at most {MAX_KEY_CHARS} characters per part)")
    value = _literal(raw)
    if isinstance(value, _Malformed) and value.refuse:
        raise _error(key, f"value {raw!r} is not valid TOML: {value.toml_error} (a string is quoted \"...\" "
                          "with both quotes, a table {k = v, ...}, a list [a, b])")
    if value is _TOO_DEEP or (bad := shape_issue(value, depth=len(tokens))) is not None:
        why = bad[1] if value is not _TOO_DEEP else f"nested too deeply (at most {MAX_DEPTH} levels)"
        raise _error(key, f"value {why}")
    return tokens, value, raw


def parse_override(text: str) -> tuple[list[str | int], object]:
    """(path tokens, value) for ``a.b[0].c=VALUE``; keys are str, indices int."""
    tokens, value, _ = _parse(text)
    return tokens, value


def _child(schema, node, token):
    """The schema of node[token] given node's schema, or None where it is not known."""
    if isinstance(schema, Table) and isinstance(token, str):
        return schema.fields.get(token)
    if isinstance(schema, ListOf) and isinstance(token, int):
        return schema.table
    if isinstance(schema, Dispatch) and isinstance(token, str):
        name = node.get(schema.key)
        if name is None and isinstance(schema.default, dict):
            name = schema.default.get(schema.key)
        if not isinstance(name, str):
            return None
        try:
            return schema.schema_of(schema.registry.get(name)).fields.get(token)
        except UnknownKind:
            return None
    return None


def _holds_tables(schema) -> bool:
    if not isinstance(schema, Field):
        return True
    types = schema.type if isinstance(schema.type, tuple) else (schema.type,)
    return dict in types


def _assign(root: dict, tokens: list, value, raw: str, schema) -> list[str]:
    """Set root[tokens...] = value; return the paths of the tables it had to create."""
    label = build_path(tokens)
    node, created = root, []
    for depth, token in enumerate(tokens):
        here = build_path(tokens[:depth])
        if isinstance(token, int):
            if not isinstance(node, list):
                message = f"{here} is {with_article(type_of(node))}, not an array, so [{token}] cannot index it"
                raise _error(label, message)
            if token >= len(node):
                message = f"index {token} is past the end of {here}, which has {len(node)} element(s)"
                raise _error(label, message)
        elif not isinstance(node, dict):
            raise _error(label, f"cannot set a key inside {here}: it is {with_article(type_of(node))}, not a table")
        schema = _child(schema, node, token)
        if depth == len(tokens) - 1:
            wants_text = isinstance(schema, Field) and schema.type is str
            node[token] = raw if wants_text and not isinstance(value, str) else value
            return created
        if isinstance(token, str) and token not in node:
            missing, following = build_path(tokens[: depth + 1]), tokens[depth + 1]
            if isinstance(following, int):
                raise _error(label, f"index {following} is past the end of {missing}, which is not set")
            if not _holds_tables(schema):
                message = f"cannot set a key inside {missing}: it is {with_article(schema.type_name())}, not a table"
                raise _error(label, message)
            node[token] = {}
            created.append(missing)
        node = node[token]
    return created


def _mark(positions: dict, path: str, created: list[str]) -> None:
    """Point path (and what it replaced) at the command line instead of the file."""
    for p in list(positions):
        if p == path or p.startswith((path + ".", path + "[")):
            del positions[p]
    for p in (*created, path):
        positions[p] = (ORIGIN, None, None)


def apply_overrides(
    data: dict, overrides, *, known_schema: Table | None = None, positions: dict | None = None
) -> dict:
    """A deep copy of data with every override set; all malformed ones raise one SpecError.

    known_schema decides whether a missing intermediate table may be created; positions
    (from parse_toml), when given, is updated so overridden paths locate as ``--set``.
    """
    out = copy.deepcopy(data)
    issues = []
    for text in overrides:
        try:
            tokens, value, raw = _parse(text)
            created = _assign(out, tokens, value, raw, known_schema)
        except SpecError as exc:
            issues += exc.issues
            continue
        if positions is not None:
            _mark(positions, build_path(tokens), created)
    if issues:
        raise SpecError(issues)
    return out
