"""L-BFGS (quasi-Newton) with a strong-Wolfe line search, for full-batch problems.

Works on the flattened parameter vector; loss and gradient come from one compiled
program, parameters are written into the graph's store in place. Nocedal & Wright,
"Numerical Optimization" (2nd ed.): the two-loop recursion (Alg. 7.4), the line search
with its zoom phase (Alg. 3.5 / 3.6) and cubic interpolation (eq. 3.59). The Wolfe
curvature condition is what keeps every stored pair's s.y positive: with sufficient
decrease alone the history filled with pairs of negative curvature, which were dropped,
and the iteration crawled (Rosenbrock from (-1.2, 1): f = 2.4 after 500 iterations).
"""

from __future__ import annotations

import numpy as np

C1, C2 = 1e-4, 0.9  # sufficient decrease and curvature constants of the Wolfe conditions
MAX_EVALS = 25  # loss evaluations per line search (PyTorch's max_ls)


def lbfgs(value_and_grad, x0: np.ndarray, *, max_iter=200, history=10, tol=1e-9, callback=None):
    """Minimise f from x0; `value_and_grad(x) -> (f, g)`. Returns (x, f, steps taken).

    Stops when the gradient's max-norm is at most `tol`, when a step lowers f by at most
    tol * max(|f|, 1) (relative change), when no step along the search direction lowers f
    (also not along steepest descent), or after `max_iter` steps. A non-finite loss or
    gradient at an accepted point raises FloatingPointError."""
    x = np.array(x0, dtype=np.float64)
    f, g = _finite(value_and_grad, x)
    s_hist, y_hist = [], []
    steps = 0
    while steps < max_iter and np.linalg.norm(g, np.inf) > tol:
        d = -_two_loop(g, s_hist, y_hist)
        slope = float(g @ d)
        if not slope < 0:  # not a descent direction (rounding): steepest descent
            s_hist.clear(), y_hist.clear()
            d, slope = -g, -float(g @ g)
        # without curvature pairs the direction has the gradient's scale: a first trial step of
        # 1 / |g|_1 keeps it within reach when |g| is huge (f = 1e14 |x|^2 halved in vain before)
        t0 = 1.0 if s_hist else min(1.0, 1.0 / float(np.abs(g).sum()))
        t, f_new, g_new = _line_search(value_and_grad, x, f, d, slope, t0)
        if t is None:  # no lower point along d
            if not s_hist:
                break
            s_hist.clear(), y_hist.clear()  # a stale history: try steepest descent once
            continue
        s, y = t * d, g_new - g
        x, f_old, f, g = x + s, f, f_new, g_new
        steps += 1
        sy, yy = float(s @ y), float(y @ y)
        if sy > np.finfo(np.float64).eps * yy:  # positive curvature (relative test, as L-BFGS-B's)
            s_hist.append(s), y_hist.append(y)
            if len(s_hist) > history:
                s_hist.pop(0), y_hist.pop(0)
        if callback is not None:
            callback(steps, f)
        if f_old - f <= tol * max(abs(f_old), abs(f), 1.0):
            break
    return x, f, steps


def _finite(value_and_grad, x):
    """f and g at the start, where there is no shorter step to fall back on."""
    f, g = value_and_grad(x)
    if not np.isfinite(f):
        raise FloatingPointError("L-BFGS: the loss is not finite")
    _check_gradient(g)
    return f, g


def _check_gradient(g):
    if not np.all(np.isfinite(g)):
        raise FloatingPointError("L-BFGS: the gradient is not finite where the loss is")


def _line_search(fg, x, f0, d, slope0, t):
    """A step t along d meeting the strong Wolfe conditions: (t, f, g) there; the lowest point
    found that lowers f enough when the evaluations run out; (None, ...) when none does."""
    prev = (0.0, f0, None, slope0)  # (t, f, g, slope) of the last trial; t = 0 is the start
    for i in range(MAX_EVALS):
        cur = _trial(fg, x, t, d)
        f_t, g_t = cur[1], cur[2]
        if not np.isfinite(f_t) or f_t > f0 + C1 * t * slope0 or (i and f_t >= prev[1]):
            return _zoom(fg, x, f0, d, slope0, prev, cur)
        if abs(cur[3]) <= -C2 * slope0:
            return t, f_t, g_t
        if cur[3] >= 0:
            return _zoom(fg, x, f0, d, slope0, cur, prev)
        # still descending: extrapolate, at least a little and at most 10x further
        t_next = _cubic_min(prev, cur)
        lo, hi = t + 0.01 * (t - prev[0]), 10.0 * t
        prev, t = cur, min(max(t_next, lo), hi) if np.isfinite(t_next) else hi
    return (prev[0], prev[1], prev[2]) if prev[0] > 0 else (None, None, None)


def _zoom(fg, x, f0, d, slope0, lo, hi):
    """Narrow [lo, hi] (lo: the end that meets sufficient decrease with the lower f) to a strong
    Wolfe step (N&W Alg. 3.6), trial points by safeguarded cubic interpolation."""
    for _ in range(MAX_EVALS):
        a, b = sorted((lo[0], hi[0]))
        if (b - a) * float(np.abs(d).max()) <= 1e-15 * max(1.0, float(np.abs(x).max())):
            break  # the bracket is below the working precision of x
        t = _cubic_min(lo, hi) if np.isfinite(hi[1]) and np.isfinite(hi[3]) else np.nan
        width = b - a
        if not (np.isfinite(t) and a + 0.1 * width <= t <= b - 0.1 * width):
            t = 0.5 * (a + b)  # bisect when the cubic lands outside the safe middle
        cur = _trial(fg, x, t, d)
        f_t, g_t = cur[1], cur[2]
        if not np.isfinite(f_t) or f_t > f0 + C1 * t * slope0 or f_t >= lo[1]:
            hi = cur
            continue
        if abs(cur[3]) <= -C2 * slope0:
            return t, f_t, g_t
        if cur[3] * (hi[0] - lo[0]) >= 0:
            hi = lo
        lo = cur
    return (lo[0], lo[1], lo[2]) if lo[0] > 0 else (None, None, None)


def _trial(fg, x, t, d):
    """(t, f, g, slope) at x + t d. A non-finite loss is a point too far (the search shrinks);
    a non-finite gradient where the loss is finite is the model's fault, not the step's."""
    f, g = fg(x + t * d)
    if not np.isfinite(f):
        return t, np.inf, g, np.nan
    _check_gradient(g)
    return t, f, g, float(g @ d)


def _cubic_min(p, q):
    """Minimiser of the cubic through two points (t, f, _, slope) (N&W eq. 3.59); NaN if none."""
    (t1, f1, _, s1), (t2, f2, _, s2) = p, q
    if t1 == t2:
        return np.nan
    d1 = s1 + s2 - 3.0 * (f1 - f2) / (t1 - t2)
    disc = d1 * d1 - s1 * s2
    if not (np.isfinite(disc) and disc >= 0):
        return np.nan
    d2 = np.copysign(np.sqrt(disc), t2 - t1)
    den = s2 - s1 + 2.0 * d2
    return t2 - (t2 - t1) * (s2 + d2 - d1) / den if den != 0 else np.nan


def _two_loop(g, s_hist, y_hist):
    q = g.copy()
    alphas = []
    for s, y in zip(reversed(s_hist), reversed(y_hist)):
        a = (s @ q) / (y @ s)
        alphas.append(a)
        q -= a * y
    if s_hist:
        q *= (s_hist[-1] @ y_hist[-1]) / (y_hist[-1] @ y_hist[-1])
    for (s, y), a in zip(zip(s_hist, y_hist), reversed(alphas)):
        b = (y @ q) / (y @ s)
        q += (a - b) * s
    return q
