"""ebm kind, objective = "score_matching": the DSM loss by hand, the optimal score of Gaussian
data, annealed Langevin sampling, the shipped spec (shortened)."""

import math
from pathlib import Path

import numpy as np

from gengraph.engine import Graph
from gengraph.plugins.datasets import Dataset
from gengraph.plugins.models import score_matching as sm
from gengraph.plugins.blocks import seeds
from gengraph.plugins.models.ebm import plugin
from gengraph.plugins.run.loading import load
from gengraph.plugins.run.runner import RunContext, execute
from gengraph.plugins.run.trainer import Trainer
from gengraph.plugins.spec.schema import validate

ROOT = Path(__file__).resolve().parents[1]


def _cfg(**kw):
    return validate(plugin.schema, {"objective": "score_matching", **kw})


def _gauss_data(n=2000, d=1, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return Dataset(x[: n * 3 // 4], None, x[n * 3 // 4:], None, "unsupervised")


def test_dsm_loss_equals_the_hand_computation_for_fixed_weights():
    cfg = _cfg(layers=[{"units": 5, "activation": "tanh"}], score={"levels": 3, "sigma_max": 1.0, "sigma_min": 0.1})
    g = Graph(dtype="float64", seed=0)
    data = _gauss_data(40, d=2)
    model = plugin.build(cfg, g, data, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x, z = rng.normal(size=(7, 2)), rng.normal(size=(7, 2))
    sigma = rng.choice(model.extras["sigmas"], size=(7, 1))
    got = sm.level_losses(model, None, x, z, sigma)
    (_, W0, b0, *_), (_, W1, b1, *_) = model.extras["score_net"].net.layers
    W0, b0, W1, b1 = (g.value(p) for p in (W0, b0, W1, b1))
    xt = x + sigma * z
    f = np.tanh(np.concatenate([xt, np.log(sigma)], 1) @ W0 + b0) @ W1 + b1  # sigma * s(x~, sigma)
    s = f / sigma
    # lambda(sigma) / 2 * || s + (x~ - x) / sigma^2 ||^2 with lambda = sigma^2
    want = 0.5 * sigma[:, 0] ** 2 * np.sum((s + (xt - x) / sigma ** 2) ** 2, axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(sm.score_at(model, None, xt[:3], sigma[0, 0]),
                               (np.tanh(np.concatenate([xt[:3], np.log(np.full((3, 1), sigma[0, 0]))], 1) @ W0 + b0)
                                @ W1 + b1) / sigma[0, 0], rtol=1e-10)
    assert np.allclose(model.extras["sigmas"], [1.0, math.sqrt(0.1), 0.1])


def test_trained_score_of_gaussian_data_is_the_analytic_one():
    # N(0, 1) data convolved with N(0, sigma^2): score -x / (1 + sigma^2)
    cfg = _cfg(layers=[{"units": 32, "activation": "silu"}, {"units": 32, "activation": "silu"}],
               score={"levels": 4, "sigma_max": 2.0, "sigma_min": 0.25})
    spec = {"train": {"optimizer": {"kind": "adam", "lr": 3e-3}, "epochs": 60, "batch_size": 256, "shuffle": True,
                      "schedule": {"kind": "cosine", "total_steps": 720}, "early_stopping": {}}, "output": {"samples": 0}}
    data = _gauss_data(4000)
    g = Graph(dtype="float64", seed=0)
    model = plugin.build(cfg, g, data, np.random.default_rng(0))
    ctx = RunContext(spec, None, 0, plots=False, log=lambda *a, **k: None)
    Trainer(plugin, model, data, spec["train"], ctx).fit()
    xs = np.linspace(-1.5, 1.5, 31)[:, None]
    for sigma in model.extras["sigmas"]:
        got = sm.score_at(model, None, xs, sigma)[:, 0]
        want = -xs[:, 0] / (1 + sigma ** 2)
        assert np.max(np.abs(got - want)) < 0.15 * (1.5 / (1 + sigma ** 2)) + 0.05, (sigma, got - want)


def test_score_moons_spec_short_run(tmp_path):
    spec = load(ROOT / "specs" / "score_moons.toml", ["train.epochs=30", "model.score.steps_per_level=30",
                                                      "output.samples=500"])
    s = execute(spec, tmp_path, log=lambda *a, **k: None)
    assert s["samples_finite"] and s["noise_levels"] == 15
    for name in ("hdiv5", "hdiv2", "h", "hx2"):
        assert 0 < s[f"test_mmd2_{name}_pvalue"] <= 1
    # far better than the uniform noise it starts from, not yet as good as data
    assert s["test_energy_distance"] < 0.1 and s["test_mmd2_h"] < 0.05
    assert np.load(tmp_path / "samples.npy").shape == (500, 2)


def test_tweedie_step_is_the_gaussian_posterior_mean():
    # a score net set by hand to the exact score of N(mu, tau^2) data at sigma_L (linear: no hidden
    # layers): s(x, sigma) = -(x - mu) / (tau^2 + sigma^2). With no Langevin steps the sampler is
    # the Tweedie step alone, x + sigma^2 s(x) = (tau^2 x + sigma^2 mu) / (tau^2 + sigma^2) = E[x0 | x]
    mu, tau, sig = np.array([0.5, -1.0]), 0.3, 0.2
    cfg = _cfg(layers=[], score={"levels": 1, "sigma_max": sig, "sigma_min": sig, "denoise": True})
    g = Graph(dtype="float64", seed=0)
    model = plugin.build(cfg, g, _gauss_data(40, d=2), np.random.default_rng(0))
    ((_, W, b, *_),) = model.extras["score_net"].net.layers
    c = sig / (tau ** 2 + sig ** 2)  # f = sigma * s is linear in x
    g.set_value(W, np.vstack([-c * np.eye(2), np.zeros((1, 2))]))
    g.set_value(b, c * mu)
    ctx = RunContext({}, None, 0)
    x0 = sm.annealed_langevin(model, ctx, 50, seed=0, steps_per_level=0)  # the uniform starts, denoised
    starts = seeds.rng(0, "score.samples").uniform(*model.extras["noise_range"],
                                                                                 size=(50, 2))
    np.testing.assert_allclose(x0, (tau ** 2 * starts + sig ** 2 * mu) / (tau ** 2 + sig ** 2), rtol=1e-12, atol=1e-12)


def test_score_matching_on_images_draws_its_samples_as_images(tmp_path):
    # samples.png was drawn for 2-D data only: a run on the digits had no picture of its samples
    import matplotlib.image as mpimg

    text = (ROOT / "specs" / "score_moons.toml").read_text()
    text = text.replace('source = "moons"\nn = 2000\nnoise = 0.1\n', 'source = "digits"\n')
    path = tmp_path / "score_digits.toml"
    path.write_text(text.replace('scale = "standardize"', 'scale = "minmax_global"'))
    spec = load(path, ["train.epochs=1", "model.score.levels=3", "model.score.steps_per_level=2",
                       "output.samples=8", "model.layers=[{units=16}]"])
    execute(spec, tmp_path, log=lambda *a, **k: None)
    assert np.load(tmp_path / "samples.npy").shape[1:] == (1, 8, 8)
    picture = mpimg.imread(tmp_path / "samples.png")
    assert picture.ndim == 3 and picture.shape[0] > 50 and picture[..., :3].std() > 0.05  # an image grid, not blank
