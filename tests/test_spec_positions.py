"""Key positions recovered from TOML text, path syntax, and parse errors as SpecErrors."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gengraph.plugins.spec.errors import SpecError
from gengraph.plugins.spec.toml_positions import (
    build_path,
    join_index,
    join_key,
    locate,
    parse_toml,
    position_of,
    read_path,
    split_path,
)
from gengraph.plugins.spec.toml_writer import dumps, format_key

TEXT = '''\
spec_version = 1  # comment with [brackets] and key = 1
[run]
name = "x # not a comment"
"quoted.key" = 3
a.b . c = 'lit'

[model]
kind = "vae"
notes = """
fake = 1
[fake]
"""
arr = [
  1, # comment
  [2, 3],
  { units = 64, act = { kind = "relu" } },
]
[[model.encoder]]
units = 64
[[model.encoder]]
    actvation = "tanh"
[model.encoder.sub]
when = 1979-05-27 07:32:00
[[model.encoder.deep]]
y = 2
[train]
optimizer = { kind = "adam", lr = 1e-3 }
layers = [ {units=64},
   {units=10} ]
'''

EXPECTED = {
    "spec_version": (1, 1),
    "run": (2, 1),
    "run.name": (3, 1),
    'run."quoted.key"': (4, 1),
    "run.a": (5, 1),
    "run.a.b": (5, 3),
    "run.a.b.c": (5, 7),
    "model": (7, 1),
    "model.kind": (8, 1),
    "model.notes": (9, 1),
    "model.arr": (13, 1),
    "model.arr[0]": (14, 3),
    "model.arr[1]": (15, 3),
    "model.arr[1][0]": (15, 4),
    "model.arr[1][1]": (15, 7),
    "model.arr[2]": (16, 3),
    "model.arr[2].units": (16, 5),
    "model.arr[2].act": (16, 17),
    "model.arr[2].act.kind": (16, 25),
    "model.encoder": (18, 1),
    "model.encoder[0]": (18, 1),
    "model.encoder[0].units": (19, 1),
    "model.encoder[1]": (20, 1),
    "model.encoder[1].actvation": (21, 5),
    "model.encoder[1].sub": (22, 1),
    "model.encoder[1].sub.when": (23, 1),
    "model.encoder[1].deep": (24, 1),
    "model.encoder[1].deep[0]": (24, 1),
    "model.encoder[1].deep[0].y": (25, 1),
    "train": (26, 1),
    "train.optimizer": (27, 1),
    "train.optimizer.kind": (27, 15),
    "train.optimizer.lr": (27, 30),
    "train.layers": (28, 1),
    "train.layers[0]": (28, 12),
    "train.layers[0].units": (28, 13),
    "train.layers[1]": (29, 4),
    "train.layers[1].units": (29, 5),
}


def test_positions_of_every_kind_of_key():
    data, positions = parse_toml(TEXT, "spec.toml")
    assert positions == EXPECTED
    assert data["model"]["notes"] == "fake = 1\n[fake]\n"
    assert data["model"]["encoder"][1]["deep"] == [{"y": 2}]


def test_strings_that_look_like_syntax_and_spaced_headers():
    text = (
        '[ a . "b c" ]\n'
        "s1 = 'has \" quote'\n"
        's2 = "has \' and \\" esc" # c\n'
        's3 = """ends with quotes"""""\n'
        "s4 = '''x ''''\n"
        "t.u = [ # c\n"
        "  # only a comment\n"
        "  'a',  \"b\" , ]\n"
        "[[ x ]]\n"
        "[[x]]\n"
        "z = { p.q = 1 }\n"
    )
    data, positions = parse_toml(text)
    assert data["a"]["b c"]["s3"] == 'ends with quotes""' and data["a"]["b c"]["s4"] == "x '"
    assert positions == {
        "a": (1, 3),
        'a."b c"': (1, 1),
        **{f'a."b c".s{i}': (i + 1, 1) for i in range(1, 5)},
        'a."b c".t': (6, 1),
        'a."b c".t.u': (6, 3),
        'a."b c".t.u[0]': (8, 3),
        'a."b c".t.u[1]': (8, 9),
        "x": (9, 1),
        "x[0]": (9, 1),
        "x[1]": (10, 1),
        "x[1].z": (11, 1),
        "x[1].z.p": (11, 7),
        "x[1].z.p.q": (11, 9),
    }


def test_position_of_falls_back_to_nearest_ancestor():
    _, positions = parse_toml(TEXT)
    assert position_of(positions, "model.encoder[1].units") == (20, 1)
    assert position_of(positions, "train.optimizer.betas[3]") == (27, 1)
    assert position_of(positions, 'run."quoted.key".x') == (4, 1)
    assert position_of(positions, "nowhere.at.all") is None
    assert locate(positions, "train.layers[1].act", "f.toml") == ("f.toml", 29, 4)
    assert locate(positions, "nowhere", "f.toml") == ("f.toml", 1, 1)  # every issue of a file has a line
    assert locate(positions, "nowhere", None) == (None, None, None)
    positions["train.optimizer"] = ("--set", None, None)
    assert locate(positions, "train.optimizer.momentum", "f.toml") == ("--set", None, None)


def test_crlf_line_endings_and_windows_columns():
    _, positions = parse_toml("a = 1\r\n[b]\r\n  c = [1,\r\n 2]\r\n")
    assert positions == {"a": (1, 1), "b": (2, 1), "b.c": (3, 3), "b.c[0]": (3, 8), "b.c[1]": (4, 2)}


@pytest.mark.parametrize(
    "text, line, col, message",
    [
        ("a = 1\nb = \n", 2, 5, "invalid TOML: Invalid value"),
        ("a = 1\na = 2\n", 2, 1, "invalid TOML: a is set twice (a key is given once per table)"),
        ('a = "open', 1, 10, "invalid TOML: Unterminated string"),
        ("[a", 1, 3, "invalid TOML: Expected ']' at the end of a table declaration"),
    ],
)
def test_decode_errors_become_located_spec_errors(text, line, col, message):
    with pytest.raises(SpecError) as info:
        parse_toml(text, "bad.toml")
    (issue,) = info.value.issues
    assert (issue.file, issue.line, issue.col, issue.path, issue.message) == ("bad.toml", line, col, "", message)


def test_deep_nesting_is_a_spec_error_not_a_crash():
    with pytest.raises(SpecError, match="invalid TOML"):
        parse_toml("a = " + "[" * 5000 + "]" * 5000)


def test_path_syntax():
    assert split_path('model.layers[0].units') == ["model", "layers", 0, "units"]
    assert split_path('a."b.c"[1][2]. \'d e\'') == ["a", "b.c", 1, 2, "d e"]
    assert build_path(["a", "b.c", 1, 2, "d e"]) == 'a."b.c"[1][2]."d e"'
    assert read_path("a.b[0] = 3") == (["a", "b", 0], 7)
    for bad in ["", ".a", "a..b", "a[x]", "a[0", "a b"]:
        with pytest.raises(ValueError):
            split_path(bad)


TOKENS = st.lists(st.one_of(st.text(max_size=6), st.integers(0, 99)), min_size=1, max_size=5).filter(
    lambda t: isinstance(t[0], str)
)


@given(TOKENS)
def test_paths_round_trip(tokens):
    assert split_path(build_path(tokens)) == tokens


KEYS = st.text(max_size=6)
SCALARS = st.one_of(st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=6))
DOCS = st.dictionaries(
    KEYS,
    st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3), max_leaves=8),
    max_size=5,
)


def all_paths(value, path=""):
    """(dotted path, key) for everything inside value; key is an int for array elements."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        p = join_key(path, k) if isinstance(k, str) else join_index(path, k)
        yield p, k
        yield from all_paths(v, p)


@settings(max_examples=300, deadline=None)
@given(DOCS)
def test_every_key_of_a_written_document_has_its_exact_position(doc):
    text = dumps(doc)
    lines = text.split("\n")
    data, positions = parse_toml(text)
    for path, key in all_paths(data):
        line, col = positions[path]
        here = lines[line - 1][col - 1 :]
        if isinstance(key, str):  # a key points at itself, a table at its [header]
            assert here.startswith((format_key(key), "["))
        else:
            assert here and here[0] not in " ,]"


PIECES = ["[", "]", "{", "}", "=", ",", ".", '"', "'", "#", "\n", " ", "x", "1", "[1,\n2]", "{a=1}", '"""', "'''"]
SEED = TEXT.replace("1979-05-27 07:32:00", "1")


@st.composite
def mutated(draw):
    text = SEED
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(PIECES)) + text[at + draw(st.integers(0, 2)) :]
    return text


@settings(max_examples=500, deadline=None)
@given(mutated())
def test_mutated_text_is_parsed_or_rejected_and_valid_text_has_all_positions(text):
    try:
        data, positions = parse_toml(text, "m.toml")
    except SpecError as exc:
        assert exc.issues[0].file == "m.toml" and exc.issues[0].message.startswith("invalid TOML")
        return
    missing = [p for p, _ in all_paths(data) if p not in positions]
    assert missing == []
