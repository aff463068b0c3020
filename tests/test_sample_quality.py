"""Sample-quality measures: the MMD permutation test's size and power, the Fréchet distance's
closed form, the digit classifier behind test_fd / label_entropy."""

import math

import numpy as np
import pytest

from gengraph.plugins.blocks import sample_quality as sq
from gengraph.plugins.models import digit_quality as dq


def test_pooled_mmd2_equals_the_direct_unbiased_statistic():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(45, 2)) + 0.3
    (stat, p), = sq.mmd_permutation_test(x, y, [0.7], permutations=20, seed=1)
    assert stat == pytest.approx(sq.mmd2_unbiased(x, y, 0.7), rel=1e-10, abs=1e-14)
    assert 1 / 21 <= p <= 1


def test_permutation_test_detects_a_20_percent_wider_gaussian_at_n_500():
    rng = np.random.default_rng(1)
    x, y = 1.2 * rng.normal(size=(500, 2)), rng.normal(size=(500, 2))
    h = sq.median_bandwidth(y)
    ps = [p for _, p in sq.mmd_permutation_test(x, y, [h / 5, h / 2, h], permutations=200, seed=0)]
    assert min(ps) < 0.01, ps


def test_permutation_test_has_the_right_size_under_the_null():
    rng = np.random.default_rng(2)
    ps = []
    for i in range(40):
        x, y = rng.normal(size=(100, 2)), rng.normal(size=(100, 2))
        h = sq.median_bandwidth(y)
        ps.append(sq.mmd_permutation_test(x, y, [h / 5], permutations=100, seed=i)[0][1])
    ps = np.array(ps)
    assert np.mean(ps < 0.05) <= 0.15
    assert 0.3 < ps.mean() < 0.7  # roughly uniform


def test_two_sample_report_keys_and_a_perfect_sampler_is_not_rejected():
    rng = np.random.default_rng(3)
    train, test, good, wide = (rng.normal(size=(600, 2)), rng.normal(size=(300, 2)), rng.normal(size=(300, 2)),
                               1.3 * rng.normal(size=(300, 2)))
    r = sq.two_sample_report(good, test, train, seed=0, permutations=100)
    for name, _ in sq.BANDWIDTH_FACTORS:
        assert {f"test_mmd2_{name}", f"test_mmd2_{name}_pvalue", f"baseline_mmd2_{name}"} <= set(r)
    assert r["test_mmd2_h_pvalue"] > 0.01 and r["baseline_mmd2_h_pvalue"] > 0.01
    w = sq.two_sample_report(wide, test, train, seed=0, permutations=100)
    assert w["test_mmd2_hdiv2_pvalue"] < 0.02 and w["test_energy_distance"] > 3 * abs(w["baseline_energy_distance"])


def test_frechet_distance_closed_form_for_gaussians():
    rng = np.random.default_rng(4)
    # commuting (diagonal) covariances: |mu1 - mu2|^2 + sum (sqrt(l1) - sqrt(l2))^2
    l1, l2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))  # rotating both keeps the distance
    got = sq.frechet_distance(mu1, q @ np.diag(l1) @ q.T, mu2, q @ np.diag(l2) @ q.T)
    assert got == pytest.approx(want, rel=1e-10)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert sq.frechet_distance([1.0], [[4.0]], [0.0], [[1.0]]) == pytest.approx(1.0 + 1.0)
    assert sq.frechet_distance(mu1, np.eye(5), mu1, np.eye(5)) == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    c1, c2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * np.real(linalg.sqrtm(c1 @ c2)))
    assert sq.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(ref, rel=1e-8)


def test_frechet_distance_of_samples_converges_to_the_gaussians():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(20000, 3)) * [1.0, 2.0, 0.5]
    b = rng.normal(size=(20000, 3)) + [1.0, 0.0, 0.0]
    want = 1.0 + (1 - 1) ** 2 + (2 - 1) ** 2 + (0.5 - 1) ** 2
    assert sq.frechet_distance_of(a, b) == pytest.approx(want, abs=0.05)


def test_label_entropy():
    assert sq.label_entropy(np.arange(10).repeat(7)) == pytest.approx(math.log(10))
    assert sq.label_entropy([3] * 50) == 0.0
    assert sq.label_entropy([0, 1] * 5) == pytest.approx(math.log(2))


def test_digit_classifier_is_accurate_deterministic_and_cached():
    clf = dq.digit_classifier(None, 0)
    assert clf.test_accuracy > 0.95
    assert dq.digit_classifier(None, 0) is clf
    xtr, ytr, xte, yte = dq._digits_split(None, 0)
    assert np.mean(clf.predict((xte > 0.5).astype(float)) == yte) > 0.9  # binarized digits too
    # data vs data: small FD, entropy near ln 10; one class only: entropy 0, large FD
    f_te = clf.features(xte)
    fd_data = sq.frechet_distance_of(clf.features(xtr[:len(xte)]), f_te)
    ones = xtr[ytr == 1]
    fd_ones = sq.frechet_distance_of(clf.features(ones), f_te)
    assert fd_ones > 10 * fd_data
    assert sq.label_entropy(clf.predict(xte)) > 2.25


def test_digit_classifier_is_deterministic_per_seed():
    clf = dq.digit_classifier(None, 0)
    x = dq._digits_split(None, 0)[2][:50]
    saved = dict(dq._CLASSIFIERS)
    try:
        dq._CLASSIFIERS.clear()
        again = dq.digit_classifier(None, 0)
        assert again is not clf
        np.testing.assert_array_equal(again.features(x), clf.features(x))
    finally:
        dq._CLASSIFIERS.clear()
        dq._CLASSIFIERS.update(saved)


def test_no_baseline_without_a_held_out_split():
    # with test_fraction = 0 the reference was x_train itself, and the "baseline" rows were drawn
    # from it: p-values near 1 instead of the uniform ones of a perfect sampler
    from gengraph.plugins.datasets.base import Dataset

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    held = Dataset(x[:200], None, x[200:], None, "unsupervised")
    none = Dataset(x, None, x[:0], None, "unsupervised")
    samples = rng.normal(size=(100, 2))
    with_test = sq.two_sample_summary(samples, held, seed=1)
    without = sq.two_sample_summary(samples, none, seed=1)
    assert "baseline_mmd2_h" in with_test and "baseline_energy_distance" in with_test
    assert "train_mmd2_h" in without and not any(k.startswith("baseline_") for k in without)
    direct = sq.two_sample_report(samples, x, x, seed=1, baseline=False)
    assert without["train_mmd2_h"] == direct["test_mmd2_h"]
