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
        # with the NumPy idioms gengraph's own kernels use, so that this stays the limit: ReLU in place
        # against a zero array (its mask read from the output), bias gradients and the softmax's row
        # sums as BLAS products with a ones vector, the softmax and its gradient in the logits' buffer
        W1, b1, W2, b2, W3, b3 = self.params
        n = x.shape[0]
        c = self._constants(n, x.dtype, W1.shape[1], W2.shape[1], W3.shape[1])
        rows = c["rows"]
        # forward
        h1 = x @ W1
        h1 += b1
        np.maximum(h1, c["zeros1"], out=h1)
        h2 = h1 @ W2
        h2 += b2
        np.maximum(h2, c["zeros2"], out=h2)
        z = h2 @ W3
        z += b3
        zmax = z[rows, z.argmax(axis=1)]  # the row max; NumPy's argmax is faster than max on short rows
        picked = z[rows, y]
        acc = np.mean(picked >= zmax)
        e = np.subtract(z, zmax[:, None], out=z)
        np.exp(e, out=e)
        s = np.dot(e, c["ones_k"])
        loss = np.mean(np.log(s) + zmax - picked)
        # backward: dz = (softmax - one_hot) / n, in e's buffer
        s *= n
        e /= s[:, None]
        e[rows, y] -= 1.0 / n
        dz = e
        o = self.out  # the flat gradient's views (FlatAdam), or None: fresh arrays
        gW3 = np.matmul(h2.T, dz, out=o[4])
        gb3 = np.dot(c["ones_n"], dz, out=o[5])
        dh = dz @ W3.T
        np.multiply(dh, h2 > 0, out=dh)
        gW2 = np.matmul(h1.T, dh, out=o[2])
        gb2 = np.dot(c["ones_n"], dh, out=o[3])
        dh = dh @ W2.T
        np.multiply(dh, h1 > 0, out=dh)
        gW1 = np.matmul(x.T, dh, out=o[0])
        gb1 = np.dot(c["ones_n"], dh, out=o[1])
        return loss, acc, [gW1, gb1, gW2, gb2, gW3, gb3]

    def _constants(self, n, dtype, w1, w2, k) -> dict:
        """Arrays made once per batch size (as gengraph's programs keep theirs)."""
        key = (n, np.dtype(dtype).str)
        if getattr(self, "_key", None) != key:
            self._key = key
            self._c = {"rows": np.arange(n), "zeros1": np.zeros((n, w1), dtype), "zeros2": np.zeros((n, w2), dtype),
                       "ones_n": np.ones(n, dtype), "ones_k": np.ones(k, dtype)}
        return self._c

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
