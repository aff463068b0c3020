"""The resolved-spec writer: readable sections, and tomllib reads back what was written."""

import datetime as dt
import math
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gengraph.plugins.spec.toml_writer import dumps, format_key, format_string


def test_layout_of_a_resolved_spec():
    spec = {
        "spec_version": 1,
        "run": {"name": "demo", "seed": 0, "note": None},
        "model": {
            "kind": "mlp",
            "layers": [{"units": 64, "activation": "relu"}, {"units": 10, "init": {"kind": "normal"}}],
        },
        "train": {"optimizer": {"kind": "adam", "lr": 0.001, "betas": [0.9, 0.999]}, "empty": []},
    }
    assert dumps(spec) == """\
spec_version = 1

[run]
name = "demo"
seed = 0

[model]
kind = "mlp"

[[model.layers]]
units = 64
activation = "relu"

[[model.layers]]
units = 10

[model.layers.init]
kind = "normal"

[train]
empty = []

[train.optimizer]
kind = "adam"
lr = 0.001
betas = [0.9, 0.999]
"""
    del spec["run"]["note"]
    assert tomllib.loads(dumps(spec)) == spec


def test_none_values_are_omitted_everywhere():
    data = {"a": None, "b": {"c": None, "d": 1}, "e": [{"f": None}], "g": [1, {"h": None, "i": 2}]}
    assert tomllib.loads(dumps(data)) == {"b": {"d": 1}, "e": [{}], "g": [1, {"i": 2}]}


def test_special_floats_and_strings():
    data = {"inf": math.inf, "ninf": -math.inf, "nan": math.nan, "tiny": 5e-324, "big": 1e300, "neg0": -0.0}
    back = tomllib.loads(dumps(data))
    assert math.isnan(back.pop("nan"))
    assert back == {"inf": math.inf, "ninf": -math.inf, "tiny": 5e-324, "big": 1e300, "neg0": -0.0}
    assert math.copysign(1.0, back["neg0"]) == -1.0
    assert format_string('a"b\\c\n\t\x00\x7fé') == '"a\\"b\\\\c\\n\\t\\u0000\\u007fé"'
    assert format_key("lr") == "lr" and format_key("a.b") == '"a.b"' and format_key("") == '""'


def test_unsupported_values_raise_type_error():
    with pytest.raises(TypeError, match="cannot write set"):
        dumps({"a": {1, 2}})
    with pytest.raises(TypeError, match="NoneType"):
        dumps({"a": [1, None]})


KEYS = st.text(max_size=8)
SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.dates(),
    st.times(),
    st.datetimes(),
    st.datetimes(timezones=st.just(dt.timezone.utc)),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_round_trip_through_tomllib(data):
    assert tomllib.loads(dumps(data)) == data
