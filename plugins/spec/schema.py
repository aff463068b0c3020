"""Declarative spec schemas: what keys a table takes, their types, defaults and help.

Plugins, datasets and optimizers declare a ``Table`` of ``Field``s (and nested
``Table``/``ListOf``/``Dispatch``); ``validate`` checks a parsed spec against it,
fills defaults and reports every problem at once as one ``SpecError``, each issue
located by file:line:col and dotted key path.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import numbers
import re
import typing

from gengraph.plugins.spec.errors import SpecError, SpecIssue
from gengraph.plugins.registry import UnknownKind, suggest
from gengraph.plugins.spec.toml_positions import join_index, join_key, locate
from gengraph.plugins.spec.toml_writer import format_value


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()
_BAD = object()  # marks a value of the wrong type

# bool before int and datetime before date: the first isinstance match names a value
_TYPE_NAMES = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
_VALUE_TYPES = {**_TYPE_NAMES, dt.datetime: "datetime", dt.date: "date", dt.time: "time"}


def _types_of(types) -> tuple:
    """A Field's type as a tuple of types: float, (int, float) and int | float alike."""
    return types if isinstance(types, tuple) else typing.get_args(types) or (types,)


def _type_name(types) -> str:
    return " or ".join(_TYPE_NAMES.get(t, getattr(t, "__name__", str(t))) for t in _types_of(types))


def type_of(v) -> str:
    """The TOML name of a value's type, for messages."""
    return next((name for t, name in _VALUE_TYPES.items() if isinstance(v, t)), type(v).__name__)


def _found(v) -> str:
    """'string "abc"': the type and a short TOML rendering of a value, for messages; a string that
    is a Python spelling of a TOML value says how TOML spells it (False -> false, .5 -> 0.5)."""
    try:
        text = format_value(v)
    except TypeError:
        text = repr(v)
    found = f"{type_of(v)} {text if len(text) <= 40 else text[:37] + '...'}"
    if getattr(v, "toml_error", None):  # an override that looks like TOML and is not: TOML's reason
        return (f"{found}, which is not valid TOML: {v.toml_error} (a string is quoted \"...\", a table "
                "{k = v, ...}, a list [a, b])")
    return found


def _spelling_hint(types, v) -> str:
    """How TOML spells a string that is Python's spelling of the bool or float the field wants."""
    types = _types_of(types)
    if not isinstance(v, str):
        return ""
    if bool in types and v in ("True", "False", "TRUE", "FALSE"):
        return f" (TOML writes {v.lower()})"
    if float in types and re.fullmatch(r"[-+]?\.\d+([eE][-+]?\d+)?|[-+]?\d+\.([eE][-+]?\d+)?", v):
        return f" (TOML writes numbers with a digit on each side of the point: {_toml_number(v)})"
    return ""


def _toml_number(text: str) -> str:
    sign = text[0] if text[0] in "+-" else ""
    body = text.lstrip("+-")
    mantissa, _, exp = body.partition("e") if "e" in body else body.partition("E")
    mantissa = ("0" + mantissa) if mantissa.startswith(".") else mantissa
    mantissa = (mantissa + "0") if mantissa.endswith(".") else mantissa
    return sign + mantissa + (f"e{exp}" if exp else "")


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _number_issue(v, finite: bool) -> str | None:
    """Why a number (or a number inside an array/table) is not acceptable, else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int) and not INT64_MIN <= v <= INT64_MAX:
        return "integer out of range (TOML integers are 64-bit: -2^63 to 2^63-1)"
    if finite and isinstance(v, float) and not math.isfinite(v):
        return f"must be a finite number, found {format_value(v)}"
    if isinstance(v, list):
        return next((m for x in v if (m := _number_issue(x, False))), None)
    if isinstance(v, dict):
        return next((m for x in v.values() if (m := _number_issue(x, False))), None)
    return None


def _convert(types, v):
    """v as one of types (an int becomes a float where only float is wanted), or _BAD."""
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(v, bool):  # bool is an int subclass, but true is not a number
        return v if bool in types else _BAD
    if isinstance(v, int) and int not in types and float in types:
        try:
            return float(v)
        except OverflowError:
            return _BAD
    return v if isinstance(v, types) else _BAD


class _Context:
    """Where issues go while validating, and how their paths become positions."""

    def __init__(self, file, positions):
        self.file, self.positions, self.issues = file, positions, []

    def add(self, path: str, message: str) -> None:
        self.issues.append(SpecIssue(*locate(self.positions, path, self.file), path, message))


class _Messages:
    """A validation context that only collects messages."""

    def __init__(self):
        self.issues = []

    def add(self, path: str, message: str) -> None:
        self.issues.append(message)


def _default_of(field, path, ctx):
    """A missing key's default (Field, ListOf, Dispatch), validated; a default that breaks its own
    field's rule is the schema's slip, not the spec's, and is said so."""
    if field.default is None:
        return None
    own = _Messages()
    value = field._validate(copy.deepcopy(field.default), path, own)
    if own.issues:
        ctx.add(path, f"not set, and its default {field.default!r} is refused by its own field "
                      f"({own.issues[0]}): a mistake in the schema that declares it; set the key")
    return value


def is_number(v) -> bool:
    """An int or float, not a bool (True is an int to Python, not a number to a spec)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_integer(v) -> bool:
    """An integer of Python or NumPy (np.int64), not a bool: an API argument that counts something."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


class Field:
    """One scalar or free-form value; with `item`, min/max/choices apply to each element."""

    def __init__(self, type, default=REQUIRED, help="", *, choices=None, min=None, max=None, item=None,
                 finite=True, above=None, below=None):
        for name, t in (("type", type), ("item", item)):
            try:  # anything isinstance takes (a type, a tuple of types, int | float); not "float"
                t is None or isinstance(0, t)
            except TypeError:
                raise TypeError(f"Field {name} must be a Python type or a tuple of types (float, (int, float)), "
                                f"not {t!r}") from None
        self.type, self.default, self.help = type, default, help
        self.choices, self.min, self.max, self.item = choices, min, max, item
        self.above, self.below = above, below  # exclusive bounds: a beta in (0, 1)
        self.finite = finite  # False: nan and +-inf are accepted values of a float field

    def type_name(self) -> str:
        if self.item is not None:
            return f"array of {_type_name(self.item)}"
        return _type_name(self.type)

    def _missing(self, path, ctx):
        if self.default is REQUIRED:
            about = f"{self.type_name()}: {self.help}" if self.help else self.type_name()
            ctx.add(path, f"missing required key ({about})")
            return None
        return _default_of(self, path, ctx)

    def _validate(self, value, path, ctx):
        if self.item is None and (why := _number_issue(value, self.finite)):
            ctx.add(path, why)
            return value
        v = _convert(self.type, value)
        if v is _BAD:
            ctx.add(path, f"expected {self.type_name()}, found {_found(value)}{_spelling_hint(self.type, value)}")
            return value
        if self.item is None or not isinstance(v, list):
            self._check_limits(v, path, ctx)
            return str(v) if isinstance(v, str) else copy.deepcopy(v)  # (a plain str: --set text was a subclass)
        out = []
        for i, x in enumerate(v):
            if why := _number_issue(x, self.finite):
                ctx.add(join_index(path, i), why)
                out.append(x)
                continue
            y = _convert(self.item, x)
            if y is _BAD:
                ctx.add(join_index(path, i), f"expected {_type_name(self.item)}, found {_found(x)}")
                y = x
            else:
                self._check_limits(y, join_index(path, i), ctx)
            out.append(copy.deepcopy(y))
        return out

    @property
    def allowed(self):
        """The choices as they are now: a registry's names are read when a value is checked, so a
        kind a plugin registers later (an activation) is allowed (its names were copied at import)."""
        return self.choices.names() if hasattr(self.choices, "names") else self.choices

    def _check_limits(self, v, path, ctx) -> None:
        choices = self.allowed
        if choices is not None and v not in choices:
            allowed = ", ".join(format_value(c) for c in choices)
            msg = f"{format_value(v)} is not one of {allowed}"
            hint = suggest(v, choices) if isinstance(v, str) else None
            ctx.add(path, msg + (f'; did you mean "{hint}"?' if hint else ""))
        if is_number(v):
            if self.min is not None and v < self.min:
                ctx.add(path, f"must be >= {self.min}, found {format_value(v)}")
            if self.max is not None and v > self.max:
                ctx.add(path, f"must be <= {self.max}, found {format_value(v)}")
            if self.above is not None and not v > self.above:
                ctx.add(path, f"must be > {self.above}, found {format_value(v)}")
            if self.below is not None and not v < self.below:
                ctx.add(path, f"must be < {self.below}, found {format_value(v)}")


# keys one table calls by a name another table uses: a layer's `type` written as `kind` (every other
# table chooses its kind by `kind`), and back; difflib finds neither
CONFUSED_KEYS = {"kind": "type", "type": "kind"}


class Table:
    """A table with known keys; extra=True keeps unknown keys as they are."""

    def __init__(self, fields: dict, help="", *, extra=False):
        self.fields, self.help, self.extra = fields, help, extra

    def type_name(self) -> str:
        return "table"

    def _missing(self, path, ctx):
        return self._validate({}, path, ctx)

    def _validate(self, value, path, ctx, passthrough=()):
        if not isinstance(value, dict):
            ctx.add(path, f"expected table, found {_found(value)}")
            return value
        out = {k: value[k] for k in passthrough if k in value}
        known = [*passthrough, *self.fields]
        # unknown keys and the known key each seems to misspell (total_step -> total_steps); at the
        # top, spec_version too (checked apart from the tables, it was no candidate)
        candidates = known + ["spec_version"] * (not path)
        hints = {} if self.extra else {
            k: CONFUSED_KEYS[k] if CONFUSED_KEYS.get(k) in known else suggest(k, candidates)
            for k in value if k not in known}
        required = set()  # missing keys whose misspelling is there: one issue, at the misspelling
        for name, sub in self.fields.items():
            if name in passthrough:
                continue
            p = join_key(path, name)
            if name in value:
                out[name] = sub._validate(value[name], p, ctx)
                continue
            before = len(ctx.issues)
            out[name] = sub._missing(p, ctx)
            if name in hints.values() and len(ctx.issues) > before:
                del ctx.issues[before:]
                required.add(name)
        for k, hint in hints.items():
            if hint:
                ctx.add(join_key(path, k), f'unknown key; did you mean "{hint}"?'
                                           + (" (it is required)" if hint in required else ""))
            else:
                ctx.add(join_key(path, k), f"unknown key (known keys: {', '.join(known) or 'none'})")
        if self.extra:  # unknown keys kept as they are
            out.update({k: copy.deepcopy(v) for k, v in value.items() if k not in out})
        return out


class ListOf:
    """An array of tables, each checked against the same Table; default None makes it optional."""

    def __init__(self, table: Table, default=REQUIRED, help=""):
        self.table, self.default, self.help = table, default, help

    def type_name(self) -> str:
        return "array of tables"

    def _missing(self, path, ctx):
        if self.default is REQUIRED:
            ctx.add(path, f"missing required array of tables{': ' + self.help if self.help else ''}")
            return None
        return _default_of(self, path, ctx)

    def _validate(self, value, path, ctx):
        if not isinstance(value, list):
            ctx.add(path, f"expected array of tables, found {_found(value)}")
            return value
        return [self.table._validate(el, join_index(path, i), ctx) for i, el in enumerate(value)]


class Dispatch:
    """A table whose `key` entry names a registered object; that object's schema checks the rest.

    default is REQUIRED, a table such as ``{"kind": "adam"}`` (validated like written ones),
    or None for an optional table that stays unset.
    """

    def __init__(self, key: str, registry, default=REQUIRED, help="", *, schema_of=lambda obj: obj.schema):
        self.key, self.registry, self.default, self.help = key, registry, default, help
        self.schema_of = schema_of

    def type_name(self) -> str:
        return f"table chosen by {self.key}"

    def _missing(self, path, ctx):
        if self.default is REQUIRED:
            kinds = ", ".join(self.registry.names()) or "none installed"
            ctx.add(path, f"missing required table; set {self.key} to one of: {kinds}")
            return None
        return _default_of(self, path, ctx)

    def _forgotten_key(self, value: dict) -> str | None:
        """A message when a table without `key` has keys its default kind does not take but other
        kinds do: the key was forgotten ("total_steps: unknown key (known keys: kind)" before)."""
        default = self.default[self.key]
        try:
            fields = self.schema_of(self.registry.get(default)).fields
        except (UnknownKind, AttributeError):
            return None
        foreign = [k for k in value if k not in fields]
        if not foreign:
            return None
        kinds = []
        for name in self.registry.names():
            try:
                if all(k in self.schema_of(self.registry.get(name)).fields for k in foreign):
                    kinds.append(name)
            except (UnknownKind, AttributeError):
                continue
        if not kinds:
            return None
        return (f"missing; the default {self.key} \"{default}\" takes no {', '.join(foreign)}: set {self.key} to "
                f"{' or '.join(repr(k).replace(chr(39), chr(34)) for k in kinds)}")

    def _validate(self, value, path, ctx):
        if not isinstance(value, dict):
            ctx.add(path, f"expected table, found {_found(value)}")
            return value
        key_path = join_key(path, self.key)
        if self.key not in value and isinstance(self.default, dict) and self.key in self.default:
            # a partial table (e.g. only `lr`) keeps the default kind
            if hint := self._forgotten_key(value):
                ctx.add(key_path, hint)
                return value
            value = {self.key: self.default[self.key], **value}
        name = value.get(self.key)
        if self.key not in value:
            kinds = ", ".join(self.registry.names()) or "none installed"
            ctx.add(key_path, f"missing required key; set it to one of: {kinds}")
            return value
        if not isinstance(name, str):
            ctx.add(key_path, f"expected string, found {_found(name)}")
            return value
        try:
            obj = self.registry.get(name)
        except UnknownKind as exc:
            ctx.add(key_path, str(exc))
            return value
        return self.schema_of(obj)._validate(value, path, ctx, passthrough=(self.key,))


def validate(schema: Table, data: dict, *, file=None, positions=None, path="") -> dict:
    """A new dict with defaults filled; raises one SpecError listing every problem."""
    ctx = _Context(file, positions)
    out = schema._validate(data, path, ctx)
    if ctx.issues:  # report in file order; issues without a line (e.g. --set) last
        ctx.issues.sort(key=lambda i: (i.line is None, i.line or 0, i.col or 0))
        raise SpecError(ctx.issues)
    return out


def describe(schema: Table, path: str = "") -> list[tuple[str, str, object, str]]:
    """(dotted key, type name, default, help) rows; array elements are written ``key[]``."""
    rows = []
    for name, sub in schema.fields.items():
        p = join_key(path, name)
        if isinstance(sub, Table):
            rows.append((p, sub.type_name(), None, sub.help))
            rows += describe(sub, p)
        elif isinstance(sub, ListOf):
            rows.append((p, sub.type_name(), sub.default, sub.help))
            rows += describe(sub.table, p + "[]")
        elif isinstance(sub, Dispatch):
            rows.append((p, sub.type_name(), sub.default, sub.help))
            chosen = sub.default.get(sub.key, REQUIRED) if isinstance(sub.default, dict) else sub.default
            kinds = ", ".join(sub.registry.names()) or "none installed"
            rows.append((join_key(p, sub.key), "string", chosen, f"one of: {kinds}"))
        else:
            rows.append((p, sub.type_name(), sub.default, sub.help))
    return rows
