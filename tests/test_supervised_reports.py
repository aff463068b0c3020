"""What a supervised run reports follows scikit-learn's conventions: R² averaged over targets,
the confusion matrix labelled with the data's own classes, and a test split that is never
silently empty."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import r2_score as sk_r2

import gengraph
from gengraph.plugins.models import mlp

rng = np.random.default_rng(0)


@pytest.mark.parametrize("scales", [(1.0,), (1.0, 100.0), (0.01, 5.0, 1.0)])
def test_r2_is_sklearn_s_average_over_targets(scales):
    y = rng.normal(size=(40, len(scales))) * np.array(scales)
    pred = y + rng.normal(size=y.shape) * 0.4
    assert mlp.r2_score(pred - y, y) == pytest.approx(sk_r2(y, pred), rel=1e-12)
    const = np.ones((10, 2))
    assert mlp.r2_score(np.zeros((10, 2)), const) == 1.0 and mlp.r2_score(np.ones((10, 2)), const) == 0.0


def test_the_confusion_matrix_is_labelled_with_the_data_s_classes(tmp_path, monkeypatch):
    rows = ["a,b,label"] + [f"{x:.3f},{y:.3f},{c}" for c, (x, y) in
                            zip(np.repeat([3, 7, 9], 30), rng.normal(size=(90, 2)) + np.repeat([[0, 0], [3, 0], [0, 3]], 30, 0))]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    seen = {}
    real = mlp.confusion_matrix
    monkeypatch.setattr(mlp, "confusion_matrix", lambda *a, **k: seen.update(k) or real(*a, **k))
    spec = {"run": {"seed": 1}, "data": {"source": "csv", "path": str(tmp_path / "d.csv"), "test_fraction": 0.3},
            "model": {"kind": "mlp", "layers": [{"units": 8}]}, "train": {"epochs": 2}}
    gengraph.run(spec, out=tmp_path / "r", progress=None)
    assert seen["labels"] == [3, 7, 9]


def test_a_test_fraction_that_leaves_no_test_row_is_refused():
    spec = {"data": {"source": "linear", "n": 50, "test_fraction": 0.005}, "model": {"kind": "mlp", "layers": []}}
    with pytest.raises(gengraph.SpecError, match=r"data.test_fraction = 0.005 of 50 examples is no test example"):
        gengraph.validate(spec)
    assert gengraph.validate({**spec, "data": {**spec["data"], "test_fraction": 0.0}})["data"]["test_fraction"] == 0
