"""Continuous-time variational diffusion model (Kingma, Salimans, Poole & Ho 2021, "Variational
Diffusion Models"): the ``diffusion`` plugin with ``time = "continuous"``.

Forward process, t in [0, 1]: q(z_t | x) = N(alpha_t x, sigma_t^2 I), alpha_t^2 = sigmoid(-gamma(t)),
sigma_t^2 = sigmoid(gamma(t)), with gamma(t) = -log SNR(t) a learned monotone network
(``MonotoneGamma``: positive weights, gamma(0) = gamma_min and gamma(1) = gamma_max learned
end points; schedule kind ``learned_vdm``). Data x are the `levels` grey levels mapped to
[-1, 1] (``symmetric = true``) or [0, 1].

The variational bound on -log P(x) (nats per example; P a pmf over the levels) is

    L = KL(q(z_1|x) || N(0, I))                         prior term (closed form)
      + E_{q(z_0|x)}[-log p(x | z_0)]                   reconstruction (discrete decoder)
      + 1/2 E_{t ~ U(0,1), eps}[gamma'(t) ||eps - eps_hat(z_t, t)||^2]   diffusion term L_inf

* prior: 1/2 sum_d (sigma_1^2 + alpha_1^2 x_d^2 - 1 - log sigma_1^2);
* decoder (VDM appendix): p(x_d = v_k | z_0) = softmax_k(-(z_0,d - alpha_0 v_k)^2 / (2 sigma_0^2)),
  a proper pmf over the levels v_k, so the bound is a code length in nats and bits/dim =
  L / (D ln 2) compares with the discrete-time model's discretized decoder and with the
  per-pixel histogram;
* gamma'(t) is the engine's own symbolic derivative: ``grad(sum(gamma(t)), t)`` of the
  schedule network at the drawn times (so training differentiates a gradient: second order);
* the times of a batch are low-discrepancy (``antithetic = true``): t_i = frac(u + i/B) with
  one u ~ U(0, 1) per batch, which keeps every t marginally uniform (the estimate stays
  unbiased) and cuts the variance of the diffusion term;
* the denoiser eps_hat takes [z_t, sin(2^k pi z_t), cos(2^k pi z_t) for k in
  ``fourier_features``, emb(gamma_t)] (VDM's Fourier features, which let it see where z_t
  sits between grey levels at low noise) and the sinusoidal embedding of
  1000 (gamma(t) - gamma_min0) / (gamma_max0 - gamma_min0) (the initial end points);
  ``[model.network] kind = "mlp"``: dense ``layers`` over those features concatenated;
  ``"unet"`` (image data (C, H, W)): the U-Net of blocks/unet.py over C (1 + 2K) channels (z_t
  and its K sin/cos pairs, per data channel) with emb as its time input, which sees each
  pixel's neighbourhood; its output has L channels per data channel (level_posterior) or C;
* ``level_posterior = true`` (not in the paper): the network outputs per-pixel logits over the
  levels instead of eps; x0_hat = sum_k v_k softmax_k(logits_k - (z_t - alpha_t v_k)^2 / (2 sigma_t^2))
  (the pixel's own noisy value enters as its exact Gaussian likelihood of each level, the
  network supplies the context) and eps_hat = (z_t - alpha_t x0_hat) / sigma_t. Any eps_hat
  gives a valid bound; this one is exact at low noise without having to learn the staircase.

The discrete-time version with T steps (VDM eq. 14, eps form) replaces the diffusion term by
T/2 E_{i, eps}[expm1(gamma(t_i) - gamma(t_{i-1})) ||eps - eps_hat(z_{t_i}, t_i)||^2],
t_i = i/T; as T -> infinity it tends to L_inf (``discrete_diffusion_term``; the tests check it).

The report estimates the bound over the test set ``bound_samples`` times (independent t,
eps, eps_0 per example; low-discrepancy t over each batch) and gives the mean and its
standard error: test_nll_bound(_se), test_bpd(_se), the three terms with their SEs,
log_snr_0 / log_snr_1, the per-pixel histogram's baseline_histogram_bpd, and samples from
ancestral sampling on T equal steps of t (``[model.schedule] T``).
"""

from __future__ import annotations

import math

import numpy as np

from gengraph.engine import grad, ops, to_numpy
from gengraph.engine.ops.registry import defop

from gengraph.plugins.blocks import seeds
from gengraph.plugins.blocks.files import save_samples
from gengraph.plugins.blocks.layers import Network
from gengraph.plugins.blocks.likelihoods import values_last
from gengraph.plugins.blocks.noise_schedules import NOISE_SCHEDULES
from gengraph.plugins.blocks.stats import baseline_histogram, bits_per_dim, mean_se
from gengraph.plugins.blocks.unet import UNet, UNetConfigError, image_shape_of
from gengraph.plugins.model import Model, ModelConfigError
from gengraph.plugins.blocks.plots import image_grid

EPS_STREAM, T_STREAM, EPS0_STREAM = 11, 12, 13

_batch_fractions = defop(
    "batch_fractions", lambda xp, like, dtype: xp.arange(like.shape[0], dtype=dtype) / max(like.shape[0], 1),
    lambda like, dtype: ((like.shape[0],), np.dtype(dtype)), (None,),
    doc="i / B for the rows i = 0..B-1 of `like` (low-discrepancy times of a batch)")


def low_discrepancy_times(like, stream: int):
    """Graph: t_i = frac(u + i/B), u ~ U(0, 1) once per batch; every t_i is U(0, 1)."""
    g = like.graph
    u = ops.random_uniform(shape=(1,), stream=stream, graph=g)
    s = u + _batch_fractions(like, dtype=str(g.dtype))
    return s - ops.floor(s)


def low_discrepancy_numpy(rng, n: int) -> np.ndarray:
    return (rng.uniform() + np.arange(n) / n) % 1.0


def _col(v):
    return ops.expand_dims(v, axis=(1,))


def fourier_features(z, ks):
    """[sin(2^k pi z), cos(2^k pi z)] for k in ks, concatenated on the feature axis."""
    feats = []
    for k in ks:
        a = z * float(2.0 ** k * math.pi)
        feats += [ops.sin(a), ops.cos(a)]
    return feats


class ContinuousVDM:
    """The graph pieces: schedule, denoiser, bound terms at given (t, eps, eps_0)."""
    def __init__(self, cfg, graph, D, rng, gamma_net, image_shape=None):
        self.cfg, self.graph, self.D = cfg, graph, D
        self.gamma = gamma_net
        self.L = int(cfg["levels"])
        lo = -1.0 if cfg["symmetric"] else 0.0
        self.values = np.linspace(lo, 1.0, self.L)
        self.ks = [int(k) for k in cfg["fourier_features"]]
        emb = cfg["time_embedding"]
        self.emb_dim = emb["dim"] if emb["kind"] == "sinusoidal" else 1
        self.level_posterior = bool(cfg["level_posterior"])
        self.net = self.unet = None
        if image_shape is not None:  # network.kind = "unet": channels (z, its Fourier features) per pixel
            c = int(image_shape[0])
            net_cfg = {k: v for k, v in cfg["network"].items() if k != "kind"}
            self.unet = UNet(graph, image_shape, self.emb_dim, net_cfg, rng, "denoiser",
                             in_channels=c * (1 + 2 * len(self.ks)),
                             out_channels=c * self.L if self.level_posterior else c)
            self.image_hw = tuple(int(s) for s in image_shape[1:])
            self.params = list(self.unet.params)
        else:
            in_dim = D * (1 + 2 * len(self.ks)) + self.emb_dim
            out_units = D * self.L if self.level_posterior else D
            self.net = Network(graph, in_dim, cfg["layers"], rng, "denoiser",
                               out={"units": out_units, "activation": "identity", "init": cfg["output_init"]},
                               origin="model.layers")
            self.params = list(self.net.params)
        s = gamma_net.cfg
        self.g_lo, self.g_span = float(s["gamma_min"]), float(s["gamma_max"] - s["gamma_min"])

    def embed(self, gamma_t):
        """emb of the normalised log-SNR (N, 1) -> (N, emb_dim)."""
        g = self.graph
        tn = (gamma_t - self.g_lo) * (1.0 / self.g_span)
        emb = self.cfg["time_embedding"]
        if emb["kind"] == "scalar":
            return tn
        half = emb["dim"] // 2
        freqs = np.exp(-math.log(emb["max_period"]) * np.arange(half) / half)
        args = (tn * 1000.0) @ g.constant(freqs[None, :])
        return ops.concat([ops.cos(args), ops.sin(args)], axis=1)

    def network_output(self, z, gamma_t):
        """eps_hat (N, D), or with level_posterior the network's logits (N, D, L) over the levels."""
        feats = [z] + fourier_features(z, self.ks)
        if self.unet is None:
            out = self.net(ops.concat(feats + [self.embed(gamma_t)], axis=1))
            return ops.reshape(out, (-1, self.D, self.L)) if self.level_posterior else out
        # rows of the data's (C, H, W) laid side by side are rows of (C (1 + 2K), H, W)
        out = self.unet(ops.concat(feats, axis=1), self.embed(gamma_t))
        if not self.level_posterior:
            return out
        # channels (c, level) at each pixel -> (pixel of channel c, level)
        out = values_last(out, (self.unet.out_channels,) + self.image_hw, self.L)
        return ops.reshape(out, (-1, self.D, self.L))

    def eps_hat(self, z, gamma_t):
        out = self.network_output(z, gamma_t)
        if not self.level_posterior:
            return out
        # x0_hat = sum_k v_k softmax_k(net_k + log N(z; alpha v_k, sigma^2)): the network gives the
        # context's logits over the levels, the pixel's own noisy value the rest (exact at low noise)
        a = ops.expand_dims(ops.sqrt(ops.sigmoid(-gamma_t)), axis=(2,))
        inv_var = ops.expand_dims(ops.exp(ops.softplus(-gamma_t)), axis=(2,))  # 1 / sigma^2
        v = self.graph.constant(self.values)
        local = -0.5 * inv_var * ops.square(ops.expand_dims(z, axis=(2,)) - a * v)
        logits = out + local
        x0_hat = ops.sum(ops.softmax(logits, axis=-1) * v, axis=-1)
        return (z - ops.sqrt(ops.sigmoid(-gamma_t)) * x0_hat) * ops.sqrt(ops.exp(ops.softplus(-gamma_t)))

    def terms(self, x0, t, eps, eps0):
        """Per-example prior, reconstruction and diffusion terms (B,), plus gamma, gamma', ||eps - eps_hat||^2."""
        g = self.graph
        with g.scope("schedule"):
            t_col = _col(t)
            gamma_t = self.gamma(t_col)
            dgamma = grad(ops.sum(gamma_t), t_col)  # gamma'(t), the engine's symbolic derivative
            ends = self.gamma(g.constant(np.array([[0.0], [1.0]])))
            g0, g1 = ends[0:1, :], ends[1:2, :]
        with g.scope("diffusion_term"):
            z = ops.sqrt(ops.sigmoid(-gamma_t)) * x0 + ops.sqrt(ops.sigmoid(gamma_t)) * eps
            sq = ops.sum(ops.square(eps - self.eps_hat(z, gamma_t)), axis=1)
            diffusion = 0.5 * ops.reshape(dgamma, (-1,)) * sq
        with g.scope("prior_term"):
            s2 = ops.sigmoid(g1)
            prior = 0.5 * ops.sum(s2 + ops.sigmoid(-g1) * ops.square(x0) - 1.0 + ops.softplus(-g1), axis=1)
        with g.scope("reconstruction_term"):
            recon = -ops.sum(self.decoder_log_prob(x0, g0, eps0), axis=1)
        return {"prior": prior, "reconstruction": recon, "diffusion": diffusion, "gamma": ops.reshape(gamma_t, (-1,)),
                "dgamma": ops.reshape(dgamma, (-1,)), "sq": sq}

    def decoder_logits(self, z0, g0):
        """logits (B, D, L) of p(x_d = v_k | z_0) = softmax_k(-(z_0 - alpha_0 v_k)^2 / (2 sigma_0^2))."""
        g = self.graph
        a0 = ops.sqrt(ops.sigmoid(-g0))
        inv_var = ops.exp(ops.softplus(-g0))  # 1 / sigma_0^2 = 1 / sigmoid(g0) = 1 + exp(-g0)
        v = g.constant(self.values)
        diff = ops.expand_dims(z0, axis=(2,)) - ops.expand_dims(a0, axis=(2,)) * v
        return -0.5 * ops.expand_dims(inv_var, axis=(2,)) * ops.square(diff)

    def decoder_log_prob(self, x0, g0, eps0):
        z0 = ops.sqrt(ops.sigmoid(-g0)) * x0 + ops.sqrt(ops.sigmoid(g0)) * eps0
        logp = ops.log_softmax(self.decoder_logits(z0, g0), axis=-1)
        lo = float(self.values[0])
        idx = ops.cast(ops.floor((x0 - lo) * ((self.L - 1) / (1.0 - lo)) + 0.5), dtype="int64")
        return ops.sum(logp * ops.one_hot(idx, depth=self.L, dtype=str(logp.dtype)), axis=-1)


def build_continuous(cfg, graph, data, rng, check_grid):
    """The Model of a continuous-time VDM (called by the diffusion plugin for time = "continuous")."""
    D = data.n_features
    kind = NOISE_SCHEDULES.get(cfg["schedule"]["kind"])
    if not hasattr(kind, "network"):
        raise ModelConfigError("model.schedule.kind", 'continuous time needs a schedule defined for all t in [0, 1]: '
                               'kind = "learned_vdm"')
    if cfg["prediction"] != "epsilon":
        raise ModelConfigError("model.prediction", 'continuous time is written for prediction = "epsilon"')
    if cfg["levels"] < 2:
        raise ModelConfigError("model.levels", "continuous time needs the number of data levels (e.g. 17)")
    if cfg.get("condition", "none") != "none":  # it has no label input: it would train unconditionally, unsaid
        raise ModelConfigError("model.condition", 'continuous time is unconditional; a class-conditional model '
                               '(condition = "label") needs time = "discrete"')
    # keys of the discrete-time sampler that continuous time has no use for: refused, not ignored
    if cfg["sampler"]["kind"] != "ddpm":
        raise ModelConfigError("model.sampler.kind", f'continuous time samples by ancestral steps (kind = "ddpm", '
                               f'steps = its number); "{cfg["sampler"]["kind"]}" is a discrete-time sampler')
    if cfg["variance"] != "beta_tilde":
        raise ModelConfigError("model.variance", 'continuous time samples with the posterior variance of '
                               'q(z_s | z_t, x) (the default, "beta_tilde"); there is no other choice')
    # the decoder's grid: [-1, 1] for symmetric data, [0, 1] otherwise (ContinuousVDM.values)
    check_grid(data, cfg, lo=-1.0 if cfg["symmetric"] else 0.0, key="levels", what="the VDM decoder")
    if cfg["time_embedding"]["kind"] == "sinusoidal" and cfg["time_embedding"]["dim"] % 2:
        raise ModelConfigError("model.time_embedding.dim", "must be even")
    scfg = {k: v for k, v in cfg["schedule"].items() if k != "kind"}
    try:
        gamma_net = kind.network(graph, rng, scfg)
    except ValueError as exc:
        raise ModelConfigError("model.schedule", str(exc)) from None
    image_shape = None
    if cfg["network"]["kind"] == "unet":
        try:
            image_shape = image_shape_of(data)
            vdm = ContinuousVDM(cfg, graph, D, rng, gamma_net, image_shape)
        except UNetConfigError as exc:
            raise exc.at("model.network") from None
    else:
        vdm = ContinuousVDM(cfg, graph, D, rng, gamma_net)

    x = graph.input("x", (None, D))
    x0 = x * 2.0 - 1.0 if cfg["symmetric"] else x
    with graph.scope("noise"):
        eps = ops.random_normal(x0, stream=EPS_STREAM)
        eps0 = ops.random_normal(x0, stream=EPS0_STREAM)
        if cfg["antithetic"]:
            t_tr = low_discrepancy_times(x0, T_STREAM)
        else:
            t_tr = ops.random_uniform(x0[:, 0], stream=T_STREAM)
    tr = vdm.terms(x0, t_tr, eps, eps0)
    with graph.scope("loss"):
        per_example = tr["prior"] + tr["reconstruction"] + tr["diffusion"]
        loss = ops.mean(per_example)
        metrics = {"nll_bound_mc": loss, "prior_term": ops.mean(tr["prior"]),
                   "reconstruction_term": ops.mean(tr["reconstruction"]),
                   "diffusion_term": ops.mean(tr["diffusion"])}

    # evaluation at fed times and noise (the report, the tests)
    t_in = graph.input("t", (None,))
    eps_in, eps0_in = graph.input("eps", (None, D)), graph.input("eps0", (None, D))
    ev = vdm.terms(x0, t_in, eps_in, eps0_in)
    # sampling: eps_hat at (z, t); the schedule at fed times; the decoder's pmf at z_0
    z_in = graph.input("z", (None, D))
    with graph.scope("sampler"):
        g_s = vdm.gamma(_col(t_in))
        e_hat = vdm.eps_hat(z_in, g_s)
        g0 = vdm.gamma(graph.constant(np.zeros((1, 1))))
        probs = ops.softmax(vdm.decoder_logits(z_in, g0), axis=-1)
    programs = {
        "bound_terms": (ev, {}),
        "eps_hat": ({"eps_hat": e_hat}, {}),
        "gamma": ({"gamma": ops.reshape(g_s, (-1,))}, {}),
        "decode": ({"probs": probs}, {}),
    }
    params = list(vdm.params) + list(gamma_net.params)
    extras = {"time": "continuous", "vdm": vdm, "cfg": cfg, "D": D, "T": int(scfg["T"]), "train_terms": tr,
              "t_train": t_tr, "gamma_net": gamma_net, "schedule": None, "gamma": None}
    return Model(graph, params, loss, {"x": x}, metrics=metrics, programs=programs, extras=extras)


# --- evaluation helpers (NumPy around the compiled programs) -----------------------------------
def _np(v):
    return np.asarray(to_numpy(v), np.float64)


def gamma_at(model, t, ctx=None) -> np.ndarray:
    t = np.asarray(t, np.float64).reshape(-1)
    return _np(model.program("gamma", ctx).run(t=t)["gamma"])


def bound_draws(model, x, seed, draws: int, ctx=None, batch=None) -> dict:
    """`draws` independent estimates of the test bound's terms (each the mean over x of one
    draw of t, eps, eps_0 per example; t low-discrepancy over each batch when antithetic)."""
    cfg = model.extras["cfg"]
    prog = model.program("bound_terms", ctx)
    rng = seeds.rng(seed, "vdm.bound")
    batch = batch or cfg["bound_batch"]
    n = len(x)
    out = {k: np.zeros(draws) for k in ("prior", "reconstruction", "diffusion")}
    for r in range(draws):
        for start in range(0, n, batch):
            xb = np.asarray(x[start:start + batch])
            m = len(xb)
            t = low_discrepancy_numpy(rng, m) if cfg["antithetic"] else rng.uniform(size=m)
            res = prog.run(x=xb, t=t, eps=rng.standard_normal(xb.shape), eps0=rng.standard_normal(xb.shape))
            for k in out:
                out[k][r] += _np(res[k]).sum() / n
    out["nll_bound"] = out["prior"] + out["reconstruction"] + out["diffusion"]
    return out


def discrete_diffusion_term(model, x, eps, T: int, ctx=None) -> np.ndarray:
    """Per-example T-step diffusion term sum_i 1/2 expm1(gamma(t_i) - gamma(t_{i-1})) ||eps - eps_hat(z_{t_i})||^2
    with the same eps at every step (t_i = i/T): its expectation over eps is VDM's L_T."""
    prog = model.program("bound_terms", ctx)
    x = np.asarray(x, np.float64)
    n = len(x)
    grid = np.arange(T + 1) / T
    gam = gamma_at(model, grid, ctx)
    total = np.zeros(n)
    for i in range(1, T + 1):
        res = prog.run(x=x, t=np.full(n, grid[i]), eps=eps, eps0=eps)
        total += 0.5 * np.expm1(gam[i] - gam[i - 1]) * _np(res["sq"])
    return total


def ancestral_sample(model, n, rng, steps: int, ctx=None) -> np.ndarray:
    """x ~ p(x): z_1 ~ N(0, I), `steps` VDM ancestral steps t -> s = t - 1/steps, then x ~ p(x|z_0)."""
    D, vdm = model.extras["D"], model.extras["vdm"]
    ts = np.arange(steps, -1, -1) / steps
    gam = gamma_at(model, ts, ctx)
    prog = model.program("eps_hat", ctx)
    z = rng.standard_normal((n, D))
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    for i in range(steps):
        gt, gs = gam[i], gam[i + 1]
        e = _np(prog.run(z=z, t=np.full(n, ts[i]))["eps_hat"])
        c = -np.expm1(gs - gt)
        z = np.sqrt(sig(-gs) / sig(-gt)) * (z - np.sqrt(sig(gt)) * c * e) + \
            np.sqrt(sig(gs) * c) * rng.standard_normal((n, D))
    probs = _np(model.program("decode", ctx).run(z=z)["probs"])  # (n, D, L)
    cum = probs.cumsum(axis=-1)
    k = np.minimum((rng.uniform(size=(n, D, 1)) > cum).sum(axis=-1), vdm.L - 1)
    return vdm.values[k]


def draw(model, data, ctx, n, seed, steps=None) -> np.ndarray:
    """n samples in data units by `steps` ancestral steps (default the model's T): the report's
    samples.npy and `gengraph sample`'s draws (the same for the same seed)."""
    rng = seeds.rng(seed, "vdm.samples")
    x = ancestral_sample(model, n, rng, int(steps or model.extras["T"]), ctx)
    if model.extras["cfg"]["symmetric"]:
        x = (x + 1.0) / 2.0
    return data.unscale_x(x)


def report(model, data, ctx) -> dict:
    cfg, D = model.extras["cfg"], model.extras["D"]
    out = {}
    if data.x_test is not None and data.n_test:
        draws = bound_draws(model, data.x_test, ctx.seed, cfg["bound_samples"], ctx)
        for name, key in (("nll_bound", "test_nll_bound"), ("reconstruction", "test_reconstruction_term"),
                          ("diffusion", "test_diffusion_term")):
            out[key], out[key + "_se"] = mean_se(draws[name])
        out["test_prior_term"] = float(draws["prior"].mean())  # exact: no Monte Carlo
        out["test_bpd"], out["test_bpd_se"] = mean_se([bits_per_dim(v, D) for v in draws["nll_bound"]])
        out["bound_samples"] = int(cfg["bound_samples"])
        out.update(baseline_histogram(data, cfg["levels"]))
    g01 = gamma_at(model, [0.0, 1.0], ctx)
    out["log_snr_0"], out["log_snr_1"] = float(-g01[0]), float(-g01[1])
    n = int(ctx.spec["output"]["samples"]) if ctx.spec else 0
    if n > 0:
        samples = draw(model, data, ctx, n, ctx.seed)
        out["sampler_steps"] = model.extras["T"]
        save_samples(ctx, data, samples)
        if ctx.run_dir is not None and ctx.plots and data.image_shape is not None:
            image_grid(samples[:64], data.image_shape, ctx.path("samples.png"), title="VDM samples")
    return out
