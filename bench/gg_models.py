"""The gengraph side of the workloads, compiled the way `gengraph run` compiles them.

Every workload goes through a shipped spec, ``plugins.run.runner.build`` and
``plugins.run.trainer.Trainer.compile_programs`` -- exactly the programs `gengraph run` runs:

* MLP: ``specs/mlp_digits.toml``;
* VAE: ``specs/vae_digits.toml`` with ``train.batch_size=128`` (if the ``vae`` plugin does not
  import, the same model built here with the engine API and compiled by the same trainer);
* DDPM: ``specs/diffusion_moons.toml`` with a scalar time input (denoiser 3-128-128-128-2) and
  ``train.batch_size=256``; sampling with ``plugins.models.diffusion.sample``.

Each builder returns a ``GG`` record: graph, params (in the order the hand-written
versions use), programs, trainer, the random nodes (so a check can fetch the noise drawn)
and what the hand-written versions need to mirror it (data, tables, Adam settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gengraph.engine import Graph, compile, ops
from gengraph.plugins.blocks.layers import init_rng, init_weights
from gengraph.plugins.model import Model
from gengraph.plugins.run.context import RunContext
from gengraph.plugins.run.trainer import Trainer

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"
ADAM = {"kind": "adam", "lr": 1e-3}


@dataclass
class GG:
    graph: Graph
    model: Model
    params: list
    programs: dict
    trainer: Trainer
    nodes: dict = field(default_factory=dict)  # extra named nodes (noise draws, ...)
    data: object = None
    path: str = ""  # how the programs were made (plugin spec or engine graph)

    def adam(self, table: int = 0) -> dict:
        """The trainer's Adam hyper-parameters, for the hand-written versions to use the same.

        lr is a float for a constant schedule, else the schedule's ``value`` (a function of
        the step), or with ``table`` > 0 a list of its first `table` values (JSON-friendly).
        """
        opt = self.trainer.optimizer
        h = opt.hyper
        if opt.kind != "adam" or h["weight_decay"] or h["clip_norm"]:
            raise RuntimeError(f"the bench mirrors plain Adam (no weight decay, no clipping), not {opt!r}")
        sched = opt.schedule
        if type(sched).__name__ == "Constant":
            lr = float(sched.value(0))
        elif table:
            lr = [float(sched.value(t)) for t in range(table)]
        else:
            lr = sched.value
        return {"lr": lr, "beta1": h["beta1"], "beta2": h["beta2"], "eps": h["eps"],
                "schedule": repr(sched)}

    def values(self):
        return [self.graph.value(p) for p in self.params]

    def grads_program(self, extra=()):
        """A program returning loss, the requested extra nodes and every parameter's gradient."""
        outs = {"loss": self.model.loss}
        outs.update({k: self.nodes[k] for k in extra})
        outs.update({f"grad{i}": g for i, g in enumerate(self.trainer.grads)})
        return compile(self.graph, outs)


def _trainer(plugin, model, data, seed, batch_size):
    ctx = RunContext(spec={}, run_dir=None, seed=seed)
    cfg = {"optimizer": dict(ADAM), "schedule": None, "batch_size": batch_size, "epochs": 1, "shuffle": True}
    tr = Trainer(plugin, model, data, cfg, ctx)
    return tr, tr.compile_programs()


# --- MLP: the shipped spec, through the plugin ----------------------------------------------
def mlp_spec_data(dtype="float32") -> dict:
    from gengraph.plugins.run.loading import load

    return load(SPECS / "mlp_digits.toml", [f'run.dtype="{dtype}"']).data


def build_mlp(dtype="float32") -> GG:
    from gengraph.plugins.run.runner import build

    spec = mlp_spec_data(dtype)
    data, plugin, graph, model = build(spec)
    ctx = RunContext(spec, None, spec["run"]["seed"])
    tr = Trainer(plugin, model, data, spec["train"], ctx)
    progs = tr.compile_programs()
    return GG(graph, model, list(model.params), progs, tr, data=data,
              path="mlp plugin: specs/mlp_digits.toml via runner.build + Trainer.compile_programs")


# --- dense stacks whose parameters can be applied twice (training and sampling graphs) ------
class Dense:
    def __init__(self, graph, sizes, acts, rng, scope):
        self.layers = []
        for i, (fan_in, fan_out, act) in enumerate(zip(sizes[:-1], sizes[1:], acts)):
            with graph.scope(f"{scope}/dense{i}"):
                W = graph.param("W", init_weights("auto", act, rng, fan_in, fan_out))
                b = graph.param("b", np.zeros(fan_out))
            self.layers.append((W, b, act))

    @property
    def params(self):
        return [p for W, b, _ in self.layers for p in (W, b)]

    def __call__(self, h):
        for W, b, act in self.layers:
            h = h @ W + b
            if act == "relu":
                h = ops.relu(h)
        return h


class _BenchPlugin:
    """The plugin hooks the trainer calls (the defaults of plugins.model.ModelPlugin)."""

    def train_batch(self, model, programs, feeds, ctx):
        return programs["train_step"].run(feeds)


# --- VAE 64-128-(2x16) / 16-128-64, Bernoulli likelihood ------------------------------------
VAE_SEED = 0
VAE_EPS_STREAM = 100  # the vae plugin's training stream (latent_common.TRAIN_STREAM)
VAE_BATCH = 128


def _spec(name, dtype, overrides=()):
    from gengraph.plugins.run.loading import load

    return load(SPECS / name, [f'run.dtype="{dtype}"', *overrides]).data


def plugin_available(kind) -> str | None:
    """None if the plugin `kind` imports, else the reason it does not."""
    from gengraph.plugins.model import MODELS

    try:
        MODELS.get(kind)
    except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, not raised
        return f"{type(exc).__name__}: {exc}"
    return None


def build_vae(dtype="float32") -> GG:
    """The vae plugin on specs/vae_digits.toml (batch 128) if installed, else the same model by hand."""
    from gengraph.engine import topo_order

    if plugin_available("vae") is None and (SPECS / "vae_digits.toml").exists():
        from gengraph.plugins.run.runner import build

        # the Bernoulli likelihood that bench/numpy_vae.py mirrors (the shipped spec now uses 17-level categorical)
        spec = _spec("vae_digits.toml", dtype, [f"train.batch_size={VAE_BATCH}", 'model.likelihood={ kind = "bernoulli" }'])
        data, plugin, graph, model = build(spec)
        tr = Trainer(plugin, model, data, spec["train"], RunContext(spec, None, spec["run"]["seed"]))
        progs = tr.compile_programs()
        eps = [n for n in topo_order([model.loss]) if n.op == "random_normal"]
        if len(eps) != 1 or eps[0].attrs.get("stream") != VAE_EPS_STREAM or eps[0].shape[-1] != 16:
            raise RuntimeError(f"the vae plugin's graph is not the one bench/numpy_vae.py mirrors: {eps}")
        gg = GG(graph, model, list(model.params), progs, tr, nodes={"eps": eps[0]}, data=data)
        gg.path = "vae plugin: specs/vae_digits.toml (--set train.batch_size=128) via runner.build + " \
                  "Trainer.compile_programs"
        return gg
    return _build_vae_by_hand(dtype)


def _build_vae_by_hand(dtype, seed=VAE_SEED) -> GG:
    from gengraph.plugins.datasets import make_dataset

    g = Graph(dtype=dtype, seed=seed)
    rng = init_rng(seed)
    x = g.input("x", (None, 64))
    enc = Dense(g, [64, 128, 32], ["relu", "identity"], rng, "encoder")
    dec = Dense(g, [16, 128, 64], ["relu", "identity"], rng, "decoder")
    e = enc(x)
    mu, logvar = e[:, :16], e[:, 16:]
    with g.scope("reparameterize"):
        eps = ops.random_normal(mu, stream=VAE_EPS_STREAM)
        z = mu + ops.exp(0.5 * logvar) * eps
    logits = dec(z)
    with g.scope("elbo"):
        rec = ops.sum(ops.bce_with_logits(logits, x), axis=-1)
        kl = ops.sum(ops.kl_normal_std(mu, logvar), axis=-1)
        loss = ops.mean(rec + kl)
        metrics = {"neg_elbo": ops.mean(rec + kl), "reconstruction": ops.mean(rec), "kl": ops.mean(kl)}
    params = enc.params + dec.params
    model = Model(g, params, loss, {"x": x}, metrics=metrics)
    tr, progs = _trainer(_BenchPlugin(), model, None, seed, VAE_BATCH)
    data = make_dataset({"source": "digits", "test_fraction": 0.25, "scale": "minmax_global"}, seed).flat()
    gg = GG(g, model, params, progs, tr, nodes={"eps": eps}, data=data)
    gg.path = "engine graph built in bench/gg_models.py (vae plugin not installed) + Trainer.compile_programs"
    return gg


# --- DDPM: the diffusion plugin, eps prediction, denoiser 3-128-128-128-2 ------------------
DDPM_OVERRIDES = ['model.time_embedding.kind="scalar"', "train.batch_size=256"]


def build_ddpm(dtype="float32") -> GG:
    """The diffusion plugin on specs/diffusion_moons.toml with a scalar time input (t/T, so the
    denoiser is 3-128-128-128-2) and batch 256; T = 100 and the rest as the spec says."""
    from gengraph.plugins.run.runner import build

    reason = plugin_available("diffusion")
    if reason is not None or not (SPECS / "diffusion_moons.toml").exists():
        raise RuntimeError(f"the DDPM workload needs the diffusion plugin and specs/diffusion_moons.toml: {reason}")
    spec = _spec("diffusion_moons.toml", dtype, DDPM_OVERRIDES)
    data, plugin, graph, model = build(spec)
    tr = Trainer(plugin, model, data, spec["train"], RunContext(spec, None, spec["run"]["seed"]))
    progs = tr.compile_programs()
    ex = model.extras
    if ex["cfg"]["prediction"] != "epsilon" or ex["cfg"]["loss"] != "simple" or ex["schedule"] is None:
        raise RuntimeError("bench/numpy_ddpm.py mirrors epsilon prediction with the simple loss and a fixed schedule")
    sizes = [graph.value(p).shape for p in model.params]
    acts = {cfg["activation"] for cfg in ex["cfg"]["layers"]}
    if [s_[0] for s_ in sizes[0::2]] != [3, 128, 128, 128] or sizes[-1] != (2,) or not acts <= {"silu", "relu"} \
            or len(acts) != 1:
        raise RuntimeError(f"unexpected denoiser: {sizes}, activations {acts}")
    from gengraph.plugins.models import diffusion as D
    from gengraph.plugins.blocks.samplers import sampler_steps

    sched = ex["schedule"]
    info = {"T": ex["T"], "activation": acts.pop(),
            "tables": {k: graph.value(n) for k, n in ex["tables"].items()},
            "steps": sampler_steps(ex["cfg"]["sampler"], sched, ex["cfg"]["variance"]),
            "eps_stream": D.EPS_STREAM, "t_stream": D.T_STREAM,
            "data": data, "seed": spec["run"]["seed"]}
    return GG(graph, model, list(model.params), progs, tr, nodes={"t": ex["t_train"], "eps": ex["eps_train"]},
              data=info, path="diffusion plugin: specs/diffusion_moons.toml --set " + " --set ".join(DDPM_OVERRIDES)
              + " via runner.build + Trainer.compile_programs; sampling with plugins.models.diffusion.sample")


def ddpm_sample(gg: GG, n: int, rng) -> np.ndarray:
    """Ancestral sampling as `gengraph run`'s report does it: plugins.models.diffusion.sample (T program calls)."""
    from gengraph.plugins.models.diffusion import sample

    return sample(gg.model, gg.programs, gg.data["steps"], n, rng)[0]
