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
over t in batches; with ``bound_timesteps = K`` an unbiased stratified estimate of the sum
over t = 2..T from one t per example in each of K strata, for large T), each KL term's
expectation over x_t ~ q(x_t | x_0) estimated with one draw; the whole estimate is repeated
``bound_samples`` times (independent draws) and reported as the mean with its standard error
std/sqrt(bound_samples) (``*_se``); the prior term is exact. Its parts are reported as
``test_prior_term``, ``test_reconstruction_term`` and ``test_diffusion_term`` (t >= 2), and
for image data with the discretized decoder ``test_bpd`` = test_nll_bound / (D ln 2).
Continuous bounds are densities of the data as the model is fed it (after [data] scaling;
the ``symmetric`` map is undone, -D log 2) and can be negative (a density above 1);
``nll_bound_mc`` always uses the Gaussian decoder, so with the discretized decoder it is a
continuous density, not comparable with test_nll_bound or test_bpd, and is logged as
``nll_bound_mc_continuous``. It is a one-sample Monte Carlo estimate over t per example, so it
scatters around test_nll_bound (the sum over all t).

``time = "continuous"`` is the continuous-time VDM (learned gamma(t), the L_inf loss,
a discrete decoder over the levels at t = 0): see ``vdm.py``; the rest of this docstring
is discrete time.

Samples (``output.samples``) come from the ``[model.sampler]`` through the compiled
``sample_step`` program, one call per reverse step; the report writes samples.npy (data
units), samples.png, denoising.png (the samples at several t) and, for 2-D data,
the two-sample statistics of ``sample_quality.two_sample_report`` against the test set
(unbiased MMD^2 with permutation p-values at h * {1/5, 1/2, 1, 2}: ``test_mmd2_hdiv5``, ...,
``test_mmd2_hdiv5_pvalue``; ``test_energy_distance``) beside ``baseline_*``: the same for
training rows in place of samples; for digits the Fréchet distance and label entropy of
``sample_quality.digit_report`` (test_fd, baseline_fd, label_entropy, baseline_label_entropy).
"""

from __future__ import annotations

import math

import numpy as np

from gengraph.engine import compile, ops, to_numpy, topo_order

from gengraph.plugins.blocks.sample_quality import two_sample_report
from gengraph.plugins.models.digit_quality import digit_report, is_digits, quality_sample_count
from gengraph.plugins.models import conditional as cond
from gengraph.plugins.models.class_condition import class_labels, cond_accuracy, n_labels_of, report_per_class
from gengraph.plugins.blocks.layers import build_stack, layer_schema
from gengraph.plugins.model import Model, ModelConfigError, ModelPlugin
from gengraph.plugins.blocks.noise_schedules import NOISE_SCHEDULES, from_gamma
from gengraph.plugins.blocks.unet import DENOISERS, UNet, UNetConfigError, image_shape_of
from gengraph.plugins.blocks.samplers import SAMPLERS, run_steps, sampler_steps
from gengraph.plugins.spec.schema import Dispatch, Field, ListOf, Table, validate
from gengraph.plugins.blocks.files import save_samples
from gengraph.plugins.blocks.plots import _figure, _save, display_image, image_grid, scatter_vs_data
from gengraph.plugins.blocks import seeds
from gengraph.plugins.models import vdm
from gengraph.plugins.blocks.stats import baseline_histogram, in_data_units, mean_se
from gengraph.plugins.models.vdm import build_continuous

EPS_STREAM, T_STREAM = 1, 2  # random streams of the training graph
_LOG_2PI = math.log(2.0 * math.pi)

DEFAULT_LAYERS = [{"units": 128, "activation": "silu"}] * 3


def _check_mlp_keys(cfg, schema) -> None:
    """model.layers and model.output_init shape the MLP denoiser: given next to a U-Net they were
    silently ignored. Refused unless they hold their defaults, as the schema resolves them (a run's
    own spec.toml records every default, these two included, so a U-Net run's folder still loads)."""
    if cfg["network"]["kind"] == "mlp":
        return
    keys = ("layers", "output_init")
    defaults = validate(Table({k: schema.fields[k] for k in keys}), {})
    for key in keys:
        if cfg[key] != defaults[key]:
            raise _config_error(key, f'is for the MLP denoiser; the {cfg["network"]["kind"]} network '
                                     "(model.network) has its own layers: remove it, or set network.kind = \"mlp\"")


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
    net_cfg = {k: v for k, v in cfg["network"].items() if k != "kind"}
    try:
        net = UNet(graph, image_shape_of(data), int(emb.shape[1]), net_cfg, rng)
    except UNetConfigError as exc:
        raise exc.at("model.network") from None
    return net(x_t, emb), net.params


class Diffusion(ModelPlugin):
    kind = "diffusion"
    help = "variational diffusion model (DDPM/VDM): noise schedules, denoiser, DDPM/DDIM sampling, bound"
    tasks = ("unsupervised", "classification", "regression")  # labels are ignored

    @property
    def schema(self):
        return Table({
            "layers": ListOf(layer_schema(), default=DEFAULT_LAYERS, help="hidden layers of the MLP denoiser "
                             "(network.kind = \"mlp\"), over [x_t, emb(t)]; an output layer of D units is added"),
            "output_init": Field(str, "xavier", "initializer of the MLP denoiser's output layer"),
            "network": Dispatch("kind", DENOISERS, default={"kind": "mlp"},
                                help='the denoiser: kind = "mlp" (model.layers) or "unet" (image data; '
                                     'channels, blocks, attention, ...; in continuous time over z_t and its '
                                     'Fourier features)'),
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
            "time": Field(str, "discrete", 'discrete (t = 1..T) or continuous (t in [0, 1], VDM: needs '
                          'schedule.kind = "learned_vdm", prediction = "epsilon", levels; see vdm.py)',
                          choices=["discrete", "continuous"]),
            "fourier_features": Field(list, [], "continuous time: exponents k of the Fourier features "
                                      "sin/cos(2^k pi z_t) added to the denoiser's input (0..24: past float32's "
                                      "24-bit mantissa they are noise)", item=int, min=0, max=24),
            "level_posterior": Field(bool, False, "continuous time: the denoiser outputs logits over the levels "
                                     "per pixel, combined with the Gaussian likelihood of z_t (see vdm.py)"),
            "antithetic": Field(bool, True, "continuous time: low-discrepancy times t_i = frac(u + i/B) in a batch"),
            "sampler": Dispatch("kind", SAMPLERS, default={"kind": "ddpm"}, help="sampler of the report"),
            "bound_batch": Field(int, 1000, "test examples per program run of the bound's loop over t", min=1),
            "bound_samples": Field(int, 4, "independent estimates of the reported bound (a draw of x_t per t and "
                                   "example each; continuous time: of t, eps, eps_0): their mean, and "
                                   "std/sqrt(bound_samples) as the *_se figures", min=2),
            "bound_timesteps": Field(int, 0, "discrete time: diffusion terms per estimate of the bound; 0 sums all "
                                     "t = 2..T, K < T - 1 draws one t per example in each of K strata of t "
                                     "(narrow at small t, where the terms are large): unbiased, its spread is "
                                     "in the *_se figures", min=0),
            "strip_steps": Field(int, 6, "columns of the denoising strip plot", min=2),
            **cond.condition_fields(),
        }, help=self.help)

    # --- build ----------------------------------------------------------------------------
    def build(self, cfg, graph, data, rng):
        _check_mlp_keys(cfg, self.schema)
        if cfg["time"] == "continuous":
            return build_continuous(cfg, graph, data, rng, _check_grid)
        D = data.n_features
        sk = NOISE_SCHEDULES.get(cfg["schedule"]["kind"])
        scfg = {k: v for k, v in cfg["schedule"].items() if k != "kind"}
        T = int(scfg["T"])
        if cfg["sampler"].get("steps", 0) > T:  # one DDIM step per timestep at most: more ran T, unsaid
            raise _config_error("sampler.steps", f"at most T = {T} (one step per timestep), found "
                                                 f"{cfg['sampler']['steps']}")
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
        n_labels = n_labels_of(cfg, data)
        if cfg["network"]["kind"] == "unet":
            if n_labels:
                raise ModelConfigError("model.condition", 'a class-conditional model needs the MLP denoiser '
                                                          '(network.kind = "mlp")')
            f, net_params = build_unet(graph, x_t, emb, data, cfg, rng)
            params = net_params + params
        else:
            features = [x_t, emb]
            if n_labels:  # class-conditional: a one-hot of the label (index n_labels: no condition)
                label = graph.input("label", (None,), dtype="int64")
                features.append(cond.one_hot_or_null(graph, label, n_labels))
            h, net_params = build_stack(graph, ops.concat(features, axis=1), cfg["layers"], rng, "denoiser",
                                         origin="model.layers")
            f, out_params = build_stack(graph, h, [{"units": D, "activation": "identity",
                                                    "init": cfg["output_init"]}], rng, "denoiser/output")
            params = net_params + out_params + params

        x = graph.input("x", (None, D))
        x0 = x * 2.0 - 1.0 if cfg["symmetric"] else x
        inputs = {"x": x}
        if n_labels:
            y = inputs["y"] = graph.input("y", (None,), dtype="int64")
            with graph.scope("label_dropout"):
                label_of = cond.dropped_labels(graph, y, n_labels, cfg["label_dropout"])

        def terms(t_node, eps):
            """Per-example bound terms for x_0 = x at times t_node with noise eps."""
            with graph.scope("forward_process"):
                sa = _column(ops.take(tables["sqrt_abar"], t_node))
                sb = _column(ops.take(tables["sqrt_1m_abar"], t_node))
                xt = sa * x0 + sb * eps
            (ft,) = substitute([f], {x_t: xt, t: t_node, **({label: label_of} if n_labels else {})})
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
            # a continuous density (nats, can be negative); beside a discretized decoder's bound
            # (test_nll_bound, test_bpd) its name says so
            mc_name = "nll_bound_mc_continuous" if cfg["decoder"] == "discretized" else "nll_bound_mc"
            metrics = {"mse": mse, mc_name: bound_mc - shift if shift else bound_mc}

        # evaluation of the bound's terms at a fed t and eps (the report loops over t)
        eps_in = graph.input("eps", (None, D))
        if n_labels:  # the bound of the conditional model at the true labels (no dropout)
            label_of = y
        ev = terms(t, eps_in)
        bound_outputs = {"term": ev["term"], "prior": ev["prior"], "x0_hat": ev["x0_hat"]}

        # one reverse step: x_next = a x0_hat + b eps_hat + sigma z
        with graph.scope("sampler"):
            sa = _column(ops.take(tables["sqrt_abar"], t))
            sb = _column(ops.take(tables["sqrt_1m_abar"], t))
            f_s = f
            if n_labels:  # classifier-free guidance on the network output
                guidance = graph.input("guidance", ())
                (f_null,) = substitute([f], {label: cond.null_labels(graph, label, n_labels)})
                f_s = cond.guided(f, f_null, guidance)
            x0_hat, eps_hat = x0_eps_from_output(f_s, x_t, sa, sb, cfg["prediction"])
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
        return Model(graph, params, loss, inputs, metrics=metrics, programs=programs, extras=extras,
                     n_labels=n_labels)

    # --- report -----------------------------------------------------------------------------
    def report(self, model, data, ctx):
        if model.extras.get("time") == "continuous":
            return vdm.report(model, data, ctx)
        cfg, D = model.extras["cfg"], model.extras["D"]
        progs = programs_of(model, ctx)
        sched = current_schedule(model, progs)
        out = {}
        if data.x_test is not None and data.n_test:
            b = nll_bound(model, progs, sched, data.x_test, ctx.seed, labels=data.y_test)
            out["test_nll_bound"], out["test_nll_bound_se"] = b["nll_bound"], b["nll_bound_se"]
            out["test_prior_term"] = b["prior"]  # exact: no Monte Carlo
            out["test_reconstruction_term"], out["test_reconstruction_term_se"] = b["reconstruction"], \
                b["reconstruction_se"]
            out["test_diffusion_term"], out["test_diffusion_term_se"] = b["diffusion"], b["diffusion_se"]
            out["bound_samples"] = int(cfg["bound_samples"])
            bpd = data.image_shape is not None and cfg["decoder"] == "discretized"
            if bpd:
                out["test_bpd"] = b["nll_bound"] / (D * math.log(2.0))
                out["test_bpd_se"] = b["nll_bound_se"] / (D * math.log(2.0))
            if model.n_labels:  # the same bound for the null label: the unconditional model eps(x, null)
                u = nll_bound(model, progs, sched, data.x_test, ctx.seed,
                              labels=np.full(data.n_test, model.n_labels, np.int64))
                out["test_nll_bound_uncond"], out["test_nll_bound_uncond_se"] = u["nll_bound"], u["nll_bound_se"]
                if bpd:
                    out["test_bpd_uncond"] = u["nll_bound"] / (D * math.log(2.0))
                    out["test_bpd_uncond_se"] = u["nll_bound_se"] / (D * math.log(2.0))
            if bpd:
                # the data as fed: [0, 1] when the model maps them to [-1, 1] itself, else [-1, 1]
                out.update(baseline_histogram(data, cfg["levels"], lo=0.0 if cfg["symmetric"] else -1.0))
            if cfg["decoder"] != "discretized":  # a density of scaled data: also in data units
                out.update(in_data_units(out, data, ("test_nll_bound", "test_nll_bound_uncond")))
        out["log_snr_1"], out["log_snr_T"] = float(-sched.gamma[0]), float(-sched.gamma[-1])
        n = int(ctx.spec["output"]["samples"])
        if n <= 0:
            return out
        steps = sampler_steps(cfg["sampler"], sched, cfg["variance"])
        record = strip_times(sched, steps, cfg["strip_steps"])
        if model.n_labels:
            out.update(cond_report(model, progs, steps, data, ctx))
        x0, snaps = sample(model, progs, steps, n, sample_rng(ctx.seed), record)
        samples = to_data_units(model, data, x0)
        out["sampler_steps"] = len(steps)
        more = quality_sample_count(data, ctx.spec, n) - n  # digits: as many as held-out rows, for test_fd
        if is_digits(data, ctx.spec):
            extra = sample(model, progs, steps, more, sample_rng(seeds.derived_seed(ctx.seed, "quality")))[0] \
                if more > 0 else x0[:0]
            out.update(digit_report(np.concatenate([samples, to_data_units(model, data, extra)]), data, ctx.spec,
                                    ctx.seed))
        save_samples(ctx, data, samples)
        if D == 2 and data.x_test is not None and data.n_test:
            out.update(sample_quality(samples, data, ctx.seed))
        if ctx.plots and ctx.run_dir is not None:
            strip = {tt: to_data_units(model, data, snaps[tt]) for tt in record}
            _plots(samples, strip, data, ctx, cfg)
        return out

    # --- sampling a finished run --------------------------------------------------------------
    def sample(self, model, data, ctx, n, *, label=None, sampler=None, steps=None, guidance=None):
        """n samples (data units) from x_T ~ N(0, I) through the reverse steps of `sampler`
        ("ddpm" or "ddim"; default the spec's [model.sampler]) with `steps` steps (ddim only;
        default the spec's). With the defaults and the run's seed: the run's samples.npy.

        A class-conditional model (model.condition = "label") draws class `label` with
        classifier-free guidance weight `guidance` (default model.guidance); without a label
        it draws from the unconditional eps(x, null).

        A continuous-time model (the VDM) is unconditional and samples by ancestral steps: any
        number of `steps` (default [model.schedule] T), no "ddim", no guidance."""
        check_guidance(model, label, guidance)  # before the VDM's branch, which has no guidance to apply
        if model.extras.get("time") == "continuous":  # the VDM: ancestral steps in continuous time
            if sampler not in (None, "ddpm"):
                raise ModelConfigError("sampler", "a continuous-time model samples by ancestral (ddpm-like) steps")
            return vdm.draw(model, data, ctx, n, ctx.seed, steps)
        cfg = model.extras["cfg"]
        labels = None if label is None else np.full(int(n), int(label), np.int64)
        w = cfg.get("guidance", 0.0) if guidance is None else float(guidance)
        scfg = sampler_config(cfg["sampler"], sampler, steps)
        progs = {name: model.program(name, ctx) for name in ("sample_step", "schedule_gamma")
                 if name in model.programs}
        sched = current_schedule(model, progs)
        x0, _ = sample(model, progs, sampler_steps(scfg, sched, cfg["variance"]), n, sample_rng(ctx.seed),
                       labels=labels, guidance=w)
        return to_data_units(model, data, x0)


def check_guidance(model, label, guidance) -> None:
    """ModelConfigError for a guidance weight the model cannot apply (None: none asked for)."""
    if guidance is None:
        return
    if not model.n_labels:
        raise ModelConfigError("guidance", "guidance needs a class-conditional model (model.condition = \"label\")")
    if label is None:
        raise ModelConfigError("guidance", "guidance needs a label to condition on")
    if float(guidance) < 0:
        raise ModelConfigError("guidance", f"must be >= 0, found {guidance}")


# --- report helpers ------------------------------------------------------------------------
def cond_report(model, progs, steps, data, ctx, per_class=None) -> dict:
    """cond_accuracy: the fraction of class-K samples (guidance w of the spec) that the digit
    classifier reads as K, averaged over K; and per class."""
    k, cfg = model.n_labels, model.extras["cfg"]
    if not is_digits(data, ctx.spec):
        return {}
    labels = class_labels(k, per_class or report_per_class(data, k))
    rng = seeds.rng(ctx.seed, "conditional")
    x0, _ = sample(model, progs, steps, len(labels), rng, labels=labels, guidance=cfg["guidance"])
    out = cond_accuracy(to_data_units(model, data, x0), labels, k, data, ctx.spec, ctx.seed)
    out["cond_guidance"] = cfg["guidance"]
    return out


def sample_rng(seed) -> np.random.Generator:
    """The generator of x_T and the reverse steps' noise (the report's and `gengraph sample`'s)."""
    return seeds.rng(seed, "diffusion.samples")


def sampler_config(spec_sampler: dict, kind=None, steps=None) -> dict:
    """The [model.sampler] table with a sampler kind and a step count chosen at sampling time.

    The same kind keeps the spec's other keys (eta, variance); another kind starts from its
    defaults (clip_x0 stays, it is built into the sampling program)."""
    kind = spec_sampler["kind"] if kind is None else kind
    if kind not in SAMPLERS.names():
        raise ModelConfigError("sampler", f'unknown sampler "{kind}" (choose from {", ".join(SAMPLERS.names())})')
    if kind == spec_sampler["kind"]:
        out = dict(spec_sampler)
    else:
        out = {"kind": kind}
        if "clip_x0" in spec_sampler:
            out["clip_x0"] = spec_sampler["clip_x0"]
    if steps is not None:
        if "steps" not in SAMPLERS.get(kind).schema.fields:
            raise ModelConfigError("steps", f'the {kind} sampler takes all T steps; a shorter sequence needs '
                                   f'sampler "ddim"')
        if int(steps) < 1:
            raise ModelConfigError("steps", f"needs at least one step, found {steps}")
        out["steps"] = int(steps)
    return out


def programs_of(model, ctx=None) -> dict:
    """The compiled extra programs (the trainer's, or compiled once here, e.g. in tests)."""
    return {name: model.program(name, ctx) for name in model.programs}


def current_schedule(model, progs=None):
    """The DiscreteSchedule in use (for a learned schedule: evaluated at the current parameters)."""
    if model.extras["schedule"] is not None:
        return model.extras["schedule"]
    prog = (progs or {}).get("schedule_gamma") or compile(model.graph, {"gamma": model.extras["gamma"]})
    return from_gamma("learned", np.asarray(to_numpy(prog.run()["gamma"]), np.float64))


def sample(model, progs, steps, n, rng, record=(), labels=None, guidance=0.0):
    """n samples in model space from x_T ~ N(0, I) through the sampler's steps.

    A class-conditional model takes `labels` (n ints; None: the null label, i.e. unconditional)
    and the classifier-free guidance weight."""
    D = model.extras["D"]
    prog = progs["sample_step"]
    extra = {}
    if model.n_labels:
        k = model.n_labels
        lab = np.full(n, k, np.int64) if labels is None else np.asarray(labels, np.int64)
        extra = {"label": lab, "guidance": float(guidance) if labels is not None else 0.0}

    def step(x, t, noise, a, b, sigma):
        res = prog.run(x_t=x, t=np.full(len(x), t, dtype=np.int64), noise=noise, coef_x0=a, coef_eps=b,
                       sigma=sigma, **extra)
        return res["x_next"]  # stays on the device (CuPy) until run_steps records or returns it

    x_T = rng.standard_normal((n, D))
    return run_steps(step, steps, x_T, rng, record)


STRIP_MIN_SNR = 0.1  # below this the signal's amplitude is under a third of the noise's: one frame shows it


def strip_times(sched, steps, k: int) -> list[int]:
    """k of the times a sampler visits (T ... 0): T (pure noise), then k - 2 times evenly spaced
    in log SNR_t = log(abar_t / (1 - abar_t)) from SNR = STRIP_MIN_SNR towards the last step's,
    then 0. Evenly spaced in the signal level instead, most columns fall where the samples are
    still noise and look alike."""
    visited = np.array([steps[0].t] + [s.t_next for s in steps])
    abar = np.concatenate([[1.0], sched.alpha_bar])[visited]
    inner = np.flatnonzero((abar < 1.0) & (np.arange(len(visited)) > 0))  # neither T nor t = 0
    if k <= 2 or len(inner) == 0:
        return sorted({int(visited[0]), int(visited[-1])}, reverse=True)
    log_snr = np.log(abar[inner]) - np.log1p(-abar[inner])
    lo = max(float(np.log(STRIP_MIN_SNR)), float(log_snr.min()))
    # k - 2 values from lo up to (not including) the last step's, which looks like t = 0 already
    targets = np.linspace(lo, float(log_snr.max()), k - 1)[:-1]
    picks = [int(inner[np.argmin(np.abs(log_snr - v))]) for v in targets]
    return sorted({int(visited[0]), int(visited[-1]), *(int(visited[i]) for i in picks)}, reverse=True)


def to_data_units(model, data, x):
    if model.extras["cfg"]["symmetric"]:
        x = (np.asarray(x) + 1.0) / 2.0
    return data.unscale_x(np.asarray(x, np.float64))


def t_strata(T: int, k: int) -> list[tuple[int, int]]:
    """Inclusive ranges of t covering 1..T: (1, 1) (prior and decoder, always exact), then all of 2..T
    one by one when k is 0 or >= T - 1, else at most k strata with edges on a quadratic grid, so the
    first (largest, fastest-changing) terms get strata of one step and the flat tail wide ones."""
    if k == 0 or k >= T - 1:
        return [(t, t) for t in range(1, T + 1)]
    edges = sorted({2 + round((T - 1) * (i / k) ** 2) for i in range(k + 1)})
    return [(1, 1)] + [(a, b - 1) for a, b in zip(edges, edges[1:])]


def nll_bound(model, progs, sched, x, seed, batch=None, labels=None) -> dict:
    """The variational bound on -log p(x) per example (nats): all T terms, or (bound_timesteps = K)
    an unbiased stratified estimate of their sum over t = 2..T (see `t_strata`); for a
    class-conditional model the bound on -log p(x|y) at `labels` (the null label: unconditional).

    Each KL term's expectation over x_t ~ q(x_t|x_0) uses `bound_samples` draws; the prior
    term is analytic. Returns means over the examples and the per-example bounds.
    """
    cfg, T = model.extras["cfg"], model.extras["T"]
    prog = progs["bound_terms"]
    batch = batch or cfg["bound_batch"]
    reps = cfg["bound_samples"]
    rng = seeds.rng(seed, "diffusion.bound")
    n = len(x)
    prior, recon, diff = np.zeros(n), np.zeros((reps, n)), np.zeros((reps, n))
    discretized = cfg["decoder"] == "discretized"
    sigma1 = math.sqrt(float(sched.betas[0]))
    strata = t_strata(T, cfg["bound_timesteps"])
    for start in range(0, n, batch):
        xb = np.asarray(x[start:start + batch])
        sl = slice(start, start + len(xb))
        extra = {"y": np.asarray(labels[sl], np.int64)} if model.n_labels else {}
        for r in range(reps):
            for lo, hi in strata:
                eps = rng.standard_normal(xb.shape)
                # one t per example, uniform in [lo, hi]; the term counts for the stratum's hi - lo + 1 steps
                t = np.full(len(xb), lo, np.int64) if lo == hi else rng.integers(lo, hi + 1, len(xb))
                res = prog.run(x=xb, t=t, eps=eps, **extra)
                if lo == 1:
                    prior[sl] = np.asarray(to_numpy(res["prior"]), np.float64)
                    if discretized:
                        x0m = 2.0 * xb - 1.0 if cfg["symmetric"] else xb
                        mean = np.asarray(to_numpy(res["x0_hat"]), np.float64)
                        term = -discretized_gaussian_loglik(x0m, mean, sigma1, cfg["levels"]).sum(axis=1)
                    else:
                        term = np.asarray(to_numpy(res["term"]), np.float64)
                    recon[r, sl] = term
                else:
                    diff[r, sl] += (hi - lo + 1) * np.asarray(to_numpy(res["term"]), np.float64)
    shift = 0.0 if discretized else model.extras["shift"]
    per_example = prior + recon.mean(axis=0) + diff.mean(axis=0) - shift
    # the reps are independent estimates of the test-set bound: their spread gives the SE
    bound, bound_se = mean_se(prior.mean() + recon.mean(axis=1) + diff.mean(axis=1) - shift)
    _, recon_se = mean_se(recon.mean(axis=1))
    _, diff_se = mean_se(diff.mean(axis=1))
    return {"nll_bound": bound, "nll_bound_se": bound_se, "prior": float(prior.mean()),
            "reconstruction": float(recon.mean() - shift), "reconstruction_se": recon_se,
            "diffusion": float(diff.mean()), "diffusion_se": diff_se, "per_example": per_example}


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


def _check_grid(data, cfg, lo=-1.0, key="decoder", what='"discretized"'):
    """The data (after scaling, and 2x - 1 when symmetric) must lie on `levels` equally spaced values
    from lo to 1: the grid a discretized decoder puts its probability on. A value off it would get
    no term at all (its one-hot is empty) and the bound would not be one."""
    levels = cfg["levels"]
    if levels < 2:
        raise _config_error("levels", 'the discretized decoder needs levels >= 2 (the number of data values)')
    for name, x in (("train", data.x_train), ("test", data.x_test)):
        if x is None or x.size == 0:  # no test split (test_fraction = 0): nothing to check
            continue
        xm = 2.0 * x - 1.0 if cfg["symmetric"] else x
        k = (xm - lo) * (levels - 1) / (1.0 - lo)
        if np.abs(k - np.round(k)).max() > 1e-6 or xm.min() < lo - 1e-9 or xm.max() > 1 + 1e-9:
            raise _config_error(key, f'{what} needs the {name} data (after scaling'
                                f'{" and symmetric" if cfg["symmetric"] else ""}) on {levels} equally spaced '
                                f'values from {lo:g} to 1; e.g. data.scale = "minmax_global"'
                                f'{" with model.symmetric = true" if lo < 0 else ""}')


# --- sample quality: plugins/blocks/sample_quality.py (shared with ebm and rbm) ---------------
def sample_quality(samples, data, seed) -> dict:
    """Two-sample statistics of samples (data units) vs the test set, beside training rows as a baseline."""
    return two_sample_report(samples, data.unscale_x(data.x_test), data.unscale_x(data.x_train), seed=seed)


# --- plots ---------------------------------------------------------------------------------
def _plots(samples, strip, data, ctx, cfg):
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
