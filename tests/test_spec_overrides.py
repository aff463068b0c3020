"""--set overrides: TOML literals or text, paths with indices, errors located at --set."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gengraph.plugins.spec.errors import SpecError, SpecIssue
from gengraph.plugins.spec.overrides import apply_overrides, parse_override
from gengraph.plugins.registry import Registry
from gengraph.plugins.spec.schema import Dispatch, Field, ListOf, Table
from gengraph.plugins.spec.document import spec_from_text
from gengraph.plugins.spec.toml_positions import build_path, parse_toml
from gengraph.plugins.spec.toml_writer import format_value


class Kind:
    def __init__(self, schema):
        self.schema = schema


OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("adam", Kind(Table({"lr": Field(float, 1e-3), "eps": Field(float, 1e-8)})))
OPTIMIZERS.register("sgd", Kind(Table({"lr": Field(float), "momentum": Field(float, 0.0)})))
MODELS = Registry("model")
MODELS.register("mlp", Kind(Table({"layers": ListOf(Table({"units": Field(int), "name": Field(str, "")}))})))

SCHEMA = Table({
    "run": Table({"name": Field(str, "run"), "seed": Field(int, 0), "tags": Field(dict, {})}),
    "model": Dispatch("kind", MODELS),
    "train": Table({"optimizer": Dispatch("kind", OPTIMIZERS, default={"kind": "adam"}), "epochs": Field(int, 1)}),
    "output": Table({"plots": Field(bool, True)}),
})

TEXT = """\
spec_version = 1
[run]
name = "demo"
[model]
kind = "mlp"
[[model.layers]]
units = 32
[[model.layers]]
units = 10
[train]
optimizer = { kind = "adam", lr = 0.01, eps = 1e-7 }
"""


@pytest.mark.parametrize(
    "text, tokens, value",
    [
        ("model.layers[0].units=64", ["model", "layers", 0, "units"], 64),
        ("run.name=hello", ["run", "name"], "hello"),
        ('train.optimizer={kind="sgd", lr=0.1}', ["train", "optimizer"], {"kind": "sgd", "lr": 0.1}),
        ("run.name=hello world", ["run", "name"], "hello world"),
        ('run.name="42"', ["run", "name"], "42"),
        ("train.lr = 1e-3", ["train", "lr"], 0.001),
        ("output.plots=false", ["output", "plots"], False),
        ("x=[1, 2.5]", ["x"], [1, 2.5]),
        ('run.tags."a.b"=1', ["run", "tags", "a.b"], 1),
        ("a=b=c", ["a"], "b=c"),
        ("a=", ["a"], ""),
        ("a=1\nb = 2", ["a"], "1\nb = 2"),
    ],
)
def test_parse_override(text, tokens, value):
    assert parse_override(text) == (tokens, value)


@pytest.mark.parametrize(
    "text, path, message",
    [
        ("epochs", "--set epochs", "expected KEY=VALUE, e.g. --set train.epochs=5"),
        ("=3", "--set", "malformed key path (expected a key at column 1); expected KEY=VALUE, e.g. --set train.epochs=5"),
        ("a..b=1", "--set a..b", "malformed key path (expected a key at column 3); expected KEY=VALUE, e.g. --set train.epochs=5"),
        ("a[x]=1", "--set a[x]", "malformed key path (unexpected '[' at column 2); expected KEY=VALUE, e.g. --set train.epochs=5"),
        ("a b = 1", "--set a b", "malformed key path (unexpected 'b' at column 3); expected KEY=VALUE, e.g. --set train.epochs=5"),
    ],
)
def test_malformed_overrides_are_spec_errors(text, path, message):
    with pytest.raises(SpecError) as info:
        parse_override(text)
    assert info.value.issues == [SpecIssue(None, None, None, path, message)]


@given(
    st.lists(st.one_of(st.text(max_size=5), st.integers(0, 9)), min_size=1, max_size=4).filter(lambda t: isinstance(t[0], str)),
    st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=3),
              st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=3)),
)
def test_any_written_path_and_literal_parse_back(tokens, value):
    assert parse_override(f"{build_path(tokens)}={format_value(value)}") == (tokens, value)


def test_apply_sets_values_in_a_copy_and_creates_tables():
    data, _ = parse_toml(TEXT)
    out = apply_overrides(
        data,
        ["model.layers[1].units=3", "output.plots=false", "run.tags.team=blue", "train.optimizer.lr=1"],
        known_schema=SCHEMA,
    )
    assert out["model"]["layers"] == [{"units": 32}, {"units": 3}]
    assert out["output"] == {"plots": False}
    assert out["run"]["tags"] == {"team": "blue"}
    assert out["train"]["optimizer"]["lr"] == 1
    assert data["model"]["layers"][1] == {"units": 10} and "output" not in data


def test_string_options_keep_the_typed_text():
    data, _ = parse_toml(TEXT)
    out = apply_overrides(data, ["run.name=2024", "model.layers[0].name=true", "run.seed=2024"], known_schema=SCHEMA)
    assert out["run"]["name"] == "2024" and out["model"]["layers"][0]["name"] == "true"
    assert out["run"]["seed"] == 2024


def test_bad_paths_are_all_reported_at_once():
    data, _ = parse_toml(TEXT)
    with pytest.raises(SpecError) as info:
        apply_overrides(
            data,
            ["model.layers[2].units=1", "run.name.first=a", "run.seed.x=1", "model.kind[0]=1", "train.schedule[0]=1", "bad"],
            known_schema=SCHEMA,
        )
    assert [str(i) for i in info.value.issues] == [
        "--set model.layers[2].units: index 2 is past the end of model.layers, which has 2 element(s)",
        "--set run.name.first: cannot set a key inside run.name: it is a string, not a table",
        "--set run.seed.x: cannot set a key inside run.seed: it is an integer, not a table",
        "--set model.kind[0]: model.kind is a string, not an array, so [0] cannot index it",
        "--set train.schedule[0]: index 0 is past the end of train.schedule, which is not set",
        "--set bad: expected KEY=VALUE, e.g. --set train.epochs=5",
    ]


def test_without_a_schema_any_missing_table_is_created():
    assert apply_overrides({}, ["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


def test_unknown_override_key_is_reported_by_validation_at_set():
    with pytest.raises(SpecError) as info:
        spec_from_text(TEXT, "s.toml", ["run.sed=3", "train.epochs=many"], SCHEMA)
    assert [str(i) for i in info.value.issues] == [
        '--set: run.sed: unknown key; did you mean "seed"?',
        '--set: train.epochs: expected integer, found string "many"',
    ]


def test_override_of_a_key_written_in_the_file_is_located_at_set():
    with pytest.raises(SpecError) as info:
        spec_from_text(TEXT, "s.toml", ["model.layers[0].units=wide"], SCHEMA)
    assert [str(i) for i in info.value.issues] == [
        '--set: model.layers[0].units: expected integer, found string "wide"'
    ]
    # untouched keys keep their file positions
    spec = spec_from_text(TEXT, "s.toml", ["model.layers[0].units=7"], SCHEMA)
    assert spec.position("model.layers[1].units") == ("s.toml", 9, 1)
    assert spec.position("model.layers[0].units") == ("--set", None, None)


def test_replacing_a_table_switches_kind_and_drops_old_positions():
    spec = spec_from_text(TEXT, "s.toml", ['train.optimizer={kind="sgd", lr=0.1}'], SCHEMA)
    assert spec.data["train"]["optimizer"] == {"kind": "sgd", "lr": 0.1, "momentum": 0.0}
    assert spec.position("train.optimizer.eps") == ("--set", None, None)
    with pytest.raises(SpecError) as info:
        spec_from_text(TEXT, "s.toml", ['train.optimizer={kind="sgd"}'], SCHEMA)
    assert [str(i) for i in info.value.issues] == ["--set: train.optimizer.lr: missing required key (float)"]
