"""Parallel tempering for RBMs (rbm_tempering): exact samples on a bimodal RBM where plain Gibbs
is stuck, and the swap rule against a hand-computed case."""

import math

import numpy as np
import pytest

from gengraph.engine import Graph, compile, ops
from gengraph.plugins.datasets import Dataset
from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.models.rbm import plugin
from gengraph.plugins.models.rbm_energy import BuiltinEnergy, all_states
from gengraph.plugins.models.rbm_tempering import log_swap_ratios, pt_betas, pt_sweep, swap_stage
from gengraph.plugins.spec.errors import SpecError
from gengraph.plugins.spec.schema import validate


def energy_of(g, a, b, W):
    return BuiltinEnergy(g, "binary", len(a), len(b), {"a": g.constant(np.asarray(a, float)),
                                                        "b": g.constant(np.asarray(b, float)),
                                                        "W": g.constant(np.asarray(W, float))})


def exact_visible_distribution(a, b, W):
    V = all_states(len(a))
    lp = V @ a + np.logaddexp(0.0, b + V @ W).sum(1)  # -F(v)
    return np.exp(lp - np.logaddexp.reduce(lp))


def tv_to(p, x):
    q = np.bincount((x @ (2 ** np.arange(x.shape[1]))).astype(int), minlength=len(p)) / len(x)
    return 0.5 * np.abs(q - p).sum()


def test_pt_samples_match_the_exact_distribution_where_gibbs_is_stuck():
    # 5 visible, 3 hidden units, two modes: few units on (mass 0.34) and all on (0.64), a barrier between
    nv, nh = 5, 3
    a, b, W = np.full(nv, -3.75), np.full(nh, -8.5), np.full((nv, nh), 3.0)
    p = exact_visible_distribution(a, b, W)
    assert 0.3 < p[all_states(nv).sum(1) <= 2].sum() < 0.4 and 0.6 < p[-1] < 0.7
    g = Graph(dtype="float64", seed=0)
    energy = energy_of(g, a, b, W)
    betas = pt_betas(6, 0.0)
    x = g.input("x", (None, nv))
    x_pt, accepted = pt_sweep(energy, x, betas, g.constant(np.zeros(nv)))  # beta = 0: uniform bits
    x_gibbs, _ = energy.gibbs(x, 1)
    pt, gibbs = compile(g, {"x": x_pt, "accepted": accepted}), compile(g, x_gibbs)
    M, K = 4000, len(betas)
    xs, xg = np.zeros((K * M, nv)), np.zeros((M, nv))  # every chain starts in the low mode
    swaps = np.zeros(K)
    for _ in range(80):
        out = pt.run(x=xs)
        xs, swaps = out["x"], swaps + out["accepted"].mean(1)
        xg = gibbs.run(x=xg)
    # M exact samples would be off by about 0.5 sum_i sqrt(2 p_i / (pi M)) = 0.011 in total variation
    noise = 0.5 * np.sum(np.sqrt(2 * p * (1 - p) / (math.pi * M)))
    assert noise < 0.012
    assert tv_to(p, xs[-M:]) < 0.03  # the beta = 1 replicas: the RBM's distribution
    assert tv_to(p, xg) > 0.5  # plain Gibbs from the same starts never left the low mode
    assert swaps[-1] == 0 and np.all(swaps[:-1] / 80 > 0.3)  # every neighbour pair exchanges states


# a 2-visible, 1-hidden RBM, base-rate logits base and two replicas at beta = 0.5 and 1
A, B, W2, BASE = [0.5, -1.0], [0.2], [[1.5], [-0.7]], [0.3, -0.2]
X_HOT, X_COLD = [0.0, 1.0], [1.0, 0.0]  # x_0 at beta = 0.5, x_1 at beta = 1


def sp(z):
    return math.log1p(math.exp(z))


def test_swap_acceptance_matches_the_hand_computed_ratio():
    # F_beta(x) = -(1 - beta) base.x - beta a.x - softplus(beta (b + x W)):
    # F_.5(x_0) = 0.1 + 0.5 - sp(-0.25), F_1(x_1) = -0.5 - sp(1.7),
    # F_1(x_0) = 1.0 - sp(-0.5),        F_.5(x_1) = -0.15 - 0.25 - sp(0.85)
    log_r = (0.6 - sp(-0.25)) + (-0.5 - sp(1.7)) - (1.0 - sp(-0.5)) - (-0.4 - sp(0.85))
    assert abs(log_r - -1.26378) < 1e-5  # swap with probability exp(log_r) = 0.2826
    g = Graph(dtype="float64", seed=3)
    energy = energy_of(g, A, B, W2)
    betas = np.array([0.5, 1.0])
    x = g.input("x", (None, 2))
    xs = ops.reshape(x, (2, -1, 2))
    base = g.constant(np.array(BASE))
    even, acc_even = swap_stage(energy, xs, betas, base, 0)
    odd, acc_odd = swap_stage(energy, xs, betas, base, 1)
    prog = compile(g, {"log_r": log_swap_ratios(energy, xs, betas, base), "even": even, "acc": acc_even,
                       "odd": odd, "acc_odd": acc_odd})
    M = 20000
    out = prog.run(x=np.array([X_HOT] * M + [X_COLD] * M))
    np.testing.assert_allclose(out["log_r"][0], log_r, rtol=0, atol=1e-12)
    swapped = out["acc"][0] == 1
    assert np.all(out["acc"][1] == 0) and np.all(out["acc_odd"] == 0)  # one pair: (0, 1), in the even stage
    rate, p = swapped.mean(), math.exp(log_r)
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / M), (rate, p)
    np.testing.assert_array_equal(out["even"][0][swapped], np.array([X_COLD] * swapped.sum()))
    np.testing.assert_array_equal(out["even"][1][swapped], np.array([X_HOT] * swapped.sum()))
    np.testing.assert_array_equal(out["even"][0][~swapped], np.array([X_HOT] * (~swapped).sum()))
    np.testing.assert_array_equal(out["odd"][0], np.array([X_HOT] * M))  # no odd pair with 2 replicas


def test_swap_of_states_the_colder_replica_prefers_is_always_accepted():
    g = Graph(dtype="float64", seed=4)
    energy = energy_of(g, A, B, W2)
    x = g.input("x", (None, 2))
    xs = ops.reshape(x, (2, -1, 2))
    _, acc = swap_stage(energy, xs, np.array([0.5, 1.0]), g.constant(np.array(BASE)), 0)
    out = compile(g, acc).run(x=np.array([X_COLD] * 500 + [X_HOT] * 500))  # log r = +1.26: min(1, r) = 1
    assert np.all(out[0] == 1)


def _data():
    rng = np.random.default_rng(0)
    x = (rng.random((40, 6)) < 0.4).astype(float)
    return Dataset(x[:30], None, x[30:], None, "unsupervised")


def test_pt_options_are_checked():
    cfg = lambda **kw: validate(plugin.schema, {"n_hidden": 3, "sampler": "pt", **kw})  # noqa: E731
    with pytest.raises(ModelConfigError, match='needs visible = "binary"'):
        gauss = Dataset(np.random.default_rng(0).normal(size=(30, 2)), None, None, None, "unsupervised")
        plugin.build(cfg(visible="gaussian"), Graph(), gauss, np.random.default_rng(0))
    with pytest.raises(ModelConfigError, match="must be below 1") as info:
        plugin.build(cfg(pt_beta_min=1.0), Graph(), _data(), np.random.default_rng(0))
    assert info.value.path == "model.pt_beta_min"
    with pytest.raises(SpecError, match="pt_replicas"):
        cfg(pt_replicas=1)
    with pytest.raises(SpecError, match="sampler"):
        cfg(sampler="tempering")
    model = plugin.build(cfg(pt_replicas=4, pt_beta_min=0.2), Graph(), _data(), np.random.default_rng(0))
    np.testing.assert_allclose(model.extras["pt_betas"], [0.2, 0.4667, 0.7333, 1.0], atol=1e-4)
