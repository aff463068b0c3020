"""Sample quality of digit images: a digit classifier that gengraph trains for the purpose,
the Fréchet distance in its feature space and the entropy of its predicted labels.

* `digit_classifier(data_spec, seed)`: a 64-128-32-10 ReLU network built by the `mlp`
  plugin and trained by Adam through the engine on the digits' training split (grey and
  binarized copies, pixel intensities in [0, 1]); deterministic per seed and cached per
  process. Its penultimate layer (32 units) is the feature space of the Fréchet distance,
  its argmax the predicted label;
* `digit_report(samples, data, spec, seed)`: test_fd (samples vs the held-out rows),
  baseline_fd (as many training rows as samples vs the held-out rows), label_entropy of the
  samples' predicted labels and baseline_label_entropy of the held-out rows' (max ln 10),
  with bootstrap standard errors.
"""

from __future__ import annotations

import numpy as np

from gengraph.engine import Graph, compile_graph, grad, make_optimizer, to_numpy
from gengraph.plugins.blocks import seeds
from gengraph.plugins.blocks.layers import init_rng
from gengraph.plugins.blocks.sample_quality import BOOTSTRAP, frechet_distance_of, label_entropy
from gengraph.plugins.datasets import Dataset, make_dataset
from gengraph.plugins.models.mlp import plugin as mlp_plugin
from gengraph.plugins.spec.schema import validate

# --- the digit classifier -------------------------------------------------------------------
CLASSIFIER_LAYERS = [{"units": 128, "activation": "relu"}, {"units": 32, "activation": "relu"}]
CLASSIFIER_EPOCHS = 60
_CLASSIFIERS: dict = {}


class DigitClassifier:
    """A trained mlp model; `features` (penultimate layer) and `predict` on intensities in [0, 1]."""

    def __init__(self, model, feature_node, test_accuracy):
        self.model, self.test_accuracy = model, test_accuracy
        self._prog = compile_graph(model.graph, {"f": feature_node, "z": model.prediction})

    def _run(self, x):
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        outs = [self._prog.run(x=x[i:i + 2048]) for i in range(0, len(x), 2048)]
        return (np.concatenate([np.asarray(to_numpy(o["f"]), np.float64) for o in outs]),
                np.concatenate([np.asarray(to_numpy(o["z"]), np.float64) for o in outs]))

    def features(self, x):
        return self._run(x)[0]

    def predict(self, x):
        return self._run(x)[1].argmax(1)


def _digits_split(data_spec: dict | None, seed: int):
    """(x_train, y_train, x_test, y_test) as intensities in [0, 1], the split of [data] at this seed."""
    spec = {"source": "digits", "test_fraction": 0.25}
    if data_spec:
        spec.update({k: data_spec[k] for k in ("test_fraction", "shuffle") if data_spec.get(k) is not None})
    spec.update({"scale": "none"})
    ds = make_dataset(spec, seed).flat()
    return ds.x_train / 16.0, ds.y_train, ds.x_test / 16.0, ds.y_test


def digit_classifier(data_spec: dict | None = None, seed: int = 0) -> DigitClassifier:
    """The classifier for runs on the digits with this split and seed (trained once per process):
    the `mlp` plugin's network, CLASSIFIER_EPOCHS epochs of Adam (lr 1e-3, batches of 128) on
    the engine's gradient of its cross-entropy, in float64."""
    frac = (data_spec or {}).get("test_fraction", 0.25)
    shuffle = (data_spec or {}).get("shuffle", True)
    key = (int(seed), frac, shuffle)
    if key in _CLASSIFIERS:
        return _CLASSIFIERS[key]
    xtr, ytr, xte, yte = _digits_split(data_spec, seed)
    # grey and binarized copies: the RBM's data and samples are binary
    x = np.concatenate([xtr, (xtr > 0.5).astype(np.float64)])
    y = np.concatenate([ytr, ytr])
    data = Dataset(x, y, xte, yte, "classification", n_classes=10, image_shape=(1, 8, 8))
    cfg = validate(mlp_plugin.schema, {"layers": [dict(lay) for lay in CLASSIFIER_LAYERS]})
    graph = Graph(dtype="float64", seed=int(seed))
    model = mlp_plugin.build(cfg, graph, data, init_rng(int(seed)))
    grads = grad(model.loss, model.params)
    updates = dict(make_optimizer("adam", lr=1e-3).updates(graph, model.params, grads))
    step = compile_graph(graph, {"loss": model.loss}, updates)
    order = seeds.rng(seed, "quality.classifier")
    for _ in range(CLASSIFIER_EPOCHS):
        idx = order.permutation(len(x))
        for i in range(0, len(x), 128):
            step.run(model.feed(x[idx[i:i + 128]], y[idx[i:i + 128]]))
    z = model.prediction  # add(matmul(h, W), b)
    feature = z.inputs[0].inputs[0]
    assert feature.shape[-1] == CLASSIFIER_LAYERS[-1]["units"], feature.shape
    clf = DigitClassifier(model, feature, 0.0)
    clf.test_accuracy = float(np.mean(clf.predict(xte) == yte))
    _CLASSIFIERS[key] = clf
    return clf


def digits_intensity(data, x, units="model"):
    """Rows of a digits run as pixel intensities in [0, 1]: binarized data stays 0/1; grey levels
    (data units 0..16) are divided by 16. `units`: "model" (as data.x_*) or "data" (unscaled)."""
    if units == "model":
        x = data.unscale_x(x)  # binarized data: unchanged, 0/1 are already intensities
    x = np.asarray(x, np.float64)
    return x if data.meta.get("binarize") is not None else x / 16.0


def is_digits(data, spec) -> bool:
    return bool(spec) and spec.get("data", {}).get("source") == "digits" and data.n_features == 64 \
        and data.n_test > 0


def digit_report(samples, data, spec, seed) -> dict:
    """test_fd, baseline_fd, label_entropy, baseline_label_entropy (and the classifier's accuracy).

    `samples` are in data units (as samples.npy: grey levels 0..16, or 0/1 for binarized
    data); the held-out rows are the test split; the baseline uses as many training rows
    as there are samples, against the same held-out rows."""
    clf = digit_classifier(spec.get("data"), seed)
    s = digits_intensity(data, samples, units="data")
    test = digits_intensity(data, data.x_test)
    train = digits_intensity(data, data.x_train)
    rng = seeds.rng(seed, "quality.baseline")
    n = min(len(s), len(train))
    base = train[rng.choice(len(train), size=n, replace=False)]
    f_test, f_s = clf.features(test), clf.features(s[:n])
    pred = clf.predict(s)
    # bootstrap standard errors (rows of the samples and of the held-out set resampled)
    boot = seeds.rng(seed, "quality.baseline", 1)
    fds, ents = [], []
    for _ in range(BOOTSTRAP):
        i, j = boot.integers(0, n, n), boot.integers(0, len(f_test), len(f_test))
        fds.append(frechet_distance_of(f_s[i], f_test[j]))
        ents.append(label_entropy(pred[boot.integers(0, len(pred), len(pred))]))
    return {
        "test_fd": frechet_distance_of(f_s, f_test),
        "test_fd_se": float(np.std(fds, ddof=1)),
        "baseline_fd": frechet_distance_of(clf.features(base), f_test),
        "label_entropy": label_entropy(pred),
        "label_entropy_se": float(np.std(ents, ddof=1)),
        "baseline_label_entropy": label_entropy(clf.predict(test)),
        "sample_label_counts": np.bincount(pred, minlength=10).tolist(),
        "fd_sample_size": int(n),
        "classifier_test_accuracy": clf.test_accuracy,
    }


def quality_sample_count(data, spec, n_out: int) -> int:
    """How many samples a report should draw: output.samples, at least the held-out rows for digits."""
    return max(n_out, data.n_test) if n_out and is_digits(data, spec) else n_out
