"""Standardizing data whose squares overflow float64: the statistics are those of the
data rescaled to |x| <= 1, scaled back (they were inf for |x| > ~1e154, and every value 0)."""

import numpy as np
import pytest

from gengraph.plugins.datasets import DataError, Source, make_dataset
from gengraph.plugins.datasets.prepare import apply_scaling, fit_scaling
from gengraph.plugins.datasets.sources import DATASETS

SCALES = np.array([1e200, 1e-200, 1.0, 3e307])


def raw(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, len(SCALES))) + 0.5


def test_standardize_statistics_match_a_computation_on_rescaled_data():
    x = raw() * SCALES
    stats = fit_scaling("standardize", x)
    small = x / SCALES  # what float64 computes without overflow, then scaled back
    np.testing.assert_allclose(stats["mean"], small.mean(axis=0) * SCALES, rtol=1e-12)
    np.testing.assert_allclose(stats["std"], small.std(axis=0) * SCALES, rtol=1e-12)
    z = apply_scaling(stats, x)
    np.testing.assert_allclose(z, (small - small.mean(axis=0)) / small.std(axis=0), rtol=1e-9, atol=1e-12)


def test_values_near_the_largest_float():
    x = np.array([[1.7e308], [-1.7e308], [1e308], [0.0]])
    stats = fit_scaling("standardize", x)
    small = x / 1e308
    assert stats["mean"] == pytest.approx([small.mean() * 1e308], rel=1e-12)
    assert stats["std"] == pytest.approx([small.std() * 1e308], rel=1e-12)


def test_a_constant_column_and_a_zero_column_keep_scale_one():
    x = np.column_stack([np.full(5, 1e300), np.zeros(5)])
    stats = fit_scaling("standardize", x)
    assert stats["mean"] == [1e300, 0.0] and stats["std"] == [1.0, 1.0]


class _Huge(Source):
    """A regression whose targets are about 1e300 (and features 1e200)."""

    name, task = "huge_test_source", "regression"

    def load(self, params, rng):
        x = raw(60, 1)[:, :2]
        return x * 1e200, (x[:, 0] - 2 * x[:, 1]) * 1e300


@pytest.fixture
def huge_source(monkeypatch):
    monkeypatch.setitem(DATASETS._objects, _Huge.name, _Huge())  # removed again after the test
    return _Huge.name


def test_scale_target_of_huge_targets_is_not_all_zero(huge_source):
    ds = make_dataset({"source": huge_source, "scale": "standardize", "scale_target": True}, 0)
    assert np.isfinite(ds.y_train).all() and np.isfinite(ds.x_train).all()
    assert ds.y_train.mean() == pytest.approx(0.0, abs=1e-9) and ds.y_train.std() == pytest.approx(1.0)
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1.0)
    # the units come back: unscaled targets are the 1e300 targets drawn
    ref = make_dataset({"source": huge_source}, 0)
    np.testing.assert_allclose(ds.unscale_y(ds.y_train), ref.y_train, rtol=1e-12)


@pytest.mark.parametrize("t,value", [(-1.0, "1"), (1.0, "0"), (1.5, "0")])
def test_a_binarize_threshold_outside_the_data_is_refused(t, value):
    # binarize = -1 (or 1.5) on [0, 1]-scaled digits trained an RBM on all-ones (all-zeros) images, exit 0
    with pytest.raises(DataError, match=rf"the threshold {t:g} leaves every training feature {value}: the "
                                        r"threshold must lie in \[0, 1\)") as info:
        make_dataset({"source": "digits", "scale": "minmax_global", "binarize": t}, 0)
    assert info.value.key == "data.binarize"
    ds = make_dataset({"source": "digits", "scale": "minmax_global", "binarize": 0.0}, 0)
    assert 0 < ds.x_train.mean() < 1
