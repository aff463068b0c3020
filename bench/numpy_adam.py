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
