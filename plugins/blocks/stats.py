"""Small statistics shared by the generative models' reports.

* ``mean_se(draws)``: the mean of k independent Monte Carlo estimates and its standard
  error std(draws, ddof=1) / sqrt(k) -- how every Monte Carlo figure in summary.json
  gets its ``NAME_se``.
* ``grid_index(x, levels)``: the index 0..levels-1 of data on `levels` equally spaced
  values from ``lo`` to ``hi`` (the digits: 17 grey levels 0/16..16/16 after
  ``scale = "minmax_global"``), with a check that the data really lie on that grid.
* ``histogram_nll`` / ``histogram_bpd``: the reference "independent per-pixel histogram"
  model, p(x) = prod_d p_d(x_d), each p_d a categorical over the levels fitted on the
  training split with add-one (Laplace) smoothing, p_d(k) = (n_dk + 1) / (n + levels).
  Every learned model of the same data should beat its test negative log-likelihood.
"""

from __future__ import annotations

import math

import numpy as np

LN2 = math.log(2.0)


def mean_se(draws) -> tuple[float, float]:
    """(mean, standard error of the mean) of independent draws; the SE is NaN for a single draw."""
    d = np.asarray(draws, np.float64).reshape(-1)
    if d.size == 0:
        raise ValueError("mean_se needs at least one draw")
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else float("nan")
    return float(d.mean()), se


def bits_per_dim(nats, dims: int) -> float:
    """Nats per example -> bits per dimension: nats / (D ln 2)."""
    return float(nats) / (dims * LN2)


def grid_index(x, levels: int, lo: float = 0.0, hi: float = 1.0, tol: float = 1e-6) -> np.ndarray:
    """Indices (int64) of x on `levels` equally spaced values lo..hi; ValueError when x is off the grid."""
    if levels < 2:
        raise ValueError(f"a grid needs levels >= 2, found {levels}")
    k = (np.asarray(x, np.float64) - lo) * (levels - 1) / (hi - lo)
    idx = np.round(k)
    off = float(np.abs(k - idx).max()) if k.size else 0.0
    if off > tol or (k.size and (idx.min() < 0 or idx.max() > levels - 1)):
        raise ValueError(f"the data are not on {levels} equally spaced values from {lo:g} to {hi:g} "
                         f"(largest distance {off * (hi - lo) / (levels - 1):.3g})")
    return idx.astype(np.int64)


def on_grid(x, levels: int, lo: float = 0.0, hi: float = 1.0) -> bool:
    try:
        grid_index(x, levels, lo, hi)
    except ValueError:
        return False
    return True


def histogram_fit(x_train, levels: int, lo: float = 0.0, hi: float = 1.0, alpha: float = 1.0) -> np.ndarray:
    """Per-dimension categorical probabilities (D, levels): (counts + alpha) / (n + alpha * levels)."""
    k = grid_index(np.reshape(x_train, (len(x_train), -1)), levels, lo, hi)  # images as rows
    n, D = k.shape
    counts = np.zeros((D, levels))
    np.add.at(counts, (np.broadcast_to(np.arange(D), k.shape), k), 1.0)
    return (counts + alpha) / (n + alpha * levels)


def histogram_nll(x_train, x_test, levels: int, lo: float = 0.0, hi: float = 1.0, alpha: float = 1.0) -> np.ndarray:
    """Per-example negative log-likelihood (nats) of x_test under the smoothed per-pixel histogram."""
    p = histogram_fit(x_train, levels, lo, hi, alpha)
    k = grid_index(np.reshape(x_test, (len(x_test), -1)), levels, lo, hi)
    return -np.log(p[np.arange(p.shape[0]), k]).sum(axis=1)


def histogram_bpd(x_train, x_test, levels: int, lo: float = 0.0, hi: float = 1.0, alpha: float = 1.0) -> float:
    """Mean test bits per dimension of the per-pixel histogram model (exact: no Monte Carlo)."""
    nll = histogram_nll(x_train, x_test, levels, lo, hi, alpha)
    return bits_per_dim(nll.mean(), int(np.prod(np.asarray(x_test).shape[1:])))  # dimensions per example


def baseline_histogram(data, levels: int, lo: float = 0.0, hi: float = 1.0) -> dict:
    """{"baseline_histogram_bpd": ...} for image data on the grid (else {}), for reports."""
    if data.image_shape is None or not data.n_test:
        return {}
    if not (on_grid(data.x_train, levels, lo, hi) and on_grid(data.x_test, levels, lo, hi)):
        return {}
    return {"baseline_histogram_bpd": histogram_bpd(data.x_train, data.x_test, levels, lo, hi)}


def in_data_units(out: dict, data, nll_keys=(), loglik_keys=()) -> dict:
    """The continuous-density figures of `out` in the data's units: a density of data scaled by
    data.scale is one of x' = (x - shift) / scale, so -log p(x) = -log p'(x') + x_log_jacobian
    (nats per example). `KEY_data` beside each (the per-epoch metrics stay in scaled units)."""
    jac = data.x_log_jacobian()
    if jac == 0.0:
        return {}
    res = {"x_log_jacobian": jac}
    res.update({f"{k}_data": out[k] + jac for k in nll_keys if k in out})
    res.update({f"{k}_data": out[k] - jac for k in loglik_keys if k in out})
    return res
