"""Parallel tempering (replica exchange) for binary-visible RBMs, as graph-building code.

Each chain has K replicas at inverse temperatures beta_min = beta_0 < ... < beta_{K-1} = 1
on the path AIS also uses (`rbm_energy.ais_free_energy`):

    p_beta(x, h) ∝ exp(-(1 - beta) E_A(x) - beta E(x, h)),   E_A(x) = -base . x,

the base-rate model (independent visible units with the data's means, sampled exactly) at
beta = 0 and the RBM at beta = 1. One PT sweep is a block-Gibbs sweep of every replica at its
own beta (`ais_transition`), then swaps between neighbours, first the pairs (0, 1), (2, 3), …,
then (1, 2), (3, 4), …: states x_i at beta_i and x_j at beta_j trade places with probability

    min(1, exp(F_i(x_i) + F_j(x_j) - F_i(x_j) - F_j(x_i))),

F_b the free energy of p_b (hidden units summed out). That is the Metropolis rule for the
product of the K tempered distributions, so each replica keeps its own p_beta invariant
(Swendsen & Wang 1986; for RBMs Desjardins et al. 2010). Hot replicas cross between modes
freely and swaps carry their states down to beta = 1, whose states are the samples.

The state is a (K * M, n_visible) matrix, replica-major: rows k*M .. (k+1)*M - 1 are the
M chains at beta_k.
"""

from __future__ import annotations

import numpy as np

from gengraph.engine import ops
from gengraph.plugins.models.rbm_energy import ais_transition


def pt_betas(replicas: int, beta_min: float) -> np.ndarray:
    """K evenly spaced inverse temperatures from beta_min to 1."""
    if replicas < 2 or not 0.0 <= beta_min < 1.0:
        raise ValueError(f"parallel tempering needs at least 2 replicas and 0 <= beta_min < 1, "
                         f"found {replicas} and {beta_min}")
    return np.linspace(beta_min, 1.0, replicas)


def tempered_free_energy(energy, x, beta_col, base):
    """F_beta(x) per row, beta_col of shape (rows, 1): (1 - beta) E_A(x) + beta E0(x) - sum softplus(beta c(x))."""
    e0, c = energy.hidden_terms(x)
    beta = ops.reshape(beta_col, (-1,))
    return (1.0 - beta) * -(x @ base) + beta * e0 - ops.sum(ops.softplus(beta_col * c), axis=-1)


def _shift(a, by: int):
    """a[k + by] along axis 0 (by = +1 or -1), the edge row repeated; the masks ignore it."""
    if by > 0:
        return ops.concat([a[1:], a[-1:]], axis=0)
    return ops.concat([a[:1], a[:-1]], axis=0)


def _column(graph, values, like3):
    """Per-row column (K * M, 1) holding values[k] on the rows of replica k."""
    k = len(values)
    return ops.reshape(ops.zeros_like(like3[:, :, :1]) + graph.constant(np.reshape(values, (k, 1, 1))), (-1, 1))


def log_swap_ratios(energy, xs, betas, base):
    """log of the swap ratio of each replica k with k + 1, shape (K, M) (row K-1 is meaningless):
    F_k(x_k) + F_{k+1}(x_{k+1}) - F_{k+1}(x_k) - F_k(x_{k+1}) for xs of shape (K, M, n_visible)."""
    graph, nv = energy.graph, energy.nv
    K = len(betas)
    up = np.append(betas[1:], betas[-1])
    down = np.insert(betas[:-1], 0, betas[0])
    x = ops.reshape(xs, (-1, nv))
    f = {}
    for name, b in (("own", betas), ("up", up), ("down", down)):
        f[name] = ops.reshape(tempered_free_energy(energy, x, _column(graph, b, xs), base), (K, -1))
    return f["own"] + _shift(f["own"], 1) - f["up"] - _shift(f["down"], 1)


def swap_stage(energy, xs, betas, base, parity: int):
    """Metropolis swaps of the pairs (k, k + 1) with k = parity, parity + 2, …; returns
    (new xs, accepted), accepted (K, M) being 1 where pair (k, k + 1) swapped (0 elsewhere)."""
    K = len(betas)
    lower = np.array([1.0 if k % 2 == parity and k + 1 < K else 0.0 for k in range(K)])
    log_r = log_swap_ratios(energy, xs, betas, base)
    u = ops.random_uniform(log_r, stream=energy.graph.new_stream())
    accepted = energy.graph.constant(lower[:, None]) * ops.lt(ops.log(u), log_r)
    partner = _shift(accepted, -1)  # replica k + 1 swaps when pair (k, k + 1) does
    a, p = accepted[:, :, None], partner[:, :, None]
    return xs + a * (_shift(xs, 1) - xs) + p * (_shift(xs, -1) - xs), accepted


def pt_sweep(energy, x, betas, base):
    """One PT sweep of the (K * M, n_visible) state: Gibbs at each replica's beta, then the even
    and the odd swaps. Returns (new state, accepted (K, M): 1 where pair (k, k + 1) swapped)."""
    graph, nv, K = energy.graph, energy.nv, len(betas)
    xs = ops.reshape(x, (K, -1, nv))
    x = ais_transition(energy, x, _column(graph, betas, xs), base)
    xs = ops.reshape(x, (K, -1, nv))
    xs, acc_even = swap_stage(energy, xs, betas, base, 0)
    xs, acc_odd = swap_stage(energy, xs, betas, base, 1)
    return ops.reshape(xs, (-1, nv)), acc_even + acc_odd
