"""Fuzzing the whole spec front end with the real plugins installed: >= 10 000 specs.

Every generated or mutated spec must end in success or a SpecError -- never another
exception, whatever the text, keys or values. Hypothesis draws documents, real specs
and seeds; each example also checks VARIANTS cheap random mutations of its text (a
seeded `random.Random`), so the suite sees 1 500 x (1 + 6) = 10 500 specs in seconds
instead of paying Hypothesis' per-example cost 10 000 times.
"""

import random
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gengraph.plugins.spec.errors import SpecError
from gengraph.plugins.spec.document import spec_from_text
from gengraph.plugins.run.spec_schema import top_schema
from gengraph.plugins.spec.toml_writer import dumps

ROOT = Path(__file__).resolve().parents[1]
REAL = [p.read_text() for p in sorted((ROOT / "specs").glob("*.toml"))]
SCHEMA = top_schema()
KEYS = ["run", "data", "model", "train", "output", "kind", "source", "layers", "units", "activation", "lr",
        "optimizer", "schedule", "epochs", "batch_size", "seed", "dtype", "device", "n", "noise", "scale",
        "test_fraction", "binarize", "early_stopping", "patience", "name", "mlp", "adam", "digits", "spec_version",
        "path", "degree", "hidden", "latent", "beta", "steps", "x", "ÿ", ""]
# generation only: a failure still reports its example; shrinking would only slow the suite
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None, phases=[Phase.generate])


VARIANTS = 6
JUNK = ["=", "[", "]", "{", "}", '"', "\n", "0", "-1", "1e999", "true", "[[model.layers]]", "kind = 3", "\x00", "é"]


def mutate(text: str, rnd: random.Random) -> str:
    how = rnd.choice(["truncate", "replace", "delete_line", "duplicate_line", "insert"])
    if how == "truncate":
        return text[: rnd.randint(0, len(text))]
    lines = text.splitlines()
    i = rnd.randint(0, max(len(lines) - 1, 0))
    if how == "delete_line":
        return "\n".join(lines[:i] + lines[i + 1:])
    if how == "duplicate_line":
        return "\n".join(lines[: i + 1] + lines[i:])
    pos, chunk = rnd.randint(0, len(text)), rnd.choice(JUNK)
    if how == "insert":
        return text[:pos] + chunk + text[pos:]
    return text[:pos] + chunk + text[pos + len(chunk):]


def check_with_variants(text, seed):
    check(text)
    rnd = random.Random(seed)
    for _ in range(VARIANTS):
        check(mutate(text, rnd))


def check(text, overrides=()):
    try:
        spec_from_text(text, "fuzz.toml", list(overrides), SCHEMA)
    except SpecError as exc:
        assert exc.issues and all(i.path is not None for i in exc.issues)


scalars = st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=True), st.booleans(),
                    st.text(max_size=12), st.sampled_from(KEYS))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
                      max_leaves=10)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=7)


@settings(max_examples=750, **SETTINGS)
@given(doc=documents, version=st.sampled_from([1, 1, 1, 2, "1"]), seed=st.integers(0, 2**32))
def test_generated_specs_validate_or_raise_spec_error(doc, version, seed):
    doc = {k: v for k, v in doc.items() if k != "spec_version"}
    check_with_variants(f"spec_version = {version!r}\n".replace("'", '"') + dumps(doc), seed)


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(REAL))
    how = draw(st.sampled_from(["truncate", "replace", "delete_line", "duplicate_line", "insert"]))
    if how == "truncate":
        return text[: draw(st.integers(0, len(text)))]
    lines = text.splitlines()
    i = draw(st.integers(0, max(len(lines) - 1, 0)))
    if how == "delete_line":
        return "\n".join(lines[:i] + lines[i + 1:])
    if how == "duplicate_line":
        return "\n".join(lines[: i + 1] + lines[i:])
    pos = draw(st.integers(0, len(text)))
    chunk = draw(st.one_of(st.text(max_size=6), st.sampled_from(["=", "[", "]", "{", "}", '"', "\n", "0", "-1",
                                                                 "1e999", "true", "[[model.layers]]"])))
    if how == "insert":
        return text[:pos] + chunk + text[pos:]
    return text[:pos] + chunk + text[pos + len(chunk):]


@settings(max_examples=750, **SETTINGS)
@given(text=mutated(), seed=st.integers(0, 2**32))
def test_mutated_real_specs_validate_or_raise_spec_error(text, seed):
    check_with_variants(text, seed)


overrides = st.tuples(st.sampled_from(["train.optimizer.lr", "model.layers[0].units", "model.kind", "run.seed",
                                       "data.source", "nope.key", "model.layers[9].x", "train", "a..b", "[0]"]),
                      st.sampled_from(["0.1", "-3", '"adam"', "{kind=\"sgd\"}", "[1,2]", "x=y", "", "1e999", "true"]))


@settings(max_examples=500, **SETTINGS)
@given(text=st.sampled_from(REAL), sets=st.lists(overrides, max_size=3))
def test_overrides_on_real_specs_validate_or_raise_spec_error(text, sets):
    check(text, [f"{k}={v}" for k, v in sets])
