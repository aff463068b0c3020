"""Noise schedules of discrete-time diffusion models, as registered objects.

A schedule kind is an object in ``NOISE_SCHEDULES`` (a ``Registry("noise schedule")``)
with a one-line ``help``, a ``schema`` (its keys of ``[model.schedule]``, ``T`` included)
and ``make(cfg) -> DiscreteSchedule``. Users and plugins add their own the same way:

>>> from gengraph.plugins.blocks.noise_schedules import NOISE_SCHEDULES, ScheduleKind, from_betas
>>> class Const(ScheduleKind):
...     help = "every beta_t equal"
...     def make(self, cfg):
...         return from_betas("const", [0.02] * cfg["T"])
>>> NOISE_SCHEDULES.register("const", Const())  # doctest: +SKIP

A ``DiscreteSchedule`` holds, for t = 1..T (array index t - 1), as float64 NumPy arrays:
``betas``, ``alphas = 1 - betas``, ``alpha_bar = prod_{s<=t} alphas_s``, ``snr =
alpha_bar / (1 - alpha_bar)`` and ``gamma = -log snr`` (the VDM notation), with
``alpha_bar_0 = 1`` implied (x_0 is the data). Built-in kinds:

* ``linear`` (Ho et al. 2020): beta_t = linspace(beta_start, beta_end, T).
* ``cosine`` (Nichol & Dhariwal 2021, eq. 17): alpha_bar(t) = f(t)/f(0),
  f(t) = cos^2(((t/T + s)/(1 + s)) pi/2), s = 0.008; beta_t = 1 - alpha_bar(t)/alpha_bar(t-1)
  clipped at max_beta = 0.999, and alpha_bar recomputed as the product of the clipped
  1 - beta_t (as their code does; only the last step is clipped for T >= 2).
* ``sigmoid`` (Jabri, Fleet & Chen 2022, "Scalable Adaptive Computation for Iterative
  Generation", the sigmoid_schedule of their appendix; also Chen 2023, "On the Importance
  of Noise Scheduling for Diffusion Models"): with v(u) = sigmoid(u / tau),
  alpha_bar(t) = (v(end) - v((t/T)(end - start) + start)) / (v(end) - v(start)),
  defaults start = -3, end = 3, tau = 1, discretised and clipped like the cosine schedule.
* ``learned`` (Kingma et al. 2021, VDM): gamma_t = -log SNR_t from a monotone network with
  positive weights, trained with the model by minimising the variational bound (the
  plugin builds it into the graph; see ``LearnedSchedule``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gengraph.plugins.registry import PLUGIN_GROUP, Registry
from gengraph.plugins.spec.schema import Field, Table
from gengraph.engine import Graph, compile
from gengraph.engine import ops
from gengraph.plugins.spec.schema import validate

NOISE_SCHEDULES = Registry("noise schedule", PLUGIN_GROUP, part=True)


def _softplus(x):
    return np.logaddexp(0.0, x)


@dataclass(frozen=True)
class DiscreteSchedule:
    """A variance-preserving schedule for t = 1..T (index t - 1); alpha_bar_0 = 1 implied.

    Stored: ``gamma`` = -log SNR_t (float64), from which everything else is computed in
    numerically careful forms (1 - alpha_bar = sigmoid(gamma) never loses digits near 0).
    """

    name: str
    gamma: np.ndarray  # (T,) = log((1 - alpha_bar_t) / alpha_bar_t), increasing in t

    @property
    def T(self) -> int:
        return int(self.gamma.shape[0])

    # --- the four arrays every schedule gives ------------------------------------------
    @property
    def alpha_bar(self) -> np.ndarray:
        return np.exp(-_softplus(self.gamma))  # sigmoid(-gamma)

    @property
    def one_minus_alpha_bar(self) -> np.ndarray:
        return np.exp(-_softplus(-self.gamma))  # sigmoid(gamma)

    @property
    def betas(self) -> np.ndarray:
        """beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} = sigmoid(g_t) (1 - exp(g_{t-1} - g_t))."""
        g_prev = np.concatenate([[-np.inf], self.gamma[:-1]])
        return -self.one_minus_alpha_bar * np.expm1(g_prev - self.gamma)

    @property
    def alphas(self) -> np.ndarray:
        return 1.0 - self.betas

    @property
    def snr(self) -> np.ndarray:
        return np.exp(-self.gamma)

    # --- quantities of the forward process and its posteriors ---------------------------
    @property
    def alpha_bar_prev(self) -> np.ndarray:
        """alpha_bar_{t-1} for t = 1..T (alpha_bar_0 = 1)."""
        return np.concatenate([[1.0], self.alpha_bar[:-1]])

    @property
    def one_minus_alpha_bar_prev(self) -> np.ndarray:
        return np.concatenate([[0.0], self.one_minus_alpha_bar[:-1]])

    @property
    def beta_tilde(self) -> np.ndarray:
        """Posterior variance of q(x_{t-1} | x_t, x_0): (1 - abar_{t-1}) / (1 - abar_t) beta_t (0 at t = 1)."""
        return self.one_minus_alpha_bar_prev / self.one_minus_alpha_bar * self.betas

    @property
    def posterior_coefs(self) -> tuple[np.ndarray, np.ndarray]:
        """(c0, ct): mean of q(x_{t-1} | x_t, x_0) = c0 x_0 + ct x_t (Ho et al. 2020, eq. 7)."""
        c0 = np.sqrt(self.alpha_bar_prev) * self.betas / self.one_minus_alpha_bar
        ct = np.sqrt(self.alphas) * self.one_minus_alpha_bar_prev / self.one_minus_alpha_bar
        return c0, ct

    def q_moments(self, x0, t: int):
        """Mean and variance of q(x_t | x_0) = N(sqrt(abar_t) x0, (1 - abar_t) I)."""
        return np.sqrt(self.alpha_bar[t - 1]) * np.asarray(x0), float(self.one_minus_alpha_bar[t - 1])

    def arrays(self) -> dict:
        return {"betas": self.betas, "alphas": self.alphas, "alpha_bar": self.alpha_bar, "snr": self.snr}


def from_gamma(name: str, gamma) -> DiscreteSchedule:
    gamma = np.asarray(gamma, dtype=np.float64).reshape(-1)
    if gamma.size < 1:
        raise ValueError("a schedule needs T >= 1 steps")
    if np.any(np.diff(gamma) <= 0):
        raise ValueError(f"schedule {name!r}: the SNR must decrease strictly with t (gamma increase)")
    return DiscreteSchedule(name, gamma)


def from_betas(name: str, betas) -> DiscreteSchedule:
    """A schedule from beta_1..beta_T in (0, 1]; alpha_bar = cumprod(1 - beta), in logs."""
    betas = np.asarray(betas, dtype=np.float64).reshape(-1)
    if np.any(betas <= 0) or np.any(betas >= 1):
        raise ValueError(f"schedule {name!r}: every beta_t must lie in (0, 1)")
    log_abar = np.cumsum(np.log1p(-betas))
    gamma = np.log(-np.expm1(log_abar)) - log_abar  # log(1 - abar) - log(abar)
    return from_gamma(name, gamma)


def from_alpha_bar(name: str, alpha_bar_fn, T: int, max_beta: float = 0.999) -> DiscreteSchedule:
    """Nichol & Dhariwal's discretisation of a continuous alpha_bar(u), u in [0, 1]:
    beta_t = min(1 - alpha_bar(t/T) / alpha_bar((t-1)/T), max_beta)."""
    u = np.arange(T + 1, dtype=np.float64) / T
    abar = np.asarray(alpha_bar_fn(u), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        betas = 1.0 - abar[1:] / abar[:-1]
    betas = np.where(np.isfinite(betas), betas, 1.0)
    return from_betas(name, np.clip(betas, 0.0, max_beta))


# --- schedule kinds ---------------------------------------------------------------------
MAX_T = 1_000_000  # the schedule's tables hold T entries (2^63 steps overflowed into an empty table)


def _T_field(default=1000):
    return Field(int, default, "number of diffusion steps T (t = 1..T)", min=1, max=MAX_T)


class ScheduleKind:
    """Base class: subclasses set help, schema and make(cfg); `learned` kinds build graph."""
    help = ""
    schema = Table({"T": _T_field()})
    learned = False

    def make(self, cfg: dict) -> DiscreteSchedule:
        raise NotImplementedError


class LinearSchedule(ScheduleKind):
    help = "beta_t linear from beta_start to beta_end (Ho et al. 2020)"
    schema = Table({
        "T": _T_field(),
        "beta_start": Field(float, 1e-4, "beta_1", above=0.0, below=1.0),
        "beta_end": Field(float, 0.02, "beta_T", above=0.0, below=1.0),
    }, help=help)

    def make(self, cfg):
        return from_betas("linear", np.linspace(cfg["beta_start"], cfg["beta_end"], cfg["T"]))


def cosine_alpha_bar(u, s=0.008):
    """f(u) / f(0) with f(u) = cos^2(((u + s) / (1 + s)) pi / 2)  (Nichol & Dhariwal 2021, eq. 17)."""
    f = lambda v: np.cos((np.asarray(v, np.float64) + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(u) / f(0.0)


class CosineSchedule(ScheduleKind):
    help = "alpha_bar_t = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2), betas clipped (Nichol & Dhariwal 2021)"
    schema = Table({
        "T": _T_field(),
        "s": Field(float, 0.008, "offset s that keeps beta_t from being too small near t = 0", min=0.0),
        "max_beta": Field(float, 0.999, "betas are clipped at this value", min=0.0, max=1.0),
    }, help=help)

    def make(self, cfg):
        return from_alpha_bar("cosine", lambda u: cosine_alpha_bar(u, cfg["s"]), cfg["T"], cfg["max_beta"])


def sigmoid_alpha_bar(u, start=-3.0, end=3.0, tau=1.0):
    """(v(end) - v(u (end - start) + start)) / (v(end) - v(start)), v(z) = sigmoid(z / tau)
    (Jabri et al. 2022, appendix: sigmoid_schedule)."""
    v = lambda z: 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64) / tau))  # noqa: E731
    return (v(end) - v(np.asarray(u, np.float64) * (end - start) + start)) / (v(end) - v(start))


class SigmoidSchedule(ScheduleKind):
    help = "alpha_bar from a shifted, scaled sigmoid (Jabri et al. 2022), betas clipped"
    schema = Table({
        "T": _T_field(),
        "start": Field(float, -3.0, "sigmoid input at t = 0"),
        "end": Field(float, 3.0, "sigmoid input at t = T"),
        "tau": Field(float, 1.0, "temperature: larger is closer to linear in alpha_bar", min=1e-6),
        "max_beta": Field(float, 0.999, "betas are clipped at this value", min=0.0, max=1.0),
    }, help=help)

    def make(self, cfg):
        if not cfg["end"] > cfg["start"]:
            raise ValueError("sigmoid schedule: end must be greater than start")
        return from_alpha_bar("sigmoid", lambda u: sigmoid_alpha_bar(u, cfg["start"], cfg["end"], cfg["tau"]),
                              cfg["T"], cfg["max_beta"])


def _learned_fields(at_min: str, at_max: str) -> dict:
    """The keys of a learned monotone schedule (its ends named for the time convention)."""
    return {
        "T": _T_field(),
        "gamma_min": Field(float, -13.3, f"initial -log SNR {at_min}"),
        "gamma_max": Field(float, 5.0, f"initial -log SNR {at_max}"),
        "units": Field(int, 64, "hidden units of the monotone network", min=1),
        "learn_endpoints": Field(bool, True, "also learn gamma_min and gamma_max"),
    }


class LearnedSchedule(ScheduleKind):
    """VDM's learned schedule (Kingma et al. 2021, appendix): gamma(u) = -log SNR(u) =
    gamma_min + (gamma_max - gamma_min) (h(u) - h(0)) / (h(1) - h(0)), where
    h(u) = l1(u) + l3(phi(l2(u))) / units is a network whose weights are all positive
    (softplus of free parameters) and phi is increasing, so h and gamma increase strictly
    in u. Discrete time: u_t = (t - 1)/(T - 1) for t = 1..T, so gamma_1 = gamma_min and
    gamma_T = gamma_max; both endpoints are learned (gamma_max = gamma_min + exp(log_span)).

    Any strictly increasing gamma gives a valid forward process (0 < alpha_t < 1), so the
    variational bound stays a bound for every parameter value and the schedule can be
    trained by minimising it (model.loss = "elbo").
    """
    help = "learned monotone SNR schedule (VDM, Kingma et al. 2021), trained on the variational bound"
    learned = True
    schema = Table(_learned_fields("at t = 1", "at t = T"), help=help)

    def make(self, cfg):
        """The schedule at initialisation (the network's starting point), for inspection."""
        g = Graph(dtype="float64")
        gamma, _ = self.build(g, np.random.default_rng(0), cfg)
        return from_gamma("learned", compile(g, gamma).run())

    @staticmethod
    def grid(T: int) -> np.ndarray:
        return np.linspace(0.0, 1.0, T) if T > 1 else np.zeros(1)

    def build(self, graph, rng, cfg):
        """gamma_1..gamma_T as a graph node (T,), and the parameters it creates."""
        T, units = cfg["T"], cfg["units"]
        if not cfg["gamma_max"] > cfg["gamma_min"]:
            raise ValueError("learned schedule: gamma_max must be greater than gamma_min")
        pos = ops.softplus
        with graph.scope("schedule"):
            # u includes 0 and 1 so that the normalisation below uses exact endpoints
            u = graph.constant(np.concatenate([[0.0, 1.0], self.grid(T)])[:, None], name="u")
            w1 = graph.param("l1/W", np.full((1, 1), 0.5413))  # softplus(0.5413) = 1
            b1 = graph.param("l1/b", np.zeros(1))
            w2 = graph.param("l2/W", rng.normal(0.0, 1.0, (1, units)))
            b2 = graph.param("l2/b", rng.normal(0.0, 1.0, units))
            w3 = graph.param("l3/W", rng.normal(0.0, 1.0, (units, 1)))
            b3 = graph.param("l3/b", np.zeros(1))
            h = u @ pos(w1) + b1
            z = ops.sigmoid((2.0 * u - 1.0) @ pos(w2) + b2) * 2.0 - 1.0
            h = h + (z @ pos(w3) + b3) / float(units)
            h = ops.reshape(h, (-1,))
            h0, h1, ht = h[0], h[1], h[2:]
            frac = (ht - h0) / (h1 - h0)
            gmin0, span0 = cfg["gamma_min"], math.log(cfg["gamma_max"] - cfg["gamma_min"])
            if cfg["learn_endpoints"]:
                gmin = graph.param("gamma_min", np.array(gmin0))
                log_span = graph.param("log_span", np.array(span0))
                params = [w1, b1, w2, b2, w3, b3, gmin, log_span]
            else:
                gmin, log_span = graph.constant(gmin0), graph.constant(span0)
                params = [w1, b1, w2, b2, w3, b3]
            gamma = gmin + ops.exp(log_span) * frac
        return gamma, params


class MonotoneGamma:
    """gamma(u) = -log SNR(u) for any u in [0, 1], the network of ``LearnedSchedule`` as a function
    of a graph node u (N, 1) -> (N, 1), for continuous time (VDM): gamma(u) = gamma_min + exp(log_span)
    (h(u) - h(0)) / (h(1) - h(0)), h(u) = l1(u) + l3(2 sigmoid(l2(2u - 1)) - 1) / units with positive
    weights (softplus of free parameters), so gamma increases strictly in u, gamma(0) = gamma_min and
    gamma(1) = gamma_max exactly. Row-wise, so d sum(gamma(u)) / du is gamma'(u) per row."""
    def __init__(self, graph, rng, cfg):
        if not cfg["gamma_max"] > cfg["gamma_min"]:
            raise ValueError("learned schedule: gamma_max must be greater than gamma_min")
        self.graph, self.cfg, self.ops = graph, dict(cfg), ops
        units = cfg["units"]
        with graph.scope("schedule"):
            self.w1 = graph.param("l1/W", np.full((1, 1), 0.5413))  # softplus(0.5413) = 1
            self.b1 = graph.param("l1/b", np.zeros(1))
            self.w2 = graph.param("l2/W", rng.normal(0.0, 1.0, (1, units)))
            self.b2 = graph.param("l2/b", rng.normal(0.0, 1.0, units))
            self.w3 = graph.param("l3/W", rng.normal(0.0, 1.0, (units, 1)))
            self.b3 = graph.param("l3/b", np.zeros(1))
            self.params = [self.w1, self.b1, self.w2, self.b2, self.w3, self.b3]
            gmin0, span0 = cfg["gamma_min"], math.log(cfg["gamma_max"] - cfg["gamma_min"])
            if cfg["learn_endpoints"]:
                self.gmin = graph.param("gamma_min", np.array(gmin0))
                self.log_span = graph.param("log_span", np.array(span0))
                self.params += [self.gmin, self.log_span]
            else:
                self.gmin, self.log_span = graph.constant(gmin0), graph.constant(span0)

    def h(self, u):
        ops, pos = self.ops, self.ops.softplus
        z = ops.sigmoid((2.0 * u - 1.0) @ pos(self.w2) + self.b2) * 2.0 - 1.0
        return u @ pos(self.w1) + self.b1 + (z @ pos(self.w3) + self.b3) / float(self.cfg["units"])

    def __call__(self, u):
        g = self.graph
        with g.scope("schedule"):
            ends = self.h(g.constant(np.array([[0.0], [1.0]])))
            h0, h1 = ends[0:1, :], ends[1:2, :]
            return self.gmin + self.ops.exp(self.log_span) * (self.h(u) - h0) / (h1 - h0)


class LearnedVDMSchedule(LearnedSchedule):
    """The learned schedule for both times: in discrete time exactly ``learned``; in continuous time
    (``model.time = "continuous"``) the same network evaluated at any t in [0, 1] (``network``).
    T is then the number of ancestral sampling steps."""

    help = "learned monotone -log SNR(t) network (VDM), for discrete or continuous time (t in [0, 1])"
    schema = Table(_learned_fields("at t = 0 (continuous) / t = 1 (discrete)",
                                   "at t = 1 (continuous) / t = T (discrete)"), help=help)

    def network(self, graph, rng, cfg) -> MonotoneGamma:
        return MonotoneGamma(graph, rng, cfg)


NOISE_SCHEDULES.register("linear", LinearSchedule())
NOISE_SCHEDULES.register("cosine", CosineSchedule())
NOISE_SCHEDULES.register("sigmoid", SigmoidSchedule())
NOISE_SCHEDULES.register("learned", LearnedSchedule())
NOISE_SCHEDULES.register("learned_vdm", LearnedVDMSchedule())


def make_noise_schedule(cfg: dict) -> DiscreteSchedule:
    """The schedule a [model.schedule] table describes (kind + its keys; defaults filled)."""
    kind = NOISE_SCHEDULES.get(cfg["kind"])
    return kind.make(validate(kind.schema, {k: v for k, v in cfg.items() if k != "kind"}, path="model.schedule"))
