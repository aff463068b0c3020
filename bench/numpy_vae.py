"""The VAE 64-128-(2x16) / 16-128-64 with a Bernoulli likelihood, by hand in NumPy.

Encoder relu(x W1 + b1) We + be -> 32 units split into mu and logvar (as the vae plugin
does); z = mu + exp(logvar/2) eps; decoder relu(z W3 + b3) W4 + b4 -> logits; loss = mean
over the batch of sum_d BCE-with-logits(logits, x) + KL(N(mu, var) || N(0, 1)).
Parameters in gengraph's order: [W1, b1, We, be, W3, b3, W4, b4]; eps is passed in.
"""

from __future__ import annotations

import numpy as np

from .numpy_adam import Adam, FlatAdam
from .numpy_mlp import _grad_norm


class NumpyVAE:
    def __init__(self, params, adam=None, grad_norm=True, flat=True):
        self.params = [np.array(p) for p in params]
        self.opt = (FlatAdam if flat else Adam)(self.params, **(adam or {}))
        self.out = getattr(self.opt, "grad_views", None) or [None] * len(self.params)
        self.grad_norm = grad_norm

    def loss_and_grads(self, x, eps):
        # the NumPy idioms the MLP reference (and gengraph's kernels) use, so that this stays the limit:
        # ReLU against a zero array, bias gradients as BLAS products with a ones vector, the
        # elementwise terms in place in as few temporaries as the formulas allow
        W1, b1, We, be, W3, b3, W4, b4 = self.params
        n, k = x.shape[0], We.shape[1] // 2
        c = self._constants(n, x.dtype, W1.shape[1], W3.shape[1], W4.shape[1])
        a1 = x @ W1
        a1 += b1
        h1 = np.maximum(a1, c["zeros1"])
        e = h1 @ We
        e += be
        mu, lv = e[:, :k], e[:, k:]
        std = np.multiply(lv, 0.5)
        np.exp(std, out=std)
        z = std * eps
        z += mu
        a3 = z @ W3
        a3 += b3
        h3 = np.maximum(a3, c["zeros3"])
        logits = h3 @ W4
        logits += b4
        # softplus(l) - l x, stable: max(l, 0) + log1p(exp(-|l|)) - l x (np.logaddexp is ~10x slower)
        t = np.abs(logits)
        np.negative(t, out=t)
        np.exp(t, out=t)
        np.log1p(t, out=t)
        rec = np.maximum(logits, c["zeros4"])
        rec += t
        rec -= np.multiply(logits, x, out=t)
        rec = rec.sum(axis=1)
        var = std * std
        kt = mu * mu
        kt += var
        kt -= 1.0
        kt -= lv
        kl = kt.sum(axis=1)
        kl *= 0.5
        loss = np.mean(rec + kl)
        # backward
        dlog = np.multiply(logits, 0.5)  # sigmoid(logits) = 0.5 + 0.5 tanh(logits / 2)
        np.tanh(dlog, out=dlog)
        dlog *= 0.5
        dlog += 0.5
        dlog -= x
        dlog /= n
        o, ones = self.out, c["ones_n"]  # the flat gradient's views (FlatAdam), or None: fresh arrays
        gW4 = np.matmul(h3.T, dlog, out=o[6])
        gb4 = np.dot(ones, dlog, out=o[7])
        d = dlog @ W4.T
        np.multiply(d, a3 > 0, out=d)
        gW3 = np.matmul(z.T, d, out=o[4])
        gb3 = np.dot(ones, d, out=o[5])
        dz = d @ W3.T
        de = np.empty_like(e)
        np.divide(mu, n, out=de[:, :k])  # d mu
        de[:, :k] += dz
        dl = np.multiply(dz, eps, out=de[:, k:])  # d logvar = 0.5 (dz eps std + (var - 1) / n)
        dl *= std
        var -= 1.0
        var /= n
        dl += var
        dl *= 0.5
        gWe = np.matmul(h1.T, de, out=o[2])
        gbe = np.dot(ones, de, out=o[3])
        dh = de @ We.T
        np.multiply(dh, a1 > 0, out=dh)
        gW1 = np.matmul(x.T, dh, out=o[0])
        gb1 = np.dot(ones, dh, out=o[1])
        grads = [gW1, gb1, gWe, gbe, gW3, gb3, gW4, gb4]
        return loss, {"neg_elbo": loss, "reconstruction": np.mean(rec), "kl": np.mean(kl)}, grads

    def _constants(self, n, dtype, w1, w3, w4) -> dict:
        """Arrays made once per batch size (as gengraph's programs keep theirs)."""
        key = (n, np.dtype(dtype).str)
        if getattr(self, "_key", None) != key:
            self._key = key
            self._c = {"zeros1": np.zeros((n, w1), dtype), "zeros3": np.zeros((n, w3), dtype),
                       "zeros4": np.zeros((n, w4), dtype), "ones_n": np.ones(n, dtype)}
        return self._c

    def step(self, x, eps):
        loss, metrics, grads = self.loss_and_grads(x, eps)
        out = [float(loss)] + [float(v) for v in metrics.values()]
        if self.grad_norm:
            out.append(_grad_norm(self.opt, grads))
        self.opt.step(None if isinstance(self.opt, FlatAdam) else grads)
        return out
