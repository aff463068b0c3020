"""What the latent-variable plugins (`vae`, `hvae`) share.

The lecture's Markovian hierarchical VAE with T levels,

    p(x, h_1:T) = p(h_T) p(x|h_1) prod_{t=2..T} p(h_{t-1}|h_t)
    q(h_1:T|x)  = q(h_1|x) prod_{t=2..T} q(h_t|h_{t-1}),

is built once here (`Hierarchy`); a VAE is the case T = 1. Every conditional is a
declared network: Gaussian ones (q(h_t|.), p(h_{t-1}|h_t)) end in one linear layer of
2 * size units split into a mean and a log-variance head; p(x|h_1) ends in a linear
layer whose output a *likelihood* interprets (registry `LIKELIHOODS`: `bernoulli`
logits, `gaussian` means with a fixed or learned per-dimension variance, `categorical`
logits over the data's grey levels, a pmf of the data: see blocks/likelihoods.py).

Samples come from the reparameterisation h = mu + exp(logvar / 2) * eps with
eps = ops.random_normal(..., stream=k); each level draws from its own stream, so a
saved stream state replays the exact same noise whatever order a program runs in.

The negative ELBO is a sum of *terms* (registry `ELBO_TERMS`), each a per-example
node built from the `ElboParts` of one forward pass:

* ``reconstruction`` = E_q[-log p(x|h_1)] (Monte Carlo over `samples` draws)
* ``kl`` = E_q[log q(h_1:T|x) - log p(h_1:T)] = sum_t kl_t with, per level,
  kl_t = E_q[log q(h_t|h_{t-1}) - log p(h_t|h_{t+1})]  (h_0 = x, p(h_T|h_{T+1}) = p(h_T));
  with ``kl = "analytic"`` the top level uses E_q[KL(q(h_T|h_{T-1}) || N(0, I))] in
  closed form (for a VAE: the usual analytic KL), otherwise every level is Monte Carlo.

The importance-weighted bound -log (1/k) sum_i p(x, h^i) / q(h^i|x), h^i ~ q(h_1:T|x)
jointly, is its own compiled program (`iw`), evaluated by `report` over the test set.
The report's bounds (test_neg_elbo and its terms, test_nll_iw and, for a pmf likelihood,
test_bpd = test_nll_iw / (D ln 2)) are each the mean of `report_draws` independent passes
over the test set, with the standard error std/sqrt(report_draws) as NAME_se; beside them
baseline_histogram_bpd, the independent per-pixel histogram model (blocks/stats.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from gengraph.engine import ops, to_numpy

from gengraph.plugins.blocks.layers import LAYERS as LAYERS_OF_NETWORKS, Network
from gengraph.plugins.blocks.likelihoods import BoundLikelihood, Categorical, values_last
from gengraph.plugins.blocks.stats import baseline_histogram, bits_per_dim, in_data_units, mean_se, on_grid
from gengraph.plugins.model import Model, ModelConfigError, ModelPlugin
from gengraph.plugins.registry import PLUGIN_GROUP, Registry
from gengraph.plugins.spec.schema import Dispatch, Field, Table
from gengraph.plugins.blocks.files import save_samples
from gengraph.plugins.blocks import plots
from gengraph.plugins.blocks.plots import _figure, _save
from gengraph.plugins.blocks import seeds
from gengraph.plugins.models.class_condition import class_labels, cond_accuracy, one_hot, report_per_class
from gengraph.plugins.models.digit_quality import digit_report, is_digits, quality_sample_count
from gengraph.plugins.blocks.memory import too_big
from gengraph.plugins.datasets.base import reopening
from gengraph.plugins.blocks.layers import fmt_shape, infer_shapes

LIKELIHOODS = Registry("likelihood", PLUGIN_GROUP, part=True)
ELBO_TERMS = Registry("ELBO term", PLUGIN_GROUP, part=True)

# random streams (one per level is added to the base): training/evaluation, IW bound, sampling
TRAIN_STREAM, IW_STREAM, SAMPLE_STREAM = 100, 200, 300
_LOG_2PI = math.log(2.0 * math.pi)


class GaussianNet:
    """x -> hidden layers -> linear layer of 2*size units, split into (mu, logvar).

    The log-variance half of the output layer starts at zero weights (unit variances
    for every input): random log-variances of a few units make exp(-logvar) and the
    first Monte Carlo KL terms of a hierarchy explode (1e9 nats at step 0).
    """

    def __init__(self, graph, in_dim: int, layers: list[dict], size: int, rng, scope: str, origin=None,
                 image_shape=None):
        self.size = size
        self.net = Network(graph, in_dim, layers, rng, scope, origin=origin, image_shape=image_shape,
                           out={"units": 2 * size, "activation": "identity", "init": "xavier"})
        W = self.net.layers[-1][1]
        graph.values[W.id][:, size:] = 0.0

    def __call__(self, x):
        z = self.net(x)
        return z[..., :self.size], z[..., self.size:]


def reparameterize(mu, logvar, eps):
    """h = mu + exp(logvar / 2) * eps: a sample of N(mu, exp(logvar)) differentiable in mu, logvar."""
    return mu + ops.exp(0.5 * logvar) * eps


def log_normal(h, mu, logvar):
    """log N(h; mu, diag exp(logvar)), summed over the last axis."""
    return ops.sum(ops.gaussian_logpdf(h, mu, logvar), axis=-1)


def log_std_normal(h):
    """log N(h; 0, I), summed over the last axis."""
    return ops.sum(-0.5 * (ops.square(h) + _LOG_2PI), axis=-1)


def _sample_mean(v):
    """Mean over the leading sample axis when there is one ((S, B) -> (B,))."""
    return ops.mean(v, axis=0) if v.ndim == 2 else v


# --- likelihoods p(x | decoder output) ---------------------------------------------------
class Bernoulli:
    help = "independent Bernoulli pixels; the decoder outputs logits (binary data; on grey levels a cross-entropy)"
    schema = Table({}, help=help)

    def build(self, graph, dim, cfg, rng):
        return BoundLikelihood(lambda x, out: ops.bernoulli_logpmf(x, out), ops.sigmoid)


class Gaussian:
    help = "independent Gaussians around the decoder output, fixed sigma or a learned per-dimension variance"
    schema = Table({
        "sigma": Field((int, float), 1.0, "standard deviation (the initial one when learn_variance = true)",
                       min=1e-6),
        "learn_variance": Field(bool, False, "learn a per-dimension log-variance (initialised at 2 log sigma)"),
    }, help=help)

    def build(self, graph, dim, cfg, rng):
        init = 2.0 * math.log(float(cfg.get("sigma", 1.0)))
        if cfg.get("learn_variance", False):
            with graph.scope("likelihood"):
                logvar = graph.param("logvar", np.full(dim, init))
            params = [logvar]
        else:
            logvar, params = graph.constant(np.asarray(init), name=None), []
        return BoundLikelihood(lambda x, out: ops.gaussian_logpdf(x, out, logvar), lambda out: out, params)


LIKELIHOODS.register("bernoulli", Bernoulli())
LIKELIHOODS.register("gaussian", Gaussian())
LIKELIHOODS.register("categorical", Categorical())


def check_likelihood(cfg: dict, data) -> None:
    """A discrete likelihood needs the data on its grid, and a Bernoulli one data in [0, 1]
    (ModelConfigError naming the key otherwise: grey levels 0..240 gave a negative NLL)."""
    kind = LIKELIHOODS.get(cfg["kind"])
    x = data.x_train  # (the test split of per-feature minmax may pass 1 a little, as it did before)
    if cfg["kind"] == "bernoulli" and len(x) and (x.min() < 0 or x.max() > 1) and not reopening():
        raise ModelConfigError("model.likelihood.kind",
                               f"a Bernoulli likelihood needs data in [0, 1]; the train data (after data.scale) lie "
                               f'in [{x.min():.4g}, {x.max():.4g}]: set data.scale = "minmax_global", or use '
                               'kind = "gaussian"')
    if not getattr(kind, "discrete", False):
        return
    levels = kind.levels(cfg)
    for name, x in (("train", data.x_train), ("test", data.x_test)):
        if x is not None and len(x) and not on_grid(x, levels):
            raise ModelConfigError("model.likelihood.levels",
                                   f"the {name} data are not on {levels} equally spaced values from 0 to 1 "
                                   f'(e.g. the digits with data.scale = "minmax_global" and levels = 17)')


def likelihood_schema() -> Dispatch:
    return Dispatch("kind", LIKELIHOODS, default={"kind": "bernoulli"},
                    help="p(x|h): kind = " + " | ".join(LIKELIHOODS.names()))


# --- ELBO terms ---------------------------------------------------------------------------
@dataclass
class ElboParts:
    """The pieces of one forward pass that ELBO terms are built from.

    Shapes: S samples, B examples. ``log_lik`` (S, B) = log p(x|h_1); ``log_q[t]`` and
    ``log_p[t]`` (S, B) = log q(h_t|h_{t-1}) and log p(h_t|h_{t+1}) (the prior at the top);
    ``kl_levels[t]`` (B,) the level's KL-like term as configured (analytic or Monte Carlo);
    ``hs[t]`` (S, B, size_t) the samples; ``qs[t]`` the (mu, logvar) of q at level t.
    """
    x: object
    log_lik: object
    log_q: list
    log_p: list
    kl_levels: list
    hs: list
    qs: list
    cfg: dict


@dataclass
class ElboTerm:
    """One term of the negative ELBO: ``build(parts, elbo_cfg)`` -> per-example node (B,)."""

    build: Callable
    help: str = ""
    weight: Callable | None = None  # elbo_cfg -> multiplier in the training loss (default 1)
    in_bound: bool = True  # summed (with weight 1) into the logged neg_elbo


def _reconstruction(parts: ElboParts, cfg) -> object:
    return -_sample_mean(parts.log_lik)


def _kl(parts: ElboParts, cfg) -> object:
    total = parts.kl_levels[0]
    for k in parts.kl_levels[1:]:
        total = total + k
    return total


ELBO_TERMS.register("reconstruction", ElboTerm(_reconstruction, "expected negative log-likelihood E_q[-log p(x|h_1)]"))
ELBO_TERMS.register("kl", ElboTerm(_kl, "prior matching E_q[log q(h|x) - log p(h)] (sum over levels), times beta",
                                   weight=lambda cfg: cfg["beta"]))


def elbo_schema() -> Table:
    return Table({
        "terms": Field(list, ["reconstruction", "kl"], "terms of the negative ELBO (registry of ELBO terms)",
                       item=str, choices=ELBO_TERMS),
        "beta": Field((int, float), 1.0, "weight of the kl term in the training loss (beta-VAE); "
                      "the logged neg_elbo always weighs it 1", min=0.0),
        "kl": Field(str, "analytic", "KL of the top level: analytic (closed form) or monte_carlo",
                    choices=["analytic", "monte_carlo"]),
        "samples": Field(int, 1, "Monte Carlo samples of h per example in the training ELBO", min=1),
        "iw_samples": Field(int, 100, "k of the importance-weighted bound test_nll_iw", min=1),
        "report_draws": Field(int, 10, "independent Monte Carlo passes over the test set behind every reported "
                              "bound (their mean, and std/sqrt(draws) as NAME_se)", min=2),
    }, help="the variational bound and how it is estimated")


# --- the Markovian hierarchy --------------------------------------------------------------
def output_layer(in_dim: int, layers: list[dict], x_dim: int, image_shape, origin, out_units=None) -> dict:
    """The layer that maps p(x|h_1)'s hidden layers to the likelihood's parameters: a linear
    layer of x_dim units after flat layers, a 3x3 conv to the data's channels after images
    of the data's height and width (e.g. a conv_transpose2d decoder), with out_units / x_dim
    output channels per data channel when the likelihood needs several values per pixel."""
    end = infer_shapes((in_dim,), layers, origin, "decoder")[-1]
    out_units = out_units or x_dim  # e.g. x_dim * levels for a categorical likelihood
    if len(end) == 1:
        return {"units": out_units, "activation": "identity", "init": "xavier"}
    if image_shape is None or len(end) != 3 or tuple(end[1:]) != tuple(image_shape[1:]):
        data = fmt_shape(image_shape) if image_shape is not None else f"rows of {x_dim} features"
        raise ModelConfigError(f"{origin or 'decoder'}[{len(layers) - 1}]",
                               f"the decoder ends in images {fmt_shape(end)}; the data are {data}: end "
                               "with images of the data's height and width (a 3x3 conv to its channels "
                               "follows) or with a flat layer (a dense layer to the pixels follows)")
    # values_per_pixel > 1 (e.g. categorical logits): channel c * values + k is value k of channel c
    return {"type": "conv2d", "channels": int(image_shape[0]) * (out_units // x_dim), "kernel": 3, "padding": 1,
            "stride": 1, "dilation": 1, "groups": 1, "activation": "identity", "init": "xavier", "bias": True}


def _checked(complaints: list, where, make):
    """make(), or None with its ModelConfigError added to `complaints`: each network of a hierarchy
    is checked even when another does not fit. The complaint says which conditional it was building
    (`where`; a template list serves every level, so its key alone does not say which one failed),
    and one that a template list makes alike at several levels is kept once."""
    try:
        return make()
    except ModelConfigError as exc:
        message = f"in {where}: {exc.message}" if where else exc.message
        if not any(e.path == exc.path and message.endswith(e.message) for e in complaints):
            complaints.append(ModelConfigError(exc.path, message, exc.also))
        return None


class Hierarchy:
    """Encoders q(h_t|h_{t-1}), decoders p(h_{t-1}|h_t) and p(x|h_1), and the bounds built from them.

    ``levels[t]`` is ``{"size", "encoder", "decoder"}`` for t = 1..T (index 0 is level 1):
    ``encoder`` the hidden layers of q(h_t|h_{t-1}) (h_0 = x), ``decoder`` those of
    p(h_{t-1}|h_t) (for t = 1: p(x|h_1), followed by the likelihood's output layer).
    """

    def __init__(self, graph, x_dim: int, levels: list[dict], likelihood_cfg: dict, rng, names,
                 image_shape=None, origins=None, n_labels: int = 0):
        """`image_shape` (C, H, W): x is rows of images, which conv layers of q(h_1|x) see as images
        and a decoder ending in images of H x W returns through a 3x3 conv to C channels;
        `origins(role, t)` is the spec key of a layer list (for error messages).

        `n_labels` > 0: class-conditional (Sohn et al. 2015): an int64 input "y" whose one-hot
        is appended to the input of q(h_1|x, y) and of p(x|h_1, y); the prior stays N(0, I)."""
        self.graph, self.x_dim, self.n_labels = graph, x_dim, int(n_labels)
        self.sizes = [lv["size"] for lv in levels]
        origin = origins or (lambda role, t: None)
        if image_shape is not None and int(np.prod(image_shape)) != x_dim:
            image_shape = None
        self.y = self.label = None
        enc_image_shape = image_shape
        if self.n_labels:
            _check_flat_encoder(levels[0]["encoder"], origin("encoder", 0))
            enc_image_shape = None  # [x, one-hot] is a flat row; the decoder's output is still the data's
            self.y = graph.input("y", (None,), dtype="int64")
            self.label = one_hot(graph, self.y, self.n_labels)
        dims = [x_dim + self.n_labels] + self.sizes
        dec_in = self.sizes[0] + self.n_labels
        # each network's input size is known from the spec, so each is checked even when another does
        # not fit: an encoder's and a decoder's shape errors are reported together
        complaints = []
        self.encoders = [_checked(complaints, t and f"q(h_{t + 1} | h_{t}), whose input is h_{t} ({dims[t]} values)",
                                  lambda t=t, lv=lv: GaussianNet(graph, dims[t], lv["encoder"], lv["size"], rng,
                                                                 names("encoder", t), origin("encoder", t),
                                                                 enc_image_shape if t == 0 else None))
                         for t, lv in enumerate(levels)]
        lik_kind = LIKELIHOODS.get(likelihood_cfg["kind"])
        out_units = lik_kind.units(x_dim, likelihood_cfg) if hasattr(lik_kind, "units") else x_dim
        self.decode_x = _checked(complaints, None,
                                 lambda: Network(graph, dec_in, levels[0]["decoder"], rng, names("decoder", 0),
                                                 out=output_layer(dec_in, levels[0]["decoder"], x_dim, image_shape,
                                                                  origin("decoder", 0), out_units),
                                                 origin=origin("decoder", 0)))
        # decoders[t] is p(h_t | h_{t+1}) for t = 0..T-2 (level t+2's decoder)
        self.decoders = [_checked(complaints,
                                  f"p(h_{t + 1} | h_{t + 2}), whose input is h_{t + 2} ({self.sizes[t + 1]} values)",
                                  lambda t=t: GaussianNet(graph, self.sizes[t + 1], levels[t + 1]["decoder"],
                                                          self.sizes[t], rng, names("decoder", t + 1),
                                                          origin("decoder", t + 1)))
                         for t in range(len(levels) - 1)]
        if complaints:
            raise ModelConfigError.together(complaints)
        lik = dict(likelihood_cfg)
        self.likelihood_cfg, self.likelihood_kind = dict(likelihood_cfg), lik_kind
        self.likelihood = LIKELIHOODS.get(lik.pop("kind")).build(graph, x_dim, lik, rng)

    @property
    def T(self) -> int:
        return len(self.sizes)

    def with_label(self, v):
        """v with the one-hot label appended on its last axis (the input of q(h_1|x, y) and
        p(x|h_1, y)); v itself when unconditional. (S, B, .) samples repeat each row's label."""
        if not self.n_labels:
            return v
        c = self.label
        if v.ndim == 3:
            c = ops.expand_dims(c, axis=(0,)) + ops.stop_gradient(ops.zeros_like(v[..., :1]))
        return ops.concat([v, c], axis=-1)

    def x_params(self, h1):
        """The likelihood's parameters of p(x|h_1) (and y, when conditional): rows of x_dim * k
        values, pixel by pixel (a conv output (C * k, H, W) is reordered to (C, H, W, k))."""
        out = self.decode_x(self.with_label(h1))
        k = self.decode_x.out_dim // self.x_dim
        if k > 1 and len(self.decode_x.out_shape) == 3:
            out = values_last(out, self.decode_x.out_shape, k)
        return out

    # sampling q(h_1:T | x) with S samples per example: h_t has shape (S, B, size_t)
    def posterior(self, x, samples: int, stream: int):
        hs, qs, prev = [], [], x
        for t, enc in enumerate(self.encoders):
            mu, logvar = enc(self.with_label(prev) if t == 0 else prev)
            if t == 0:  # (B, size) -> a (S, B, size) reference for the draw's shape
                ref = ops.expand_dims(ops.stop_gradient(mu), axis=(0,)) + \
                    self.graph.constant(np.zeros((samples, 1, self.sizes[0])))
            else:
                ref = mu
            h = reparameterize(mu, logvar, ops.random_normal(ref, stream=stream + t))
            hs.append(h)
            qs.append((mu, logvar))
            prev = h
        return hs, qs

    def parts(self, x, samples: int, stream: int, elbo_cfg: dict) -> ElboParts:
        hs, qs = self.posterior(x, samples, stream)
        with self.graph.scope("log_likelihood"):
            log_lik = ops.sum(self.likelihood.log_prob(x, self.x_params(hs[0])), axis=-1)
        log_q = [log_normal(h, mu, lv) for h, (mu, lv) in zip(hs, qs)]
        log_p = []
        for t in range(self.T - 1):
            mu_p, lv_p = self.decoders[t](hs[t + 1])
            log_p.append(log_normal(hs[t], mu_p, lv_p))
        log_p.append(log_std_normal(hs[-1]))
        kl_levels = [_sample_mean(lq - lp) for lq, lp in zip(log_q, log_p)]
        if elbo_cfg["kl"] == "analytic":
            mu, lv = qs[-1]
            kl_levels[-1] = _sample_mean(ops.sum(ops.kl_normal_std(mu, lv), axis=-1))
        return ElboParts(x, log_lik, log_q, log_p, kl_levels, hs, qs, elbo_cfg)

    def log_weights(self, x, samples: int, stream: int):
        """log p(x, h) - log q(h|x) for S joint samples of q: shape (S, B)."""
        p = self.parts(x, samples, stream, {"kl": "monte_carlo"})
        lw = p.log_lik
        for lq, lp in zip(p.log_q, p.log_p):
            lw = lw + lp - lq
        return lw

    def iw_bound(self, x, k: int, stream: int):
        """(-log (1/k) sum_i w_i, -(1/k) sum_i log w_i) per example: the IW bound and the k-sample ELBO."""
        lw = self.log_weights(x, k, stream)
        return -(ops.logsumexp(lw, axis=0) - math.log(k)), -ops.mean(lw, axis=0)

    # deterministic paths and ancestral sampling
    def encode_means(self, x):
        means, prev = [], self.with_label(x)
        for enc in self.encoders:
            prev = enc(prev)[0]
            means.append(prev)
        return means

    def decode(self, h_top, stream: int | None = None):
        """E[x | h_1] after h_T -> h_1 through the decoders: their means, or samples when stream is given."""
        h = h_top
        for t in reversed(range(self.T - 1)):
            mu, lv = self.decoders[t](h)
            h = mu if stream is None else reparameterize(mu, lv, ops.random_normal(mu, stream=stream + t))
        return self.likelihood.mean(self.x_params(h))

    def reconstruct(self, x):
        return self.likelihood.mean(self.x_params(self.encoders[0](self.with_label(x))[0]))

    def networks(self) -> list:
        """Every layer stack of the hierarchy (encoders, decoders, p(x|h_1)), for size estimates."""
        return [g.net for g in self.encoders + self.decoders] + [self.decode_x]


DEFAULT_HIDDEN = [{"units": 128, "activation": "relu"}]


def _check_flat_encoder(layers: list[dict], origin) -> None:
    """A conditional q(h_1|x, y) sees the row [x, one-hot(y)]: no image layers."""
    for i, cfg in enumerate(layers):
        kind = cfg.get("type", "dense")
        if kind == "reshape" or getattr(LAYERS_OF_NETWORKS.get(kind), "image", False):
            raise ModelConfigError("model.condition",
                                   f'"label" appends a one-hot of the label to the encoder\'s input rows, so '
                                   f'the encoder needs flat layers; {origin or "encoder"}[{i}] is {kind}')


def _widest(hier, params) -> int:
    """Values per example of the widest array the hierarchy computes (images included)."""
    return max([hier.x_dim, *hier.sizes, *(p.shape[-1] for p in params if len(p.shape) == 2),
                *(int(np.prod(s, dtype=np.int64)) for n in hier.networks() for s in getattr(n, "shapes", []))])


# Working memory of one batch of the importance-weighted bound. A fixed budget, not a share of
# the free memory: the batch size decides which random draws meet which rows, so a size that
# followed the free memory made test_nll_iw differ from run to run and machine to machine.
IW_BATCH_BYTES = 1 << 30


def iw_rows(hier, k: int, params) -> int:
    """How many examples `nll_iw` runs at once: k samples each go through the network together, so
    at most 50 000 // k rows (512 at most), fewer when IW_BATCH_BYTES cannot hold a few
    k x rows x width arrays per layer (the widest layer, images included). The same on every
    machine, so a seed gives the same bound everywhere."""
    per_row = 8 * k * _widest(hier, params) * (4 + len(params))
    return max(1, min(512, 50_000 // k, IW_BATCH_BYTES // per_row))


def _check_iw_memory(hier, k: int, params) -> None:
    """Refuse, before anything runs, a k whose samples of one example cannot fit."""
    need = 8 * k * _widest(hier, params) * (4 + len(params))  # a few k x width arrays per layer, one example at a time
    if (why := too_big(need, f"iw_samples = {k} (k samples of one example at once)")) is not None:
        raise ModelConfigError("model.elbo.iw_samples", why)


def build_latent_model(graph, hier: Hierarchy, elbo_cfg: dict) -> Model:
    """Loss (negative ELBO with weights), metrics and the extra programs of a latent model."""
    x = graph.input("x", (None, hier.x_dim))
    with graph.scope("elbo"):
        parts = hier.parts(x, elbo_cfg["samples"], TRAIN_STREAM, elbo_cfg)
        terms = {name: ELBO_TERMS.get(name) for name in elbo_cfg["terms"]}
        values = {name: term.build(parts, elbo_cfg) for name, term in terms.items()}
        loss_vec = bound_vec = None
        for name, term in terms.items():
            w = float(term.weight(elbo_cfg)) if term.weight is not None else 1.0
            v = values[name] if w == 1.0 else w * values[name]
            loss_vec = v if loss_vec is None else loss_vec + v
            if term.in_bound:
                bound_vec = values[name] if bound_vec is None else bound_vec + values[name]
        loss = ops.mean(loss_vec)
        metrics = {"neg_elbo": ops.mean(bound_vec) if bound_vec is not None else loss}
        metrics.update({name: ops.mean(v) for name, v in values.items()})
        if hier.T > 1:
            metrics.update({f"kl_{t + 1}": ops.mean(k) for t, k in enumerate(parts.kl_levels)})
    _check_iw_memory(hier, elbo_cfg["iw_samples"], graph.params())
    with graph.scope("iw"):
        nll_iw, neg_elbo_k = hier.iw_bound(x, elbo_cfg["iw_samples"], IW_STREAM)
    h_top = graph.input("h_top", (None, hier.sizes[-1]))
    with graph.scope("generate"):
        programs = {
            "iw": ({"nll_iw": nll_iw, "neg_elbo": neg_elbo_k}, {}),
            "elbo": ({"neg_elbo": bound_vec if bound_vec is not None else loss_vec,
                      **{name: v for name, v in values.items()},
                      **({f"kl_{t + 1}": k for t, k in enumerate(parts.kl_levels)} if hier.T > 1 else {})}, {}),
            "reconstruct": ({"mean": hier.reconstruct(x)}, {}),
            "encode": ({f"mu_{t + 1}": m for t, m in enumerate(hier.encode_means(x))}, {}),
            "decode": ({"mean": hier.decode(h_top)}, {}),
        }
        if hier.T > 1:
            programs["sample"] = ({"mean": hier.decode(h_top, SAMPLE_STREAM)}, {})
        else:
            programs["sample"] = programs["decode"]
    params = [n for n in graph.params()]
    inputs = {"x": x, **({"y": hier.y} if hier.n_labels else {})}
    return Model(graph, params, loss, inputs, metrics=metrics, programs=programs,
                 program_rows={"iw": iw_rows(hier, elbo_cfg["iw_samples"], params)},  # nll_iw's batches
                 extras={"hierarchy": hier, "parts": parts, "terms": values, "elbo": elbo_cfg},
                 n_labels=hier.n_labels)


# --- the plugin base: shared report ---------------------------------------------------------
class LatentPlugin(ModelPlugin):
    tasks = ("classification", "unsupervised", "regression")

    def report(self, model, data, ctx):
        return report_latent(model, data, ctx)

    def sample(self, model, data, ctx, n, *, label=None):
        """Ancestral samples in data units: h_T ~ N(0, I), then down the decoders (sampling the
        intermediate levels), then the likelihood's mean E[x | h_1], as the run's samples.npy.
        A conditional model draws p(x|h, y) at y = `label`, or without one at y ~ p(y) (the
        training split's class frequencies), as its samples.npy."""
        labels = None if label is None else np.full(int(n), int(label), np.int64)
        return data.unscale_x(prior_samples(model, ctx, n, ctx.seed, labels=labels, data=data))


def feeds_of(model, y=None, **inputs) -> Callable:
    """slice s -> the feeds of rows s: each named input array's rows and, for a conditional
    model, the labels y (which it needs)."""
    if model.n_labels and y is None:
        raise ValueError("a class-conditional model needs the labels y")

    def feeds(s):
        out = {k: v[s] for k, v in inputs.items()}
        if model.n_labels:
            out["y"] = y[s]
        return out
    return feeds


def run_batched(model, ctx, name, feeds_of, n, batch=256) -> dict:
    """Run a program over rows 0..n in batches; outputs concatenated as NumPy arrays."""
    prog, parts = model.program(name, ctx), {}
    for start in range(0, n, batch):
        out = prog.run(feeds_of(slice(start, min(n, start + batch))))
        for k, v in out.items():
            parts.setdefault(k, []).append(np.asarray(to_numpy(v), np.float64))
    return {k: np.concatenate(v) for k, v in parts.items()}


def nll_iw(model, x, ctx=None, batch=None, y=None) -> dict:
    """Per-example importance-weighted bound and k-sample ELBO (nats) over the rows of x
    (of -log p(x|y) at the labels y for a conditional model)."""
    k = model.extras["elbo"]["iw_samples"]
    batch = batch or iw_rows(model.extras["hierarchy"], k, model.params)
    return run_batched(model, ctx, "iw", feeds_of(model, y, x=x), len(x), batch)


def label_prior(data, n_labels: int) -> np.ndarray:
    """p(y) of a conditional model's unconditional draws: the training split's class frequencies."""
    return np.bincount(np.asarray(data.y_train, np.int64), minlength=n_labels)[:n_labels] / len(data.y_train)


def prior_samples(model, ctx, n, seed, labels=None, data=None) -> np.ndarray:
    """n decoder means E[x | h_1] (model units) of ancestral draws from the prior, h_T ~ N(0, I);
    a conditional model's at `labels`, or at y ~ label_prior(data) when none are given."""
    hier: Hierarchy = model.extras["hierarchy"]
    rng = seeds.rng(seed, "latent.report")
    z = rng.standard_normal((n, hier.sizes[-1]))
    if model.n_labels and labels is None:
        labels = seeds.rng(seed, "latent.labels").choice(model.n_labels, size=n, p=label_prior(data, model.n_labels))
    model.program("sample", ctx)  # compiled before the streams are reseeded
    with seeds.seeded_streams(model.graph, seed, "latent.report"):  # intermediate levels (hvae) draw from the graph
        return run_batched(model, ctx, "sample", feeds_of(model, labels, h_top=z), n)["mean"]


def is_discrete(hier: "Hierarchy", x) -> int:
    """The number of data levels when the likelihood is a pmf of the data (else 0): a categorical
    likelihood on its grid, or Bernoulli on binary data. Only then is -log p(x) in bits/dim."""
    kind = hier.likelihood_kind
    if getattr(kind, "discrete", False):
        return kind.levels(hier.likelihood_cfg)
    if hier.likelihood_cfg["kind"] == "bernoulli" and on_grid(x, 2):
        return 2
    return 0


def test_bounds(model, x, ctx=None, draws=None, y=None) -> dict:
    """The test bounds (nats per example), each the mean of `draws` independent passes over x,
    with its standard error std/sqrt(draws): neg_elbo (and its terms; the training ELBO's
    `samples` draws per example), nll_iw (k = iw_samples), and for a pmf likelihood bpd.
    A conditional model's bounds are on -log p(x|y) at the labels y."""
    hier: Hierarchy = model.extras["hierarchy"]
    elbo = model.extras["elbo"]
    draws = draws or elbo["report_draws"]
    per_draw: dict[str, list] = {}
    for _ in range(draws):
        terms = run_batched(model, ctx, "elbo", feeds_of(model, y, x=x), len(x))
        for k, v in terms.items():
            per_draw.setdefault(k, []).append(v.mean())
        per_draw.setdefault("nll_iw", []).append(nll_iw(model, x, ctx, y=y)["nll_iw"].mean())
    if is_discrete(hier, x):
        per_draw["bpd"] = [bits_per_dim(v, hier.x_dim) for v in per_draw["nll_iw"]]
    out = {}
    for k, v in per_draw.items():
        out[f"test_{k}"], out[f"test_{k}_se"] = mean_se(v)
    out["iw_samples"], out["report_draws"] = int(elbo["iw_samples"]), int(draws)
    return out


def report_latent(model, data, ctx) -> dict:
    hier: Hierarchy = model.extras["hierarchy"]
    out = {}
    if data.n_test:
        out.update(test_bounds(model, data.x_test, ctx, y=data.y_test if model.n_labels else None))
        levels = is_discrete(hier, data.x_test)
        if levels:
            out.update(baseline_histogram(data, levels))
        elif hier.likelihood_cfg["kind"] != "bernoulli":  # a density of scaled data: also in data units
            out.update(in_data_units(out, data, ("test_neg_elbo", "test_reconstruction", "test_nll_iw")))
    x_ref = data.x_test if data.n_test else data.x_train
    y_ref = data.y_test if data.n_test else data.y_train
    n = int(ctx.spec.get("output", {}).get("samples", 64)) if ctx.spec else 64
    samples = by_label = None
    if n:
        samples = prior_samples(model, ctx, n, ctx.seed, data=data)
        more = quality_sample_count(data, ctx.spec, n) - n  # digits: as many as held-out rows, for test_fd
        if is_digits(data, ctx.spec):
            extra = prior_samples(model, ctx, more, seeds.derived_seed(ctx.seed, "quality"), data=data) \
                if more > 0 else samples[:0]
            out.update(digit_report(data.unscale_x(np.concatenate([samples, extra])), data, ctx.spec, ctx.seed))
            if model.n_labels:
                cond, by_label = cond_report(model, data, ctx)
                out.update(cond)
        save_samples(ctx, data, data.unscale_x(samples))
    if ctx.plots and ctx.run_dir is not None:
        _plots(model, data, ctx, x_ref, y_ref, samples, by_label)
    return out


def cond_report(model, data, ctx) -> tuple[dict, np.ndarray]:
    """cond_accuracy of a conditional model's draws at every label (as many in all as held-out
    rows; class_condition.cond_accuracy), and those draws (model units, labels in order)."""
    k = model.n_labels
    labels = class_labels(k, report_per_class(data, k))
    x = prior_samples(model, ctx, len(labels), seeds.derived_seed(ctx.seed, "conditional"), labels=labels)
    return cond_accuracy(data.unscale_x(x), labels, k, data, ctx.spec, ctx.seed), x


def _plots(model, data, ctx, x_ref, y_ref, samples, by_label=None):
    hier: Hierarchy = model.extras["hierarchy"]
    shape = data.image_shape
    m = min(16, len(x_ref))
    recon = run_batched(model, ctx, "reconstruct", feeds_of(model, y_ref, x=x_ref[:m]), m)["mean"]
    images = shape is not None and int(np.prod(shape)) == hier.x_dim
    if images:
        tiled_images(np.concatenate([x_ref[:m], recon]), shape, ctx.path("reconstructions.png"),
                     title="data (top) and reconstructions (bottom)", cols=m)
        if samples is not None:
            tiled_images(samples[:100], shape, ctx.path("samples.png"), title="samples (decoder means)")
        if by_label is not None:  # rows: labels 0..K-1, 10 draws each
            per = len(by_label) // model.n_labels
            cols = min(10, per)
            rows = by_label.reshape(model.n_labels, per, -1)[:, :cols].reshape(-1, by_label.shape[-1])
            tiled_images(rows, shape, ctx.path("samples_by_label.png"), cols=cols,
                         title="samples at label 0..9 (one row each)")
    elif hier.x_dim == 2:
        plots.scatter_vs_data(recon, x_ref[:m], ctx.path("reconstructions.png"), title="reconstructions vs data")
        if samples is not None:
            plots.scatter_vs_data(samples, x_ref, ctx.path("samples.png"))
    if hier.sizes[-1] == 2:
        codes = run_batched(model, ctx, "encode", feeds_of(model, y_ref, x=x_ref), len(x_ref))[f"mu_{hier.T}"]
        latent_scatter(codes, y_ref, ctx.path("latent.png"))
        if images and not model.n_labels:  # a conditional decoder has one manifold per label
            from statistics import NormalDist

            g = 15
            q = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, g)])
            grid = np.array([[a, b] for b in q[::-1] for a in q])
            imgs = run_batched(model, ctx, "decode", feeds_of(model, h_top=grid), len(grid))["mean"]
            tiled_images(imgs, shape, ctx.path("manifold.png"), cols=g,
                         title="decoder means over a latent grid (normal quantiles 0.05..0.95)")
    if ctx.history:
        elbo_terms_plot(ctx.history, ctx.path("elbo_terms.png"), list(model.metrics))


def tiled_images(images, shape, path, title="", cols=None, gap=1) -> None:
    """Images (n, prod(shape)) tiled into one picture (one imshow: fast for 100s of images);
    3 or 4 channels in colour, other channel counts as their mean."""
    colour = plots.is_colour(shape)
    if len(shape) == 3:
        images = np.asarray(images, np.float64).reshape((-1,) + tuple(shape))
        images = plots.unit_range(images).transpose(0, 2, 3, 1) if colour else images.mean(axis=1)
    else:
        images = np.asarray(images, np.float64).reshape((-1,) + tuple(shape))
    n, (h, w) = len(images), images.shape[1:3]
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    canvas = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap) + images.shape[3:], 1.0 if colour else np.nan)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = img
    scale = 0.5 if max(h, w) <= 10 else 0.05 * max(h, w)
    fig = _figure(max(3.0, cols * scale + 0.4), max(1.5, rows * scale + 0.6))
    ax = fig.add_subplot(1, 1, 1)
    import matplotlib

    cmap = matplotlib.colormaps["gray_r"].with_extremes(bad="white")
    ax.imshow(canvas if colour else np.ma.masked_invalid(canvas), cmap=cmap, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, path)


def latent_scatter(codes, labels, path) -> None:
    fig = _figure(4.8, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    if labels is not None and len(labels) == len(codes) and np.asarray(labels).dtype.kind in "iu":
        sc = ax.scatter(codes[:, 0], codes[:, 1], c=labels, cmap="tab10", s=6, alpha=0.8)
        fig.colorbar(sc, ax=ax, label="class")
    else:
        ax.scatter(codes[:, 0], codes[:, 1], s=6, alpha=0.8)
    ax.set_xlabel("mu_1")
    ax.set_ylabel("mu_2")
    ax.set_title("posterior means of the test set")
    _save(fig, path)


def elbo_terms_plot(history, path, keys=None) -> None:
    """neg_elbo and its terms (metric names `keys`) per epoch, train (solid) and test (dashed)."""
    if keys is None:
        keys = sorted({k.split("_", 1)[1] for r in history for k in r
                       if k.startswith(("train_", "test_")) and k.split("_", 1)[1] != "loss"})
    big = [k for k in ("neg_elbo", "reconstruction") if k in keys]
    small = [k for k in keys if k not in big]
    fig = _figure(9.0, 3.6)
    epochs = [r["epoch"] for r in history]
    for i, group in enumerate((big, small)):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, key in enumerate(group):
            for split, style in (("train", "-"), ("test", "--")):
                ys = [r.get(f"{split}_{key}") for r in history]
                if any(y is not None for y in ys):
                    ax.plot(epochs, [np.nan if y is None else y for y in ys], style, color=f"C{j}",
                            label=f"{split} {key}")
        vals = np.array([r.get(f"{s}_{k}") for r in history for k in group for s in ("train", "test")
                         if r.get(f"{s}_{k}") is not None], float)
        if vals.size and np.isfinite(vals).all():
            lo, hi = vals.min(), np.percentile(vals, 95)
            if vals.max() - lo > 3 * (hi - lo) > 0:  # a huge first epoch would flatten the rest
                ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.5 * (hi - lo))
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per example")
        if group:
            ax.legend(fontsize=7)
    fig.suptitle("negative ELBO and its terms")
    _save(fig, path)
