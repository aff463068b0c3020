"""The DDPM of the `diffusion` plugin (epsilon prediction, simple loss, scalar time input) by hand.

Denoiser f([x_t, t/T]) = 3 dense layers of 128 (silu, or relu) + a linear layer of 2.
Training (as the plugin's graph): t = min(floor(u T), T - 1) + 1 in 1..T,
x_t = sqrt_abar[t] x0 + sqrt_1m_abar[t] eps, loss = mse = mean_b(sum_d (eps - f)^2) / D, and
the logged metric nll_bound_mc = mean_b(prior + T (const[t] + w[t] sum_d (eps - f)^2)).
Sampling (plugins.diffusion.sample): x <- a x0_hat + b eps_hat + sigma z over the sampler's
steps, x0_hat = (x_t - sqrt_1m_abar[t] f) / sqrt_abar[t], eps_hat = f.
The uniform u, the normals eps and z are passed in (drawn from the streams gengraph uses);
the tables (sqrt_abar, sqrt_1m_abar, w, const, abar_T, ...) are the plugin's.
Parameters in gengraph's order: [W1, b1, W2, b2, W3, b3, W4, b4].
"""

from __future__ import annotations

import numpy as np

from .numpy_adam import Adam, FlatAdam
from .numpy_mlp import _grad_norm


def _sigmoid(a):
    """0.5 + 0.5 tanh(a / 2), in one new array (the idioms gengraph's kernels use: few temporaries)."""
    s = np.multiply(a, 0.5)
    np.tanh(s, out=s)
    s *= 0.5
    s += 0.5
    return s


class NumpyDDPM:
    def __init__(self, params, info, adam=None, grad_norm=True, flat=True):
        self.params = [np.array(p) for p in params]
        self.opt = (FlatAdam if flat else Adam)(self.params, **(adam or {}))
        self.out = getattr(self.opt, "grad_views", None) or [None] * len(self.params)
        self.grad_norm = grad_norm
        dt = self.params[0].dtype
        self.T, self.act = info["T"], info["activation"]
        self.tab = {k: np.asarray(v, dt) for k, v in info["tables"].items()}
        self.steps = info["steps"]

    def _act(self, a):
        if self.act == "relu":
            return np.maximum(a, self._zeros(a)), None  # against a zero array: the fast loop
        s = _sigmoid(a)
        return a * s, s

    def _dact(self, d, a, s):
        if self.act == "relu":
            np.multiply(d, a > 0, out=d)
        else:  # silu' = s (1 + a (1 - s)), in one temporary
            t = np.subtract(1.0, s)
            t *= a
            t += 1.0
            t *= s
            d *= t
        return d

    def _zeros(self, a):
        """A zero array like a, made once per shape (as gengraph's programs keep theirs)."""
        return self._constant(np.zeros, a.shape, a.dtype)

    def _constant(self, make, shape, dtype):
        cache = self.__dict__.setdefault("_constants", {})
        key = (make.__name__, shape, np.dtype(dtype).str)
        if key not in cache:
            cache[key] = make(shape, dtype)
        return cache[key]

    def net(self, h):
        Ws = self.params
        for i in range(0, 6, 2):
            h = self._act(h @ Ws[i] + Ws[i + 1])[0]
        return h @ Ws[6] + Ws[7]

    def t_of(self, u):
        dt = u.dtype.type
        return (np.minimum(np.floor(u * dt(self.T)), dt(self.T - 1)) + dt(1)).astype(np.int64)

    def loss_and_grads(self, x0, t, eps):
        P, tab = self.params, self.tab
        dt = x0.dtype.type
        B, D = x0.shape
        xt = tab["sqrt_abar"][t][:, None] * x0 + tab["sqrt_1m_abar"][t][:, None] * eps
        h = np.concatenate([xt, t.astype(x0.dtype)[:, None] * dt(1.0 / self.T)], axis=1)
        cache = []
        for i in range(0, 6, 2):
            a = h @ P[i]
            a += P[i + 1]
            hn, s = self._act(a)
            cache.append((h, a, s))
            h = hn
        f = h @ P[6]
        f += P[7]
        diff = f - eps
        sq = (diff * diff).sum(axis=1)
        mse = sq.mean() * dt(1.0 / D)
        prior = 0.5 * (tab["abar_T"] * (x0 * x0 - 1.0)).sum(axis=1) + 0.5 * D * tab["neg_log_1m_abar_T"]
        nll = np.mean(prior + dt(self.T) * (tab["const"][t] + tab["w"][t] * sq))
        d = diff * dt(2.0 / (D * B))
        grads, o = [None] * 8, self.out  # o: the flat gradient's views (FlatAdam), or None
        grads[6] = np.matmul(h.T, d, out=o[6])
        grads[7] = np.dot(self._constant(np.ones, (B,), d.dtype), d, out=o[7])  # bias gradients: BLAS
        d = d @ P[6].T
        for i in (4, 2, 0):
            hin, a, s = cache[i // 2]
            d = self._dact(d, a, s)
            grads[i] = np.matmul(hin.T, d, out=o[i])
            grads[i + 1] = np.dot(self._constant(np.ones, (B,), d.dtype), d, out=o[i + 1])
            if i:
                d = d @ P[i].T
        return mse, {"mse": mse, "nll_bound_mc": nll}, grads

    def step(self, x0, u, eps):
        loss, metrics, grads = self.loss_and_grads(x0, self.t_of(u), eps)
        out = [float(loss)] + [float(v) for v in metrics.values()]
        if self.grad_norm:
            out.append(_grad_norm(self.opt, grads))
        self.opt.step(None if isinstance(self.opt, FlatAdam) else grads)
        return out

    def sample(self, n, rng):
        """x_T ~ N(0, I) from rng, then the sampler's steps with noise from rng (as the plugin)."""
        tab, dt = self.tab, self.params[0].dtype
        x = rng.standard_normal((n, 2)).astype(dt)
        tcol = np.empty((n, 1), dt)
        for s in self.steps:
            z = rng.standard_normal((n, 2)).astype(dt)
            tcol.fill(s.t)
            f = self.net(np.concatenate([x, tcol * dt.type(1.0 / self.T)], axis=1))
            x0_hat = (x - tab["sqrt_1m_abar"][s.t] * f) / tab["sqrt_abar"][s.t]
            x = dt.type(s.a) * x0_hat + dt.type(s.b) * f + dt.type(s.sigma) * z
        return x
