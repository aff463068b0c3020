"""RBM energies and everything derived from them, as graph-building code.

An RBM has visible units x (binary or Gaussian) and binary hidden units h. Everything
the plugin needs follows from the energy E(x, h) (one value per example):

* hidden units summed out:  E(x, h) = E0(x) - h . c(x)  (linear in h, which binary
  units make fully general for energies without h-h interactions), so
  p(h_j = 1 | x) = sigmoid(c_j(x)) and the free energy is
  F(x) = -log sum_h exp(-E(x, h)) = E0(x) - sum_j softplus(c_j(x));
* visible units given h, binary:  E(x, h) = E0'(h) - x . d(h), so
  p(x_i = 1 | h) = sigmoid(d_i(h)) and, summing x out, F_h(h) = E0'(h) - sum softplus(d(h));
* visible units given h, Gaussian:  E(x, h) = E(mu, h) + sum_i lam_i (x_i - mu_i)^2 / 2, so
  p(x | h) = N(mu(h), 1 / lam) and F_h(h) = E(mu, h) - sum_i 0.5 log(2 pi / lam_i).

The built-in energies write c, d, mu and lam in closed form; an energy written as an
expression gets them from the engine's symbolic gradients:
c(x) = -dE/dh at h = 0 and E0(x) = E(x, 0); d(h) = -dE/dx at x = 0; for Gaussian units
g0 = dE/dx at x = 0, g1 = dE/dx at x = 1, lam = g1 - g0 (the diagonal curvature) and
mu = -g0 / lam. `check_expression` verifies numerically that an expression has the
required form (one value per example, linear in h, linear or diagonal-quadratic in x).
"""

from __future__ import annotations

import math

import numpy as np

from gengraph.engine import Graph, Node, compile, grad, ops
from gengraph.engine import expr as expr_lang

LOG_2PI = math.log(2.0 * math.pi)


def zeros_rows(like, n: int):
    """Zeros of shape (rows of `like`, n): a per-example point to differentiate at."""
    g = like.graph
    return ops.zeros_like(like[:, 0:1]) + g.constant(np.zeros(n))


def all_states(n: int) -> np.ndarray:
    """All 2^n binary vectors of length n, one per row (row k is k in binary, low bit first)."""
    k = np.arange(2 ** n, dtype=np.int64)
    return ((k[:, None] >> np.arange(n)) & 1).astype(np.float64)


# Visible units up to which pseudo_loglik sums every unit's term (64 for the digits); above, one drawn unit
EXACT_PLL_MAX_VISIBLE = 100


class RBMEnergy:
    """The energy of an RBM with binary hidden units; subclasses give the energy's terms."""

    def __init__(self, graph: Graph, visible: str, n_visible: int, n_hidden: int, params: dict):
        if visible not in ("binary", "gaussian"):
            raise ValueError(f"visible units are binary or gaussian, not {visible!r}")
        self.graph, self.visible, self.nv, self.nh = graph, visible, n_visible, n_hidden
        self.params = params  # name -> node (a, b, W, sigma); sigma may be computed from log_sigma

    # --- what a subclass provides -----------------------------------------------------
    def energy(self, x, h):
        """E(x, h), one value per example (shape (batch,))."""
        raise NotImplementedError

    def hidden_terms(self, x):
        """(E0(x), c(x)) with E(x, h) = E0(x) - h . c(x)."""
        raise NotImplementedError

    def visible_terms(self, h) -> dict:
        """binary: {"e0": E0'(h), "logits": d(h)}; gaussian: {"mean": mu(h), "precision": lam(h)}."""
        raise NotImplementedError

    # --- derived ------------------------------------------------------------------------
    def hidden_logits(self, x):
        return self.hidden_terms(x)[1]

    def hidden_probs(self, x):
        return ops.sigmoid(self.hidden_logits(x))

    def free_energy(self, x):
        """F(x) = E0(x) - sum_j softplus(c_j(x)): the hidden units summed out."""
        e0, c = self.hidden_terms(x)
        return e0 - ops.sum(ops.softplus(c), axis=-1)

    def hidden_free_energy(self, h):
        """F_h(h) = -log sum_x exp(-E(x, h)) (an integral for Gaussian units)."""
        t = self.visible_terms(h)
        if self.visible == "binary":
            return t["e0"] - ops.sum(ops.softplus(t["logits"]), axis=-1)
        lam = t["precision"]
        half_log = ops.sum(0.5 * (ops.log(lam) - LOG_2PI), axis=-1)
        return self.energy(t["mean"], h) + half_log

    def visible_mean(self, h):
        """E[x | h]: sigmoid(d(h)) or mu(h)."""
        t = self.visible_terms(h)
        return ops.sigmoid(t["logits"]) if self.visible == "binary" else t["mean"]

    def sample_hidden(self, x):
        p = self.hidden_probs(x)
        return ops.bernoulli(p, stream=self.graph.new_stream()), p

    def sample_visible(self, h):
        """(a draw of x | h, E[x | h])."""
        t = self.visible_terms(h)
        if self.visible == "binary":
            p = ops.sigmoid(t["logits"])
            return ops.bernoulli(p, stream=self.graph.new_stream()), p
        mu = t["mean"]
        noise = ops.random_normal(mu, stream=self.graph.new_stream())
        return mu + noise / ops.sqrt(t["precision"]), mu

    def gibbs(self, x, k: int):
        """k steps of block Gibbs sampling x -> h -> x; returns (x_k, E[x | h_k])."""
        mean = x
        for _ in range(k):
            h, _ = self.sample_hidden(x)
            x, mean = self.sample_visible(h)
        return x, mean

    def reconstruction(self, x):
        """E[x | h = p(h | x)]: the mean-field reconstruction."""
        return self.visible_mean(self.hidden_probs(x))

    def pseudo_loglik(self, x):
        """sum_i log p(x_i | x_-i) per example (binary visible), each term -softplus(F(x) - F(x with i
        flipped)): the sum over all units up to EXACT_PLL_MAX_VISIBLE of them; above, nv times the term
        of one unit drawn uniformly per example (an unbiased estimate, as scikit-learn's
        BernoulliRBM.score_samples). The sum costs nv free energies per example: on MNIST (784 units)
        60 GFLOP a step at batch 100, 99 % of the training step."""
        nv = self.nv
        f = self.free_energy(x)
        if nv <= EXACT_PLL_MAX_VISIBLE:
            eye = self.graph.constant(np.eye(nv))
            flips = x[:, None, :] + (1.0 - 2.0 * x)[:, None, :] * eye  # row i: x with unit i flipped
            f_flip = ops.reshape(self.free_energy(ops.reshape(flips, (-1, nv))), (-1, nv))
            return -ops.sum(ops.softplus(f[:, None] - f_flip), axis=-1)
        u = ops.random_uniform(x[:, :1], stream=self.graph.new_stream())
        unit = ops.minimum(ops.floor(u * float(nv)), float(nv - 1))  # u * nv may round up to nv in float32
        pick = ops.eq(unit, self.graph.constant(np.arange(nv, dtype=np.float64)))  # one 1 per row
        flipped = x + (1.0 - 2.0 * x) * pick
        return -float(nv) * ops.softplus(f - self.free_energy(flipped))

    # --- the partition function ----------------------------------------------------------
    def enumeration_side(self) -> str:
        """Which units an exact partition function enumerates: the smaller binary layer."""
        if self.visible == "binary" and self.nv <= self.nh:
            return "visible"
        return "hidden"

    def enumerated_units(self) -> int:
        return self.nv if self.enumeration_side() == "visible" else self.nh

    def log_partition_terms(self, states):
        """-F(v) for visible states, or -F_h(h) for hidden states: logsumexp of these is log Z."""
        if self.enumeration_side() == "visible":
            return -self.free_energy(states)
        return -self.hidden_free_energy(states)

    def log_partition(self):
        """log Z by exact enumeration of 2^n states of the smaller binary layer (as graph)."""
        n = self.enumerated_units()
        states = self.graph.constant(all_states(n))
        return ops.logsumexp(self.log_partition_terms(states), axis=0)


class BuiltinEnergy(RBMEnergy):
    """The lecture's energies in closed form.

    binary-binary:   E = -a.x - b.h - x W h
    Gaussian-binary: E = sum_i (x_i - a_i)^2 / (2 sigma_i^2) - b.h - sum_ij x_i w_ij h_j / sigma_i^2
    """

    def energy(self, x, h):
        a, b, W = self.params["a"], self.params["b"], self.params["W"]
        if self.visible == "binary":
            return -(x @ a) - (h @ b) - ops.sum((x @ W) * h, axis=-1)
        s2 = ops.square(self.params["sigma"])
        return ops.sum(ops.square(x - a) / (2.0 * s2), axis=-1) - (h @ b) - ops.sum(((x / s2) @ W) * h, axis=-1)

    def hidden_terms(self, x):
        a, b, W = self.params["a"], self.params["b"], self.params["W"]
        if self.visible == "binary":
            return -(x @ a), b + x @ W
        s2 = ops.square(self.params["sigma"])
        return ops.sum(ops.square(x - a) / (2.0 * s2), axis=-1), b + (x / s2) @ W

    def visible_terms(self, h):
        a, b, W = self.params["a"], self.params["b"], self.params["W"]
        if self.visible == "binary":
            return {"e0": -(h @ b), "logits": a + h @ ops.transpose(W)}
        s2 = ops.square(self.params["sigma"])
        return {"mean": a + h @ ops.transpose(W), "precision": 1.0 / s2}


class ExpressionEnergy(RBMEnergy):
    """An energy written in the expression language over x, h, a, b, W (and sigma for Gaussian units).

    x is (batch, n_visible), h is (batch, n_hidden); the expression must give one value per
    example, e.g. ``-(x @ a) - (h @ b) - sum((x @ W) * h, axis=-1)``.
    """

    def __init__(self, graph, visible, n_visible, n_hidden, params, expression: str):
        super().__init__(graph, visible, n_visible, n_hidden, params)
        self.expression = expression

    def energy(self, x, h):
        out = expr_lang.build(self.expression, {"x": x, "h": h, **self.params})
        if not isinstance(out, Node) or out.shape != (x.shape[0],):
            shape = getattr(out, "shape", "a number")
            raise expr_lang.ExprError(
                self.expression, 0,
                f"the energy must give one value per example (shape (batch,)), found shape {shape}; "
                "x is (batch, n_visible) and h is (batch, n_hidden): reduce with sum(..., axis=-1)")
        return out

    def hidden_terms(self, x):
        h0 = zeros_rows(x, self.nh)
        e = self.energy(x, h0)
        return e, -grad(ops.sum(e), h0)

    def visible_terms(self, h):
        x0 = zeros_rows(h, self.nv)
        e = self.energy(x0, h)
        g0 = grad(ops.sum(e), x0)
        if self.visible == "binary":
            return {"e0": e, "logits": -g0}
        x1 = x0 + 1.0
        g1 = grad(ops.sum(self.energy(x1, h)), x1)
        lam = g1 - g0
        return {"mean": -g0 / lam, "precision": lam}


def expression_names(visible: str) -> tuple[str, ...]:
    return ("x", "h", "a", "b", "W") + (("sigma",) if visible == "gaussian" else ())


def check_expression(expression: str, visible: str, nv: int, nh: int, *, seed: int = 0, rtol: float = 1e-6) -> None:
    """Check on random numbers that an expression energy has the form the derivation needs.

    Raises ValueError naming what is wrong: not one value per example (e.g. a sum over the
    whole batch), not linear in h, not linear in binary x, not a diagonal quadratic with
    positive curvature in Gaussian x.
    """
    rng = np.random.default_rng(seed)
    g = Graph(dtype="float64", seed=seed)
    params = {"a": g.constant(rng.normal(size=nv)), "b": g.constant(rng.normal(size=nh)),
              "W": g.constant(rng.normal(size=(nv, nh)) / math.sqrt(nv))}
    if visible == "gaussian":
        params["sigma"] = g.constant(rng.uniform(0.5, 1.5, size=nv))
    energy = ExpressionEnergy(g, visible, nv, nh, params, expression)
    x = g.input("x", (None, nv))
    h = g.input("h", (None, nh))
    e = energy.energy(x, h)
    e0, c = energy.hidden_terms(x)
    vis = energy.visible_terms(h)
    outs = {"e": e, "lin_h": e0 - ops.sum(h * c, axis=-1)}
    if visible == "binary":
        outs["lin_x"] = vis["e0"] - ops.sum(x * vis["logits"], axis=-1)
    else:
        mu, lam = vis["mean"], vis["precision"]
        outs["quad_x"] = energy.energy(mu, h) + ops.sum(0.5 * lam * ops.square(x - mu), axis=-1)
        outs["lam"] = lam + ops.zeros_like(x)
    prog = compile(g, outs)
    n = 5
    xs = (rng.random((n, nv)) < 0.5).astype(float) if visible == "binary" else rng.normal(size=(n, nv))
    hs = (rng.random((n, nh)) < 0.5).astype(float)
    out = prog.run(x=xs, h=hs)
    ref = out["e"]
    tol = rtol * (1.0 + np.abs(ref))
    single = np.array([prog.run(x=xs[i:i + 1], h=hs[i:i + 1])["e"][0] for i in range(n)])
    if not np.all(np.isfinite(ref)):
        raise ValueError("the energy is not finite at random test points")
    if np.any(np.abs(single - ref) > tol):
        raise ValueError("the energy of an example depends on the other examples of the batch; "
                         "x is (batch, n_visible), h is (batch, n_hidden): write sum(..., axis=-1), not sum(...)")
    if np.any(np.abs(out["lin_h"] - ref) > tol):
        raise ValueError("the energy is not linear in h (no products of hidden units): the hidden units "
                         "cannot be summed out analytically")
    if visible == "binary":
        if np.any(np.abs(out["lin_x"] - ref) > tol):
            raise ValueError("the energy is not linear in x (no products of visible units): "
                             "p(x | h) would not factorise over binary visible units")
    else:
        if np.any(out["lam"] <= 0):
            raise ValueError("the energy's curvature in x is not positive: exp(-E) has no finite integral over x")
        if np.any(np.abs(out["quad_x"] - ref) > tol):
            raise ValueError("the energy is not a quadratic in x with diagonal curvature: p(x | h) would not be "
                             "a product of Gaussians")


# --- annealed importance sampling (binary visible units) -----------------------------
def ais_free_energy(energy: RBMEnergy, x, beta, base_bias):
    """F_beta(x) of the intermediate model exp(-(1 - beta) E_A(x) - beta E(x, h)), E_A(x) = -base_bias . x."""
    e0, c = energy.hidden_terms(x)
    return (1.0 - beta) * -(x @ base_bias) + beta * e0 - ops.sum(ops.softplus(beta * c), axis=-1)


def ais_transition(energy: RBMEnergy, x, beta, base_bias):
    """One Gibbs sweep x -> h -> x that leaves the intermediate model at beta invariant."""
    c = energy.hidden_logits(x)
    h = ops.bernoulli(ops.sigmoid(beta * c), stream=energy.graph.new_stream())
    d = energy.visible_terms(h)["logits"]
    return ops.bernoulli(ops.sigmoid((1.0 - beta) * base_bias + beta * d), stream=energy.graph.new_stream())


def ais_betas(steps: int) -> np.ndarray:
    """Inverse temperatures 0 = beta_0 < ... < beta_K = 1, denser near 1 (Salakhutdinov & Murray 2008)."""
    n1, n2 = max(steps // 10, 1), max(steps * 4 // 10, 1)
    n3 = max(steps - n1 - n2, 1)
    return np.concatenate([np.linspace(0.0, 0.5, n1, endpoint=False), np.linspace(0.5, 0.9, n2, endpoint=False),
                           np.linspace(0.9, 1.0, n3 + 1)])


def ais_base_log_partition(base_bias: np.ndarray, nh: int) -> float:
    """log Z_A = sum softplus(a_A) + n_hidden log 2 (the base model has no weights)."""
    return float(np.sum(np.logaddexp(0.0, base_bias)) + nh * math.log(2.0))
