"""Reports on binarized data keep the model's 0/1 units: the scaling fitted before the
threshold is not undone on samples (that multiplied VAE samples by 16 on the digits)."""

import numpy as np
import pytest

import gengraph
from gengraph.plugins.datasets import make_dataset

COMMON = {"model.likelihood": {"kind": "bernoulli"}, "train.epochs": 2, "output.plots": False,
          "output.samples": 16}
# the same 0/1 pixels two ways: scaled to [0, 1] then > 0.5, or raw grey levels 0..16 then > 8
WAYS = {"minmax": {"data.scale": "minmax_global", "data.binarize": 0.5},
        "raw": {"data.scale": "none", "data.binarize": 8}}


def test_the_two_ways_give_identical_data():
    a = make_dataset({"source": "digits", "scale": "minmax_global", "binarize": 0.5}, 0)
    b = make_dataset({"source": "digits", "scale": "none", "binarize": 8}, 0)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.x_test, b.x_test)
    # binary data are their own data units, whatever scaling came before the threshold
    x = np.array([[0.0, 1.0, 0.25]])
    assert np.array_equal(a.unscale_x(x), x) and np.array_equal(b.unscale_x(x), x)


@pytest.fixture(scope="module")
def vae_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bin")
    return {name: gengraph.run("vae_digits", {**COMMON, **ways}, out=root / name, progress=None)
            for name, ways in WAYS.items()}


def test_vae_samples_stay_in_the_unit_interval(vae_runs):
    for run in vae_runs.values():
        s = np.load(run.dir / "samples.npy")
        assert s.min() >= 0.0 and s.max() <= 1.0


def test_vae_quality_metrics_agree_both_ways(vae_runs):
    a, b = vae_runs["minmax"].summary, vae_runs["raw"].summary
    assert a["test_neg_elbo"] == pytest.approx(b["test_neg_elbo"], rel=1e-6)
    assert a["test_fd"] == pytest.approx(b["test_fd"], rel=1e-6)
    assert a["test_fd"] < 200  # in 0/1 units (it was ~6e4 with samples multiplied by 16)
    assert np.array_equal(np.load(vae_runs["minmax"].dir / "samples.npy"),
                          np.load(vae_runs["raw"].dir / "samples.npy"))
