"""NumPy solvers and design matrices behind ``kind = "regression"`` (no scikit-learn).

Objectives, with n the number of training rows and theta ALL coefficients (the bias
column's included -- the lecture's convention; centre the data or set
``include_bias = false`` to leave an intercept out of the penalty):

=====  ====================================================  =================================
OLS    (1/n) ||y - X theta||^2                                ``numpy.linalg.lstsq`` (SVD)
Ridge  (1/n) ||y - X theta||^2 + lam ||theta||_2^2            SVD: theta = V diag(s / (s^2 + n lam)) U^T y
Lasso  (1/n) ||y - X theta||^2 + lam ||theta||_1              cyclic coordinate descent
=====  ====================================================  =================================

Conversions to scikit-learn (``fit_intercept=False`` on the same design matrix):
Ridge(alpha = n * lam) minimises ||y - Xw||^2 + alpha ||w||^2, the Ridge objective above
times n; Lasso(alpha = lam / 2) minimises (1/(2n)) ||y - Xw||^2 + alpha ||w||_1, the Lasso
objective above divided by 2. Same minimisers.

The design matrix holds every monomial of total degree <= ``degree`` in the input
features, in scikit-learn's ``PolynomialFeatures`` order: by total degree, then
lexicographically by feature index (``itertools.combinations_with_replacement``). For two
features and degree 2: ``1, x0, x1, x0^2, x0 x1, x1^2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations_with_replacement

import numpy as np


# ---- design matrix -----------------------------------------------------------------------
def monomials(n_features: int, degree: int, include_bias: bool = True) -> list[tuple[int, ...]]:
    """Feature-index tuples of the design's columns: () is the bias, (0, 0, 1) is x0^2 x1."""
    out = []
    for d in range(0 if include_bias else 1, degree + 1):
        out.extend(combinations_with_replacement(range(n_features), d))
    return out


def n_columns(n_features: int, degree: int, include_bias: bool = True) -> int:
    """len(monomials(...)) without listing them: C(n_features + degree, degree) monomials of
    degree <= `degree`, less the bias."""
    return math.comb(n_features + degree, degree) - (0 if include_bias else 1)


def term_name(mono: tuple[int, ...]) -> str:
    """'1', 'x0', 'x0^2 x1', ... (the column's monomial, readable)."""
    if not mono:
        return "1"
    parts = []
    for j in sorted(set(mono)):
        k = mono.count(j)
        parts.append(f"x{j}" if k == 1 else f"x{j}^{k}")
    return " ".join(parts)


def design_matrix(x: np.ndarray, degree: int, include_bias: bool = True) -> np.ndarray:
    """The (n, p) polynomial design matrix of x (n, features), float64, column order as above."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    cols, cache = [], {(): np.ones(len(x))}
    for mono in monomials(x.shape[1], degree, include_bias):
        if mono not in cache:
            cache[mono] = cache[mono[:-1]] * x[:, mono[-1]]
        cols.append(cache[mono])
    return np.stack(cols, axis=1) if cols else np.zeros((len(x), 0))


# ---- closed forms --------------------------------------------------------------------------
def ols(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """argmin (1/n)||y - X theta||^2: least squares by SVD (minimum-norm if X is rank deficient)."""
    theta, *_ = np.linalg.lstsq(np.asarray(X, np.float64), np.asarray(y, np.float64), rcond=None)
    return theta


def ridge(X: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """argmin (1/n)||y - X theta||^2 + lam ||theta||^2 = V diag(s / (s^2 + n lam)) U^T y.

    The normal equations are (X^T X + n lam I) theta = X^T y; with X = U diag(s) V^T they
    are solved without forming X^T X or any inverse. Directions whose singular value is zero
    at working precision (s <= eps max(n, p) s_max, `ols`'s lstsq rule) get coefficient 0: at
    lam = 0 this is the minimum-norm least-squares solution, `ols`'s. (The cutoff was once on
    s^2 + n lam against eps max(n, p) s_max^2, which dropped directions lstsq keeps: ridge at
    lam = 0 was not OLS on an ill-conditioned design.)
    """
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    n = X.shape[0]
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    keep = s > np.finfo(np.float64).eps * max(X.shape) * (s[0] if s.size else 0.0)
    shrink = np.divide(s, s * s + n * lam, out=np.zeros_like(s), where=keep)
    return Vt.T @ (shrink * (U.T @ y))


# ---- lasso ---------------------------------------------------------------------------------
@dataclass
class LassoResult:
    theta: np.ndarray
    sweeps: int  # full passes of coordinate descent over all coefficients
    converged: bool  # the last sweep changed no coefficient by more than tol
    max_change: float  # largest coefficient change in the last sweep
    polished: int  # how many active-set steps were taken (see lasso_cd)


def soft_threshold(rho: float, t: float) -> float:
    """sign(rho) max(|rho| - t, 0): the proximal map of t|.|."""
    if rho > t:
        return rho - t
    if rho < -t:
        return rho + t
    return 0.0


def lasso_cd(X: np.ndarray, y: np.ndarray, lam: float, *, tol: float = 1e-12, max_iter: int = 100_000,
             active_set: bool = True, check_every: int = 10, theta0=None) -> LassoResult:
    """argmin (1/n)||y - X theta||^2 + lam ||theta||_1 by cyclic coordinate descent.

    Coordinate j, with the partial residual r_j = y - X theta + X_j theta_j, minimises
    (1/n)||r_j - X_j t||^2 + lam |t|, solved by soft-thresholding:
    theta_j = S(X_j^T r_j, n lam / 2) / ||X_j||^2. The residual r = y - X theta is kept
    and updated with one vector operation per changed coefficient. Stops when a whole
    sweep changes no coefficient by more than tol * max(1, max|theta|), or after
    max_iter sweeps.

    ``active_set`` (an accelerator; the answer is the same): every ``check_every``
    sweeps, take the current support A and signs s of theta and the minimiser of the
    objective restricted to them, theta_A* = (X_A^T X_A)^{-1} (X_A^T y - (n lam / 2) s).
    If its signs are s, jump there; otherwise move from theta towards it only until the
    first coefficient reaches 0 and drop that coefficient (the objective decreases along
    the way), then try again with the smaller support. A step is kept only if it lowers
    the objective; coordinate descent then goes on from the new point, so the stopping
    rule and the result are those of coordinate descent. On ill-conditioned designs
    (monomials of data in [0, 1]) plain coordinate descent can need 10^5+ sweeps to find
    the support; with the step it typically needs a few hundred.
    """
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64)
    n, p = X.shape
    t = n * lam / 2.0
    cols = [np.ascontiguousarray(X[:, j]) for j in range(p)]
    z = [float(c @ c) for c in cols]
    theta = np.zeros(p) if theta0 is None else np.array(theta0, np.float64)
    r = y - X @ theta
    gram = cxy = None
    polished = 0
    sweeps, dmax = 0, np.inf
    for sweeps in range(1, max_iter + 1):
        dmax = 0.0
        for j in range(p):
            zj = z[j]
            if zj == 0.0:  # an all-zero column: its coefficient does not matter; keep it 0
                continue
            old = theta[j]
            new = soft_threshold(float(cols[j] @ r) + zj * old, t) / zj
            delta = new - old
            if delta != 0.0:
                r -= delta * cols[j]
                theta[j] = new
                dmax = max(dmax, abs(delta))
        if dmax <= tol * max(1.0, float(np.max(np.abs(theta), initial=0.0))):
            return LassoResult(theta, sweeps, True, dmax, polished)
        if active_set and sweeps % check_every == 0:
            if gram is None:
                gram, cxy = X.T @ X, X.T @ y
            cand = _active_set_step(gram, cxy, float(y @ y), theta, t)
            if cand is not None:
                theta = cand
                r = y - X @ theta
                polished += 1
    return LassoResult(theta, sweeps, False, dmax, polished)


def _gram_objective(gram, cxy, yy, theta, t) -> float:
    """n times the Lasso objective, ||y - X theta||^2 + n lam ||theta||_1, from X^T X, X^T y, y^T y."""
    return yy - 2.0 * float(cxy @ theta) + float(theta @ gram @ theta) + 2.0 * t * float(np.abs(theta).sum())


def _active_set_step(gram, cxy, yy, theta, t):
    """A point with lower objective from the support-restricted minimiser, or None (see lasso_cd)."""
    f0 = _gram_objective(gram, cxy, yy, theta, t)
    cur = theta.copy()
    for _ in range(theta.size):
        active = np.flatnonzero(cur)
        if active.size == 0:
            break
        s = np.sign(cur[active])
        sol, *_ = np.linalg.lstsq(gram[np.ix_(active, active)], cxy[active] - t * s, rcond=None)
        crossing = np.sign(sol) != s
        if not np.any(crossing):
            cur[active] = sol
            break
        # walk from cur towards sol; stop where the first coefficient reaches zero
        old = cur[active]
        frac = np.full(active.size, np.inf)
        frac[crossing] = old[crossing] / (old[crossing] - sol[crossing])
        k = int(np.argmin(frac))
        cur[active] = old + frac[k] * (sol - old)
        cur[active[k]] = 0.0
    if _gram_objective(gram, cxy, yy, cur, t) < f0:
        return cur
    return None


def lasso_kkt_violation(X, y, theta, lam) -> float:
    """How far theta is from optimal for the Lasso objective, in units of lam's scale.

    With g = (2/n) X^T (y - X theta), theta is optimal iff g_j = lam sign(theta_j) where
    theta_j != 0 and |g_j| <= lam where theta_j = 0. Returns the largest violation.
    """
    X, y, theta = np.asarray(X, np.float64), np.asarray(y, np.float64), np.asarray(theta, np.float64)
    n = X.shape[0]
    g = 2.0 / n * (X.T @ (y - X @ theta))
    nz = theta != 0
    viol = np.where(nz, np.abs(g - lam * np.sign(theta)), np.maximum(np.abs(g) - lam, 0.0))
    return float(np.max(viol, initial=0.0))

