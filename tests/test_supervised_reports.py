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


def test_conditional_accuracy_reads_labels_as_the_data_s_classes():
    # with data.classes = [7, 3], label 0 is a 7: cond_accuracy compared the classifier's digit with
    # the label index and reported 0.0 for samples read as 7s and 3s
    from gengraph.plugins.datasets import make_dataset
    from gengraph.plugins.models.class_condition import cond_accuracy

    spec = {"data": {"source": "digits", "classes": [7, 3], "scale": "minmax_global"}}
    data = make_dataset(spec["data"], 0).flat()
    test = data.unscale_x(data.x_test)  # real test digits stand for perfect samples, in data units
    per = min(int(np.sum(data.y_test == 0)), int(np.sum(data.y_test == 1)))
    samples = np.concatenate([test[data.y_test == 0][:per], test[data.y_test == 1][:per]])
    labels = np.repeat([0, 1], per)
    out = cond_accuracy(samples, labels, 2, data, spec, 0)
    assert out["cond_accuracy"] > 0.9 and min(out["cond_accuracy_by_label"]) > 0.85, out


def test_the_smallest_test_fraction_suggested_is_accepted():
    import re

    for n in (2, 7, 14, 50, 1000):
        spec = {"data": {"source": "linear", "n": n, "test_fraction": 1e-4}, "model": {"kind": "mlp", "layers": []}}
        with pytest.raises(gengraph.SpecError) as info:
            gengraph.validate(spec)
        least = float(re.search(r"at least ([0-9.e-]+)", str(info.value)).group(1))
        gengraph.validate({**spec, "data": {**spec["data"], "test_fraction": least}})  # was refused again
