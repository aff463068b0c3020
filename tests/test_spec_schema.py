"""Schema validation: defaults, every problem at once, located issues, dispatch by kind."""

import importlib.metadata as metadata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gengraph.plugins.spec.errors import SpecError, SpecIssue
from gengraph.plugins.registry import Registry
from gengraph.plugins.spec.schema import REQUIRED, Dispatch, Field, ListOf, Table, describe, validate
from gengraph.plugins.spec.document import load_spec, spec_from_text
from gengraph.plugins.spec.toml_positions import parse_toml


class Kind:
    def __init__(self, schema):
        self.schema = schema


OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("adam", Kind(Table({
    "lr": Field(float, 1e-3, "step size", min=0.0),
    "betas": Field(list, [0.9, 0.999], "moment decay rates", item=float, min=0.0, max=1.0),
})))
OPTIMIZERS.register("sgd", Kind(Table({
    "lr": Field(float, REQUIRED, "step size", min=0.0),
    "momentum": Field(float, 0.0, min=0.0, max=1.0),
})))

LAYER = Table({
    "units": Field(int, REQUIRED, "width", min=1),
    "activation": Field(str, "relu", choices=["relu", "tanh", "sigmoid"]),
})
MODELS = Registry("model")
MODELS.register("vae", Kind(Table({
    "latent": Field(int, 2, "latent size", min=1),
    "encoder": ListOf(LAYER, default=[]),
})))
MODELS.register("mlp", Kind(Table({"layers": ListOf(LAYER, help="hidden layers")})))

SCHEMA = Table({
    "run": Table({
        "name": Field(str, "run", "run name"),
        "seed": Field(int, 0, "random seed"),
        "device": Field(str, "cpu", choices=["cpu", "cuda"]),
        "note": Field(str, None, "free text"),
    }),
    "model": Dispatch("kind", MODELS, help="the model plugin"),
    "train": Table({
        "optimizer": Dispatch("kind", OPTIMIZERS, default={"kind": "adam"}),
        "batch_size": Field(int, 32, min=1),
        "scale": Field((int, float), 1),
    }),
    "output": Table({"extra": Field(dict, {})}, extra=True),
})

SAMPLE = """\
spec_version = 1

[run]
name = "demo"
seed = 7

[model]
kind = "vae"
latent = 4

[[model.encoder]]
units = 64
activation = "relu"

[[model.encoder]]
units = 32
    actvation = "tanh"

[train]
optimizer = { kind = "adam", lr = 1 }
batch_size = 16
"""
VALID = SAMPLE.replace("    actvation", "activation")


def load(text, overrides=()):
    return spec_from_text(text, "spec.toml", overrides, SCHEMA)


def issues_of(text, overrides=()):
    with pytest.raises(SpecError) as info:
        load(text, overrides)
    return info.value.issues


def test_valid_spec_fills_defaults_and_converts_int_to_float():
    spec = load(VALID)
    assert spec.data["run"] == {"name": "demo", "seed": 7, "device": "cpu", "note": None}
    assert spec.data["model"] == {
        "kind": "vae",
        "latent": 4,
        "encoder": [{"units": 64, "activation": "relu"}, {"units": 32, "activation": "tanh"}],
    }
    optimizer = spec.get("train.optimizer")
    assert optimizer == {"kind": "adam", "lr": 1.0, "betas": [0.9, 0.999]}
    assert type(optimizer["lr"]) is float
    assert spec.get("train.scale") == 1 and type(spec.get("train.scale")) is int
    assert spec.get("model.encoder[1].units") == 32
    assert spec.get("model.encoder[5].units", "absent") == "absent"
    assert spec.raw["train"]["optimizer"] == {"kind": "adam", "lr": 1}
    assert spec.position("model.encoder[1].units") == ("spec.toml", 16, 1)


def test_unknown_nested_key_is_one_located_issue_with_suggestion():
    issues = issues_of(SAMPLE)
    assert issues == [
        SpecIssue("spec.toml", 17, 5, "model.encoder[1].actvation", 'unknown key; did you mean "activation"?')
    ]
    assert str(issues[0]) == 'spec.toml:17:5: model.encoder[1].actvation: unknown key; did you mean "activation"?'


def test_a_misspelt_required_key_is_one_issue():
    # "units missing" and "unit unknown; did you mean units" were two issues for one typo
    issues = issues_of(VALID.replace("units = 32", "unit = 32"))
    assert [str(i) for i in issues] == ['spec.toml:16:1: model.encoder[1].unit: unknown key; did you mean '
                                        '"units"? (it is required)'], issues
    issues = issues_of(VALID.replace("units = 32", "zzz = 32"))  # no close name: both stay
    assert [i.message.split(" (")[0] for i in issues] == ["missing required key", "unknown key"], issues


def test_all_errors_are_reported_at_once_in_file_order():
    text = """\
spec_version = 1
[run]
seed = "seven"
device = "metal"
colour = 3
[model]
kind = "mlp"
[[model.layers]]
units = 0
[train]
optimizer = { kind = "sgd", momentum = 1.5 }
"""
    with pytest.raises(SpecError) as info:
        load(text)
    got = [(i.line, i.col, i.path, i.message) for i in info.value.issues]
    assert got == [
        (3, 1, "run.seed", 'expected integer, found string "seven"'),
        (4, 1, "run.device", '"metal" is not one of "cpu", "cuda"'),
        (5, 1, "run.colour", "unknown key (known keys: name, seed, device, note)"),
        (9, 1, "model.layers[0].units", "must be >= 1, found 0"),
        (11, 1, "train.optimizer.lr", "missing required key (float: step size)"),
        (11, 29, "train.optimizer.momentum", "must be <= 1.0, found 1.5"),
    ]
    assert str(info.value).count("\n") == 5


@pytest.mark.parametrize(
    "field, value, message",
    [
        (Field(float), "abc", 'expected float, found string "abc"'),
        (Field(int), True, "expected integer, found boolean true"),
        (Field(int), 64.0, "expected integer, found float 64.0"),
        (Field(float), False, "expected float, found boolean false"),
        (Field((int, float)), [1], "expected integer or float, found array [1]"),
        (Field(str), {"a": 1}, "expected string, found table { a = 1 }"),
        (Field(bool), 1, "expected boolean, found integer 1"),
        (Field(str, choices=["relu", "tanh"]), "rleu", '"rleu" is not one of "relu", "tanh"; did you mean "relu"?'),
    ],
)
def test_type_and_choice_errors_name_expected_and_found(field, value, message):
    with pytest.raises(SpecError) as info:
        validate(Table({"x": field}), {"x": value}, file="f.toml", positions={"x": (2, 3)})
    assert info.value.issues == [SpecIssue("f.toml", 2, 3, "x", message)]


def test_list_items_are_checked_and_converted_one_by_one():
    schema = Table({"betas": Field(list, item=float, max=1.0)})
    assert validate(schema, {"betas": [1, 0.5]}) == {"betas": [1.0, 0.5]}
    text = "betas = [0.5,\n  \"x\", 2.0]\n"
    data, positions = parse_toml(text, "f.toml")
    with pytest.raises(SpecError) as info:
        validate(schema, data, file="f.toml", positions=positions)
    assert [str(i) for i in info.value.issues] == [
        'f.toml:2:3: betas[1]: expected float, found string "x"',
        "f.toml:2:8: betas[2]: must be <= 1.0, found 2.0",
    ]


def test_unknown_kind_lists_installed_kinds_and_suggests():
    (issue,) = issues_of(VALID.replace('kind = "vae"', 'kind = "vea"'))
    assert (issue.line, issue.col, issue.path) == (8, 1, "model.kind")
    assert issue.message == 'unknown model "vea"; did you mean "vae"? (installed: mlp, vae)'


def test_unknown_kind_without_close_match_says_how_to_install():
    (issue,) = issues_of(VALID.replace('kind = "adam"', 'kind = "lbfgs"'))
    assert issue.path == "train.optimizer.kind"
    assert (issue.line, issue.col) == (20, 15)
    assert issue.message == (
        'unknown optimizer "lbfgs" is not installed; install a package that provides it '
        "or pass --plugin FILE (installed: adam, sgd)"
    )


def test_broken_plugin_reports_its_import_error(monkeypatch):
    broken = metadata.EntryPoint(name="rbm", value="gengraph_no_such_module:Plugin", group="test.models")
    monkeypatch.setattr(metadata, "entry_points", lambda group: [broken] if group == "test.models" else [])
    registry = Registry("model", entry_point_group="test.models")
    schema = Table({"model": Dispatch("kind", registry)})
    with pytest.raises(SpecError) as info:
        validate(schema, {"model": {"kind": "rbm"}})
    (issue,) = info.value.issues
    assert issue.message.startswith('model "rbm" is installed but failed to import: ModuleNotFoundError')
    with pytest.raises(SpecError) as info:
        validate(schema, {"model": {"kind": "transformer"}})
    (issue,) = info.value.issues
    assert "(installed: none)" in issue.message
    assert "failed to import: rbm (ModuleNotFoundError" in issue.message


def test_dispatch_missing_key_and_default_dict_is_validated():
    spec = load('spec_version = 1\n[model]\nkind = "mlp"\nlayers = []\n')
    assert spec.data["train"]["optimizer"] == {"kind": "adam", "lr": 1e-3, "betas": [0.9, 0.999]}
    assert spec.data["output"] == {"extra": {}}
    (issue,) = issues_of("spec_version = 1\n[model]\nlatent = 3\n")
    assert (issue.line, issue.path) == (2, "model.kind")
    assert issue.message == "missing required key; set it to one of: mlp, vae"
    (issue,) = issues_of("spec_version = 1\n")
    assert issue.path == "model" and (issue.line, issue.col) == (1, 1)  # not written: the top of the file
    assert issue.message == "missing required table; set kind to one of: mlp, vae"


def test_optional_tables_and_arrays_stay_unset():
    schema = Table({"schedule": Dispatch("kind", OPTIMIZERS, default=None), "extra": ListOf(LAYER, default=None)})
    assert validate(schema, {}) == {"schedule": None, "extra": None}
    assert validate(schema, {"extra": [{"units": 2}]}) == {"schedule": None, "extra": [{"units": 2, "activation": "relu"}]}


def test_extra_tables_keep_unknown_keys():
    spec = load('spec_version = 1\n[model]\nkind = "mlp"\nlayers = []\n[output]\nanything = [1, "a"]\n')
    assert spec.data["output"] == {"extra": {}, "anything": [1, "a"]}


def test_spec_version_is_required_and_checked():
    (issue,) = issues_of('[model]\nkind = "mlp"\nlayers = []\n')
    assert (issue.path, issue.line, issue.col) == ("spec_version", 1, 1)
    assert "spec_version = 1" in issue.message
    issues = issues_of('spec_version = 2\n[model]\nkind = "mpl"\n')
    assert [(i.line, i.path) for i in issues] == [(1, "spec_version"), (3, "model.kind")]
    assert issues[0].message == "unsupported version 2; this gengraph reads spec_version = 1"


def test_load_spec_reads_files_and_names_missing_ones(tmp_path):
    path = tmp_path / "vae.toml"
    path.write_text(VALID, encoding="utf-8")
    spec = load_spec(path, ["train.batch_size=8"], schema=SCHEMA)
    assert spec.file == str(path) and spec.get("train.batch_size") == 8
    again = spec_from_text(spec.to_toml(), "resolved.toml", [], SCHEMA)
    assert again.data == spec.data
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.toml", schema=SCHEMA)
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: spec file not found"
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path, schema=SCHEMA)
    assert str(info.value).startswith(f"{tmp_path}: cannot read spec")


def test_invalid_toml_is_a_located_spec_error():
    with pytest.raises(SpecError) as info:
        load("spec_version = 1\n[run]\nname = \n")
    (issue,) = info.value.issues
    assert (issue.file, issue.line, issue.col) == ("spec.toml", 3, 8)
    assert issue.message == "invalid TOML: Invalid value"


def test_describe_lists_keys_types_defaults_and_help():
    rows = describe(SCHEMA)
    assert rows[:5] == [
        ("run", "table", None, ""),
        ("run.name", "string", "run", "run name"),
        ("run.seed", "integer", 0, "random seed"),
        ("run.device", "string", "cpu", ""),
        ("run.note", "string", None, "free text"),
    ]
    assert ("model", "table chosen by kind", REQUIRED, "the model plugin") in rows
    assert ("model.kind", "string", REQUIRED, "one of: mlp, vae") in rows
    assert ("train.optimizer.kind", "string", "adam", "one of: adam, sgd") in rows
    assert ("train.scale", "integer or float", 1, "") in rows
    layers = describe(MODELS.get("mlp").schema)
    assert layers[1] == ("layers[].units", "integer", REQUIRED, "width")


# --- fuzz: random and mutated text only ever fails as a SpecError ------------------

PIECES = ["[", "]", "[[", "{", "}", "=", ",", ".", '"', "'", "#", "\n", " ", "x", "1", "1.5", "true",
          '"s"', "[1]", "{a=1}", "kind", "units", "-", "e", "\\", '"""']


@st.composite
def mutated(draw):
    text = VALID
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        text = text[:at] + draw(st.sampled_from(PIECES)) + text[at + cut:]
    return text


TEXTS = st.one_of(
    st.integers(0, len(VALID)).map(lambda n: VALID[:n]),
    mutated(),
    st.lists(st.sampled_from(PIECES), max_size=30).map("".join),
    st.text(max_size=40),
)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS)
def test_fuzzed_specs_only_raise_spec_errors(text):
    try:
        spec = load(text)
    except SpecError as exc:
        assert exc.issues and all(i.message and i.file == "spec.toml" for i in exc.issues)
        return
    assert spec.data["spec_version"] == 1 and spec.data["model"]["kind"] in ("vae", "mlp")
