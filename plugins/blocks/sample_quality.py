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
* `label_entropy`: the entropy of a histogram of predicted labels (mode coverage).

The digit classifier whose features the Fréchet distance uses is a model:
`plugins/models/digit_quality.py`.
"""

from __future__ import annotations

import numpy as np

from gengraph.plugins.blocks import seeds

BANDWIDTH_FACTORS = (("hdiv5", 0.2), ("hdiv2", 0.5), ("h", 1.0), ("hx2", 2.0))
BOOTSTRAP = 50  # resamples for test_fd_se and label_entropy_se


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
    rng = seeds.rng(seed, "quality.permutation")
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


def two_sample_report(samples, test, train, seed=0, permutations=200, max_samples=1000, baseline=True) -> dict:
    """MMD^2 (unbiased) and permutation p-values at h * {1/5, 1/2, 1, 2}, h the median heuristic on
    the held-out rows, for the samples (test_mmd2_<bw>, test_mmd2_<bw>_pvalue) and for as many
    training rows as samples (baseline_mmd2_<bw>, baseline_mmd2_<bw>_pvalue), plus the energy
    distance of both (test_energy_distance, baseline_energy_distance). Same data units for all.
    baseline=False leaves the baseline out: it means "what a perfect sampler scores" only when
    `test` and `train` share no rows."""
    samples, test, train = (np.asarray(a, np.float64) for a in (samples, test, train))
    out = {}
    if not np.all(np.isfinite(samples)):
        return {"samples_finite": False}
    rng = seeds.rng(seed, "quality.baseline")
    n = min(len(samples), len(train), max_samples)
    s = samples[:n]
    base = train[rng.choice(len(train), size=n, replace=False)]
    h = median_bandwidth(test)
    bws = [h * f for _, f in BANDWIDTH_FACTORS]
    for prefix, x in (("test", s), ("baseline", base))[:2 if baseline else 1]:
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
    return float(-np.sum(p * np.log(p))) + 0.0  # + 0.0: one class gives 0, not -0 (printed "-0")


def two_sample_summary(samples, data, seed) -> dict:
    """two_sample_report of samples (model units) vs the held-out rows (train_* keys and no
    baseline when a run has none: training rows drawn from the reference itself score near
    p = 1, not as a perfect sampler would), with samples_finite; empty beyond that for wide
    data (> 16 features)."""
    ref = data.x_test if data.n_test else data.x_train
    out = {"samples_finite": bool(np.all(np.isfinite(samples)))}
    if out["samples_finite"] and len(ref) >= 4 and data.n_features <= 16:
        prefix = "test" if data.n_test else "train"
        stats = two_sample_report(data.unscale_x(samples), data.unscale_x(ref), data.unscale_x(data.x_train),
                                  seed=seed, baseline=bool(data.n_test))
        out.update({k.replace("test_", f"{prefix}_", 1) if k.startswith("test_") else k: v
                    for k, v in stats.items()})
    return out
