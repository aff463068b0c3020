"""The MLP 64-128-128-10 (ReLU, softmax cross-entropy, Adam) written by hand in NumPy.

Forward, backward and the optimizer step, as a student would write them after the
back-propagation lecture; the benchmark checks its gradients against gengraph's.
Parameters are [W1, b1, W2, b2, W3, b3] with W of shape (fan_in, fan_out), as gengraph's.
"""

from __future__ import annotations

import numpy as np

from .numpy_adam import Adam, FlatAdam


class NumpyMLP:
    def __init__(self, params, adam=None, grad_norm=True, flat=True):
        self.params = [np.array(p) for p in params]  # own copies
        self.opt = (FlatAdam if flat else Adam)(self.params, **(adam or {}))
        self.out = getattr(self.opt, "grad_views", None) or [None] * len(self.params)
        self.grad_norm = grad_norm  # the trainer's divergence monitor: sqrt(sum of squared gradients)

    def loss_and_grads(self, x, y):
        W1, b1, W2, b2, W3, b3 = self.params
        n = x.shape[0]
        rows = np.arange(n)
        # forward
        a1 = x @ W1
        a1 += b1
        h1 = np.maximum(a1, 0)
        a2 = h1 @ W2
        a2 += b2
        h2 = np.maximum(a2, 0)
        z = h2 @ W3
        z += b3
        zmax = z[rows, z.argmax(axis=1)][:, None]  # the row max; NumPy's argmax is faster than max on short rows
        e = np.exp(z - zmax)
        s = e.sum(axis=1, keepdims=True)
        picked = z[rows, y]
        loss = np.mean(np.log(s[:, 0]) + zmax[:, 0] - picked)
        acc = np.mean(picked >= zmax[:, 0])
        # backward
        dz = e / s
        dz[rows, y] -= 1.0
        dz /= n
        o = self.out  # the flat gradient's views (FlatAdam), or None: fresh arrays
        gW3 = np.matmul(h2.T, dz, out=o[4])
        gb3 = dz.sum(axis=0, out=o[5])
        dh = dz @ W3.T
        np.multiply(dh, a2 > 0, out=dh)
        gW2 = np.matmul(h1.T, dh, out=o[2])
        gb2 = dh.sum(axis=0, out=o[3])
        dh = dh @ W2.T
        np.multiply(dh, a1 > 0, out=dh)
        gW1 = np.matmul(x.T, dh, out=o[0])
        gb1 = dh.sum(axis=0, out=o[1])
        return loss, acc, [gW1, gb1, gW2, gb2, gW3, gb3]

    def step(self, x, y):
        loss, acc, grads = self.loss_and_grads(x, y)
        out = [float(loss), float(acc)]
        if self.grad_norm:
            out.append(_grad_norm(self.opt, grads))
        self.opt.step(None if isinstance(self.opt, FlatAdam) else grads)
        return out


def _grad_norm(opt, grads):
    """sqrt(sum of squared gradients): one dot product over the flat gradient when there is one."""
    g = getattr(opt, "g", None)
    if g is not None:
        return float(np.sqrt(np.vdot(g, g)))
    return float(np.sqrt(sum(np.vdot(g, g) for g in grads)))
