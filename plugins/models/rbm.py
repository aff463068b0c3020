"""`kind = "rbm"`: restricted Boltzmann machines, declared by their energy, trained by CD-k or PCD.

Visible units are binary or Gaussian (sigma fixed or learned), hidden units binary. The
energy is a built-in form of the lecture or an expression over x, h, a, b, W (and sigma);
`energy_rbm` derives from it the free energy F(x) (hidden units summed out) and the
conditionals Gibbs sampling uses. The training loss is

    mean F(x_data) - mean F(stop_gradient(x_model)),

x_model from k Gibbs sweeps started at the data (cd) or at persistent chains kept as
graph state (pcd), so the engine's gradient of it is exactly the positive-minus-negative
phase estimate of the negative log-likelihood's gradient. For small models training =
"exact" minimises mean F(x_data) + log Z instead, log Z by enumeration (the exact gradient).

Logged per epoch: loss, free_energy, recon_error (mean squared error of the mean-field
reconstruction per visible unit), pseudo_loglik (binary visible; nats per example; above 100
visible units an unbiased one-flip estimate, see rbm_energy.pseudo_loglik) and,
when the smaller binary layer has few units, loglik_exact (exact partition function by
enumeration). The report adds test_loglik_exact (up to exact_max_units enumerated units)
or an AIS estimate test_loglik_ais with its Monte Carlo standard error test_loglik_ais_se (that
of log Z; binary visible; with ais_epochs also after each of the first epochs:
test_loglik_ais_by_epoch; without a test split these are train_ figures), samples (samples.npy, samples.png) from long Gibbs
chains or, with sampler = "pt", from parallel tempering between the base-rate model and the
RBM (rbm_tempering; its swap acceptance per neighbour pair: pt_swap_acceptance), weight
filters for images, a density plot for 2-D data, and test_accuracy_hidden_logreg: a softmax regression on p(h | x) when the data has labels.
"""

from __future__ import annotations

import math

import numpy as np

from gengraph.engine import ops, to_numpy
from gengraph.engine.expr import ExprError, names as expr_names

from gengraph.plugins.blocks import energy_tools as tools
from gengraph.plugins.models.rbm_tempering import pt_betas, pt_sweep
from gengraph.plugins.models.rbm_energy import (BuiltinEnergy, ExpressionEnergy, ais_base_log_partition, ais_betas, ais_free_energy,
                         ais_transition, check_expression, expression_names)
from gengraph.plugins.model import Model, ModelConfigError, ModelPlugin
from gengraph.plugins.spec.schema import Field, Table
from gengraph.plugins.blocks.files import save_samples
from gengraph.plugins.blocks import plots
from gengraph.plugins.blocks import seeds
from gengraph.plugins.blocks.sample_quality import two_sample_report
from gengraph.plugins.blocks.stats import in_data_units
from gengraph.plugins.models.digit_quality import digit_report, is_digits, quality_sample_count
from gengraph.plugins.datasets.generators import Gaussians

PER_EPOCH_EXACT_BUDGET = 1 << 21  # 2^n * (n_visible + n_hidden) elements: exact LL logged every epoch


class RBM(ModelPlugin):
    kind = "rbm"
    epoch_metric_names = ("test_loglik_ais", "test_loglik_ais_se")
    help = "restricted Boltzmann machine (binary or Gaussian visible units) trained by CD-k, persistent CD or exactly"
    tasks = ("unsupervised", "classification", "regression")

    @property
    def schema(self):
        return Table({
            "n_hidden": Field(int, 64, "number of binary hidden units", min=1),
            "visible": Field(str, "binary", "visible units: binary (0/1 data) or gaussian (real data)",
                             choices=["binary", "gaussian"]),
            "energy": Field(str, "", "energy E(x, h) as an expression over x (batch, n_visible), h (batch, "
                            "n_hidden), a, b, W (and sigma), one value per example; empty: the built-in form"),
            "sigma": Field(float, 1.0, "standard deviation of Gaussian visible units (initial value if learned)",
                           min=1e-6),
            "learn_sigma": Field(bool, False, "learn sigma (as log sigma per visible unit)"),
            "training": Field(str, "cd", "negative phase: cd (chains start at the data), pcd (persistent "
                              "chains) or exact (the exact log-likelihood gradient; small models only)",
                              choices=["cd", "pcd", "exact"]),
            "k": Field(int, 1, "Gibbs sweeps per negative phase (CD-k)", min=1),
            "chains": Field(int, 64, "number of persistent chains (pcd)", min=1),
            "init_std": Field(float, 0.01, "standard deviation of the initial weights", min=0.0),
            "hidden_bias_init": Field(float, 0.0, "initial hidden biases"),
            "exact_max_units": Field(int, 20, "report the exact log-likelihood when the smaller binary layer has "
                                     "at most this many units (2^n states are enumerated)", min=0, max=26),
            "ais_runs": Field(int, 100, "AIS chains for the log-partition estimate (binary visible, no exact LL)",
                              min=0),
            "ais_steps": Field(int, 5000, "AIS intermediate distributions (0: no AIS)", min=0),
            "ais_epochs": Field(int, 0, "also estimate the test log-likelihood by AIS at the end of each of the "
                                "first this many epochs (reported as test_loglik_ais_by_epoch)", min=0),
            "sample_steps": Field(int, 1000, "sweeps of the sampler (Gibbs or PT) for the reported samples", min=1),
            "sampler": Field(str, "gibbs", "the reported samples' Markov chain: gibbs (block Gibbs sweeps from "
                             "uniform random starts) or pt (parallel tempering: pt_replicas replicas per chain at "
                             "inverse temperatures from pt_beta_min (the base-rate model) to 1 (the RBM), "
                             "neighbours swapped after every sweep; binary visible units)",
                             choices=["gibbs", "pt"]),
            "pt_replicas": Field(int, 10, "pt: replicas per chain, at evenly spaced inverse temperatures", min=2),
            "pt_beta_min": Field(float, 0.0, "pt: the hottest replica's inverse temperature, below 1 (0: the "
                                 "base-rate model, whose units are independent)", min=0.0),
            "probe": Field(bool, True, "fit a softmax regression on p(h | x) when the data has class labels"),
        }, help=self.help)

    def build(self, cfg, graph, data, rng):
        nv, nh, visible = data.n_features, cfg["n_hidden"], cfg["visible"]
        x_train = np.asarray(data.x_train, np.float64)
        if visible == "binary" and not np.all((x_train == 0) | (x_train == 1)):
            raise ModelConfigError("model.visible", 'binary visible units need 0/1 data: set data.binarize '
                                   '(e.g. 0.5) or visible = "gaussian"')
        energy = make_energy(cfg, graph, nv, nh, x_train, rng)
        x = graph.input("x", (None, nv))
        with graph.scope("positive_phase"):
            f_data = energy.free_energy(x)
        train_updates, extras = {}, {"energy": energy, "cfg": dict(cfg)}
        n_enum = energy.enumerated_units()
        if cfg["training"] == "exact" and n_enum > cfg["exact_max_units"]:
            raise ModelConfigError("model.training", f"exact training enumerates 2^{n_enum} states; "
                                   f"that is more than exact_max_units = {cfg['exact_max_units']} allows")
        with graph.scope("negative_phase"):
            if cfg["training"] == "exact":
                log_z = energy.log_partition()
            elif cfg["training"] == "pcd":
                start = x_train[rng.integers(0, len(x_train), size=cfg["chains"])]
                chains = graph.state("chains", start)
                x_model, _ = energy.gibbs(chains, cfg["k"])
                train_updates[chains] = x_model
                extras["chains"] = chains
            else:
                x_model, _ = energy.gibbs(x, cfg["k"])
            if cfg["training"] != "exact":
                f_model = energy.free_energy(ops.stop_gradient(x_model))
        with graph.scope("loss"):
            # exact: -mean log p(x) = mean F(x) + log Z, whose gradient is the exact expectation
            # mean dF/dtheta(data) - E_model dF/dtheta that CD/PCD estimate with samples
            loss = ops.mean(f_data) + log_z if cfg["training"] == "exact" else ops.mean(f_data) - ops.mean(f_model)
        metrics = {"free_energy": ops.mean(f_data)}
        with graph.scope("metrics"):
            metrics["recon_error"] = ops.mean(ops.square(x - energy.reconstruction(x)))
            if visible == "binary":
                metrics["pseudo_loglik"] = ops.mean(energy.pseudo_loglik(x))
            if n_enum <= cfg["exact_max_units"] and (2 ** n_enum) * (nv + nh) <= PER_EPOCH_EXACT_BUDGET:
                log_z = log_z if cfg["training"] == "exact" else energy.log_partition()
                metrics["loglik_exact"] = ops.mean(-f_data) - log_z
                extras["log_partition"] = log_z
        programs = rbm_programs(graph, energy, nv, nh)
        if visible == "binary" and cfg["ais_steps"] > 0 and n_enum > cfg["exact_max_units"]:
            with graph.scope("ais"):
                base = base_rate_logits(x_train)
                bias = graph.constant(base)
                beta0, beta1 = graph.input("beta_from", ()), graph.input("beta_to", ())
                xa = graph.input("x_ais", (None, nv))
                programs["ais_step"] = ({"log_w": ais_free_energy(energy, xa, beta0, bias)
                                         - ais_free_energy(energy, xa, beta1, bias),
                                         "x": ais_transition(energy, xa, beta1, bias)}, {})
            extras["ais_base"] = base
        if cfg["sampler"] == "pt":  # built last: the other programs' random streams stay as they were
            programs["pt_sweep"] = pt_program(graph, energy, cfg, x_train, extras)
        return Model(graph, graph.params(), loss, {"x": x}, metrics=metrics, train_updates=train_updates,
                     programs=programs, extras=extras)

    def loss_label(self, cfg):
        if cfg.get("training") == "exact":
            return "loss: negative log-likelihood, mean F(x) + log Z (nats per example)"
        return ("loss: CD objective, mean free energy of the data minus that of the model's samples; "
                "not a likelihood, it can rise while the model improves (see recon_error, loglik)")

    def epoch_metrics(self, model, data, ctx, epoch):
        """An AIS estimate of the test log-likelihood after each of the first `ais_epochs` epochs."""
        cfg = model.extras["cfg"]
        if not (cfg["ais_epochs"] and "ais_step" in model.programs and 1 <= epoch <= cfg["ais_epochs"]):
            return {}
        # without a test split the estimate is of the training rows, and named so (it was logged as
        # test_loglik_ais); its Monte Carlo error is log Z's, the free energies being exact
        split, x = ("test", data.x_test) if data.n_test else ("train", data.x_train)
        log_z, se = ais_log_partition(model, ctx, cfg["ais_runs"], cfg["ais_steps"], ctx.seed)
        return {f"{split}_loglik_ais": float(np.mean(-_free_energies(model, ctx, x)) - log_z),
                f"{split}_loglik_ais_se": se}

    def report(self, model, data, ctx):
        return report_rbm(model, data, ctx)

    def sample(self, model, data, ctx, n, *, label=None, steps=None):
        """n samples (data units) after `steps` sweeps (default model.sample_steps) of the spec's
        sampler (Gibbs or parallel tempering), as the run's samples.npy."""
        steps = model.extras["cfg"]["sample_steps"] if steps is None else int(steps)
        if steps < 1:
            raise ModelConfigError("steps", f"needs at least one sweep, found {steps}")
        samples, _, _ = draw_samples(model, ctx, data, n, steps, ctx.seed)
        return data.unscale_x(samples)


# --- building ---------------------------------------------------------------------------
def base_rate_logits(x, eps=1e-3):
    """Visible biases of the independent model that matches the data's unit means."""
    p = np.clip(np.mean(x, axis=0), eps, 1 - eps)
    return np.log(p / (1 - p))


def make_energy(cfg, graph, nv, nh, x_train, rng):
    """The parameters (scope rbm/) and the energy object the spec declares."""
    visible, expression = cfg["visible"], cfg["energy"].strip()
    used = None
    if expression:
        try:
            used = expr_names(expression)
        except ExprError as exc:
            raise ModelConfigError("model.energy", str(exc)) from None
        allowed = expression_names(visible)
        unknown = sorted(used - set(allowed))
        if unknown:
            raise ModelConfigError("model.energy", f"unknown name(s) {', '.join(unknown)}; a {visible}-visible "
                                   f"energy may use {', '.join(allowed)}")
        try:
            check_expression(expression, visible, nv, nh)
        except ExprError as exc:  # its message quotes the expression already
            raise ModelConfigError("model.energy", str(exc)) from None
        except ValueError as exc:
            raise ModelConfigError("model.energy", f"{expression!r}: {exc}") from None
    want = (lambda name: used is None or name in used)  # noqa: E731
    params = {}
    with graph.scope("rbm"):
        if want("a"):
            a0 = base_rate_logits(x_train) if visible == "binary" else x_train.mean(axis=0)
            params["a"] = graph.param("a", a0)
        if want("b"):
            params["b"] = graph.param("b", np.full(nh, cfg["hidden_bias_init"]))
        if want("W"):
            params["W"] = graph.param("W", rng.normal(0.0, cfg["init_std"], size=(nv, nh)))
        if visible == "gaussian" and want("sigma"):
            if cfg["learn_sigma"]:
                params["sigma"] = ops.exp(graph.param("log_sigma", np.full(nv, math.log(cfg["sigma"]))))
            else:
                params["sigma"] = graph.constant(np.full(nv, cfg["sigma"]), name="sigma")
    if expression:
        return ExpressionEnergy(graph, visible, nv, nh, params, expression)
    return BuiltinEnergy(graph, visible, nv, nh, params)


def pt_program(graph, energy, cfg, x_train, extras):
    """One parallel-tempering sweep of K * M stacked replicas (rbm_tempering), between the
    base-rate model of the training data (beta = 0) and the RBM (beta = 1)."""
    if energy.visible != "binary":
        raise ModelConfigError("model.sampler", 'parallel tempering ("pt") tempers towards the base-rate model '
                               'of binary data: it needs visible = "binary"; use sampler = "gibbs"')
    if cfg["pt_beta_min"] >= 1.0:
        raise ModelConfigError("model.pt_beta_min", f"must be below 1 (beta = 1 is the RBM itself), found "
                               f"{cfg['pt_beta_min']}")
    betas = pt_betas(cfg["pt_replicas"], cfg["pt_beta_min"])
    base = base_rate_logits(x_train)
    extras["pt_betas"], extras["pt_base"] = betas, base
    with graph.scope("pt"):
        x = graph.input("x_pt", (None, energy.nv))
        x_next, accepted = pt_sweep(energy, x, betas, graph.constant(base))
    return {"x": x_next, "accepted": accepted}, {}


def rbm_programs(graph, energy, nv, nh) -> dict:
    """Programs the report uses: one Gibbs sweep, p(h | x), F(x), and log Z terms over enumerated states."""
    progs = {}
    with graph.scope("sample"):
        xs = graph.input("x_chain", (None, nv))
        x_next, mean = energy.gibbs(xs, 1)
        progs["sample_step"] = ({"x": x_next, "mean": mean}, {})
    with graph.scope("features"):
        xf = graph.input("x_features", (None, nv))
        progs["hidden_probs"] = ({"p": energy.hidden_probs(xf), "free_energy": energy.free_energy(xf)}, {})
    with graph.scope("log_partition"):
        n = energy.enumerated_units()
        states = graph.input("states", (None, n))
        progs["log_partition_chunk"] = ({"lse": ops.logsumexp(energy.log_partition_terms(states), axis=0)}, {})
    return progs


# --- the report -------------------------------------------------------------------------------
def _free_energies(model, ctx, x):
    prog = model.program("hidden_probs", ctx)
    return tools.run_batched(prog, lambda lo, hi: {"x_features": x[lo:hi]}, len(x), "free_energy")


def exact_log_partition(model, ctx, chunk=1 << 15) -> float:
    """log Z by enumeration in chunks (memory stays small up to 2^26 states)."""
    energy = model.extras["energy"]
    n = energy.enumerated_units()
    prog = model.program("log_partition_chunk", ctx)
    parts = []
    for lo in range(0, 2 ** n, chunk):
        k = np.arange(lo, min(lo + chunk, 2 ** n), dtype=np.int64)
        states = ((k[:, None] >> np.arange(n)) & 1).astype(np.float64)
        parts.append(float(to_numpy(prog.run(states=states)["lse"])))
    return float(np.logaddexp.reduce(parts))


def ais_log_partition(model, ctx, runs, steps, seed) -> tuple[float, float]:
    """AIS estimate of log Z from the base-rate model (Salakhutdinov & Murray 2008), and its standard error."""
    energy, base = model.extras["energy"], model.extras["ais_base"]
    prog = model.program("ais_step", ctx)
    rng = seeds.rng(seed, "rbm.report", 1)
    x = (rng.random((runs, energy.nv)) < 1 / (1 + np.exp(-base))).astype(np.float64)
    log_w = np.zeros(runs)
    betas = ais_betas(steps)
    for b0, b1 in zip(betas[:-1], betas[1:]):
        out = prog.run(x_ais=x, beta_from=b0, beta_to=b1)
        log_w += np.asarray(to_numpy(out["log_w"]), np.float64)
        x = out["x"]
    lme = float(np.logaddexp.reduce(log_w) - math.log(runs))
    w = np.exp(log_w - log_w.max())
    se = float(np.std(w) / (math.sqrt(runs) * np.mean(w)))  # delta method: se of log mean w
    return ais_base_log_partition(base, energy.nh) + lme, se


def draw_samples(model, ctx, data, n, steps, seed):
    """(states, E[x | h] of the last sweep, PT swap acceptance of each neighbour pair or None) of
    n chains of the spec's sampler (model.sampler)."""
    if model.extras["cfg"]["sampler"] == "pt":
        return pt_samples(model, ctx, n, steps, seed)
    x, mean = gibbs_samples(model, ctx, data, n, steps, seed)
    return x, mean, None


def pt_samples(model, ctx, n, steps, seed):
    """n parallel-tempering chains, every replica started from an exact draw of the base-rate
    model, `steps` PT sweeps, then one Gibbs sweep of the beta = 1 replicas (it leaves the RBM
    invariant and gives the samples' E[x | h]). Also returns the swap acceptance of each pair
    (beta_k, beta_k+1), averaged over chains and sweeps."""
    energy, betas, base = model.extras["energy"], model.extras["pt_betas"], model.extras["pt_base"]
    K = len(betas)
    rng = seeds.rng(seed, "rbm.report")
    x = (rng.random((K * n, energy.nv)) < 1 / (1 + np.exp(-base))).astype(np.float64)
    sweep, gibbs = model.program("pt_sweep", ctx), model.program("sample_step", ctx)
    swaps = 0.0  # summed where the sweep runs (on CuPy: no copy back per sweep)
    with seeds.seeded_streams(model.graph, seed, "rbm.report"):  # the same chains whatever ran before
        for _ in range(steps):
            out = sweep.run(x_pt=x)
            x = out["x"]
            swaps = swaps + out["accepted"].astype("float64").mean(axis=1)
        out = gibbs.run(x_chain=x[(K - 1) * n:])
    swaps = np.asarray(to_numpy(swaps), np.float64) if steps else np.zeros(K)
    return (np.asarray(to_numpy(out["x"]), np.float64), np.asarray(to_numpy(out["mean"]), np.float64),
            swaps[:-1] / steps)


def gibbs_samples(model, ctx, data, n, steps, seed):
    energy = model.extras["energy"]
    rng = seeds.rng(seed, "rbm.report")
    if energy.visible == "binary":
        x = (rng.random((n, energy.nv)) < 0.5).astype(np.float64)
    else:
        xt = data.x_train
        x = xt.mean(0) + xt.std(0) * rng.standard_normal((n, energy.nv))
    prog = model.program("sample_step", ctx)
    mean = x
    with seeds.seeded_streams(model.graph, seed, "rbm.report"):  # the same chains whatever ran before
        for _ in range(steps):
            out = prog.run(x_chain=x)
            x, mean = out["x"], out["mean"]
    return np.asarray(to_numpy(x), np.float64), np.asarray(to_numpy(mean), np.float64)


def report_rbm(model, data, ctx) -> dict:
    energy, cfg = model.extras["energy"], model.extras["cfg"]
    out = {}
    x_test = data.x_test if data.n_test else data.x_train
    split = "test" if data.n_test else "train"
    n_enum = energy.enumerated_units()
    log_z = None
    if n_enum <= cfg["exact_max_units"]:
        log_z = exact_log_partition(model, ctx)
        out["log_partition"] = log_z
        out[f"{split}_loglik_exact"] = float(np.mean(-_free_energies(model, ctx, x_test)) - log_z)
        out["train_loglik_exact"] = float(np.mean(-_free_energies(model, ctx, data.x_train)) - log_z)
    elif "ais_step" in model.programs:
        log_z, se = ais_log_partition(model, ctx, cfg["ais_runs"], cfg["ais_steps"], ctx.seed)
        out["ais_log_partition"], out["ais_log_partition_se"] = log_z, se
        out[f"{split}_loglik_ais"] = float(np.mean(-_free_energies(model, ctx, x_test)) - log_z)
        out["train_loglik_ais"] = float(np.mean(-_free_energies(model, ctx, data.x_train)) - log_z)
        out[f"{split}_loglik_ais_se"] = out["train_loglik_ais_se"] = se  # log Z's: the only Monte Carlo part
        history = ctx.history
        by_epoch = [r[f"{split}_loglik_ais"] for r in history if f"{split}_loglik_ais" in r]
        if by_epoch:
            out[f"{split}_loglik_ais_by_epoch"] = by_epoch
    if energy.visible != "binary":  # Gaussian visible units: a density of scaled data, also in data units
        out.update(in_data_units(out, data, loglik_keys=tuple(f"{s}_loglik_{how}" for s in ("test", "train")
                                                              for how in ("exact", "ais"))))
    if data.meta.get("source") == "gaussians" and len(x_test) and data.meta["params"]["std"] > 0:
        # (std = 0: point masses, no log-density to compare with; it was NaN and failed the run)
        out[f"true_{split}_loglik"] = _true_mixture_loglik(data, x_test)
    if cfg["probe"] and data.task == "classification" and data.n_test and data.y_train is not None:
        prog = model.program("hidden_probs", ctx)
        feats = [tools.run_batched(prog, lambda lo, hi, a=a: {"x_features": a[lo:hi]}, len(a), "p")
                 for a in (data.x_train, data.x_test)]
        probe = tools.softmax_regression(feats[0], data.y_train, feats[1], data.y_test, data.n_classes)
        out["test_accuracy_hidden_logreg"] = probe["test_accuracy"]
        out["train_accuracy_hidden_logreg"] = probe["train_accuracy"]
        raw = tools.softmax_regression(data.x_train, data.y_train, data.x_test, data.y_test, data.n_classes)
        out["test_accuracy_input_logreg"] = raw["test_accuracy"]
    n = int(ctx.spec.get("output", {}).get("samples", 64)) if ctx.spec else 64
    samples = means = None
    if n:
        samples, means, swaps = draw_samples(model, ctx, data, n, cfg["sample_steps"], ctx.seed)
        in_units = data.unscale_x(samples)
        more = quality_sample_count(data, ctx.spec, n) - n  # digits: as many as held-out rows, for test_fd
        if more > 0:
            extra, _, swaps_extra = draw_samples(model, ctx, data, more, cfg["sample_steps"],
                                                 seeds.derived_seed(ctx.seed, "quality"))
            in_units_all = np.concatenate([in_units, data.unscale_x(extra)])
            if swaps is not None:
                swaps = (n * swaps + more * swaps_extra) / (n + more)
        else:
            in_units_all = in_units
        if swaps is not None:
            out["pt_swap_acceptance"] = [float(a) for a in swaps]
        if is_digits(data, ctx.spec):
            out.update(digit_report(in_units_all, data, ctx.spec, ctx.seed))
        elif energy.nv == 2 and data.n_test:
            out.update(two_sample_report(in_units_all, data.unscale_x(x_test), data.unscale_x(data.x_train),
                                         seed=ctx.seed))
        save_samples(ctx, data, in_units)
    if ctx.plots and ctx.run_dir is not None:
        _plots(model, data, ctx, samples, means, log_z)
    return out


def _true_mixture_loglik(data, x) -> float:
    """Mean log-density of the generating mixture at x, in the model's (scaled) units: the
    yardstick for loglik_exact (log p_scaled(x) = log p(unscaled x) + log |d unscale / dx|)."""
    d = x.shape[1]
    jac = np.asarray(data.unscale_x(np.ones((1, d))) - data.unscale_x(np.zeros((1, d))), np.float64)[0]
    logp = Gaussians.log_density(data.meta["params"], data.unscale_x(x))
    return float(np.mean(logp) + np.sum(np.log(np.abs(jac))))


def _plots(model, data, ctx, samples, means, log_z):
    energy = model.extras["energy"]
    shape = data.image_shape
    if shape is not None and int(np.prod(shape)) == energy.nv:
        if means is not None:
            plots.image_grid(means[:100], shape, ctx.path("samples.png"),
                             title="samples: E[x | h] after the last Gibbs sweep")
        if "W" in energy.params:
            tools.filters(model.graph.value(energy.params["W"]), shape, ctx.path("filters.png"),
                          title="weight filters W[:, j]")
    elif energy.nv == 2:
        ref = data.x_test if data.n_test else data.x_train
        if samples is not None:
            plots.scatter_vs_data(data.unscale_x(samples), data.unscale_x(ref), ctx.path("samples.png"),
                                  title="Gibbs samples vs test data")
        xs, ys, grid = tools.grid_2d(data.x_train)
        f = _free_energies(model, ctx, grid)
        values, label = (-f - log_z, "log p(x)") if log_z is not None else (-f, "-F(x)")
        axes = data.unscale_x(np.stack([xs, ys], axis=1))
        tools.landscape(axes[:, 0], axes[:, 1], np.maximum(values, values.max() - 15),
                        data.unscale_x(data.x_train), None, ctx.path("density.png"),
                        "model log density (hidden units summed out)", label)


plugin = RBM()
