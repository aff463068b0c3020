"""Data sources: generator formulas, digits, file loaders, splitting, scaling, seeding."""

from __future__ import annotations

import gzip
import importlib.util
import math

import numpy as np
import pytest
from gengraph.plugins.datasets import (
    DATASETS,
    DataError,
    Dataset,
    data_rng,
    describe,
    franke_function,
    get_source,
    load_digits,
    make_dataset,
    read_idx,
)
from gengraph.plugins.datasets.files import idx_bytes
from gengraph.plugins.spec.errors import SpecError
from gengraph.plugins.registry import UnknownKind

GENERATORS = ["linear", "quadratic2d", "polynomial", "franke", "moons", "gaussians", "swiss_roll"]


def gen(name, seed=0, **keys):
    """Raw generator output (no split), drawn from the run's data stream."""
    src = get_source(name)
    from gengraph.plugins.datasets.prepare import resolve_params

    return src.load(resolve_params(src, {"source": name, **keys}), data_rng(seed))


# ---- registry ------------------------------------------------------------------------
def test_registry_has_builtins_with_help():
    names = set(DATASETS.names())
    assert set(GENERATORS) | {"digits", "csv", "npz", "idx"} <= names
    help_ = describe()
    for name in names:
        assert help_[name] and "\n" not in help_[name]


def test_own_keys_do_not_shadow_shared_keys():
    from gengraph.plugins.datasets import SHARED_FIELDS

    for name in DATASETS.names():
        assert not set(get_source(name).params) & set(SHARED_FIELDS), name


def test_unknown_source_suggests():
    with pytest.raises(UnknownKind, match='did you mean "moons"'):
        get_source("moon")
    with pytest.raises(SpecError, match='data.source: unknown data source "mons"; did you mean "moons"'):
        make_dataset({"source": "mons"}, 0)


def test_unknown_key_suggests():
    with pytest.raises(SpecError, match=r'data\.nosie: unknown key; did you mean "noise"'):
        make_dataset({"source": "linear", "nosie": 0.1}, 0)


def test_bad_shared_key_values():
    with pytest.raises(SpecError) as err:
        make_dataset({"source": "linear", "test_fraction": 0.95, "scale": "zscore", "n": "ten"}, 0)
    assert str(err.value).splitlines() == [
        "data.n: expected integer, found string \"ten\"",
        "data.test_fraction: must be <= 0.9, found 0.95",
        "data.scale: \"zscore\" is not one of \"none\", \"standardize\", \"minmax\", \"minmax_global\"",
    ]


def test_data_schema_dispatches_on_source():
    from gengraph.plugins.datasets import data_schema, shared_keys_schema
    from gengraph.plugins.spec.schema import Table, validate
    from gengraph.plugins.spec.schema import describe as describe_table

    top = Table({"data": data_schema()})
    raw = {"source": "digits", "classes": [0, 1], "scale": "minmax"}
    spec = validate(top, {"data": dict(raw)})["data"]
    assert spec == {"source": "digits", "classes": [0, 1], "test_fraction": 0.2, "scale": "minmax",
                    "scale_target": False, "binarize": None, "shuffle": True}
    a, b = make_dataset(spec, 3), make_dataset(raw, 3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    with pytest.raises(SpecError, match=r'data\.source: unknown data source "mnistt"'):
        validate(top, {"data": {"source": "mnistt"}})
    shared = list(shared_keys_schema())
    assert shared == ["test_fraction", "scale", "scale_target", "binarize", "shuffle"]
    rows = describe_table(get_source("moons").schema)
    assert [r[0] for r in rows] == ["n", "noise", *shared]
    assert rows[0][1:3] == ("integer", 200) and all(r[3] for r in rows)


# ---- generators ----------------------------------------------------------------------
def test_linear_least_squares_recovers_slope_and_intercept():
    x, y = gen("linear", n=2000, noise=0.1)
    assert x.shape == (2000, 1) and y.shape == (2000,)
    assert x.min() >= -1 and x.max() <= 1
    a = np.column_stack([x[:, 0], np.ones(len(x))])
    (slope, intercept), *_ = np.linalg.lstsq(a, y, rcond=None)
    # standard errors are about 0.1/sqrt(2000 * 1/3) = 0.004 and 0.1/sqrt(2000) = 0.002
    assert slope == pytest.approx(2.0, abs=0.02)
    assert intercept == pytest.approx(1.0, abs=0.01)
    residual = y - a @ np.array([slope, intercept])
    assert residual.std() == pytest.approx(0.1, rel=0.1)


def test_linear_custom_line_noise_free():
    x, y = gen("linear", n=50, noise=0.0, slope=-0.5, intercept=3)
    np.testing.assert_allclose(y, -0.5 * x[:, 0] + 3.0, rtol=0, atol=1e-15)


def test_quadratic2d_formula():
    x, y = gen("quadratic2d", n=300, noise=0.0)
    assert x.shape == (300, 2)
    x0, x1 = x[:, 0], x[:, 1]
    np.testing.assert_allclose(y, x0**2 + 3 * x0 * x1 + x1**2 + 5, rtol=1e-12)
    # x ~ N(0, 1): sample moments
    assert abs(x.mean()) < 0.15 and x.std() == pytest.approx(1.0, abs=0.1)
    formula = get_source("quadratic2d").formula
    assert formula(1.0, 2.0) == 1 + 6 + 4 + 5
    assert formula(0.0, 0.0) == 5.0
    assert formula(-1.0, 1.0) == 1 - 3 + 1 + 5


def test_polynomial_default_and_custom_coefficients():
    x, y = gen("polynomial", n=100, noise=0.0)
    np.testing.assert_allclose(y, 1 + 2 * x[:, 0] - 3 * x[:, 0] ** 2, atol=1e-12)
    x, y = gen("polynomial", n=100, noise=0.0, coefficients=[0, 0, 0, 2])
    np.testing.assert_allclose(y, 2 * x[:, 0] ** 3, atol=1e-12)
    with pytest.raises(DataError, match="coefficients"):
        gen("polynomial", coefficients=[])


def test_franke_values_at_fixed_points():
    def franke(a, b):
        return (0.75 * math.exp(-((9 * a - 2) ** 2) / 4 - ((9 * b - 2) ** 2) / 4)
                + 0.75 * math.exp(-((9 * a + 1) ** 2) / 49 - (9 * b + 1) / 10)
                + 0.5 * math.exp(-((9 * a - 7) ** 2) / 4 - ((9 * b - 3) ** 2) / 4)
                - 0.2 * math.exp(-((9 * a - 4) ** 2) - (9 * b - 7) ** 2))

    # F(0, 0) = 0.75 e^-2 + 0.75 e^-(1/49 + 1/10) + 0.5 e^-(49/4 + 9/4) - 0.2 e^-(16 + 49)
    f00 = 0.75 * math.exp(-2) + 0.75 * math.exp(-(1 / 49 + 0.1)) + 0.5 * math.exp(-14.5) - 0.2 * math.exp(-65)
    assert franke_function(0.0, 0.0) == pytest.approx(f00, rel=1e-12)
    assert f00 == pytest.approx(0.7664206, abs=1e-6)
    for a, b in [(1.0, 1.0), (0.5, 0.5), (2 / 9, 2 / 9), (0.3, 0.8)]:
        assert franke_function(a, b) == pytest.approx(franke(a, b), rel=1e-12)
    x, y = gen("franke", n=200, noise=0.0)
    assert x.shape == (200, 2) and x.min() >= 0 and x.max() <= 1
    np.testing.assert_allclose(y, [franke(a, b) for a, b in x], rtol=1e-12)
    _, y_noisy = gen("franke", n=200, noise=0.1)
    assert (y_noisy - y).std() == pytest.approx(0.1, rel=0.2)


def test_moons_shapes_and_labels():
    x, y = gen("moons", n=201, noise=0.0)
    assert x.shape == (201, 2) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [100, 101]
    upper, lower = x[y == 0], x[y == 1]
    # noise-free: moon 0 is the unit upper half circle, moon 1 the shifted lower one
    np.testing.assert_allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0, atol=1e-12)
    assert upper[:, 1].min() >= -1e-12
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1, lower[:, 1] - 0.5), 1.0, atol=1e-12)
    assert lower[:, 1].max() <= 0.5 + 1e-12
    ds = make_dataset({"source": "moons", "n": 200}, 3)
    assert ds.task == "classification" and ds.n_classes == 2
    assert ds.x_train.shape == (160, 2) and ds.x_test.shape == (40, 2)
    assert set(np.unique(ds.y_train)) == {0, 1}


def test_gaussians_on_circle():
    src = get_source("gaussians")
    x, y = gen("gaussians", n=4000, k=4, radius=3.0, std=0.05)
    centres = src.centres(4, 3.0)
    np.testing.assert_allclose(centres, [[3, 0], [0, 3], [-3, 0], [0, -3]], atol=1e-12)
    for c in range(4):
        pts = x[y == c]
        assert len(pts) > 800
        np.testing.assert_allclose(pts.mean(axis=0), centres[c], atol=0.01)
        assert pts.std(axis=0) == pytest.approx([0.05, 0.05], rel=0.1)
    ds = make_dataset({"source": "gaussians", "k": 5, "n": 100}, 0)
    assert ds.n_classes == 5 and ds.task == "classification"


def test_swiss_roll_formula():
    x, t = gen("swiss_roll", n=500, noise=0.0, divisor=2.0)
    assert x.shape == (500, 2)
    assert t.min() >= 1.5 * math.pi and t.max() <= 4.5 * math.pi
    np.testing.assert_allclose(x * 2.0, np.column_stack([t * np.cos(t), t * np.sin(t)]), atol=1e-12)
    ds = make_dataset({"source": "swiss_roll", "n": 100}, 0)
    assert ds.task == "unsupervised" and ds.y_train.shape == (80,)
    assert np.abs(ds.x_train).max() < 1.5 + 0.3


@pytest.mark.parametrize("name", GENERATORS)
def test_generators_defaults_and_dtypes(name):
    ds = make_dataset({"source": name}, 1)
    assert ds.x_train.ndim == 2 and ds.x_train.dtype == np.float64
    assert ds.x_test.shape[1] == ds.x_train.shape[1]
    n = ds.n_train + ds.n_test
    assert ds.n_test == round(0.2 * n)
    if ds.task == "classification":
        assert ds.y_train.dtype == np.int64 and ds.y_train.max() < ds.n_classes
    else:
        assert ds.y_train.dtype == np.float64 and ds.y_train.shape == (ds.n_train,)


# ---- seeding and splitting -----------------------------------------------------------
def test_data_rng_is_a_fixed_separate_stream():
    a = data_rng(7).standard_normal(5)
    b = np.random.default_rng(np.random.SeedSequence([7, 0xDA7A])).standard_normal(5)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, np.random.default_rng(7).standard_normal(5))


@pytest.mark.parametrize("spec", [{"source": "franke", "scale": "standardize"},
                                  {"source": "digits", "scale": "minmax"}])
def test_same_seed_identical_arrays_different_seed_different_split(spec):
    a, b, c = make_dataset(spec, 11), make_dataset(spec, 11), make_dataset(spec, 12)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.x_train.shape == c.x_train.shape
    assert not np.array_equal(a.y_test, c.y_test)


def test_different_seed_different_split_of_the_same_file_data():
    # digits are fixed data: a different seed must change which rows are held out
    a, b = make_dataset({"source": "digits"}, 0), make_dataset({"source": "digits"}, 1)
    rows = lambda ds: {r.tobytes() for r in ds.x_test}
    assert len(rows(a) ^ rows(b)) > 100
    # and the union is always the whole set
    assert a.n_train + a.n_test == 1797


def test_split_without_shuffle_takes_last_rows():
    x, y = gen("linear", n=50)
    ds = make_dataset({"source": "linear", "n": 50, "shuffle": False, "test_fraction": 0.3}, 0)
    np.testing.assert_array_equal(ds.x_train, x[:35])
    np.testing.assert_array_equal(ds.y_test, y[35:])
    ds = make_dataset({"source": "linear", "n": 50, "test_fraction": 0.0}, 0)
    assert ds.n_train == 50 and ds.x_test.shape == (0, 1)


# ---- scaling and binarizing ----------------------------------------------------------
def test_standardize_uses_train_statistics_only():
    raw = make_dataset({"source": "quadratic2d", "n": 300}, 5)
    ds = make_dataset({"source": "quadratic2d", "n": 300, "scale": "standardize", "scale_target": True}, 5)
    mean, std = raw.x_train.mean(axis=0), raw.x_train.std(axis=0)
    np.testing.assert_allclose(ds.x_train, (raw.x_train - mean) / std, atol=1e-12)
    np.testing.assert_allclose(ds.x_test, (raw.x_test - mean) / std, atol=1e-12)
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1, atol=1e-12)
    # the test split was not used: its mean is not exactly zero
    assert np.abs(ds.x_test.mean(axis=0)).max() > 1e-3
    np.testing.assert_allclose(ds.meta["x_scaling"]["mean"], mean)
    ym, ys = raw.y_train.mean(), raw.y_train.std()
    np.testing.assert_allclose(ds.y_test, (raw.y_test - ym) / ys, atol=1e-12)
    np.testing.assert_allclose(ds.unscale_y(ds.y_test), raw.y_test, atol=1e-12)
    np.testing.assert_allclose(ds.unscale_x(ds.x_test), raw.x_test, atol=1e-12)


def test_minmax_and_constant_columns():
    raw = make_dataset({"source": "digits"}, 2).flat()
    ds = make_dataset({"source": "digits", "scale": "minmax"}, 2).flat()
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    lo, hi = raw.x_train.min(axis=0), raw.x_train.max(axis=0)
    const = hi == lo
    assert const[0]  # pixel (0, 0) is blank in every image
    np.testing.assert_allclose(ds.x_test[:, ~const], (raw.x_test[:, ~const] - lo[~const]) / (hi - lo)[~const])
    np.testing.assert_array_equal(ds.x_test[:, const], raw.x_test[:, const] - lo[const])
    glob = make_dataset({"source": "digits", "scale": "minmax_global"}, 2).flat()
    np.testing.assert_allclose(glob.x_test, raw.x_test / 16.0)
    np.testing.assert_allclose(glob.unscale_x(glob.x_train), raw.x_train)


def test_binarize_after_scaling():
    raw = make_dataset({"source": "digits"}, 4)
    ds = make_dataset({"source": "digits", "binarize": 8}, 4)
    np.testing.assert_array_equal(ds.x_train, (raw.x_train > 8).astype(float))
    assert set(np.unique(ds.x_test)) == {0.0, 1.0}
    scaled = make_dataset({"source": "digits", "scale": "minmax_global", "binarize": 0.5}, 4)
    np.testing.assert_array_equal(scaled.x_train, ds.x_train)
    assert scaled.meta["binarize"] == 0.5


def test_scale_target_needs_regression():
    with pytest.raises(DataError, match="scale_target"):
        make_dataset({"source": "moons", "scale_target": True}, 0)


# ---- digits --------------------------------------------------------------------------
FIRST_DIGIT = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0,
               0, 4, 12, 0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0,
               0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]
TOTAL_INK = 561_718  # sum of all pixels of all 1797 images, read once from the file


def test_digits_contents():
    x, y = load_digits()
    assert x.shape == (1797, 64) and y.shape == (1797,)
    assert x.min() == 0 and x.max() == 16 and np.all(x == np.round(x))
    counts = np.bincount(y, minlength=10)
    assert counts.sum() == 1797 and len(counts) == 10
    assert counts.tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    np.testing.assert_array_equal(x[0], FIRST_DIGIT)
    assert y[:10].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert int(x.sum()) == TOTAL_INK


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn not installed")
def test_digits_match_scikit_learn():
    from sklearn.datasets import load_digits as sk_load

    sk = sk_load()
    x, y = load_digits()
    np.testing.assert_array_equal(x, sk.data)
    np.testing.assert_array_equal(y, sk.target)


def test_digits_dataset_record_and_classes():
    ds = make_dataset({"source": "digits", "test_fraction": 0.25}, 0)
    assert ds.image_shape == (1, 8, 8) and ds.n_features == 64 and ds.n_classes == 10
    assert ds.x_train.shape[1:] == (1, 8, 8) and ds.flat().x_train.shape[1:] == (64,)
    rows = ds.flat().x_train[:5]  # as_examples is flat's inverse; rows of another width are left alone
    np.testing.assert_array_equal(ds.flat().as_examples(rows), ds.x_train[:5])
    assert ds.as_examples(rows[:, :10]).shape == (5, 10) and ds.as_examples(rows[0]).shape == (64,)
    moons = make_dataset({"source": "moons", "n": 20}, 0)
    assert moons.image_shape is None and moons.as_examples(moons.x_train).shape == (moons.n_train, 2)
    assert ds.n_train + ds.n_test == 1797 and ds.n_test == round(0.25 * 1797)
    assert "Alpaydin" in ds.meta["attribution"] and "CC BY 4.0" in ds.meta["attribution"]
    assert "10.24432/C50P49" in ds.meta["attribution"]
    assert len(ds.feature_names) == 64
    sub = make_dataset({"source": "digits", "classes": [8, 3]}, 0)
    x, y = load_digits()
    assert sub.n_train + sub.n_test == int(np.sum((y == 8) | (y == 3))) == 174 + 183
    assert sub.n_classes == 2 and sub.meta["classes"] == [8, 3]
    # label 0 is digit 8, label 1 is digit 3: check via the rows themselves
    eights = {r.tobytes() for r in x[y == 8]}
    assert all((r.tobytes() in eights) == (lab == 0) for r, lab in zip(sub.x_train, sub.y_train))
    with pytest.raises(SpecError, match=r"data\.classes\[1\]: must be <= 9, found 12"):
        make_dataset({"source": "digits", "classes": [1, 12]}, 0)
    with pytest.raises(DataError, match=r"data\.classes: each digit once"):
        make_dataset({"source": "digits", "classes": [1, 1]}, 0)


def test_digits_data_file_and_license_are_package_data():
    from importlib import resources

    data = resources.files("gengraph.plugins.datasets").joinpath("data")
    assert data.joinpath("digits.csv.gz").read_bytes()[:2] == b"\x1f\x8b"
    lic = data.joinpath("DIGITS_LICENSE.txt").read_text()
    assert "Alpaydin" in lic and "CC BY 4.0" in lic and "10.24432/C50P49" in lic


# ---- csv -----------------------------------------------------------------------------
def test_csv_with_header_target_by_name(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text("a,label,b\n1,cat,2\n3,dog,4\n5,cat,6\n7,dog,8\n9,bird,10\n")
    ds = make_dataset({"source": "csv", "path": str(f), "target": "label", "test_fraction": 0.0,
                       "shuffle": False}, 0)
    np.testing.assert_array_equal(ds.x_train, [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]])
    assert ds.feature_names == ["a", "b"]
    assert ds.task == "classification" and ds.meta["classes"] == ["bird", "cat", "dog"]
    assert ds.y_train.tolist() == [1, 2, 1, 2, 0]


def test_csv_headerless_last_column_regression_and_test_file(tmp_path):
    (tmp_path / "tr.csv").write_text("0.5,1.0,2.5\n1.5,2.0,3.5\n# comment\n\n2.5,3.0,4.25\n")
    (tmp_path / "te.csv").write_text("9,8,7.5\n")
    ds = make_dataset({"source": "csv", "path": "tr.csv", "test_path": "te.csv", "shuffle": False},
                      0, base_dir=tmp_path)
    assert ds.task == "regression" and ds.feature_names is None
    np.testing.assert_array_equal(ds.x_train, [[0.5, 1.0], [1.5, 2.0], [2.5, 3.0]])
    np.testing.assert_array_equal(ds.y_train, [2.5, 3.5, 4.25])
    np.testing.assert_array_equal(ds.x_test, [[9, 8]])
    np.testing.assert_array_equal(ds.y_test, [7.5])
    assert ds.meta["split"] == {"kind": "file"}


def test_csv_integer_target_index_delimiter_and_unsupervised(tmp_path):
    f = tmp_path / "d.tsv"
    f.write_text("3;0.1;0.2\n1;0.3;0.4\n3;0.5;0.6\n")
    ds = make_dataset({"source": "csv", "path": str(f), "target": 0, "delimiter": ";",
                       "test_fraction": 0.0, "shuffle": False}, 0)
    assert ds.task == "classification" and ds.meta["classes"] == [1, 3]
    assert ds.y_train.tolist() == [1, 0, 1] and ds.n_classes == 2
    ds = make_dataset({"source": "csv", "path": str(f), "delimiter": ";", "task": "unsupervised",
                       "test_fraction": 0.0}, 0)
    assert ds.y_train is None and ds.x_train.shape == (3, 3)
    ds = make_dataset({"source": "csv", "path": str(f), "target": 0, "delimiter": ";",
                       "task": "regression", "test_fraction": 0.0, "shuffle": False}, 0)
    assert ds.y_train.tolist() == [3.0, 1.0, 3.0]


def test_csv_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=r"nope\.csv: no such file \(expected a CSV file\)"):
        make_dataset({"source": "csv", "path": str(missing)}, 0)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("1,2,3\n4,5\n")
    with pytest.raises(DataError, match=r"ragged\.csv:2: expected 3 fields, found 2"):
        make_dataset({"source": "csv", "path": str(ragged)}, 0)
    text = tmp_path / "text.csv"
    text.write_text("a,b,y\n1,x,0\n")
    with pytest.raises(DataError, match=r"text\.csv:2: column 'b' \(1\): expected a number, found 'x'"):
        make_dataset({"source": "csv", "path": str(text)}, 0)
    with pytest.raises(DataError, match=r'no column named \'yy\'; did you mean "y"'):
        make_dataset({"source": "csv", "path": str(text), "target": "yy"}, 0)
    with pytest.raises(SpecError, match=r"data\.path: missing required key"):
        make_dataset({"source": "csv"}, 0)


# ---- npz -----------------------------------------------------------------------------
def test_npz_images_keys_and_test_file(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(10, 4, 3)).astype(np.uint8)
    y = np.arange(10) % 3
    np.savez(tmp_path / "tr.npz", images=x, targets=y)
    np.savez(tmp_path / "te.npz", images=x[:4], targets=y[:4])
    ds = make_dataset({"source": "npz", "path": str(tmp_path / "tr.npz"), "x_key": "images",
                       "y_key": "targets", "test_path": str(tmp_path / "te.npz"), "shuffle": False}, 0)
    assert ds.image_shape == (1, 4, 3) and ds.x_train.shape == (10, 1, 4, 3) and ds.n_features == 12
    np.testing.assert_array_equal(ds.flat().x_train, x.reshape(10, 12))
    assert ds.task == "classification" and ds.n_classes == 3
    np.testing.assert_array_equal(ds.y_test, y[:4])
    # float targets -> regression, (n, 1) flattened; default keys
    np.savez(tmp_path / "r.npz", x=rng.normal(size=(20, 2)), y=rng.normal(size=(20, 1)))
    ds = make_dataset({"source": "npz", "path": str(tmp_path / "r.npz")}, 0)
    assert ds.task == "regression" and ds.y_train.shape == (16,)


def test_npz_errors(tmp_path):
    with pytest.raises(DataError, match=r"gone\.npz: no such file"):
        make_dataset({"source": "npz", "path": str(tmp_path / "gone.npz")}, 0)
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"a\.npz: expected an array named 'y' \(y_key\), found x"):
        make_dataset({"source": "npz", "path": str(tmp_path / "a.npz")}, 0)
    ds = make_dataset({"source": "npz", "path": str(tmp_path / "a.npz"), "task": "unsupervised",
                       "test_fraction": 0.0}, 0)
    assert ds.y_train is None and ds.task == "unsupervised"
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2))
    with pytest.raises(DataError, match=r"obj\.npz: .*pickled"):
        make_dataset({"source": "npz", "path": str(tmp_path / "obj.npz")}, 0)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match=r"junk\.npz"):
        make_dataset({"source": "npz", "path": str(tmp_path / "junk.npz")}, 0)
    np.savez(tmp_path / "short.npz", x=np.zeros((3, 2)), y=np.zeros(2))
    with pytest.raises(DataError, match=r"expected 3 targets"):
        make_dataset({"source": "npz", "path": str(tmp_path / "short.npz")}, 0)


# ---- idx -----------------------------------------------------------------------------
def write_mnist_like(tmp_path, n=12, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 5, 4)).astype(np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    ext = ".gz" if gz else ""
    write = (lambda p, b: p.write_bytes(gzip.compress(b))) if gz else (lambda p, b: p.write_bytes(b))
    ip, lp = tmp_path / f"img-idx3-ubyte{ext}", tmp_path / f"lab-idx1-ubyte{ext}"
    write(ip, idx_bytes(images))
    write(lp, idx_bytes(labels))
    return ip, lp, images, labels


def test_idx_plain_and_gzip(tmp_path):
    ip, lp, images, _ = write_mnist_like(tmp_path, n=20)
    gip, glp, gimages, glabels = write_mnist_like(tmp_path, n=7, gz=True, seed=1)
    assert read_idx(ip).dtype == np.uint8
    np.testing.assert_array_equal(read_idx(gip), gimages)
    ds = make_dataset({"source": "idx", "images": str(ip), "labels": str(lp),
                       "test_images": str(gip), "test_labels": str(glp), "shuffle": False}, 0)
    assert ds.image_shape == (1, 5, 4) and ds.x_train.shape == (20, 1, 5, 4)
    np.testing.assert_array_equal(ds.x_train, images.reshape(20, 1, 5, 4))
    np.testing.assert_array_equal(ds.flat().x_test, gimages.reshape(7, 20))
    np.testing.assert_array_equal(ds.y_test, glabels)
    assert ds.task == "classification" and ds.n_classes == 10 and ds.y_train.dtype == np.int64
    ds = make_dataset({"source": "idx", "images": str(gip), "test_fraction": 0.0}, 0)
    assert ds.task == "unsupervised" and ds.y_train is None and ds.n_train == 7


def test_idx_other_element_types(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    (tmp_path / "f.idx").write_bytes(idx_bytes(a))
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), a)
    b = np.array([-3, 300, 7], dtype=np.int16)
    (tmp_path / "s.idx").write_bytes(idx_bytes(b))
    np.testing.assert_array_equal(read_idx(tmp_path / "s.idx"), b)


def test_idx_errors_name_the_file(tmp_path):
    ip, lp, images, labels = write_mnist_like(tmp_path)
    bad = tmp_path / "bad-images"
    bad.write_bytes(b"\x12\x34\x08\x03" + idx_bytes(images)[4:])
    with pytest.raises(DataError, match=r"bad-images: bad IDX magic number 0x12340803; expected 0x00000803"):
        make_dataset({"source": "idx", "images": str(bad), "labels": str(lp)}, 0)
    # labels file given where images are expected: 1 dimension instead of 3
    with pytest.raises(DataError, match=r"lab-idx1-ubyte: bad IDX magic number 0x00000801: expected 3"):
        make_dataset({"source": "idx", "images": str(lp)}, 0)
    with pytest.raises(DataError, match=r"missing-labels: no such file \(expected an IDX labels file\)"):
        make_dataset({"source": "idx", "images": str(ip), "labels": str(tmp_path / "missing-labels")}, 0)
    short = tmp_path / "short-images"
    short.write_bytes(idx_bytes(images)[:-5])
    with pytest.raises(DataError, match=r"short-images: IDX header says shape \(12, 5, 4\)"):
        make_dataset({"source": "idx", "images": str(short)}, 0)
    notgz = tmp_path / "plain.gz"
    notgz.write_bytes(idx_bytes(images))
    with pytest.raises(DataError, match=r"plain\.gz: cannot read"):
        make_dataset({"source": "idx", "images": str(notgz)}, 0)
    few = tmp_path / "few-labels"
    few.write_bytes(idx_bytes(labels[:5]))
    with pytest.raises(DataError, match=r"few-labels: expected 12 labels"):
        make_dataset({"source": "idx", "images": str(ip), "labels": str(few)}, 0)


# ---- Dataset record ------------------------------------------------------------------
def test_dataset_rejects_unknown_task():
    with pytest.raises(ValueError, match="task"):
        Dataset(np.zeros((2, 1)), None, None, None, "clustering")
