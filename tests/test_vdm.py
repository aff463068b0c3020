"""The continuous-time VDM (diffusion with time = "continuous", plugins/models/vdm.py).

gamma(t) is monotone with the declared end points and its engine derivative is gamma';
the Monte Carlo estimate of the diffusion term matches a numerical integral of the same
integrand within its SE; the T-step discrete-time term converges to it; the loss gradient
(second order through gamma') matches central differences; the spec runs shortened.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest

from gengraph.engine import Graph, compile, grad
from gengraph.engine.gradcheck import central_differences, compare
from gengraph.plugins.datasets import Dataset
from gengraph.plugins.models import diffusion as dfn
from gengraph.plugins.models import vdm
from gengraph.plugins.run.loading import load
from gengraph.plugins.run.runner import execute
from gengraph.plugins.spec.schema import validate

SPECS = Path(__file__).resolve().parents[1] / "specs"


def tiny_vdm(seed=3, **over):
    cfg = {"time": "continuous", "levels": 3, "symmetric": True, "prediction": "epsilon", "loss": "elbo",
           "fourier_features": [1, 2], "layers": [{"units": 6, "activation": "tanh"}],
           "time_embedding": {"kind": "scalar"}, "bound_samples": 2,
           "schedule": {"kind": "learned_vdm", "T": 8, "units": 3, "gamma_min": -6.0, "gamma_max": 4.0}}
    sign = over.pop("data_sign", 1)  # -1: data on [-1, 0]
    cfg.update(over)
    x = sign * np.random.default_rng(seed).integers(0, 3, size=(6, 2)) / 2.0
    data = Dataset(x, None, x.copy(), None, "unsupervised")
    g = Graph(dtype="float64", seed=seed)
    model = dfn.plugin.build(validate(dfn.plugin.schema, cfg, path="model"), g, data, np.random.default_rng(1))
    return model, data


def integrand(model, x, eps, t):
    """1/2 gamma'(t) ||eps - eps_hat(z_t, t)||^2 per row of x at times t."""
    res = model.program("bound_terms").run(x=x, t=np.asarray(t, np.float64), eps=eps, eps0=eps)
    return np.asarray(res["diffusion"], np.float64)


def quadrature(model, x, eps, nodes=200):
    """Gauss-Legendre integral over t in [0, 1] of the integrand, per row."""
    u, w = np.polynomial.legendre.leggauss(nodes)
    t, w = (u + 1) / 2, w / 2
    return sum(wi * integrand(model, x, eps, np.full(len(x), ti)) for ti, wi in zip(t, w))


def test_gamma_is_monotone_with_its_end_points_and_engine_derivative():
    model, data = tiny_vdm()
    g = model.graph
    for trial in range(3):
        if trial:  # any parameter values: still monotone (positive weights)
            rng = np.random.default_rng(trial)
            for p in model.extras["gamma_net"].params[:6]:
                g.set_value(p, rng.normal(0, 2, size=g.value(p).shape))
        grid = np.linspace(0.0, 1.0, 2001)
        gam = vdm.gamma_at(model, grid)
        assert np.all(np.diff(gam) > 0)
        np.testing.assert_allclose(gam[[0, -1]], [-6.0, 4.0], rtol=1e-12)
        # gamma' from the engine's grad vs central differences of gamma
        t = np.array([0.05, 0.3, 0.5, 0.77, 0.95])
        x = np.zeros((5, 2))
        res = model.program("bound_terms").run(x=x, t=t, eps=x, eps0=x)
        h = 1e-6
        numeric = (vdm.gamma_at(model, t + h) - vdm.gamma_at(model, t - h)) / (2 * h)
        np.testing.assert_allclose(res["dgamma"], numeric, rtol=1e-6)


def test_monte_carlo_estimate_matches_numerical_integral():
    model, data = tiny_vdm()
    rng = np.random.default_rng(0)
    x1, e1 = data.x_train[:1], rng.standard_normal((1, 2))
    exact = quadrature(model, x1, e1)[0]
    n = 4000
    x, eps = np.repeat(x1, n, 0), np.repeat(e1, n, 0)
    f = integrand(model, x, eps, rng.uniform(size=n))  # iid t
    mc, se = f.mean(), f.std(ddof=1) / math.sqrt(n)
    assert abs(mc - exact) < 4 * se
    assert se < 0.05 * abs(exact)
    # low-discrepancy times frac(u + i/n): unbiased, and much closer than the iid SE
    lds = [integrand(model, x[:64], eps[:64], vdm.low_discrepancy_numpy(rng, 64)).mean() for _ in range(20)]
    assert abs(np.mean(lds) - exact) < 4 * np.std(lds, ddof=1) / math.sqrt(20) + 1e-12
    assert np.std(lds, ddof=1) < 0.5 * f.std(ddof=1) / math.sqrt(64)


def test_training_times_are_low_discrepancy():
    model, data = tiny_vdm()
    prog = compile(model.graph, {"t": model.extras["t_train"]})
    t = np.sort(np.asarray(prog.run(x=np.zeros((8, 2)))["t"]))
    assert np.all((t >= 0) & (t < 1))
    np.testing.assert_allclose(np.diff(t), 1 / 8, atol=1e-12)


def test_discrete_time_term_converges_to_the_continuous_one():
    model, data = tiny_vdm()
    x = data.x_train
    eps = np.random.default_rng(5).standard_normal(x.shape)
    exact = quadrature(model, x, eps)
    errs = [np.abs(vdm.discrete_diffusion_term(model, x, eps, T) - exact).max() for T in (10, 100, 1000)]
    # first order in 1/T: expm1(dg) = dg + dg^2/2 + ... and a one-sided Riemann sum
    assert errs[0] / errs[1] > 5 and errs[1] / errs[2] > 5
    assert errs[2] < 1e-2 * np.abs(exact).max()


def assert_loss_gradient_matches(model, data, entries=None):
    """grad of the VDM loss against central differences with the random streams frozen, for every
    parameter: all its entries, or `entries` drawn ones. Returns the labels checked."""
    g = model.graph
    prog = compile(g, [model.loss] + grad(model.loss, model.params))
    for stream in (vdm.EPS_STREAM, vdm.T_STREAM, vdm.EPS0_STREAM):
        g.streams.rng(stream)
    state = copy.deepcopy(g.streams.state())
    x = data.x_train

    def run():
        g.streams.set_state(copy.deepcopy(state))
        return prog.run(x=x)

    out = run()
    assert np.isfinite(out[0])
    pick = np.random.default_rng(0)
    names = set()
    for p, analytic in zip(model.params, out[1:]):
        if entries is None:
            numeric = central_differences(lambda: run()[0], g.values[p.id], eps=1e-6)
        else:
            size = g.values[p.id].size
            idx = pick.choice(size, min(size, entries), replace=False)
            numeric = central_differences(lambda: run()[0], g.values[p.id], eps=1e-6, index=idx)
            analytic = np.asarray(analytic).reshape(-1)[idx]
        row = compare(p.label, analytic, numeric, rtol=1e-5, atol=1e-7)
        assert row.ok, row
        names.add(p.label)
    return names


def assert_dropout_only_in_training(plain, dropped, x):
    """`dropped` (the same weights with dropout layers) gives `plain`'s bound terms exactly (the
    evaluation programs leave dropout out), while its training program draws masks."""
    rng = np.random.default_rng(2)
    feeds = dict(x=x, t=rng.uniform(size=len(x)), eps=rng.standard_normal(x.shape), eps0=rng.standard_normal(x.shape))
    a, b = plain.program("bound_terms").run(**feeds), dropped.program("bound_terms").run(**feeds)
    for k in ("prior", "reconstruction", "diffusion"):
        np.testing.assert_array_equal(a[k], b[k])
    train = compile(dropped.graph, {"d": dropped.extras["train_terms"]["diffusion"]}, training=True)
    assert {"dropout", "dropout_mask"} & {n.op for n in train.nodes}


@pytest.mark.parametrize("level_posterior", [False, True])
def test_vdm_loss_gradient_matches_finite_differences(level_posterior):
    names = assert_loss_gradient_matches(*tiny_vdm(level_posterior=level_posterior))
    assert {"schedule/gamma_min", "schedule/log_span", "schedule/l2/W"} <= names


def test_decoder_is_a_pmf_over_the_levels():
    model, data = tiny_vdm()
    z = np.random.default_rng(2).normal(size=(4, 2))
    probs = np.asarray(model.program("decode").run(z=z)["probs"])
    assert probs.shape == (4, 2, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-12)
    # by hand: softmax_k(-(z - a0 v_k)^2 / (2 s0^2)), v = (-1, 0, 1), gamma_0 = -6
    a0, s2 = math.sqrt(1 / (1 + math.exp(-6.0))), 1 / (1 + math.exp(6.0))
    logits = -(z[..., None] - a0 * np.array([-1.0, 0.0, 1.0])) ** 2 / (2 * s2)
    ref = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(probs, ref / ref.sum(-1, keepdims=True), rtol=1e-9, atol=1e-300)


def test_unsymmetric_data_lie_on_the_decoders_0_to_1_grid():
    # symmetric = false puts the decoder's levels on [0, 1], but the data were checked against
    # [-1, 1]: [0, 1] data were refused, and [-1, 1] data were accepted with the negative pixels
    # getting no decoder term (an empty one-hot), so the reported "bound" was not one
    model, data = tiny_vdm(symmetric=False)  # x in {0, 0.5, 1}: accepted now
    x = data.x_test
    res = model.program("bound_terms").run(x=x, t=np.full(len(x), 0.5), eps=np.zeros_like(x),
                                             eps0=np.zeros_like(x))
    probs = np.asarray(model.program("decode").run(z=np.sqrt(1 / (1 + math.exp(-6.0))) * x)["probs"])
    picked = np.take_along_axis(probs, np.rint(2 * x).astype(int)[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(res["reconstruction"]), -np.log(picked).sum(-1), rtol=1e-9)
    with pytest.raises(dfn.ModelConfigError, match="values from 0 to 1"):
        tiny_vdm(seed=4, symmetric=False, data_sign=-1)


def test_config_errors():
    with pytest.raises(dfn.ModelConfigError, match="learned_vdm"):
        tiny_vdm(schedule={"kind": "linear", "T": 4})
    with pytest.raises(dfn.ModelConfigError, match="epsilon"):
        tiny_vdm(prediction="v")
    # the discrete-time sampler's keys were taken and ignored
    with pytest.raises(dfn.ModelConfigError, match='"ddim" is a discrete-time sampler') as err:
        tiny_vdm(sampler={"kind": "ddim", "steps": 3})
    assert err.value.path == "model.sampler.kind"
    with pytest.raises(dfn.ModelConfigError, match="posterior variance") as err:
        tiny_vdm(variance="beta")
    assert err.value.path == "model.variance"


@pytest.mark.parametrize("spec,epochs", [("vdm_digits", 2), ("vdm_unet_digits", 1)])
def test_vdm_spec_short_run(tmp_path, spec, epochs):
    s = execute(load(SPECS / f"{spec}.toml", [f"train.epochs={epochs}", "model.bound_samples=3", "model.schedule.T=10",
                                              "output.samples=6"]), tmp_path / "vdm")
    assert math.isfinite(s["test_bpd"]) and 0 < s["test_bpd_se"] < 0.05 * s["test_bpd"]
    assert s["test_bpd"] == pytest.approx(s["test_nll_bound"] / (64 * math.log(2)), rel=1e-12)
    assert s["test_nll_bound"] == pytest.approx(s["test_prior_term"] + s["test_reconstruction_term"]
                                                + s["test_diffusion_term"], rel=1e-9)
    assert s["baseline_histogram_bpd"] == pytest.approx(2.4176, abs=1e-4)
    assert s["log_snr_0"] > s["log_snr_1"]
    samples = np.load(tmp_path / "vdm" / "samples.npy", allow_pickle=False)
    assert samples.shape == (6, 1, 8, 8) and np.all(np.isin(samples, np.arange(17)))


def test_level_posterior_denoiser_is_exact_at_low_noise():
    model, data = tiny_vdm(level_posterior=True, schedule={"kind": "learned_vdm", "T": 8, "units": 3,
                                                          "gamma_min": -14.0, "gamma_max": 4.0})
    x = data.x_train
    eps = np.random.default_rng(0).standard_normal(x.shape)
    res = model.program("bound_terms").run(x=x, t=np.zeros(len(x)), eps=eps, eps0=eps)
    assert np.max(res["sq"]) < 1e-6  # sigma_0 = 1e-3: each pixel's level is certain, eps_hat = eps


def test_dropout_in_the_denoiser_is_off_in_the_bound():
    """vdm_digits regularises with dropout layers: the reported bound's program must be the network
    without them (same weights: dropout has no parameters), while training draws masks."""
    plain = [{"units": 6, "activation": "tanh"}]
    dropped = [{"units": 6, "activation": "tanh"}, {"type": "dropout", "p": 0.5}]
    (m1, data), (m2, _) = tiny_vdm(layers=plain, level_posterior=True), tiny_vdm(layers=dropped, level_posterior=True)
    assert_dropout_only_in_training(m1, m2, data.x_train)


# --- the U-Net denoiser (model.network.kind = "unet") ------------------------------------------
UNET = {"kind": "unet", "channels": [4], "blocks": 1, "attention": True, "groups": 2, "time_dim": 4}


def tiny_vdm_unet(seed=3, shape=(2, 4, 4), n=5, **over):
    """A continuous-time VDM with a one-level U-Net on n random images of `shape` (3 grey levels)."""
    cfg = {"time": "continuous", "levels": 3, "symmetric": True, "prediction": "epsilon", "loss": "elbo",
           "fourier_features": [1], "network": UNET, "level_posterior": True,
           "time_embedding": {"kind": "scalar"}, "bound_samples": 2,
           "schedule": {"kind": "learned_vdm", "T": 8, "units": 3, "gamma_min": -6.0, "gamma_max": 4.0}}
    cfg.update(over)
    D = int(np.prod(shape))
    x = np.random.default_rng(seed).integers(0, 3, size=(n, D)) / 2.0
    data = Dataset(x, None, x.copy(), None, "unsupervised", image_shape=shape)
    g = Graph(dtype="float64", seed=seed)
    model = dfn.plugin.build(validate(dfn.plugin.schema, cfg, path="model"), g, data, np.random.default_rng(1))
    # the output conv starts at zero, which would leave every other weight without a gradient
    out_w = [p for p in model.params if p.label.endswith("out/W")][0]
    g.set_value(out_w, np.random.default_rng(seed + 1).normal(0, 0.3, size=g.value(out_w).shape))
    return model, data


@pytest.mark.parametrize("level_posterior", [False, True])
def test_vdm_unet_loss_gradient_matches_finite_differences(level_posterior):
    names = assert_loss_gradient_matches(*tiny_vdm_unet(level_posterior=level_posterior), entries=4)
    assert {"denoiser/stem/W", "denoiser/out/W", "denoiser/mid/attention/qkv/W", "denoiser/time_mlp/dense0/W",
            "schedule/gamma_min"} <= names


def test_vdm_unet_channels_in_and_out():
    """The U-Net sees C (1 + 2K) channels (z_t and its sin/cos pairs per data channel); with level_posterior
    it gives C L channels, channel c L + k being the logit of level k for the pixels of data channel c."""
    shape, L = (2, 4, 4), 3
    for lp, c_out in ((True, 2 * L), (False, 2)):
        model, data = tiny_vdm_unet(shape=shape, level_posterior=lp, fourier_features=[1, 2])
        unet = model.extras["vdm"].unet
        g = model.graph
        w = {p.label: p for p in model.params}
        assert g.value(w["denoiser/stem/W"]).shape == (4, 2 * (1 + 2 * 2), 3, 3)
        assert g.value(w["denoiser/out/W"]).shape == (c_out, 4, 3, 3) and unet.out_channels == c_out
    # logits (N, D, L): zero output weights and bias 10 c + k on channel c L + k -> logit 10 c + k at pixel d of c
    model, data = tiny_vdm_unet(shape=shape, level_posterior=True)
    g, vd = model.graph, model.extras["vdm"]
    w = {p.label: p for p in model.params}
    g.set_value(w["denoiser/out/W"], np.zeros((2 * L, 4, 3, 3)))
    g.set_value(w["denoiser/out/b"], np.array([10.0 * c + k for c in range(2) for k in range(L)]).reshape(-1, 1, 1))
    z, gam = g.input("z_probe", (None, 32)), g.input("g_probe", (None, 1))
    out = np.asarray(compile(g, vd.network_output(z, gam)).run(z_probe=np.zeros((3, 32)), g_probe=np.zeros((3, 1))))
    expect = 10.0 * (np.arange(32) // 16)[:, None] + np.arange(L)[None, :]
    assert out.shape == (3, 32, L)
    np.testing.assert_array_equal(out, np.broadcast_to(expect, (3, 32, L)))


def test_vdm_unet_bound_equals_its_terms_computed_by_hand():
    """bound_terms with the U-Net = the three terms from the model's other programs and NumPy: the prior KL
    at gamma(1), the decoder's pmf at z_0, and 1/2 gamma'(t) ||eps - eps_hat(z_t, t)||^2 with gamma' by
    central differences and eps_hat from the sampler's program."""
    model, data = tiny_vdm_unet()
    x = data.x_train
    x0 = 2.0 * x - 1.0
    rng = np.random.default_rng(4)
    t, eps, eps0 = rng.uniform(0.05, 0.95, len(x)), rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    res = model.program("bound_terms").run(x=x, t=t, eps=eps, eps0=eps0)
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    g0, g1 = vdm.gamma_at(model, [0.0, 1.0])
    prior = 0.5 * np.sum(sig(g1) + sig(-g1) * x0 ** 2 - 1.0 - np.log(sig(g1)), axis=1)
    z0 = np.sqrt(sig(-g0)) * x0 + np.sqrt(sig(g0)) * eps0
    probs = np.asarray(model.program("decode").run(z=z0)["probs"])
    k = np.rint((x0 + 1.0) * 1.0).astype(int)  # levels -1, 0, 1
    recon = -np.log(np.take_along_axis(probs, k[..., None], axis=-1)[..., 0]).sum(axis=1)
    gt = vdm.gamma_at(model, t)[:, None]
    zt = np.sqrt(sig(-gt)) * x0 + np.sqrt(sig(gt)) * eps
    e_hat = np.asarray(model.program("eps_hat").run(z=zt, t=t)["eps_hat"])
    h = 1e-6
    dg = (vdm.gamma_at(model, t + h) - vdm.gamma_at(model, t - h)) / (2 * h)
    diffusion = 0.5 * dg * np.sum((eps - e_hat) ** 2, axis=1)
    assert np.abs(e_hat - eps).max() > 1e-2  # a denoiser that is not trivially exact here
    np.testing.assert_allclose(res["prior"], prior, rtol=1e-10)
    np.testing.assert_allclose(res["reconstruction"], recon, rtol=1e-9)
    np.testing.assert_allclose(res["diffusion"], diffusion, rtol=1e-6, atol=1e-9)  # a row at low noise: ~0


def test_vdm_unet_config_errors():
    with pytest.raises(dfn.ModelConfigError, match='model.network.kind.*"unet" needs image data') as info:
        model_cfg = {"time": "continuous", "levels": 3, "symmetric": True, "loss": "elbo", "network": UNET,
                     "schedule": {"kind": "learned_vdm", "T": 8, "units": 3}}
        x = np.random.default_rng(0).integers(0, 3, size=(6, 4)) / 2.0
        dfn.plugin.build(validate(dfn.plugin.schema, model_cfg, path="model"), Graph(dtype="float64"),
                         Dataset(x, None, x.copy(), None, "unsupervised"), np.random.default_rng(1))
    assert info.value is not None
    with pytest.raises(dfn.ModelConfigError, match="model.network.groups.*does not divide"):
        tiny_vdm_unet(network=dict(UNET, groups=3))


def test_vdm_unet_level_posterior_is_exact_at_low_noise_and_dropout_is_off_in_the_bound():
    sched = {"kind": "learned_vdm", "T": 8, "units": 3, "gamma_min": -14.0, "gamma_max": 4.0}
    model, data = tiny_vdm_unet(schedule=sched)
    x = data.x_train
    eps = np.random.default_rng(0).standard_normal(x.shape)
    res = model.program("bound_terms").run(x=x, t=np.zeros(len(x)), eps=eps, eps0=eps)
    assert np.max(res["sq"]) < 1e-6
    # dropout inside the U-Net's residual blocks: the bound is the network without it (same weights)
    m2, _ = tiny_vdm_unet(schedule=sched, network=dict(UNET, dropout=0.5))
    assert_dropout_only_in_training(model, m2, x)



# --- sampling a finished VDM run: its options are honoured or refused, never ignored -------------
@pytest.fixture(scope="module")
def vdm_run(tmp_path_factory):
    import gengraph

    over = {"train.epochs": 1, "model.bound_samples": 2, "model.schedule.T": 6, "output.samples": 3,
            "model.layers": [{"units": 8, "activation": "silu"}]}
    return gengraph.run(SPECS / "vdm_digits.toml", overrides=over, out=tmp_path_factory.mktemp("vdm") / "run",
                        progress=None)


def test_vdm_sample_refuses_guidance_as_an_unconditional_diffusion_does(vdm_run, tmp_path):
    from click.testing import CliRunner

    from gengraph.cli.main import main
    from gengraph.plugins.run.sampling import SampleError

    for kwargs in ({"guidance": 5.0}, {"guidance": 0.0}):
        with pytest.raises(SampleError, match=r'^option guidance: guidance needs a class-conditional model'):
            vdm_run.sample(3, **kwargs)
    res = CliRunner().invoke(main, ["sample", str(vdm_run.dir), "--n", "2", "--guidance", "2",
                                    "--out", str(tmp_path / "x.npy")])
    assert res.exit_code == 2, res.output
    assert res.output.strip() == ('error: option guidance: guidance needs a class-conditional model '
                                  '(model.condition = "label")')
    assert not (tmp_path / "x.npy").exists()


def test_vdm_sample_honours_steps_and_refuses_ddim_and_labels(vdm_run):
    from gengraph.plugins.run.sampling import SampleError

    default = vdm_run.sample(3)
    np.testing.assert_array_equal(default, np.load(vdm_run.dir / "samples.npy"))  # T ancestral steps
    np.testing.assert_array_equal(vdm_run.sample(3, sampler="ddpm", steps=6), default)
    assert not np.array_equal(vdm_run.sample(3, steps=2), default)
    with pytest.raises(SampleError, match="a continuous-time model samples by ancestral"):
        vdm_run.sample(3, sampler="ddim", steps=2)
    with pytest.raises(SampleError, match="not class-conditional: it takes no label"):
        vdm_run.sample(3, label=1)


def test_vdm_refuses_a_class_condition_it_would_ignore():
    with pytest.raises(dfn.ModelConfigError, match='continuous time is unconditional') as exc:
        tiny_vdm(condition="label")
    assert exc.value.path == "model.condition"
