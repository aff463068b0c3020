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
        W1, b1, We, be, W3, b3, W4, b4 = self.params
        n, k = x.shape[0], We.shape[1] // 2
        a1 = x @ W1
        a1 += b1
        h1 = np.maximum(a1, 0)
        e = h1 @ We
        e += be
        mu, lv = e[:, :k], e[:, k:]
        std = np.exp(0.5 * lv)
        z = std * eps
        z += mu
        a3 = z @ W3
        a3 += b3
        h3 = np.maximum(a3, 0)
        logits = h3 @ W4
        logits += b4
        # softplus(l) - l x, stable: max(l, 0) + log1p(exp(-|l|)) - l x (np.logaddexp is ~10x slower)
        rec = np.maximum(logits, 0)
        rec += np.log1p(np.exp(-np.abs(logits)))
        rec -= logits * x
        rec = rec.sum(axis=1)
        var = std * std
        kl = 0.5 * (var + mu * mu - 1.0 - lv).sum(axis=1)
        loss = np.mean(rec + kl)
        # backward
        dlog = 0.5 + 0.5 * np.tanh(0.5 * logits)  # sigmoid(logits)
        dlog -= x
        dlog /= n
        o = self.out  # the flat gradient's views (FlatAdam), or None: fresh arrays
        gW4 = np.matmul(h3.T, dlog, out=o[6])
        gb4 = dlog.sum(axis=0, out=o[7])
        d = dlog @ W4.T
        np.multiply(d, a3 > 0, out=d)
        gW3 = np.matmul(z.T, d, out=o[4])
        gb3 = d.sum(axis=0, out=o[5])
        dz = d @ W3.T
        de = np.empty_like(e)
        np.add(dz, mu / n, out=de[:, :k])  # d mu
        np.multiply(0.5, dz * eps * std + (var - 1.0) / n, out=de[:, k:])  # d logvar
        gWe = np.matmul(h1.T, de, out=o[2])
        gbe = de.sum(axis=0, out=o[3])
        dh = de @ We.T
        np.multiply(dh, a1 > 0, out=dh)
        gW1 = np.matmul(x.T, dh, out=o[0])
        gb1 = dh.sum(axis=0, out=o[1])
        grads = [gW1, gb1, gWe, gbe, gW3, gb3, gW4, gb4]
        return loss, {"neg_elbo": loss, "reconstruction": np.mean(rec), "kl": np.mean(kl)}, grads

    def step(self, x, eps):
        loss, metrics, grads = self.loss_and_grads(x, eps)
        out = [float(loss)] + [float(v) for v in metrics.values()]
        if self.grad_norm:
            out.append(_grad_norm(self.opt, grads))
        self.opt.step(None if isinstance(self.opt, FlatAdam) else grads)
        return out
