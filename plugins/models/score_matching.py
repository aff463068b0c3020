"""`kind = "ebm"` with `objective = "score_matching"`: the score-based view (Song & Ermon 2019).

Instead of an energy trained with Langevin negatives, a noise-conditional score network
s(x, sigma) ~ grad_x log q_sigma(x) is trained by denoising score matching over noise
levels sigma_1 > ... > sigma_L (geometric):
    loss = mean over examples of  lambda(sigma) / 2 * || s(x~, sigma) + (x~ - x) / sigma^2 ||^2,
    x~ = x + sigma z,  z ~ N(0, I),  sigma uniform over the L levels,  lambda(sigma) = sigma^2,

i.e. 1/2 || sigma s(x~, sigma) + z ||^2. The network is f(x~, log sigma) (the declared
hidden layers over [x~, log sigma], then D linear units) and s = f / sigma, so every level's
term has the same scale. sigma and z are drawn inside the graph (seeded streams).

Samples come from annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1): for each
level i, `steps_per_level` steps x <- x + (alpha_i / 2) s(x, sigma_i) + sqrt(alpha_i) N(0, I),
alpha_i = step_ratio * sigma_i^2, from uniform noise over the training range; with
`denoise` a last noise-free step x <- x + sigma_L^2 s(x, sigma_L) (Tweedie's formula,
E[x | x~] at the smallest level). The report gives the same two-sample statistics as
the contrastive EBM (`sample_quality.two_sample_report`).
"""

from __future__ import annotations

import numpy as np

from gengraph.engine import ops, to_numpy

from gengraph.plugins.blocks.files import save_samples
from gengraph.plugins.blocks.layers import Network
from gengraph.plugins.blocks.sample_quality import two_sample_summary
from gengraph.plugins.blocks import seeds
from gengraph.plugins.model import Model, ModelConfigError
from gengraph.plugins.spec.schema import Field, Table
from gengraph.plugins.blocks import plots

SIGMA_STREAM, Z_STREAM = 11, 12


def score_schema() -> Table:
    return Table({
        "sigma_max": Field(float, 2.0, "largest noise level sigma_1 (model units; about the data's diameter)",
                           min=1e-6),
        "sigma_min": Field(float, 0.03, "smallest noise level sigma_L", min=1e-6),
        "levels": Field(int, 10, "number of noise levels L (geometric from sigma_max to sigma_min)", min=1,
                        max=100_000),
        "steps_per_level": Field(int, 100, "annealed Langevin steps at each level when sampling", min=1),
        "step_ratio": Field(float, 0.1, "Langevin step alpha_i = step_ratio * sigma_i^2", min=0.0),
        "denoise": Field(bool, True, "a last noise-free step x + sigma_L^2 s(x, sigma_L) (Tweedie)"),
    }, help='noise levels and annealed Langevin sampling of objective = "score_matching"')


def sigmas_of(cfg) -> np.ndarray:
    s = cfg["score"]
    if s["sigma_min"] >= s["sigma_max"] and s["levels"] > 1:
        raise ModelConfigError("model.score.sigma_min", "must be smaller than sigma_max")
    return np.geomspace(s["sigma_max"], s["sigma_min"], s["levels"])


class ScoreNet:
    """s(x, sigma) = f([x, log sigma]) / sigma, f the declared dense layers plus D linear units."""

    def __init__(self, graph, d, layers, rng):
        self.graph, self.d = graph, d
        self.net = Network(graph, d + 1, layers, rng, "score", origin="model.layers",
                           out={"units": d, "activation": "identity", "init": "xavier"})

    def scaled(self, x, sigma_col):
        """f(x, sigma) = sigma * s(x, sigma); sigma_col is (batch, 1)."""
        return self.net(ops.concat([x, ops.log(sigma_col)], axis=1))

    def __call__(self, x, sigma_col):
        return self.scaled(x, sigma_col) / sigma_col


def build_score_model(cfg, graph, data, rng) -> Model:
    d = data.n_features
    sigmas = sigmas_of(cfg)
    L = len(sigmas)
    net = ScoreNet(graph, d, cfg["layers"], rng)
    x = graph.input("x", (None, d))
    with graph.scope("noise"):
        u = ops.random_uniform(x[:, 0], stream=SIGMA_STREAM)
        idx = ops.cast(ops.minimum(ops.floor(u * float(L)), float(L - 1)), dtype="int64")
        sigma = ops.expand_dims(ops.take(graph.constant(sigmas, name="sigmas"), idx), axis=(1,))
        z = ops.random_normal(x, stream=Z_STREAM)
    with graph.scope("loss"):
        # lambda(sigma)/2 ||s(x~) + (x~ - x)/sigma^2||^2 = 1/2 ||sigma s(x~) + z||^2
        per_example = 0.5 * ops.sum(ops.square(net.scaled(x + sigma * z, sigma) + z), axis=1)
        loss = ops.mean(per_example)
    # the same terms at a fed sigma and z (tests, per-level evaluation)
    with graph.scope("dsm_eval"):
        sig_in = graph.input("sigma_eval", (None, 1))
        z_in = graph.input("z_eval", (None, d))
        term = 0.5 * ops.sum(ops.square(net.scaled(x + sig_in * z_in, sig_in) + z_in), axis=1)
    with graph.scope("annealed_langevin"):
        xa = graph.input("x_anneal", (None, d))
        s_level = graph.input("sigma", ())
        alpha = graph.input("alpha", ())
        noise_w = graph.input("noise_weight", ())  # 1: Langevin step, 0: the noise-free Tweedie step
        col = ops.zeros_like(xa[:, 0:1]) + s_level
        score = net(xa, col)
        x_next = xa + (0.5 * alpha) * score + noise_w * ops.sqrt(alpha) * ops.random_normal(
            xa, stream=graph.new_stream())
    with graph.scope("score_eval"):
        xs = graph.input("x_score", (None, d))
        ss = graph.input("sigma_score", (None, 1))
        score_out = net(xs, ss)
    x_train = np.asarray(data.x_train, np.float64)
    lo, hi = x_train.min(0), x_train.max(0)
    pad = cfg["replay"]["margin"] * (hi - lo)
    return Model(graph, graph.params(), loss, {"x": x}, metrics={"dsm": loss},
                 programs={"anneal_step": ({"x": x_next}, {}), "dsm_terms": ({"term": term}, {}),
                           "score": ({"score": score_out}, {})},
                 extras={"cfg": dict(cfg), "sigmas": sigmas, "score_net": net, "objective": "score_matching",
                         "noise_range": (lo - pad, hi + pad)})


def annealed_langevin(model, ctx, n, seed, steps_per_level=None):
    """n samples (model units) by annealed Langevin dynamics from uniform noise over the training
    range; the graph's noise streams reseeded from `seed`, so the report and `gengraph sample` agree."""
    cfg, sigmas = model.extras["cfg"]["score"], model.extras["sigmas"]
    steps = cfg["steps_per_level"] if steps_per_level is None else int(steps_per_level)
    lo, hi = model.extras["noise_range"]
    rng = seeds.rng(seed, "score.samples")
    x = rng.uniform(lo, hi, size=(n, len(lo)))
    prog = model.program("anneal_step", ctx)
    with seeds.seeded_streams(model.graph, seed, "score.samples"):
        for s in sigmas:
            alpha = cfg["step_ratio"] * s ** 2
            for _ in range(steps):
                x = prog.run(x_anneal=x, sigma=float(s), alpha=float(alpha), noise_weight=1.0)["x"]
        if cfg["denoise"]:
            s = float(sigmas[-1])
            x = prog.run(x_anneal=x, sigma=s, alpha=2.0 * s * s, noise_weight=0.0)["x"]
    return np.asarray(to_numpy(x), np.float64)


def score_at(model, ctx, x, sigma):
    x = np.asarray(x, np.float64)
    out = model.program("score", ctx).run(x_score=x, sigma_score=np.full((len(x), 1), float(sigma)))
    return np.asarray(to_numpy(out["score"]), np.float64)


def report_score(model, data, ctx) -> dict:
    out = {}
    ref = data.x_test if data.n_test else data.x_train
    n = int(ctx.spec.get("output", {}).get("samples", 64)) if ctx.spec else 64
    n = max(n, len(ref) // 2)
    samples = annealed_langevin(model, ctx, n, ctx.seed)
    out.update(two_sample_summary(samples, data, ctx.seed))
    sig = model.extras["sigmas"]
    out["sigma_max"], out["sigma_min"], out["noise_levels"] = float(sig[0]), float(sig[-1]), int(len(sig))
    save_samples(ctx, data, data.unscale_x(samples))
    if ctx.plots and ctx.run_dir is not None:  # image data too: it drew no picture of them
        plots.sample_picture(data.unscale_x(samples), data.unscale_x(ref), data.image_shape, ctx.path,
                             "annealed Langevin samples")
    return out


def level_losses(model, ctx, x, z, sigma):
    """Per-example DSM terms 1/2 ||sigma s(x + sigma z, sigma) + z||^2 at fed sigma (column) and z."""
    out = model.program("dsm_terms", ctx).run(x=np.asarray(x, np.float64), sigma_eval=np.asarray(sigma, np.float64),
                                              z_eval=np.asarray(z, np.float64))
    return np.asarray(to_numpy(out["term"]), np.float64)


__all__ = ["annealed_langevin", "build_score_model", "level_losses", "report_score", "score_at", "score_schema",
           "sigmas_of"]
