"""Synthetic data sets from the lecture, drawn from the data stream of the run's seed.

Every generator returns ``(x, y)`` with ``x`` of shape (n, features) and ``y`` 1-D
(or None). ``noise`` is always the standard deviation of added Gaussian noise, so
``noise = 0`` gives exact values of the formula (the tests rely on that).

=============  ==========================================================  ==============
source         x and y                                                      task
=============  ==========================================================  ==============
linear         x ~ U(-1, 1);  y = slope*x + intercept + noise  (2x + 1)     regression
quadratic2d    x ~ N(0, 1)^2; y = x0^2 + 3 x0 x1 + x1^2 + 5 + noise        regression
polynomial     x ~ U(-1, 1);  y = sum_k c_k x^k + noise  (1 + 2x - 3x^2)    regression
franke         x ~ U(0, 1)^2; y = Franke(x0, x1) + noise                   regression
moons          two interleaving half circles (scikit-learn's make_moons)    classification
gaussians      k isotropic Gaussians centred on a circle                    classification
swiss_roll     (t cos t, t sin t) / divisor, t = 1.5 pi (1 + 2u); y = t      unsupervised
=============  ==========================================================  ==============
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from .base import DataError, Field, Source

N_HELP = "number of samples drawn (before the train/test split)"
NOISE_HELP = "standard deviation of the Gaussian noise added to {}"


def _n(default: int) -> Field:
    return Field(int, default, N_HELP, min=2)


def _noise(default: float, what: str = "the target") -> Field:
    return Field((int, float), default, NOISE_HELP.format(what), min=0.0)


def franke_function(x0, x1):
    """Franke's bivariate test function (Franke 1979) on [0, 1]^2."""
    x0 = np.asarray(x0, dtype=float)
    x1 = np.asarray(x1, dtype=float)
    t1 = 0.75 * np.exp(-((9 * x0 - 2) ** 2) / 4.0 - ((9 * x1 - 2) ** 2) / 4.0)
    t2 = 0.75 * np.exp(-((9 * x0 + 1) ** 2) / 49.0 - (9 * x1 + 1) / 10.0)
    t3 = 0.5 * np.exp(-((9 * x0 - 7) ** 2) / 4.0 - ((9 * x1 - 3) ** 2) / 4.0)
    t4 = -0.2 * np.exp(-((9 * x0 - 4) ** 2) - (9 * x1 - 7) ** 2)
    return t1 + t2 + t3 + t4


class Linear(Source):
    name = "linear"
    help = "1-D linear regression: x ~ U(-1, 1), y = slope*x + intercept + noise (default 2x + 1)"
    task = "regression"
    params: ClassVar[dict[str, Field]] = {
        "n": _n(100),
        "noise": _noise(0.1),
        "slope": Field((int, float), 2.0, "slope of the true line"),
        "intercept": Field((int, float), 1.0, "intercept of the true line"),
    }

    def load(self, params, rng):
        x = rng.uniform(-1.0, 1.0, size=(params["n"], 1))
        y = params["slope"] * x[:, 0] + params["intercept"]
        return x, y + params["noise"] * rng.standard_normal(params["n"])


class Quadratic2D(Source):
    name = "quadratic2d"
    help = "2-D quadratic regression: x ~ N(0, 1)^2, y = x0^2 + 3 x0 x1 + x1^2 + 5 + noise"
    task = "regression"
    params: ClassVar[dict[str, Field]] = {"n": _n(200), "noise": _noise(0.1)}

    @staticmethod
    def formula(x0, x1):
        return x0**2 + 3.0 * x0 * x1 + x1**2 + 5.0

    def load(self, params, rng):
        x = rng.standard_normal((params["n"], 2))
        y = self.formula(x[:, 0], x[:, 1])
        return x, y + params["noise"] * rng.standard_normal(params["n"])


class Polynomial(Source):
    name = "polynomial"
    help = "1-D polynomial regression: x ~ U(-1, 1), y = sum_k coefficients[k] x^k + noise"
    task = "regression"
    params: ClassVar[dict[str, Field]] = {
        "n": _n(100),
        "noise": _noise(0.1),
        "coefficients": Field(list, [1.0, 2.0, -3.0],
                              "c0, c1, c2, ...: y = c0 + c1 x + c2 x^2 + ... (default 1 + 2x - 3x^2)",
                              item=(int, float)),
    }

    def load(self, params, rng):
        coef = [float(c) for c in params["coefficients"]]
        if not coef:
            raise DataError("data.coefficients: expected at least one coefficient, found an empty list")
        x = rng.uniform(-1.0, 1.0, size=(params["n"], 1))
        y = np.polynomial.polynomial.polyval(x[:, 0], coef)
        return x, y + params["noise"] * rng.standard_normal(params["n"])


class Franke(Source):
    name = "franke"
    help = "Franke's function on the unit square: x ~ U(0, 1)^2, y = F(x0, x1) + noise"
    task = "regression"
    params: ClassVar[dict[str, Field]] = {"n": _n(400), "noise": _noise(0.1)}

    def load(self, params, rng):
        x = rng.uniform(0.0, 1.0, size=(params["n"], 2))
        y = franke_function(x[:, 0], x[:, 1])
        return x, y + params["noise"] * rng.standard_normal(params["n"])


class Moons(Source):
    name = "moons"
    help = "two interleaving half circles (like scikit-learn's make_moons); label = moon 0 or 1"
    task = "classification"
    n_classes = 2
    params: ClassVar[dict[str, Field]] = {"n": _n(200), "noise": _noise(0.1, "the points")}

    def load(self, params, rng):
        n = params["n"]
        n_out = n // 2
        n_in = n - n_out
        t_out = np.linspace(0.0, math.pi, n_out)
        t_in = np.linspace(0.0, math.pi, n_in)
        x = np.concatenate([
            np.stack([np.cos(t_out), np.sin(t_out)], axis=1),
            np.stack([1.0 - np.cos(t_in), 0.5 - np.sin(t_in)], axis=1),
        ])
        y = np.concatenate([np.zeros(n_out, dtype=np.int64), np.ones(n_in, dtype=np.int64)])
        # draw in random order so that the rows are exchangeable even with shuffle = false
        order = rng.permutation(n)
        x, y = x[order], y[order]
        return x + params["noise"] * rng.standard_normal(x.shape), y


class SwissRoll(Source):
    name = "swiss_roll"
    help = "2-D Swiss roll (t cos t, t sin t) / divisor with t = 1.5 pi (1 + 2u); y = t"
    task = "unsupervised"
    params: ClassVar[dict[str, Field]] = {
        "n": _n(1000),
        "noise": _noise(0.05, "the points (after dividing by divisor)"),
        "divisor": Field((int, float), 10.0, "the roll (t cos t, t sin t) is divided by this "
                         "(t reaches 4.5 pi ~ 14.1)", min=1e-12),
    }

    def load(self, params, rng):
        n = params["n"]
        t = 1.5 * math.pi * (1.0 + 2.0 * rng.uniform(0.0, 1.0, n))
        x = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / params["divisor"]
        return x + params["noise"] * rng.standard_normal(x.shape), t


class Gaussians(Source):
    name = "gaussians"
    help = "mixture of k isotropic 2-D Gaussians centred evenly on a circle; label = component"
    task = "classification"
    params: ClassVar[dict[str, Field]] = {
        "n": _n(1000),
        "k": Field(int, 8, "number of mixture components", min=1, max=1_000_000),
        "radius": Field((int, float), 2.0, "radius of the circle the means lie on", min=0.0),
        "std": Field((int, float), 0.1, "standard deviation of each component", min=0.0),
    }

    @staticmethod
    def centres(k: int, radius: float) -> np.ndarray:
        angle = 2.0 * math.pi * np.arange(k) / k
        return radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)

    def load(self, params, rng):
        n, k = params["n"], params["k"]
        y = rng.integers(0, k, size=n)
        x = self.centres(k, params["radius"])[y] + params["std"] * rng.standard_normal((n, 2))
        return x, y.astype(np.int64)

    def n_classes_for(self, params) -> int:
        return int(params["k"])

    @classmethod
    def log_density(cls, params, x) -> np.ndarray:
        """log p(x) of the true mixture (equal weights, isotropic components), one value per row."""
        c = cls.centres(params["k"], params["radius"])
        s2 = float(params["std"]) ** 2
        d2 = ((np.asarray(x, np.float64)[:, None, :] - c[None]) ** 2).sum(-1)
        log_comp = -0.5 * d2 / s2 - np.log(2 * math.pi * s2)  # 2-D Gaussian
        m = log_comp.max(axis=1, keepdims=True)
        return (m + np.log(np.exp(log_comp - m).mean(axis=1, keepdims=True)))[:, 0]


SOURCES = [Linear(), Quadratic2D(), Polynomial(), Franke(), Moons(), Gaussians(), SwissRoll()]
