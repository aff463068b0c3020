"""The discrete likelihood, standard errors and the per-pixel histogram baseline.

The categorical likelihood over the grey levels must be a pmf of the data (it sums to
one over the levels and equals a hand computation), its gradient must match central
differences, every Monte Carlo figure's SE must be std(draws, ddof=1)/sqrt(k) of k
independent passes, and the histogram baseline must equal its hand computation.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from gengraph.engine import Graph, compile
from gengraph.plugins.blocks.likelihoods import categorical_log_prob, categorical_logpmf, categorical_mean
from gengraph.plugins.blocks.stats import grid_index, histogram_bpd, histogram_nll, mean_se
from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.models import latent_common
from gengraph.plugins.models.latent_common import run_batched, test_bounds as latent_bounds
from gengraph.plugins.models.vae import plugin as vae

from gengraph.plugins.blocks.layers import init_rng
from gengraph.plugins.datasets import Dataset
from gengraph.plugins.spec.schema import validate

from gradcheck_util import fd_check
from test_vae import TINY, build, check_loss_gradients


def _logp(x, logits, D, L):
    g = Graph(dtype="float64")
    xn, on = g.input("x", x.shape), g.input("out", logits.shape)
    return np.asarray(compile(g, categorical_log_prob(xn, on, D, L)).run(x=x, out=logits))


def test_categorical_pmf_sums_to_one_and_matches_hand_computation():
    L, D = 3, 2
    logits = np.log(np.array([[1.0, 2.0, 3.0], [5.0, 1.0, 2.0]])).reshape(1, D * L)
    # every combination of the two pixels' levels: p(x) summed over the 9 images is 1
    xs = np.array([[a, b] for a in (0, 0.5, 1) for b in (0, 0.5, 1)])
    lp = _logp(xs, np.repeat(logits, len(xs), axis=0), D, L)
    assert lp.shape == (9, 2)
    np.testing.assert_allclose(np.exp(lp.sum(axis=1)).sum(), 1.0, rtol=1e-12)
    # by hand: pixel 0 ~ (1, 2, 3)/6, pixel 1 ~ (5, 1, 2)/8
    np.testing.assert_allclose(np.exp(lp[5]), [2 / 6, 2 / 8], rtol=1e-12)  # x = (0.5, 1)
    np.testing.assert_allclose(np.exp(lp[7]), [3 / 6, 1 / 8], rtol=1e-12)  # x = (1, 0.5)
    np.testing.assert_allclose(lp, categorical_logpmf(xs, np.repeat(logits, 9, 0).reshape(9, D, L), L), rtol=1e-12)
    # 17 levels, random logits: for every pixel the pmf over the 17 values sums to one
    rng = np.random.default_rng(0)
    z = rng.normal(size=(1, 4 * 17)) * 3
    total = sum(np.exp(_logp(np.full((1, 4), k / 16), z, 4, 17)) for k in range(17))
    np.testing.assert_allclose(total, 1.0, rtol=1e-12)
    # the mean is sum_k v_k p_k
    g = Graph(dtype="float64")
    on = g.input("out", logits.shape)
    mean = np.asarray(compile(g, categorical_mean(on, D, L, g)).run(out=logits))
    np.testing.assert_allclose(mean, [[(0 * 1 + 0.5 * 2 + 3) / 6, (0.5 * 1 + 2) / 8]], rtol=1e-12)


def test_categorical_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    D, L = 3, 5
    x = rng.integers(0, L, size=(4, D)) / (L - 1)

    def f(out):
        return categorical_log_prob(out.graph.constant(x), out, D, L)

    fd_check(f, [rng.normal(size=(4, D * L))])
    # with a leading sample axis (S, B, D * L), as the VAE uses it
    fd_check(f, [rng.normal(size=(2, 4, D * L))])


def test_mean_se_is_std_over_sqrt_k():
    m, se = mean_se([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2, rel=1e-15)
    assert math.isnan(mean_se([3.0])[1])  # one draw: no SE claimed


def test_histogram_baseline_matches_hand_computation():
    # 3 levels, 2 pixels; training pixel 0 = (0, 0, 1), pixel 1 = (0.5, 0.5, 0.5)
    x_train = np.array([[0.0, 0.5], [0.0, 0.5], [1.0, 0.5]])
    x_test = np.array([[0.0, 0.0], [0.5, 0.5]])
    # add-one smoothing: p_0 = (3, 1, 2)/6, p_1 = (1, 4, 1)/6
    expected = -np.array([math.log(3 / 6) + math.log(1 / 6), math.log(1 / 6) + math.log(4 / 6)])
    np.testing.assert_allclose(histogram_nll(x_train, x_test, 3), expected, rtol=1e-12)
    assert histogram_bpd(x_train, x_test, 3) == pytest.approx(expected.mean() / (2 * math.log(2)), rel=1e-12)
    with pytest.raises(ValueError, match="not on 3"):
        grid_index(np.array([[0.3]]), 3)


def test_histogram_baseline_on_the_shipped_digits():
    from gengraph.plugins.datasets import make_dataset

    d = make_dataset({"source": "digits", "test_fraction": 0.25, "scale": "minmax_global"}, 0)
    assert histogram_bpd(d.x_train, d.x_test, 17) == pytest.approx(2.4176, abs=1e-4)


def test_vae_reports_bounds_with_their_standard_errors():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, size=(7, 4)) / 4
    cfg = {"latent": 2, **TINY, "likelihood": {"kind": "categorical", "levels": 5},
           "elbo": {"iw_samples": 6, "report_draws": 3}}
    g, m = build(vae, cfg, x)
    for name in ("elbo", "iw"):  # create the programs' random streams, then freeze their state
        m.program(name).run({"x": x})
    state = copy.deepcopy(g.streams.state())
    out = latent_bounds(m, x)
    # replay the same draws by hand: k = 3 passes of the elbo and iw programs
    g.streams.set_state(copy.deepcopy(state))
    iw, elbo = [], []
    for _ in range(3):
        elbo.append(run_batched(m, None, "elbo", lambda s: {"x": x[s]}, len(x))["neg_elbo"].mean())
        iw.append(run_batched(m, None, "iw", lambda s: {"x": x[s]}, len(x))["nll_iw"].mean())
    assert out["test_nll_iw"] == pytest.approx(np.mean(iw), rel=1e-12)
    assert out["test_nll_iw_se"] == pytest.approx(np.std(iw, ddof=1) / math.sqrt(3), rel=1e-9)
    assert out["test_neg_elbo_se"] == pytest.approx(np.std(elbo, ddof=1) / math.sqrt(3), rel=1e-9)
    assert out["test_bpd"] == pytest.approx(out["test_nll_iw"] / (4 * math.log(2)), rel=1e-12)
    assert out["test_bpd_se"] == pytest.approx(out["test_nll_iw_se"] / (4 * math.log(2)), rel=1e-12)
    assert 0 < out["test_nll_iw"] < out["test_neg_elbo"]


def test_categorical_needs_data_on_its_grid():
    x = np.random.default_rng(0).uniform(size=(5, 4))
    with pytest.raises(ModelConfigError, match="not on 17"):
        build(vae, {"latent": 2, **TINY, "likelihood": {"kind": "categorical"}}, x)


# --- a conv decoder for a pmf over grey levels: k output channels per data channel --------------
def _conv_categorical_vae(L=3):
    rng = np.random.default_rng(4)
    x = rng.integers(0, L, size=(5, 1, 4, 4)) / (L - 1)
    cfg = {"latent": 2, "encoder": [{"type": "flatten"}, {"units": 5, "activation": "tanh"}],
           "decoder": [{"units": 8, "activation": "tanh"}, {"type": "reshape", "shape": [2, 2, 2]},
                       {"type": "conv_transpose2d", "channels": 2, "kernel": 4, "stride": 2, "padding": 1,
                        "activation": "tanh"}],
           "likelihood": {"kind": "categorical", "levels": L}}
    data = Dataset(x, None, x, None, "unsupervised", image_shape=(1, 4, 4))
    g = Graph(dtype="float64", seed=0)
    m = vae.build(validate(vae.schema, cfg, path="model"), g, data.flat(), init_rng(0))
    return g, m, data.flat().x_train


def test_conv_decoder_gives_levels_logits_per_pixel():
    L = 3
    g, m, x = _conv_categorical_vae(L)
    hier = m.extras["hierarchy"]
    assert hier.decode_x.out_shape == (L, 4, 4)  # a 3x3 conv to L channels per data channel
    h = g.input("h", (None, 2))
    images = compile(g, hier.decode_x(h)).run(h=np.random.default_rng(0).normal(size=(5, 2)))
    prm = compile(g, hier.x_params(h)).run(h=np.random.default_rng(0).normal(size=(5, 2)))
    # pixel d's L logits sit together, in the flat decoder's layout: value j of pixel (r, c) is channel j
    expected = np.asarray(images).reshape(5, L, 4, 4).transpose(0, 2, 3, 1).reshape(5, 16 * L)
    np.testing.assert_array_equal(np.asarray(prm), expected)
    lp = _logp(x, expected, 16, L)
    np.testing.assert_allclose(lp, categorical_logpmf(x, expected.reshape(5, 16, L), L), rtol=1e-12)


def test_conv_categorical_vae_gradient_matches_finite_differences():
    g, m, x = _conv_categorical_vae()
    assert check_loss_gradients(g, m, x) > 0


def test_iw_bound_does_not_depend_on_the_free_memory(monkeypatch):
    # the IW batch size decides which draws meet which rows: it must not follow the free memory,
    # or the same seed gives another test_nll_iw on another machine (or a minute later)
    import gengraph.plugins.blocks.memory as memory

    g, m, x = _conv_categorical_vae()
    hier, k = m.extras["hierarchy"], m.extras["elbo"]["iw_samples"]
    per_row = 8 * k * latent_common._widest(hier, m.params) * (4 + len(m.params))
    frees = (2 ** 40, 4 * per_row * 2, 4 * per_row)  # before: 5 rows (all), 2 rows, 1 row at once
    rows = []
    for free in frees:
        monkeypatch.setattr(memory, "available_bytes", lambda free=free: free)
        rows.append(latent_common.iw_rows(hier, k, m.params))
    assert len(set(rows)) == 1
    m.program("iw").run({"x": x})  # create the program's random streams, then freeze their state
    state = copy.deepcopy(g.streams.state())
    values = []
    for free in frees:
        monkeypatch.setattr(memory, "available_bytes", lambda free=free: free)
        g.streams.set_state(copy.deepcopy(state))
        values.append(latent_common.nll_iw(m, x)["nll_iw"])
    np.testing.assert_array_equal(values[0], values[1])
    np.testing.assert_array_equal(values[0], values[2])
