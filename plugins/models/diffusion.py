"""`kind = "diffusion"`: variational diffusion models (DDPM / VDM) in discrete time.

The model, following the lecture's view of a diffusion model as a Markovian hierarchical
VAE with fixed Gaussian encoders:

* forward process (variance preserving): q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)
  in closed form, t = 1..T, with the schedule from ``[model.schedule]`` (a registered
  noise schedule, see ``noise_schedules.py``);
* denoiser: the declared ``layers`` over [x_t, emb(t)], emb = ``sinusoidal`` (dim) or
  ``scalar`` (t / T), plus an output layer of D units; it predicts ``epsilon``, ``x0`` or
  ``v = sqrt(abar) eps - sqrt(1 - abar) x0``. All three give x0_hat and eps_hat, with
  x_t = sqrt(abar_t) x0_hat + sqrt(1 - abar_t) eps_hat;
* reverse model p(x_{t-1} | x_t) = N(mu_tilde(x_t, x0_hat), sigma_t^2 I), sigma_t^2 =
  beta_tilde_t or beta_t (``variance``); decoder p(x_0 | x_1) = N(x0_hat(x_1, 1), beta_1 I)
  (``gaussian``) or that Gaussian integrated over the bins of data on a grid of ``levels``
  values in [-1, 1] (``discretized``, Ho et al. 2020 eq. 13; used by the report's bound,
  training keeps the Gaussian term).

The variational bound (nats per example) -log p(x_0) <= L_prior + sum_{t=2}^T L_{t-1} + L_0:

* L_prior = KL(q(x_T | x_0) || N(0, I)) = 1/2 sum_d (abar_T (x0_d^2 - 1) - log(1 - abar_T));
* L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) = const_t + w_t ||target - f||^2 with
  (SNR_t = abar_t / (1 - abar_t), gamma_t = -log SNR_t, r_t = beta_tilde_t / sigma_t^2)

  ============  ====================================================  ==================
  prediction    w_t, t >= 2                                           w_1 (decoder)
  ============  ====================================================  ==================
  x0            r_t (SNR_{t-1} - SNR_t) / 2                           (1 + SNR_1) / 2
  epsilon       r_t (SNR_{t-1} / SNR_t - 1) / 2 = r_t expm1(dg) / 2   1 / (2 abar_1)
  v             r_t abar_t (SNR_{t-1} / SNR_t - 1) / 2                1 / 2
  ============  ====================================================  ==================

  (dg = gamma_t - gamma_{t-1}); const_t = D/2 (r_t - 1 - log r_t) (zero for beta_tilde) and
  const_1 = D/2 log(2 pi beta_1). These follow from ||x0 - x0_hat||^2 = ||eps - eps_hat||^2 /
  SNR_t = ||v - v_hat||^2 / (1 + SNR_t) and mu_tilde - mu_theta = c0_t (x0 - x0_hat),
  c0_t^2 / (2 beta_tilde_t) = (SNR_{t-1} - SNR_t) / 2 (Kingma et al. 2021, eq. 13).

Training draws t ~ U{1..T} and eps ~ N(0, I) per example inside the graph (seeded random
streams, saved in checkpoints); ``loss = "simple"`` is the unweighted mean squared error
on the target (per dimension), ``loss = "elbo"`` is the unbiased one-sample estimate
L_prior + T * L_{t-1} of the bound (its expectation over t is the bound). The logged
metric ``nll_bound_mc`` is that estimate whatever the loss. The report computes
``test_nll_bound``: for every test example the sum over ALL t = 1..T of its terms (a loop
over t in batches), each KL term's expectation over x_t ~ q(x_t | x_0) estimated with
``bound_samples`` draws; the prior term is exact. Its parts are reported as
``test_prior_term``, ``test_reconstruction_term`` and ``test_diffusion_term`` (t >= 2), and
for image data with the discretized decoder ``test_bpd`` = test_nll_bound / (D ln 2).
Continuous bounds are densities of the data as the model is fed it (after [data] scaling;
the ``symmetric`` map is undone, -D log 2); ``nll_bound_mc`` always uses the Gaussian
decoder, so for discrete data it is a continuous density, not comparable with test_bpd.

Samples (``output.samples``) come from the ``[model.sampler]`` through the compiled
``sample_step`` program, one call per reverse step; the report writes samples.npy (data
units), samples.png, denoising.png (the samples at several t) and, for 2-D data,
``test_mmd`` (unbiased MMD^2, Gaussian kernel, median-heuristic bandwidth) and
``test_energy`` (energy distance) against the test set, beside ``baseline_mmd`` /
``baseline_energy``: the same statistics for training rows in place of samples.
"""

from __future__ import annotations

import math

import numpy as np

from gengraph.engine import compile, ops, to_numpy, topo_order

from gengraph.plugins.blocks.energy_tools import _sq_dists as _sqdist, median_bandwidth
from gengraph.plugins.blocks.layers import build_stack, layer_schema
from gengraph.plugins.model import Model, ModelConfigError, ModelPlugin
from gengraph.plugins.blocks.noise_schedules import NOISE_SCHEDULES, from_gamma
from gengraph.plugins.blocks.unet import DENOISERS, UNet, UNetConfigError
from gengraph.plugins.blocks.samplers import SAMPLERS, run_steps, sampler_steps
from gengraph.plugins.spec.schema import Dispatch, Field, ListOf, Table
from gengraph.plugins.blocks.files import save_npy

EPS_STREAM, T_STREAM = 1, 2  # random streams of the training graph
SAMPLE_SEED, BOUND_SEED, BASELINE_SEED = 0x5A3D, 0xB0D, 0xBA5E
_LOG_2PI = math.log(2.0 * math.pi)

DEFAULT_LAYERS = [{"units": 128, "activation": "silu"}] * 3


def _config_error(path, message):
    """A complaint about [model] keys; the runner adds the spec file and line."""
    return ModelConfigError(f"model.{path}", message)


# --- the bound's per-t tables, written once for NumPy (fixed schedules) and graph (learned) ---
class _NumpyMath:
    exp, expm1, log = staticmethod(np.exp), staticmethod(np.expm1), staticmethod(np.log)

    @staticmethod
    def softplus(x):
        return np.logaddexp(0.0, x)

    @staticmethod
    def concat(xs):
        return np.concatenate([np.reshape(x, (-1,)) for x in xs])

    @staticmethod
    def const(v):
        return np.asarray(v, dtype=np.float64)


class _GraphMath:
    exp, expm1, log, softplus = staticmethod(ops.exp), staticmethod(ops.expm1), staticmethod(ops.log), \
        staticmethod(ops.softplus)

    def __init__(self, graph):
        self.graph = graph

    @staticmethod
    def concat(xs):
        return ops.concat(xs, axis=0)

    def const(self, v):
        return self.graph.constant(np.asarray(v, dtype=np.float64))


def bound_tables(gamma, D: int, prediction: str, variance: str, M=_NumpyMath):
    """Per-t tables of the bound from gamma_t = -log SNR_t (t = 1..T), index t (0 unused).

    Returns sqrt_abar, sqrt_1m_abar (index 0: t = 0, the data), weight w_t and constant
    const_t of the term for t (see the module docstring; t = 1 is the decoder), and the
    prior's abar_T and -log(1 - abar_T).
    """
    T = int(gamma.shape[0])
    sp_pos, sp_neg = M.softplus(gamma), M.softplus(-gamma)  # -log abar, -log(1 - abar)
    g1, spn1 = gamma[0:1], sp_neg[0:1]
    if prediction == "epsilon":
        w1 = 0.5 * (1.0 + M.exp(g1))
    elif prediction == "x0":
        w1 = 0.5 * (1.0 + M.exp(-g1))
    else:
        w1 = M.const(np.full(1, 0.5))
    c1 = 0.5 * D * (_LOG_2PI - spn1)  # D/2 log(2 pi beta_1), beta_1 = 1 - abar_1 = sigmoid(gamma_1)
    ws, cs = [M.const(np.zeros(1)), w1], [M.const(np.zeros(1)), c1]
    if T > 1:
        gt, gp = gamma[1:], gamma[:-1]
        em = M.expm1(gt - gp)  # SNR_{t-1}/SNR_t - 1 > 0
        if prediction == "epsilon":
            base = 0.5 * em
        elif prediction == "x0":
            base = 0.5 * M.exp(-gt) * em
        else:
            base = 0.5 * M.exp(-sp_pos[1:]) * em
        if variance == "beta":
            log_r = sp_neg[1:] - sp_neg[:-1]  # log(beta_tilde / beta) = log((1 - abar_{t-1}) / (1 - abar_t))
            r = M.exp(log_r)
            ws.append(base * r)
            cs.append(0.5 * D * (r - 1.0 - log_r))
        else:
            ws.append(base)
            cs.append(M.const(np.zeros(T - 1)))
    return {
        "sqrt_abar": M.concat([M.const(np.ones(1)), M.exp(-0.5 * sp_pos)]),
        "sqrt_1m_abar": M.concat([M.const(np.zeros(1)), M.exp(-0.5 * sp_neg)]),
        "w": M.concat(ws),
        "const": M.concat(cs),
        "abar_T": M.exp(-sp_pos[T - 1]),
        "neg_log_1m_abar_T": sp_neg[T - 1],
    }


# --- the three parameterisations ----------------------------------------------------------
def x0_eps_from_output(f, x_t, sa, sb, prediction: str):
    """(x0_hat, eps_hat) from the network output f; sa = sqrt(abar_t), sb = sqrt(1 - abar_t).

    Works on graph nodes and NumPy arrays alike.
    """
    if prediction == "epsilon":
        return (x_t - sb * f) / sa, f
    if prediction == "x0":
        return f, (x_t - sa * f) / sb
    if prediction == "v":
        return sa * x_t - sb * f, sb * x_t + sa * f
    raise ValueError(f"unknown prediction {prediction!r}")


def output_for_x0(x0_hat, x_t, sa, sb, prediction: str):
    """The network output that a parameterisation needs to give x0_hat at (x_t, t)."""
    if prediction == "x0":
        return x0_hat
    eps_hat = (x_t - sa * x0_hat) / sb
    if prediction == "epsilon":
        return eps_hat
    return sa * eps_hat - sb * x0_hat  # v


def target_of(x0, eps, sa, sb, prediction: str):
    return {"epsilon": eps, "x0": x0, "v": sa * eps - sb * x0}[prediction]


# --- graph helpers ---------------------------------------------------------------------------
def substitute(outputs, mapping: dict):
    """Copies of `outputs` with the nodes in `mapping` replaced (params and constants shared).

    Lets one network, built once on placeholder inputs, be applied to other nodes.
    """
    new = {}
    ids = {id(k): v for k, v in mapping.items()}
    for n in topo_order(list(outputs)):
        if id(n) in ids:
            new[id(n)] = ids[id(n)]
            continue
        ins = [new[id(i)] for i in n.inputs]
        if n.is_leaf or all(a is b for a, b in zip(ins, n.inputs)):
            new[id(n)] = n
            continue
        g = n.graph
        saved, g._scopes = g._scopes, [n.scope] if n.scope else []
        try:
            new[id(n)] = ops.apply(n.op, *ins, **n.attrs)
        finally:
            g._scopes = saved
    return [new[id(o)] for o in outputs]


def _column(v):
    return ops.expand_dims(v, axis=(1,))


def time_embedding(graph, t, cfg: dict, T: int):
    """emb(t) for integer t (N,): sinusoidal [cos(t w_k), sin(t w_k)], w_k = P^(-k/half), or t/T."""
    with graph.scope("time_embedding"):
        tf = _column(ops.cast(t, dtype=str(graph.dtype)))
        if cfg["kind"] == "scalar":
            return tf * (1.0 / T)
        half = cfg["dim"] // 2
        freqs = np.exp(-math.log(cfg["max_period"]) * np.arange(half) / half)
        args = tf @ graph.constant(freqs[None, :], name="frequencies")
        return ops.concat([ops.cos(args), ops.sin(args)], axis=1)


def build_unet(graph, x_t, emb, data, cfg, rng):
    """The U-Net denoiser on x_t (rows of the data's images) and emb(t): (output rows, params)."""
    shape = data.image_shape
    if shape is None or len(shape) != 3 or int(np.prod(shape)) != data.n_features:
        raise _config_error("network.kind", f'"unet" needs image data (C, H, W); the data are rows of '
                                            f"{data.n_features} features")
    net_cfg = {k: v for k, v in cfg["network"].items() if k != "kind"}
    try:
        net = UNet(graph, shape, int(emb.shape[1]), net_cfg, rng)
    except UNetConfigError as exc:
        raise _config_error(f"network.{exc.key}", exc.message) from None
    return net(x_t, emb), net.params


class Diffusion(ModelPlugin):
    kind = "diffusion"
    help = "variational diffusion model (DDPM/VDM): noise schedules, denoiser, DDPM/DDIM sampling, bound"
    tasks = ("unsupervised", "classification", "regression")  # labels are ignored

    @property
    def schema(self):
        return Table({
            "layers": ListOf(layer_schema(), default=DEFAULT_LAYERS, help="hidden layers of the denoiser, "
                             "over [x_t, emb(t)]; an output layer of D units is added"),
            "output_init": Field(str, "xavier", "initializer of the denoiser's output layer"),
            "network": Dispatch("kind", DENOISERS, default={"kind": "mlp"},
                                help='the denoiser: kind = "mlp" (model.layers) or "unet" (image data; '
                                     'channels, blocks, attention, ...)'),
            "time_embedding": Table({
                "kind": Field(str, "sinusoidal", "sinusoidal (Vaswani et al.) or scalar (t/T)",
                              choices=["sinusoidal", "scalar"]),
                "dim": Field(int, 32, "size of the sinusoidal embedding (even)", min=2),
                "max_period": Field(float, 10000.0, "longest period of the sinusoidal embedding", min=1.0),
            }, help="how t enters the denoiser"),
            "schedule": Dispatch("kind", NOISE_SCHEDULES, default={"kind": "linear"},
                                 help="noise schedule (its keys include T)"),
            "prediction": Field(str, "epsilon", "what the network predicts: epsilon, x0 or v",
                                choices=["epsilon", "x0", "v"]),
            "loss": Field(str, "simple", "simple (unweighted MSE on the target) or elbo (the variational "
                          "bound, ELBO-weighted terms)", choices=["simple", "elbo"]),
            "variance": Field(str, "beta_tilde", "variance of p(x_{t-1}|x_t): beta_tilde (posterior) or beta",
                              choices=["beta_tilde", "beta"]),
            "decoder": Field(str, "gaussian", "p(x_0|x_1) in the reported bound: gaussian, or discretized "
                             "(data on `levels` values in [-1, 1])", choices=["gaussian", "discretized"]),
            "levels": Field(int, 0, "number of equally spaced data values in [-1, 1] (discretized decoder)",
                            min=0),
            "symmetric": Field(bool, False, "map data from [0, 1] to [-1, 1] (x -> 2x - 1) inside the model; "
                               "samples are mapped back"),
            "sampler": Dispatch("kind", SAMPLERS, default={"kind": "ddpm"}, help="sampler of the report"),
            "bound_batch": Field(int, 1000, "test examples per program run of the bound's loop over t", min=1),
            "bound_samples": Field(int, 1, "draws of x_t per t and example in the reported bound", min=1),
            "strip_steps": Field(int, 6, "columns of the denoising strip plot", min=2),
        }, help=self.help)

    # --- build ----------------------------------------------------------------------------
    def build(self, cfg, graph, data, rng):
        D = data.n_features
        sk = NOISE_SCHEDULES.get(cfg["schedule"]["kind"])
        scfg = {k: v for k, v in cfg["schedule"].items() if k != "kind"}
        T = int(scfg["T"])
        emb_cfg = cfg["time_embedding"]
        if emb_cfg["kind"] == "sinusoidal" and emb_cfg["dim"] % 2:
            raise _config_error("time_embedding.dim", f"must be even, found {emb_cfg['dim']}")
        if cfg["decoder"] == "discretized":
            _check_grid(data, cfg)
        params = []
        if sk.learned:
            if cfg["loss"] != "elbo":
                raise _config_error("loss", f'the learned schedule is trained on the bound: set loss = "elbo" '
                                            f'(found "{cfg["loss"]}")')
            try:
                gamma, sched_params = sk.build(graph, rng, scfg)
            except ValueError as exc:
                raise _config_error("schedule", str(exc)) from None
            params += sched_params
            with graph.scope("schedule"):
                tables = bound_tables(gamma, D, cfg["prediction"], cfg["variance"], _GraphMath(graph))
            schedule = None
        else:
            try:
                schedule = sk.make(scfg)
            except ValueError as exc:
                raise _config_error("schedule", str(exc)) from None
            gamma = None
            arrays = bound_tables(schedule.gamma, D, cfg["prediction"], cfg["variance"])
            with graph.scope("schedule"):
                tables = {k: graph.constant(v, name=k) for k, v in arrays.items()}

        # the denoiser, built once on the sampler's inputs (x_t, t) and reused by substitution
        x_t = graph.input("x_t", (None, D))
        t = graph.input("t", (None,), dtype="int64")
        emb = time_embedding(graph, t, emb_cfg, T)
        if cfg["network"]["kind"] == "unet":
            f, net_params = build_unet(graph, x_t, emb, data, cfg, rng)
            params = net_params + params
        else:
            h, net_params = build_stack(graph, ops.concat([x_t, emb], axis=1), cfg["layers"], rng, "denoiser")
            f, out_params = build_stack(graph, h, [{"units": D, "activation": "identity",
                                                    "init": cfg["output_init"]}], rng, "denoiser/output")
            params = net_params + out_params + params

        x = graph.input("x", (None, D))
        x0 = x * 2.0 - 1.0 if cfg["symmetric"] else x

        def terms(t_node, eps):
            """Per-example bound terms for x_0 = x at times t_node with noise eps."""
            with graph.scope("forward_process"):
                sa = _column(ops.take(tables["sqrt_abar"], t_node))
                sb = _column(ops.take(tables["sqrt_1m_abar"], t_node))
                xt = sa * x0 + sb * eps
            (ft,) = substitute([f], {x_t: xt, t: t_node})
            with graph.scope("loss"):
                target = target_of(x0, eps, sa, sb, cfg["prediction"])
                sq = ops.sum(ops.square(target - ft), axis=1)
                term = ops.take(tables["const"], t_node) + ops.take(tables["w"], t_node) * sq
                prior = 0.5 * ops.sum(tables["abar_T"] * (ops.square(x0) - 1.0), axis=1) + \
                    0.5 * D * tables["neg_log_1m_abar_T"]
            x0_hat, _ = x0_eps_from_output(ft, xt, sa, sb, cfg["prediction"])
            return {"sq": sq, "term": term, "prior": prior, "x0_hat": x0_hat}

        # training: t ~ U{1..T}, eps ~ N(0, I) per example, from the graph's seeded streams
        with graph.scope("noise"):
            eps_tr = ops.random_normal(x0, stream=EPS_STREAM)
            u = ops.random_uniform(x0[:, 0], stream=T_STREAM)
            t_tr = ops.cast(ops.minimum(ops.floor(u * float(T)), float(T - 1)) + 1.0, dtype="int64")
        tr = terms(t_tr, eps_tr)
        shift = D * math.log(2.0) if cfg["symmetric"] else 0.0  # density of x in [0, 1] vs 2x - 1
        with graph.scope("loss"):
            mse = ops.mean(tr["sq"]) * (1.0 / D)
            bound_mc = ops.mean(tr["prior"] + float(T) * tr["term"])
            loss = mse if cfg["loss"] == "simple" else bound_mc
            metrics = {"mse": mse, "nll_bound_mc": bound_mc - shift if shift else bound_mc}

        # evaluation of the bound's terms at a fed t and eps (the report loops over t)
        eps_in = graph.input("eps", (None, D))
        ev = terms(t, eps_in)
        bound_outputs = {"term": ev["term"], "prior": ev["prior"], "x0_hat": ev["x0_hat"]}

        # one reverse step: x_next = a x0_hat + b eps_hat + sigma z
        with graph.scope("sampler"):
            sa = _column(ops.take(tables["sqrt_abar"], t))
            sb = _column(ops.take(tables["sqrt_1m_abar"], t))
            x0_hat, eps_hat = x0_eps_from_output(f, x_t, sa, sb, cfg["prediction"])
            if cfg["sampler"].get("clip_x0"):
                x0_hat = ops.clip(x0_hat, -1.0, 1.0)
                eps_hat = (x_t - sa * x0_hat) / sb
            noise = graph.input("noise", (None, D))
            a, b, sigma = (graph.input(n, ()) for n in ("coef_x0", "coef_eps", "sigma"))
            x_next = a * x0_hat + b * eps_hat + sigma * noise
        programs = {"sample_step": ({"x_next": x_next, "x0_hat": x0_hat}, {}),
                    "bound_terms": (bound_outputs, {})}
        if gamma is not None:
            programs["schedule_gamma"] = ({"gamma": gamma}, {})
        extras = {"schedule": schedule, "gamma": gamma, "tables": tables, "D": D, "T": T, "cfg": cfg,
                  "output": f, "train_terms": tr, "t_train": t_tr, "eps_train": eps_tr, "shift": shift}
        return Model(graph, params, loss, {"x": x}, metrics=metrics, programs=programs, extras=extras)

    # --- report -----------------------------------------------------------------------------
    def report(self, model, data, ctx):
        cfg, D = model.extras["cfg"], model.extras["D"]
        progs = programs_of(model, ctx)
        sched = current_schedule(model, progs)
        out = {}
        if data.x_test is not None and data.n_test:
            b = nll_bound(model, progs, sched, data.x_test, ctx.seed)
            out["test_nll_bound"] = b["nll_bound"]
            out["test_prior_term"] = b["prior"]
            out["test_reconstruction_term"] = b["reconstruction"]
            out["test_diffusion_term"] = b["diffusion"]
            if data.image_shape is not None and cfg["decoder"] == "discretized":
                out["test_bpd"] = b["nll_bound"] / (D * math.log(2.0))
        out["log_snr_1"], out["log_snr_T"] = float(-sched.gamma[0]), float(-sched.gamma[-1])
        n = int(ctx.spec["output"]["samples"])
        if n <= 0:
            return out
        steps = sampler_steps(cfg["sampler"], sched, cfg["variance"])
        record = strip_times(sched, steps, cfg["strip_steps"])
        rng = np.random.default_rng(np.random.SeedSequence([ctx.seed, SAMPLE_SEED]))
        x0, snaps = sample(model, progs, steps, n, rng, record)
        samples = to_data_units(model, data, x0)
        out["sampler_steps"] = len(steps)
        if ctx.run_dir is not None:

            save_npy(ctx.path("samples.npy"), samples)
        if D == 2 and data.x_test is not None and data.n_test:
            out.update(sample_quality(samples, data, ctx.seed))
        if ctx.plots and ctx.run_dir is not None:
            strip = {tt: to_data_units(model, data, snaps[tt]) for tt in record}
            _plots(samples, strip, data, ctx, cfg)
        return out


# --- report helpers ------------------------------------------------------------------------
def programs_of(model, ctx=None) -> dict:
    """The compiled extra programs (the trainer's, or compiled once here, e.g. in tests)."""
    return {name: model.program(name, ctx) for name in model.programs}


def current_schedule(model, progs=None):
    """The DiscreteSchedule in use (for a learned schedule: evaluated at the current parameters)."""
    if model.extras["schedule"] is not None:
        return model.extras["schedule"]
    prog = (progs or {}).get("schedule_gamma") or compile(model.graph, {"gamma": model.extras["gamma"]})
    return from_gamma("learned", np.asarray(to_numpy(prog.run()["gamma"]), np.float64))


def sample(model, progs, steps, n, rng, record=()):
    """n samples in model space from x_T ~ N(0, I) through the sampler's steps."""
    D = model.extras["D"]
    prog = progs["sample_step"]

    def step(x, t, noise, a, b, sigma):
        res = prog.run(x_t=x, t=np.full(len(x), t, dtype=np.int64), noise=noise, coef_x0=a, coef_eps=b,
                       sigma=sigma)
        return np.asarray(to_numpy(res["x_next"]), np.float64)

    x_T = rng.standard_normal((n, D))
    return run_steps(step, steps, x_T, rng, record)


def strip_times(sched, steps, k: int) -> list[int]:
    """k of the times a sampler visits, evenly spaced in the signal level sqrt(abar_t) (T ... 0)."""
    visited = np.array([steps[0].t] + [s.t_next for s in steps])
    level = np.sqrt(np.concatenate([[1.0], sched.alpha_bar])[visited])
    picks = [int(np.argmin(np.abs(level - v))) for v in np.linspace(level[0], 1.0, k)]
    return sorted({int(visited[i]) for i in picks}, reverse=True)


def to_data_units(model, data, x):
    if model.extras["cfg"]["symmetric"]:
        x = (np.asarray(x) + 1.0) / 2.0
    return data.unscale_x(np.asarray(x, np.float64))


def nll_bound(model, progs, sched, x, seed, batch=None) -> dict:
    """The variational bound on -log p(x) per example (nats), summing all T terms exactly.

    Each KL term's expectation over x_t ~ q(x_t|x_0) uses `bound_samples` draws; the prior
    term is analytic. Returns means over the examples and the per-example bounds.
    """
    cfg, T = model.extras["cfg"], model.extras["T"]
    prog = progs["bound_terms"]
    batch = batch or cfg["bound_batch"]
    reps = cfg["bound_samples"]
    rng = np.random.default_rng(np.random.SeedSequence([seed, BOUND_SEED]))
    n = len(x)
    prior, recon, diff = np.zeros(n), np.zeros(n), np.zeros(n)
    discretized = cfg["decoder"] == "discretized"
    sigma1 = math.sqrt(float(sched.betas[0]))
    for start in range(0, n, batch):
        xb = np.asarray(x[start:start + batch])
        sl = slice(start, start + len(xb))
        for _ in range(reps):
            for t in range(1, T + 1):
                eps = rng.standard_normal(xb.shape)
                res = prog.run(x=xb, t=np.full(len(xb), t, dtype=np.int64), eps=eps)
                if t == 1:
                    prior[sl] = np.asarray(to_numpy(res["prior"]), np.float64)
                    if discretized:
                        x0m = 2.0 * xb - 1.0 if cfg["symmetric"] else xb
                        mean = np.asarray(to_numpy(res["x0_hat"]), np.float64)
                        term = -discretized_gaussian_loglik(x0m, mean, sigma1, cfg["levels"]).sum(axis=1)
                    else:
                        term = np.asarray(to_numpy(res["term"]), np.float64)
                    recon[sl] += term / reps
                else:
                    diff[sl] += np.asarray(to_numpy(res["term"]), np.float64) / reps
    shift = 0.0 if discretized else model.extras["shift"]
    per_example = prior + recon + diff - shift
    return {"nll_bound": float(per_example.mean()), "prior": float(prior.mean()),
            "reconstruction": float(recon.mean() - shift), "diffusion": float(diff.mean()),
            "per_example": per_example}


_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def log_normal_sf(z):
    """log P(Z > z) for standard normal Z, accurate in both tails (asymptotic series beyond z = 20)."""
    z = np.asarray(z, np.float64)
    out = np.empty_like(z)
    big = z > 20.0
    small = ~big
    with np.errstate(divide="ignore"):
        out[small] = np.log(0.5 * _erfc(z[small] / math.sqrt(2.0)))
    zb = z[big]
    out[big] = -0.5 * zb ** 2 - np.log(zb) - 0.5 * _LOG_2PI + np.log1p(-1.0 / zb ** 2 + 3.0 / zb ** 4)
    return out


def discretized_gaussian_loglik(x, mean, sigma, levels):
    """log of the N(mean, sigma^2) mass of x's bin; x on `levels` values in [-1, 1] (Ho et al. 2020 eq. 13).

    Bins have half-width 1/(levels - 1); the first and last bins extend to -inf and +inf.
    """
    x, mean = np.asarray(x, np.float64), np.asarray(mean, np.float64)
    h = 1.0 / (levels - 1)
    lo = np.where(x < -1.0 + h / 2, -np.inf, (x - h - mean) / sigma)
    hi = np.where(x > 1.0 - h / 2, np.inf, (x + h - mean) / sigma)
    # P = Phi(hi) - Phi(lo), evaluated in whichever tail keeps the digits
    out = np.empty_like(x)
    right, left = lo > 0, hi < 0
    mid = ~(right | left)
    lq_lo, lq_hi = log_normal_sf(lo[right]), log_normal_sf(hi[right])
    out[right] = lq_lo + np.log1p(-np.exp(lq_hi - lq_lo))
    lq_a, lq_b = log_normal_sf(-hi[left]), log_normal_sf(-lo[left])
    out[left] = lq_a + np.log1p(-np.exp(lq_b - lq_a))
    tails = np.exp(log_normal_sf(-lo[mid])) + np.exp(log_normal_sf(hi[mid]))
    out[mid] = np.log1p(-np.minimum(tails, 1.0))
    return out


def _check_grid(data, cfg):
    levels = cfg["levels"]
    if levels < 2:
        raise _config_error("levels", 'the discretized decoder needs levels >= 2 (the number of data values)')
    for name, x in (("train", data.x_train), ("test", data.x_test)):
        if x is None:
            continue
        xm = 2.0 * x - 1.0 if cfg["symmetric"] else x
        k = (xm + 1.0) * (levels - 1) / 2.0
        if np.abs(k - np.round(k)).max() > 1e-6 or xm.min() < -1 - 1e-9 or xm.max() > 1 + 1e-9:
            raise _config_error("decoder", f'"discretized" needs the {name} data (after scaling'
                                f'{" and symmetric" if cfg["symmetric"] else ""}) on {levels} equally spaced '
                                'values from -1 to 1; e.g. data.scale = "minmax_global" with model.symmetric = true')


# --- sample quality: MMD and energy distance ------------------------------------------------
def mmd2_unbiased(x, y, bandwidth) -> float:
    """Unbiased MMD^2 with the Gaussian kernel k(a, b) = exp(-|a - b|^2 / (2 h^2))."""
    k = lambda a, b: np.exp(-_sqdist(a, b) / (2.0 * bandwidth ** 2))  # noqa: E731
    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def energy_distance_unbiased(x, y) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| (U-statistics within each set; energy_tools has the V form)."""
    m, n = len(x), len(y)
    dxy = np.sqrt(_sqdist(x, y)).mean()
    dxx = np.sqrt(_sqdist(x, x)).sum() / (m * (m - 1))
    dyy = np.sqrt(_sqdist(y, y)).sum() / (n * (n - 1))
    return float(2.0 * dxy - dxx - dyy)


def sample_quality(samples, data, seed, repeats: int = 10) -> dict:
    """test_mmd / test_energy of samples vs the held-out test set, and the same for a baseline:
    training rows (disjoint from the test rows), as many as the samples, i.e. what a perfect
    sampler would score; the baseline is averaged over `repeats` random subsets (its spread
    as *_sd). Data units; one bandwidth (median heuristic on the test set) for all."""
    test = data.unscale_x(data.x_test)
    train = data.unscale_x(data.x_train)
    rng = np.random.default_rng(np.random.SeedSequence([seed, BASELINE_SEED]))
    h = median_bandwidth(test)
    mmds, energies = [], []
    for _ in range(repeats):
        base = train[rng.choice(len(train), size=min(len(samples), len(train)), replace=False)]
        mmds.append(mmd2_unbiased(base, test, h))
        energies.append(energy_distance_unbiased(base, test))
    finite = bool(np.all(np.isfinite(samples)))
    return {
        "test_mmd": mmd2_unbiased(samples, test, h) if finite else float("nan"),
        "baseline_mmd": float(np.mean(mmds)),
        "baseline_mmd_sd": float(np.std(mmds, ddof=1)) if repeats > 1 else 0.0,
        "test_energy": energy_distance_unbiased(samples, test) if finite else float("nan"),
        "baseline_energy": float(np.mean(energies)),
        "baseline_energy_sd": float(np.std(energies, ddof=1)) if repeats > 1 else 0.0,
        "mmd_bandwidth": h,
    }


# --- plots ---------------------------------------------------------------------------------
def _plots(samples, strip, data, ctx, cfg):
    from gengraph.plugins.blocks.plots import _figure, _save, display_image, image_grid, scatter_vs_data

    D = samples.shape[1]
    times = sorted(strip, reverse=True)
    if D == 2:
        ref = data.unscale_x(data.x_test if data.x_test is not None and data.n_test else data.x_train)
        scatter_vs_data(samples, ref, ctx.path("samples.png"), title=f"diffusion samples ({cfg['sampler']['kind']})")
        fig = _figure(2.2 * len(times), 2.4)
        lo, hi = ref.min(0) - 0.5, ref.max(0) + 0.5
        for i, tt in enumerate(times):
            ax = fig.add_subplot(1, len(times), i + 1)
            pts = strip[tt]
            ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, color="C3")
            ax.set_xlim(min(lo[0], np.percentile(pts[:, 0], 1)), max(hi[0], np.percentile(pts[:, 0], 99)))
            ax.set_ylim(min(lo[1], np.percentile(pts[:, 1], 1)), max(hi[1], np.percentile(pts[:, 1], 99)))
            ax.set_title(f"t = {tt}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        _save(fig, ctx.path("denoising.png"))
    elif data.image_shape is not None:
        image_grid(samples[:64], data.image_shape, ctx.path("samples.png"), title="diffusion samples")
        ref = data.unscale_x(data.x_train)
        lo, hi = float(ref.min()), float(ref.max())
        rows = min(8, len(samples))
        fig = _figure(0.7 * len(times) + 0.4, 0.7 * rows + 0.5)
        for r in range(rows):
            for c, tt in enumerate(times):
                ax = fig.add_subplot(rows, len(times), r * len(times) + c + 1)
                ax.imshow(display_image(strip[tt][r], data.image_shape), cmap="gray_r", vmin=lo, vmax=hi)
                ax.axis("off")
                if r == 0:
                    ax.set_title(f"t={tt}", fontsize=7)
        _save(fig, ctx.path("denoising.png"))
    else:  # other data: the first two coordinates
        ref = data.unscale_x(data.x_train)
        scatter_vs_data(samples[:, :2], ref[:, :2], ctx.path("samples.png"),
                        title="diffusion samples (first two features)")


plugin = Diffusion()
