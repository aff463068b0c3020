"""Reverse-process samplers of diffusion models, as registered objects.

Every sampler here moves x_t to x_{t'} (t' < t) with one update of the same form,

    x_{t'} = a * x0_hat + b * eps_hat + sigma * z,     z ~ N(0, I),

where x0_hat and eps_hat are the network's estimates at (x_t, t) (whatever it predicts,
they are consistent: x_t = sqrt(abar_t) x0_hat + sqrt(1 - abar_t) eps_hat). A sampler
is just the list of `Step(t, t_next, a, b, sigma)` it takes; the plugin compiles one
program for a reverse step (inputs x_t, t, noise, a, b, sigma) and `run_steps` loops
over the list in Python.

* ``ddpm`` (Ho et al. 2020, Algorithm 2): t -> t-1 for t = T..1 with the mean of
  q(x_{t-1} | x_t, x0_hat), mu = c0 x0_hat + ct x_t, so a = c0 + ct sqrt(abar_t),
  b = ct sqrt(1 - abar_t); sigma^2 = beta_tilde_t or beta_t; no noise at the last step
  (x_0 is the mean of p(x_0 | x_1)).
* ``ddim`` (Song, Meng & Ermon 2021, eq. 12): on a sub-sequence tau_1 < ... < tau_S = T
  of timesteps (tau_0 = 0), a = sqrt(abar_prev), b = sqrt(1 - abar_prev - sigma^2),
  sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev).
  With eta = 1 and all T steps this is DDPM with beta_tilde (the tests check it).

A third-party sampler registers like the built-ins: ``SAMPLERS.register("mine", obj)``
with ``help``, ``schema`` and ``steps(schedule, cfg, model_variance) -> list[Step]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gengraph.engine import to_numpy
from gengraph.plugins.blocks.noise_schedules import DiscreteSchedule
from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.registry import PLUGIN_GROUP, Registry
from gengraph.plugins.spec.schema import Field, Table
from gengraph.plugins.spec.schema import validate

SAMPLERS = Registry("sampler", PLUGIN_GROUP, part=True)


@dataclass(frozen=True)
class Step:
    t: int  # time of the input x_t (1..T)
    t_next: int  # time of the output (0 = data)
    a: float  # coefficient of x0_hat
    b: float  # coefficient of eps_hat
    sigma: float  # standard deviation of the added noise


_CLIP = Field(bool, False, "clip x0_hat to [-1, 1] at every step (for data scaled to [-1, 1])")


class SamplerKind:
    help = ""
    schema = Table({"clip_x0": _CLIP})

    def steps(self, sched: DiscreteSchedule, cfg: dict, model_variance: str = "beta_tilde") -> list[Step]:
        raise NotImplementedError


class DDPM(SamplerKind):
    help = "ancestral sampling from p(x_{t-1}|x_t), t = T..1 (Ho et al. 2020)"
    schema = Table({
        "variance": Field(str, "model", 'variance of p(x_{t-1}|x_t): "model" (model.variance), "beta_tilde" '
                          "(posterior variance) or \"beta\"", choices=["model", "beta_tilde", "beta"]),
        "clip_x0": _CLIP,
    }, help=help)

    def steps(self, sched, cfg, model_variance="beta_tilde"):
        variance = model_variance if cfg.get("variance", "model") == "model" else cfg["variance"]
        c0, ct = sched.posterior_coefs
        var = sched.beta_tilde if variance == "beta_tilde" else sched.betas
        sa, sb = np.sqrt(sched.alpha_bar), np.sqrt(sched.one_minus_alpha_bar)
        out = []
        for t in range(sched.T, 0, -1):
            i = t - 1
            sigma = 0.0 if t == 1 else float(np.sqrt(var[i]))
            out.append(Step(t, t - 1, float(c0[i] + ct[i] * sa[i]), float(ct[i] * sb[i]), sigma))
        return out


def ddim_timesteps(T: int, steps: int) -> np.ndarray:
    """tau_1 < ... < tau_S: S (<= T) timesteps evenly spaced over 1..T, always with 1 and T."""
    steps = T if steps <= 0 else min(steps, T)
    if steps == 1:
        return np.array([T])
    return np.unique(np.round(np.linspace(1, T, steps)).astype(int))


class DDIM(SamplerKind):
    help = "DDIM (Song et al. 2021): eta = 0 deterministic, eta = 1 ancestral; fewer steps on a sub-sequence"
    schema = Table({
        # above 1, sigma^2 would exceed 1 - abar_prev: the step could not keep q(x_t'|x_0)'s variance
        "eta": Field(float, 0.0, "noise scale in [0, 1]: 0 deterministic DDIM, 1 DDPM-like", min=0.0, max=1.0),
        "steps": Field(int, 0, "number of sampling steps (0: all T)", min=0),
        "clip_x0": _CLIP,
    }, help=help)

    def steps(self, sched, cfg, model_variance="beta_tilde"):
        if cfg.get("steps", 0) > sched.T:  # `gengraph sample --steps`: the spec's value was checked at build
            raise ModelConfigError("steps", f"DDIM takes at most T = {sched.T} steps (one per timestep), "
                                            f"found {cfg['steps']}")
        taus = ddim_timesteps(sched.T, cfg.get("steps", 0))
        eta = cfg.get("eta", 0.0)
        log_abar = -np.logaddexp(0.0, sched.gamma)  # log sigmoid(-gamma)
        om = sched.one_minus_alpha_bar
        out = []
        for k in range(len(taus) - 1, -1, -1):
            t, tp = int(taus[k]), int(taus[k - 1]) if k > 0 else 0
            om_t = om[t - 1]
            if tp == 0:  # to the data: abar_0 = 1, sigma = 0
                log_ab_p, om_p, one_minus_ratio = 0.0, 0.0, om_t
            else:  # 1 - abar_t / abar_prev without cancellation
                log_ab_p, om_p = log_abar[tp - 1], om[tp - 1]
                one_minus_ratio = -np.expm1(log_abar[t - 1] - log_ab_p)
            sigma2 = eta ** 2 * (om_p / om_t) * one_minus_ratio
            b2 = max(om_p - sigma2, 0.0)
            out.append(Step(t, tp, float(np.exp(0.5 * log_ab_p)), float(np.sqrt(b2)), float(np.sqrt(sigma2))))
        return out


SAMPLERS.register("ddpm", DDPM())
SAMPLERS.register("ddim", DDIM())


def sampler_steps(cfg: dict, sched: DiscreteSchedule, model_variance: str = "beta_tilde") -> list[Step]:
    """The steps of the sampler a [model.sampler] table names (defaults filled)."""
    kind = SAMPLERS.get(cfg["kind"])
    return kind.steps(sched, validate(kind.schema, {k: v for k, v in cfg.items() if k != "kind"},
                                      path="model.sampler"), model_variance)


def run_steps(step_fn, steps: list[Step], x, rng: np.random.Generator, record=()):
    """Apply the steps to x = x_T; step_fn(x, t, noise, a, b, sigma) -> x_next.

    Returns (x_0, {t: x_t}) with snapshots at the times in `record` that the steps visit
    (the start x_T included). Noise is drawn from rng for every step, even when sigma = 0,
    so two samplers with the same steps use the same numbers.
    """
    record = set(int(r) for r in record)
    snaps = {}
    shape = np.shape(x)
    if steps and steps[0].t in record:
        snaps[steps[0].t] = _host(x)
    for s in steps:  # x may stay on the device between steps (step_fn's choice): copied back only when recorded
        noise = rng.standard_normal(shape)
        x = step_fn(x, s.t, noise, s.a, s.b, s.sigma)
        if s.t_next in record:
            snaps[s.t_next] = _host(x)
    return _host(x), snaps


def _host(x):
    """A float64 NumPy copy of x (NumPy or CuPy)."""
    return np.array(to_numpy(x), dtype=np.float64, copy=True)
