"""Sample quality that gengraph computes itself: two-sample tests for 2-D data, a Fréchet
distance and mode coverage for digit images.

* `mmd2_unbiased`, `mmd_permutation_test`: the unbiased MMD^2 with a Gaussian kernel and
  its permutation p-value (the samples and the held-out rows pooled and relabelled at
  random, `permutations` times, seeded), one kernel matrix per bandwidth;
* `two_sample_report(samples, test, train, seed)`: what the 2-D generative reports
  (ebm, diffusion, rbm) write to summary.json: MMD^2 and its p-value at the median
  heuristic h (on the held-out rows) times 1/5, 1/2, 1 and 2, for the samples and for a
  baseline (training rows, as many as the samples, in their place: what a perfect
  sampler scores), and the energy distance of both;
* `frechet_distance(mu1, cov1, mu2, cov2)`: ||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2)
  by symmetric eigendecompositions (no scipy);
* `digit_classifier(data_spec, seed)`: a 64-128-32-10 ReLU network trained through the
  `mlp` plugin and the engine on the digits' training split (grey and binarized copies,
  pixel intensities in [0, 1]); deterministic per seed and cached per process. Its
  penultimate layer (32 units) is the feature space of the Fréchet distance, its argmax
  the predicted label;
* `digit_report(samples, data, seed)`: test_fd (samples vs the held-out rows),
  baseline_fd (as many training rows as samples vs the held-out rows), label_entropy of the
  samples' predicted labels and baseline_label_entropy of the held-out rows' (max ln 10).
"""

from __future__ import annotations

import math

import numpy as np

BANDWIDTH_FACTORS = (("hdiv5", 0.2), ("hdiv2", 0.5), ("h", 1.0), ("hx2", 2.0))
PERMUTATION_SEED = 0x9E73
BASELINE_SEED = 0xBA5E
BOOTSTRAP = 50  # resamples for test_fd_se and label_entropy_se
QUALITY_TAG = 0x0FD  # seeds the extra samples a digits report draws for test_fd (beyond output.samples)


# --- kernel two-sample statistics -------------------------------------------------------
def _sq_dists(a, b):
    d = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def median_bandwidth(x) -> float:
    """The median heuristic: the median pairwise distance between distinct rows of x."""
    x = np.asarray(x, np.float64)
    d = np.sqrt(_sq_dists(x, x))[np.triu_indices(len(x), 1)]
    med = float(np.median(d)) if d.size else 1.0
    return med if med > 0 else 1.0


def mmd2_unbiased(x, y, bandwidth) -> float:
    """Unbiased MMD^2 with the Gaussian kernel k(a, b) = exp(-|a - b|^2 / (2 h^2))."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    k = lambda a, b: np.exp(-_sq_dists(a, b) / (2.0 * bandwidth ** 2))  # noqa: E731
    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def _mmd2_from_pooled(K, S, m, n):
    """Unbiased MMD^2 for each column of S (N x P indicators of the first sample) over kernel K (N x N)."""
    KS = K @ S
    r = K.sum(1)
    d = np.diag(K)
    sxx = np.einsum("ip,ip->p", S, KS) - S.T @ d
    s_r = S.T @ r
    total, trace = r.sum(), d.sum()
    syy = total - 2.0 * s_r + np.einsum("ip,ip->p", S, KS) - (trace - S.T @ d)
    sxy = s_r - np.einsum("ip,ip->p", S, KS)
    return sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2.0 * sxy / (m * n)


def mmd_permutation_test(x, y, bandwidths, permutations=200, seed=0) -> list[tuple[float, float]]:
    """(unbiased MMD^2, permutation p-value) of x vs y at each bandwidth.

    The p-value is (1 + #{permuted statistics >= observed}) / (1 + permutations): the rows
    of x and y pooled and split at random into sets of their sizes, the same permutations
    for every bandwidth. Under x ~ y it is (super-)uniform."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n = len(x), len(y)
    pooled = np.concatenate([x, y])
    N = m + n
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), PERMUTATION_SEED]))
    S = np.zeros((N, permutations + 1))
    S[:m, 0] = 1.0
    for p in range(permutations):
        S[rng.permutation(N)[:m], p + 1] = 1.0
    D = _sq_dists(pooled, pooled)
    out = []
    for h in bandwidths:
        stats = _mmd2_from_pooled(np.exp(-D / (2.0 * h ** 2)), S, m, n)
        p = (1.0 + np.sum(stats[1:] >= stats[0] - 1e-12 * abs(stats[0]))) / (1.0 + permutations)
        out.append((float(stats[0]), float(p)))
    return out


def energy_distance_unbiased(x, y) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| (U-statistics within each set)."""
    m, n = len(x), len(y)
    dxy = np.sqrt(_sq_dists(x, y)).mean()
    dxx = np.sqrt(_sq_dists(x, x)).sum() / (m * (m - 1))
    dyy = np.sqrt(_sq_dists(y, y)).sum() / (n * (n - 1))
    return float(2.0 * dxy - dxx - dyy)


def two_sample_report(samples, test, train, seed=0, permutations=200, max_samples=1000) -> dict:
    """MMD^2 (unbiased) and permutation p-values at h * {1/5, 1/2, 1, 2}, h the median heuristic on
    the held-out rows, for the samples (test_mmd2_<bw>, test_mmd2_<bw>_pvalue) and for as many
    training rows as samples (baseline_mmd2_<bw>, baseline_mmd2_<bw>_pvalue), plus the energy
    distance of both (test_energy_distance, baseline_energy_distance). Same data units for all."""
    samples, test, train = (np.asarray(a, np.float64) for a in (samples, test, train))
    out = {}
    if not np.all(np.isfinite(samples)):
        return {"samples_finite": False}
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), BASELINE_SEED]))
    n = min(len(samples), len(train), max_samples)
    s = samples[:n]
    base = train[rng.choice(len(train), size=n, replace=False)]
    h = median_bandwidth(test)
    bws = [h * f for _, f in BANDWIDTH_FACTORS]
    for prefix, x in (("test", s), ("baseline", base)):
        for (name, _), (stat, p) in zip(BANDWIDTH_FACTORS, mmd_permutation_test(x, test, bws, permutations, seed)):
            out[f"{prefix}_mmd2_{name}"] = stat
            out[f"{prefix}_mmd2_{name}_pvalue"] = p
        out[f"{prefix}_energy_distance"] = energy_distance_unbiased(x, test)
    out.update({"mmd_bandwidth": h, "mmd_sample_size": int(n), "mmd_test_size": int(len(test)),
                "mmd_permutations": int(permutations)})
    return out


# --- Fréchet distance --------------------------------------------------------------------
def _sqrt_psd(c):
    w, v = np.linalg.eigh((c + c.T) / 2.0)
    return (v * np.sqrt(np.maximum(w, 0.0))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Squared 2-Wasserstein distance between N(mu1, cov1) and N(mu2, cov2)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    s1 = _sqrt_psd(cov1)
    m = s1 @ cov2 @ s1
    tr_sqrt = float(np.sum(np.sqrt(np.maximum(np.linalg.eigvalsh((m + m.T) / 2.0), 0.0))))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_sqrt)


def frechet_distance_of(a, b) -> float:
    """Fréchet distance between Gaussians fitted to the rows of a and of b."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def label_entropy(labels, n_classes=10) -> float:
    """Entropy (nats) of the histogram of predicted labels; ln n_classes when every class is equally common."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=n_classes).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log(p)))


# --- the digit classifier -------------------------------------------------------------------
CLASSIFIER_LAYERS = [{"units": 128, "activation": "relu"}, {"units": 32, "activation": "relu"}]
CLASSIFIER_EPOCHS = 60
_CLASSIFIERS: dict = {}


class DigitClassifier:
    """A trained mlp model; `features` (penultimate layer) and `predict` on intensities in [0, 1]."""

    def __init__(self, model, feature_node, test_accuracy):
        from gengraph.engine import compile

        self.model, self.test_accuracy = model, test_accuracy
        self._prog = compile(model.graph, {"f": feature_node, "z": model.extras["output"]})

    def _run(self, x):
        from gengraph.engine import to_numpy

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
    from gengraph.plugins.datasets import make_dataset

    spec = {"source": "digits", "test_fraction": 0.25}
    if data_spec:
        spec.update({k: data_spec[k] for k in ("test_fraction", "shuffle") if data_spec.get(k) is not None})
    spec.update({"scale": "none"})
    ds = make_dataset(spec, seed)
    return ds.x_train / 16.0, ds.y_train, ds.x_test / 16.0, ds.y_test


def digit_classifier(data_spec: dict | None = None, seed: int = 0) -> DigitClassifier:
    """The classifier for runs on the digits with this split and seed (trained once per process)."""
    from gengraph.engine import Graph
    from gengraph.plugins.datasets import Dataset
    from gengraph.plugins.blocks.layers import init_rng
    from gengraph.plugins.model import MODELS
    from gengraph.plugins.run.loading import default_spec, load
    from gengraph.plugins.run.runner import RunContext
    from gengraph.plugins.run.trainer import Trainer

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
    spec = load(default_spec(), [f"run.seed={int(seed)}", "run.dtype=\"float64\"",
                                 f"train.epochs={CLASSIFIER_EPOCHS}", "output.plots=false"])
    cfg = spec.data
    cfg["model"]["layers"] = [dict(lay, init="auto", bias=True, type="dense") for lay in CLASSIFIER_LAYERS]
    plugin = MODELS.get("mlp")
    graph = Graph(dtype="float64", seed=int(seed))
    model = plugin.build(cfg["model"], graph, data, init_rng(int(seed)))
    ctx = RunContext(cfg, None, int(seed), plots=False, log=lambda *a, **k: None)
    Trainer(plugin, model, data, cfg["train"], ctx).fit()
    z = model.extras["output"]  # add(matmul(h, W), b)
    feature = z.inputs[0].inputs[0]
    assert feature.shape[-1] == CLASSIFIER_LAYERS[-1]["units"], feature.shape
    clf = DigitClassifier(model, feature, 0.0)
    clf.test_accuracy = float(np.mean(clf.predict(xte) == yte))
    _CLASSIFIERS[key] = clf
    return clf


def digits_intensity(data, x, units="model"):
    """Rows of a digits run as pixel intensities in [0, 1]: binarized data stays 0/1; grey levels
    (data units 0..16) are divided by 16. `units`: "model" (as data.x_*) or "data" (unscaled)."""
    x = np.asarray(x, np.float64)
    if data.meta.get("binarize") is not None:
        return x
    if units == "model":
        x = np.asarray(data.unscale_x(x), np.float64)
    return x / 16.0


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
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), BASELINE_SEED]))
    n = min(len(s), len(train))
    base = train[rng.choice(len(train), size=n, replace=False)]
    f_test, f_s = clf.features(test), clf.features(s[:n])
    pred = clf.predict(s)
    # bootstrap standard errors (rows of the samples and of the held-out set resampled)
    boot = np.random.default_rng(np.random.SeedSequence([int(seed), BASELINE_SEED, 1]))
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
