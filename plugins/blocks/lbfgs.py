"""L-BFGS (quasi-Newton) with a backtracking Armijo line search, for full-batch problems.

Works on the flattened parameter vector; loss and gradient come from one compiled
program, parameters are written into the graph's store in place.
"""

from __future__ import annotations

import numpy as np


def lbfgs(value_and_grad, x0: np.ndarray, *, max_iter=200, history=10, tol=1e-9, callback=None):
    """Minimise f from x0; `value_and_grad(x) -> (f, g)`. Returns (x, f, iterations)."""
    x = np.array(x0, dtype=np.float64)
    f, g = value_and_grad(x)
    s_hist, y_hist = [], []
    it = 0
    for it in range(1, max_iter + 1):
        if not np.isfinite(f):
            raise FloatingPointError("L-BFGS: the loss is not finite")
        if np.linalg.norm(g, np.inf) <= tol:
            break
        d = -_two_loop(g, s_hist, y_hist)
        slope = float(g @ d)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            s_hist.clear(), y_hist.clear()
            d, slope = -g, -float(g @ g)
        step, f_new, g_new = 1.0, None, None
        for _ in range(40):
            f_new, g_new = value_and_grad(x + step * d)
            if np.isfinite(f_new) and f_new <= f + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            break  # no decrease possible at working precision
        s, y = step * d, g_new - g
        x, f_old, f, g = x + s, f, f_new, g_new
        if float(s @ y) > 1e-12:
            s_hist.append(s), y_hist.append(y)
            if len(s_hist) > history:
                s_hist.pop(0), y_hist.pop(0)
        if callback is not None:
            callback(it, f)
        if abs(f_old - f) <= tol * max(1.0, abs(f)):
            break
    return x, f, it


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
