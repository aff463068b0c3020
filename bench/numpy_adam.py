"""Adam by hand in NumPy, PyTorch's convention (as gengraph's `adam`), updating in place.

``lr`` is a float or a function of the step counter (0 on the first update), e.g. an lr
schedule's ``value`` -- as gengraph computes lr from its ``opt/step`` state.
"""

from __future__ import annotations

import math

import numpy as np


class Adam:
    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, schedule=None):
        self.params = params
        self.lr, self.b1, self.b2, self.eps = lr, beta1, beta2, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        b1, b2 = self.b1, self.b2
        dtype = self.params[0].dtype.type
        lr = self.lr(self.t - 1) if callable(self.lr) else self.lr
        step_size = dtype(lr / (1.0 - b1 ** self.t))  # scalars in float64, cast once
        bc2 = dtype(math.sqrt(1.0 - b2 ** self.t))
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            denom = np.sqrt(v)
            denom /= bc2
            denom += self.eps
            p -= step_size * (m / denom)


class FlatAdam:
    """The same Adam over flat buffers, as a careful hand-writer does it: the parameters (the
    caller's list entries are replaced by views), the moments and the gradients each live in
    one contiguous array, the backward pass writes each gradient straight into its view of the
    flat gradient (`grad_views`, via out=), and the rule is one pass of in-place NumPy calls
    over all parameters at once."""

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, schedule=None):
        self.lr, self.b1, self.b2, self.eps = lr, beta1, beta2, eps
        sizes = [p.size for p in params]
        dtype = params[0].dtype
        self.p = np.concatenate([p.reshape(-1) for p in params]).astype(dtype)
        self.g = np.zeros_like(self.p)
        self.m, self.v = np.zeros_like(self.p), np.zeros_like(self.p)
        self.grad_views, off = [], 0
        for i, (p, n) in enumerate(zip(params, sizes)):
            params[i] = self.p[off:off + n].reshape(p.shape)  # the model's list now holds views
            self.grad_views.append(self.g[off:off + n].reshape(p.shape))
            off += n
        self.params = params
        self.t = 0

    def step(self, grads=None):
        """One update from the flat gradient (grads: only needed if not written into grad_views)."""
        if grads is not None:
            for view, g in zip(self.grad_views, grads):
                if g is not view:
                    view[...] = g
        self.t += 1
        b1, b2, g, m, v = self.b1, self.b2, self.g, self.m, self.v
        dtype = self.p.dtype.type
        lr = self.lr(self.t - 1) if callable(self.lr) else self.lr
        step_size = dtype(lr / (1.0 - b1 ** self.t))
        bc2 = dtype(math.sqrt(1.0 - b2 ** self.t))
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        t = g * g
        t *= 1.0 - b2
        v += t
        denom = np.sqrt(v, out=t)
        denom /= bc2
        denom += self.eps
        np.divide(m, denom, out=denom)
        denom *= step_size
        self.p -= denom
