"""Noise schedules: values against the published formulas, the forward process's closed form,
the posterior q(x_{t-1} | x_t, x_0), the registry and the learned (VDM) schedule."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from gengraph.plugins.blocks.noise_schedules import (
    NOISE_SCHEDULES,
    ScheduleKind,
    from_betas,
    from_gamma,
    make_noise_schedule,
)
from gengraph.plugins.registry import UnknownKind
from gengraph.plugins.spec.schema import Field, Table


def sched(kind, **kw):
    defaults = {
        "linear": {"T": 1000, "beta_start": 1e-4, "beta_end": 0.02},
        "cosine": {"T": 1000, "s": 0.008, "max_beta": 0.999},
        "sigmoid": {"T": 1000, "start": -3.0, "end": 3.0, "tau": 1.0, "max_beta": 0.999},
        "learned": {"T": 50, "gamma_min": -13.3, "gamma_max": 5.0, "units": 16, "learn_endpoints": True},
    }[kind]
    return make_noise_schedule({"kind": kind, **{**defaults, **kw}})


ALL = [("linear", {"T": 50, "beta_start": 1e-3, "beta_end": 0.2}), ("cosine", {"T": 50}), ("sigmoid", {"T": 50}),
       ("learned", {"T": 50})]


def test_linear_matches_ho_et_al():
    s = sched("linear")
    betas = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(s.betas, betas, rtol=1e-9, atol=1e-15)
    # alpha_bar_T = prod_t (1 - beta_t), computed independently as exp(fsum(log1p(-beta)))
    expected = math.exp(math.fsum(math.log1p(-b) for b in betas))
    assert s.alpha_bar[-1] == pytest.approx(expected, rel=1e-9)
    assert s.alpha_bar[-1] == pytest.approx(4.0358e-5, abs=5e-10)  # the "approx 4.04e-5" of the issue
    assert s.alpha_bar[0] == pytest.approx(1 - 1e-4, rel=1e-12)
    assert s.T == 1000


def test_cosine_matches_nichol_dhariwal():
    T, s_off = 1000, 0.008
    s = sched("cosine")
    f = lambda t: math.cos((t / T + s_off) / (1 + s_off) * math.pi / 2) ** 2  # noqa: E731
    expected = np.array([f(t) / f(0) for t in range(1, T + 1)])
    # unclipped steps: alpha_bar is exactly the formula (the product of the ratios telescopes)
    np.testing.assert_allclose(s.alpha_bar[:-1], expected[:-1], rtol=1e-9)
    assert s.alpha_bar[499] == pytest.approx(f(500) / f(0), rel=1e-10)
    # at t = T the formula gives alpha_bar = 0, beta = 1: clipped to 0.999
    assert expected[-1] < 1e-30
    assert s.betas[-1] == pytest.approx(0.999, abs=1e-12)
    assert s.betas.max() <= 0.999 + 1e-12
    assert s.alpha_bar[-1] == pytest.approx(s.alpha_bar[-2] * 0.001, rel=1e-9)
    # beta_1 from the formula
    assert s.betas[0] == pytest.approx(1 - f(1) / f(0), rel=1e-8)


def test_cosine_clipping_recomputes_alpha_bar():
    s = sched("cosine", T=20, max_beta=0.3)
    assert s.betas.max() == pytest.approx(0.3, abs=1e-12)
    assert (s.betas > 0.3 - 1e-12).sum() > 1  # several steps clipped
    np.testing.assert_allclose(s.alpha_bar, np.cumprod(1 - s.betas), rtol=1e-10)


def test_sigmoid_matches_jabri_et_al():
    T, start, end, tau = 1000, -3.0, 3.0, 1.0
    s = sched("sigmoid")
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731

    def abar(u):  # Jabri et al. 2022, appendix, sigmoid_schedule (without its clip_min)
        v_start, v_end = sig(start / tau), sig(end / tau)
        return (v_end - sig((u * (end - start) + start) / tau)) / (v_end - v_start)

    expected = np.array([abar(t / T) for t in range(1, T + 1)])
    np.testing.assert_allclose(s.alpha_bar[:-1], expected[:-1], rtol=1e-8)
    assert abar(0.0) == pytest.approx(1.0)
    assert s.betas[-1] == pytest.approx(0.999)
    s2 = sched("sigmoid", T=100, start=0.0, end=3.0, tau=0.7)
    np.testing.assert_allclose(s2.alpha_bar[10], (sig(3 / 0.7) - sig((0.11 * 3) / 0.7)) / (sig(3 / 0.7) - sig(0)),
                               rtol=1e-8)


@pytest.mark.parametrize("kind,kw", ALL)
def test_arrays_are_consistent(kind, kw):
    s = sched(kind, **kw)
    a = s.arrays()
    assert set(a) == {"betas", "alphas", "alpha_bar", "snr"}
    assert all(v.shape == (s.T,) and v.dtype == np.float64 for v in a.values())
    np.testing.assert_allclose(a["alphas"], 1 - a["betas"], rtol=1e-12)
    np.testing.assert_allclose(a["alpha_bar"], np.cumprod(a["alphas"]), rtol=1e-9)
    np.testing.assert_allclose(a["snr"], a["alpha_bar"] / (1 - a["alpha_bar"]), rtol=1e-9)
    assert np.all(np.diff(a["alpha_bar"]) < 0) and np.all((a["betas"] > 0) & (a["betas"] < 1))
    np.testing.assert_allclose(s.gamma, -np.log(a["snr"]), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind,kw", ALL)
def test_closed_form_equals_composed_transitions(kind, kw):
    """q(x_t|x_0) = N(sqrt(abar_t) x0, 1 - abar_t) vs composing q(x_s|x_{s-1}) = N(sqrt(alpha_s) x, beta_s)."""
    s = sched(kind, **kw)
    x0 = np.array([1.5, -0.3, 0.0])
    mean, var = x0.copy(), 0.0
    for t in range(1, s.T + 1):
        mean = math.sqrt(s.alphas[t - 1]) * mean
        var = s.alphas[t - 1] * var + s.betas[t - 1]
        m_closed, v_closed = s.q_moments(x0, t)
        np.testing.assert_allclose(mean, m_closed, rtol=1e-9, atol=1e-14)
        assert var == pytest.approx(v_closed, rel=1e-9)


def test_closed_form_matches_simulated_chain():
    s = sched("linear", T=40, beta_start=1e-3, beta_end=0.1)
    rng = np.random.default_rng(0)
    n, x0 = 200_000, 1.5
    x = np.full(n, x0)
    for t in range(1, s.T + 1):
        x = math.sqrt(s.alphas[t - 1]) * x + math.sqrt(s.betas[t - 1]) * rng.standard_normal(n)
        if t in (10, 40):
            m, v = s.q_moments(x0, t)
            assert abs(x.mean() - m) < 4 * math.sqrt(v / n)
            assert abs(x.var() - v) < 4 * v * math.sqrt(2 / n)


@pytest.mark.parametrize("kind,kw", ALL[:2])
def test_posterior_by_gaussian_conditioning(kind, kw):
    """q(x_{t-1}|x_t,x_0): the c0, ct and beta_tilde formulas vs conditioning the joint Gaussian."""
    s = sched(kind, **kw)
    c0, ct = s.posterior_coefs
    x0, xt = 0.7, -0.4
    for t in (2, 7, s.T):
        ab_p, a_t, b_t = s.alpha_bar[t - 2], s.alphas[t - 1], s.betas[t - 1]
        m1, v1 = math.sqrt(ab_p) * x0, 1 - ab_p  # x_{t-1} | x0
        m2, v2 = math.sqrt(a_t) * m1, a_t * v1 + b_t  # x_t | x0
        cov = math.sqrt(a_t) * v1
        assert c0[t - 1] * x0 + ct[t - 1] * xt == pytest.approx(m1 + cov / v2 * (xt - m2), rel=1e-9)
        assert s.beta_tilde[t - 1] == pytest.approx(v1 - cov ** 2 / v2, rel=1e-8)
    assert s.beta_tilde[0] == 0.0 and c0[0] == pytest.approx(1.0) and ct[0] == 0.0


def test_registry_takes_user_schedules():
    assert {"linear", "cosine", "sigmoid", "learned"} <= set(NOISE_SCHEDULES.names())

    class Constant(ScheduleKind):
        help = "every beta_t equal"
        schema = Table({"T": Field(int, 10, "steps"), "beta": Field(float, 0.1, "the beta")})

        def make(self, cfg):
            return from_betas("constant", [cfg["beta"]] * cfg["T"])

    NOISE_SCHEDULES.register("test_constant", Constant(), replace=True)
    s = make_noise_schedule({"kind": "test_constant", "T": 5, "beta": 0.1})
    np.testing.assert_allclose(s.alpha_bar, 0.9 ** np.arange(1, 6))
    with pytest.raises(UnknownKind, match='did you mean "cosine"'):
        NOISE_SCHEDULES.get("cosin")


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError):
        from_betas("bad", [0.1, 0.0, 0.2])
    with pytest.raises(ValueError):
        from_gamma("bad", [1.0, 0.5])  # SNR must decrease


def test_learned_schedule_is_monotone_with_exact_endpoints():
    from gengraph.engine import Graph, compile
    from gengraph.plugins.blocks.noise_schedules import LearnedSchedule

    s = sched("learned")
    assert s.gamma[0] == pytest.approx(-13.3, abs=1e-9) and s.gamma[-1] == pytest.approx(5.0, abs=1e-9)
    assert np.all(np.diff(s.gamma) > 0)
    # any parameter values (negative raw weights included) keep gamma strictly increasing
    kind = LearnedSchedule()
    g = Graph(dtype="float64")
    gamma, params = kind.build(g, np.random.default_rng(1), {"T": 30, "gamma_min": -5.0, "gamma_max": 3.0,
                                                               "units": 8, "learn_endpoints": True})
    prog = compile(g, gamma)
    rng = np.random.default_rng(2)
    for _ in range(20):
        for p in params:
            g.set_value(p, rng.normal(0, 3, g.value(p).shape))
        assert np.all(np.diff(prog.run()) > 0)


@pytest.mark.parametrize("key, value, message", [
    ("beta_start", 0.0, "model.schedule.beta_start: must be > 0.0, found 0.0"),
    ("beta_end", 1.0, "model.schedule.beta_end: must be < 1.0, found 1.0"),
    ("beta_start", -1e-3, "model.schedule.beta_start: must be > 0.0, found -0.001"),
])
def test_linear_betas_out_of_the_open_interval_are_named_at_their_key(key, value, message):
    # beta_start = 0 was reported at model.schedule ("every beta_t must lie in (0, 1)")
    import gengraph
    from gengraph.plugins.spec.errors import SpecError

    with pytest.raises(SpecError, match=re.escape(message)):
        gengraph.validate("diffusion_digits", {f"model.schedule.{key}": value})
