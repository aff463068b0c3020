"""`kind = "ebm"`: energy-based models E_theta(x) trained with Langevin negative samples.

The energy is a network of dense layers ending in one linear unit, or an expression
over x (batch, features) and parameters declared in `params`. Negative samples come from
Langevin dynamics,

    x <- clamp(x - clip((eta / 2) dE/dx) + noise_scale * sqrt(eta) * N(0, I)),

with dE/dx the engine's symbolic gradient of sum(E) with respect to the input node,
compiled once as the program "langevin_step" and run `langevin.steps` times per batch
from a replay buffer (graph state "replay/buffer"; a fraction `fresh_fraction` of the
chains restart from uniform noise). The loss is

    mean E(x+) - mean E(x-) + alpha (mean E(x+)^2 + mean E(x-)^2),   x- = stop_gradient(samples).

With `objective = "score_matching"` the kind trains a noise-conditional score network by
denoising score matching instead and samples by annealed Langevin dynamics
(score_matching.py; the score-based view of the same model family).

The report draws max(output.samples, half the held-out rows) samples (enough for the
two-sample tests) by `sample_steps` Langevin steps (samples.npy in data units,
samples.png, energy.png for 2-D data), started from uniform noise or, with
`sample_start = "replay"`, from rows of the replay buffer: the persistent chains that
training matched to the data (Du & Mordatch 2019). Chains from noise reach the modes
but not their along-the-mode balance, which in the persistent chains took the whole
training to mix (`gengraph sample` uses the same sampler). It compares them with held-out
data by `sample_quality.two_sample_report` (data units): unbiased MMD^2 with permutation p-values
at the median-heuristic bandwidth h times 1/5, 1/2, 1, 2 (test_mmd2_hdiv5, ..._pvalue), the
same for training rows in place of samples (baseline_mmd2_*), and the energy distance.
"""

from __future__ import annotations

import math

import numpy as np

from gengraph.engine import compile, grad, ops, to_numpy
from gengraph.engine.expr import ExprError, build as build_expr, names as expr_names

from gengraph.plugins.blocks import energy_tools as tools
from gengraph.plugins.blocks.sample_quality import two_sample_summary
from gengraph.plugins.models.score_matching import annealed_langevin, build_score_model, report_score, score_schema
from gengraph.plugins.blocks.layers import Network, layer_schema
from gengraph.plugins.model import Model, ModelConfigError, ModelPlugin
from gengraph.plugins.registry import suggest
from gengraph.plugins.spec.errors import printable
from gengraph.plugins.spec.schema import Field, ListOf, Table
from gengraph.plugins.blocks.files import save_samples
from gengraph.plugins.blocks import plots
from gengraph.plugins.blocks import seeds



class EBM(ModelPlugin):
    kind = "ebm"
    help = "energy-based model E(x) (network or expression) trained with Langevin samples and a replay buffer"
    tasks = ("unsupervised", "classification", "regression")

    @property
    def schema(self):
        return Table({
            "layers": ListOf(layer_schema(), default=[{"units": 64, "activation": "silu"},
                                                      {"units": 64, "activation": "silu"}],
                             help="hidden layers of the energy network (a linear unit is added as output)"),
            "energy": Field(str, "", "energy as an expression over x (batch, features) and the names in params, "
                            "one value per example (overrides layers)"),
            "params": Field(dict, {}, "trainable parameters of an energy expression: name = initial value "
                            "(number or array)"),
            "alpha": Field(float, 0.1, "weight of the energy regulariser alpha (E(x+)^2 + E(x-)^2)", min=0.0),
            "langevin": Table({
                "steps": Field(int, 40, "Langevin steps per training batch (K)", min=1),
                "step_size": Field(float, 0.01, "eta in x <- x - (eta/2) dE/dx + sqrt(eta) noise", min=0.0),
                "noise_scale": Field(float, 1.0, "multiplies the sqrt(eta) noise (1: Langevin dynamics)", min=0.0),
                "clip_step": Field(float, 0.0, "clip each coordinate of the drift (eta/2) dE/dx to +-this (0: off)",
                                   min=0.0),
                "clamp": Field(list, None, "[low, high]: clamp samples to this range (in model units)",
                               item=(int, float)),
            }, help="Langevin sampler"),
            "replay": Table({
                "size": Field(int, 10000, "replay buffer size (0: every chain starts from noise)", min=0),
                "fresh_fraction": Field(float, 0.05, "fraction of chains restarted from noise", min=0.0, max=1.0),
                "margin": Field(float, 0.1, "noise is uniform over the training range widened by this fraction",
                                min=0.0),
            }, help="replay buffer of past samples"),
            "sample_steps": Field(int, 500, "Langevin steps of the reported samples (from sample_start)", min=1),
            "sample_start": Field(str, "noise", "where the reported chains start: noise (uniform over the "
                                  "training range) or replay (rows of the replay buffer: the persistent chains "
                                  "training left, continued)", choices=["noise", "replay"]),
            "objective": Field(str, "contrastive", "contrastive (energy trained with Langevin negatives) or "
                               "score_matching (a noise-conditional score network, denoising score matching, "
                               "annealed Langevin sampling)", choices=["contrastive", "score_matching"]),
            "score": score_schema(),
        }, help=self.help)

    def build(self, cfg, graph, data, rng):
        if cfg["objective"] == "score_matching":
            if cfg["energy"].strip():
                raise ModelConfigError("model.energy", 'score_matching learns a score network from model.layers; '
                                       'an energy expression is for objective = "contrastive"')
            return build_score_model(cfg, graph, data, rng)
        d = data.n_features
        x_train = np.asarray(data.x_train, np.float64)
        energy = make_energy(cfg, graph, d, rng, data.image_shape)
        x = graph.input("x", (None, d))
        x_neg = graph.input("x_neg", (None, d))
        with graph.scope("positive_phase"):
            e_pos = energy(x)
        if isinstance(energy, ExpressionEnergy):
            energy.check(x, e_pos, np.random.default_rng(0))
        with graph.scope("negative_phase"):
            e_neg = energy(ops.stop_gradient(x_neg))
        with graph.scope("loss"):
            loss = ops.mean(e_pos) - ops.mean(e_neg) + cfg["alpha"] * (ops.mean(ops.square(e_pos))
                                                                       + ops.mean(ops.square(e_neg)))
        lv = cfg["langevin"]
        if lv["clamp"] is not None and (len(lv["clamp"]) != 2 or lv["clamp"][0] >= lv["clamp"][1]):
            raise ModelConfigError("model.langevin.clamp", "expected [low, high] with low < high")
        with graph.scope("langevin"):
            x_l = graph.input("x_langevin", (None, d))
            x_next = langevin_step(energy, x_l, lv["step_size"], noise_scale=lv["noise_scale"],
                                   clip_step=lv["clip_step"], clamp=lv["clamp"])
        with graph.scope("energy_grid"):
            x_e = graph.input("x_energy", (None, d))
            e_grid = energy(x_e)
        if cfg["sample_start"] == "replay" and cfg["replay"]["size"] < 1:
            raise ModelConfigError("model.sample_start", 'replay starts the reported chains from the replay '
                                   'buffer: needs model.replay.size >= 1 (or sample_start = "noise")')
        lo, hi = x_train.min(0), x_train.max(0)
        pad = cfg["replay"]["margin"] * (hi - lo)
        noise_range = (lo - pad, hi + pad)
        if lv["clamp"] is not None:
            noise_range = (np.maximum(noise_range[0], lv["clamp"][0]), np.minimum(noise_range[1], lv["clamp"][1]))
        size = max(cfg["replay"]["size"], 1)
        init = seeds.rng(graph.seed, "ebm.replay")
        buffer = graph.state("replay/buffer", init.uniform(noise_range[0], noise_range[1], size=(size, d)))
        sampler = Replay(graph, buffer, noise_range, cfg, graph.seed)
        model = Model(graph, graph.params(), loss, {"x": x, "x_neg": x_neg},
                      metrics={"energy_data": ops.mean(e_pos), "energy_samples": ops.mean(e_neg)},
                      programs={"langevin_step": ({"x": x_next}, {}), "energy": ({"energy": e_grid}, {})},
                      extras={"energy": energy, "sampler": sampler, "cfg": dict(cfg)})
        # evaluation pairs each batch with the newest buffer entries (no extra sampling)
        model.feeds = lambda xb, yb: {"x": xb, "x_neg": sampler.latest(len(xb))}
        return model

    def train_batch(self, model, programs, feeds, ctx):
        if model.extras.get("objective") == "score_matching":
            return programs["train_step"].run(feeds)
        sampler: Replay = model.extras["sampler"]
        state = ctx.train_state if ctx is not None else None
        step = state.step if state is not None else sampler.calls
        x0, idx = sampler.start(len(feeds["x"]), step)
        x_neg = run_langevin(programs["langevin_step"], x0, model.extras["cfg"]["langevin"]["steps"])
        sampler.store(idx, x_neg)
        return programs["train_step"].run({**feeds, "x_neg": x_neg})

    def report(self, model, data, ctx):
        if model.extras.get("objective") == "score_matching":
            return report_score(model, data, ctx)
        return report_ebm(model, data, ctx)

    def sample(self, model, data, ctx, n, *, label=None, steps=None):
        """n samples (data units) after `steps` Langevin steps (default model.sample_steps) from
        model.sample_start (noise or replay-buffer rows), as the run's samples.npy."""
        if steps is not None and int(steps) < 1:
            raise ModelConfigError("steps", f"needs at least one Langevin step, found {steps}")
        if model.extras.get("objective") == "score_matching":  # steps: annealed Langevin steps per noise level
            return data.unscale_x(annealed_langevin(model, ctx, n, ctx.seed, steps_per_level=steps))
        steps = model.extras["cfg"]["sample_steps"] if steps is None else int(steps)
        return data.unscale_x(draw_samples(model, ctx, n, steps, ctx.seed))


# --- the energy -------------------------------------------------------------------------
class NetworkEnergy:
    """x -> dense layers -> one linear unit; parameters created once (scope energy/), applied to any input."""

    def __init__(self, graph, d, layers, rng, image_shape=None):
        self.graph = graph
        self.net = Network(graph, d, layers, rng, "energy", origin="model.layers",
                           out={"units": 1, "activation": "identity", "init": "xavier"},
                           image_shape=image_shape)  # conv layers see image rows as images (as mlp's do)

    def __call__(self, x):
        return self.net(x)[:, 0]


class ExpressionEnergy:
    """E(x) written in the expression language over x and the declared parameters."""

    def __init__(self, graph, d, expression, values):
        self.graph, self.expression = graph, expression
        try:
            used = expr_names(expression)
        except ExprError as exc:
            raise ModelConfigError("model.energy", str(exc)) from None
        unknown = sorted(used - {"x"} - set(values))
        if unknown:
            hint = "".join(f' (did you mean "{hit}" for {name}?)' for name in unknown
                           if (hit := suggest(name, ["x", *values])) is not None)
            raise ModelConfigError("model.energy", f"unknown name(s) {', '.join(unknown)}{hint}: declare them in "
                                   "model.params (name = initial value)")
        self.params = {}
        with graph.scope("energy"):
            for name, v in values.items():
                if name == "x":
                    raise ModelConfigError("model.params.x", "x is the input; choose another name")
                if not name.isidentifier():  # the expression could never use it (and it would name a checkpoint key)
                    raise ModelConfigError("model.params", f"{printable(repr(name))} is not a name an expression "
                                                           "can use (letters, digits and _, not starting with a digit)")
                try:
                    if _has_bool(v):  # true would have become 1.0
                        raise TypeError
                    arr = np.asarray(v, dtype=np.float64)
                except (TypeError, ValueError):
                    raise ModelConfigError(f"model.params.{name}", "expected a number or an array of numbers") \
                        from None
                self.params[name] = graph.param(name, arr)

    def check(self, x, e, rng):
        """One value per example, independent of the other examples of the batch."""
        msg = (f"{self.expression!r} must give one value per example; x is (batch, {x.shape[1]}): "
               "reduce with sum(..., axis=-1)")
        if e.shape != (None,):
            raise ModelConfigError("model.energy", f"{msg}, found shape {e.shape}")
        prog = compile(self.graph, e)
        xs = rng.normal(size=(4, x.shape[1]))
        try:  # shapes that only clash on data (x @ x): NumPy's ValueError, as the rbm's check reports it
            whole = np.asarray(to_numpy(prog.run(x=xs)), np.float64)
            single = np.array([float(to_numpy(prog.run(x=xs[i:i + 1]))[0]) for i in range(4)])
        except ValueError as exc:
            raise ModelConfigError("model.energy", f"{self.expression!r}: {exc}") from None
        if np.any(np.abs(whole - single) > 1e-4 * (1 + np.abs(single))):
            raise ModelConfigError("model.energy", f"{msg}: the energy of an example depends on the others")

    def __call__(self, x):
        try:
            with self.graph.scope("energy"):
                return build_expr(self.expression, {"x": x, **self.params})
        except ExprError as exc:
            raise ModelConfigError("model.energy", str(exc)) from None


def _has_bool(v) -> bool:
    return isinstance(v, bool) or (isinstance(v, list) and any(_has_bool(e) for e in v))


def make_energy(cfg, graph, d, rng, image_shape=None):
    if cfg["energy"].strip():
        return ExpressionEnergy(graph, d, cfg["energy"].strip(), cfg["params"])
    if cfg["params"]:
        raise ModelConfigError("model.params", "params are for an energy expression; set model.energy too")
    return NetworkEnergy(graph, d, cfg["layers"], rng, image_shape)


# --- Langevin dynamics -------------------------------------------------------------------
def langevin_step(energy, x, step_size, *, noise_scale=1.0, clip_step=0.0, clamp=None):
    """One step x - clip((eta/2) dE/dx) + noise_scale sqrt(eta) N(0, I), clamped; dE/dx by the engine's grad."""
    g = grad(ops.sum(energy(x)), x)
    drift = (0.5 * step_size) * g
    if clip_step:
        drift = ops.clip(drift, -clip_step, clip_step)
    x_new = x - drift
    if noise_scale and step_size:
        x_new = x_new + (noise_scale * math.sqrt(step_size)) * ops.random_normal(x, stream=x.graph.new_stream())
    if clamp is not None:
        x_new = ops.clip(x_new, float(clamp[0]), float(clamp[1]))
    return x_new


def run_langevin(prog, x, steps):
    for _ in range(steps):
        x = prog.run(x_langevin=x)["x"]
    return x


class Replay:
    """The replay buffer (graph state, so checkpoints keep it) and how chains start from it.

    The choice of rows and of fresh starts comes from a generator keyed on the global step,
    so a resumed run draws exactly what the uninterrupted one did.
    """
    def __init__(self, graph, buffer, noise_range, cfg, seed):
        self.graph, self.buffer, self.seed = graph, buffer, seed
        self.lo, self.hi = np.asarray(noise_range[0], np.float64), np.asarray(noise_range[1], np.float64)
        self.use_buffer = cfg["replay"]["size"] > 0
        self.fresh = cfg["replay"]["fresh_fraction"] if self.use_buffer else 1.0
        self.calls = 0

    def noise(self, rng, n):
        return rng.uniform(self.lo, self.hi, size=(n, len(self.lo)))

    def _values(self):
        return self.graph.values[self.buffer.id]

    def start(self, n, step):
        """(starting points, buffer rows they came from) for n chains."""
        self.calls += 1
        rng = seeds.rng(self.seed, "ebm.replay", step)
        buf = self._values()
        idx = rng.integers(0, len(buf), size=n)
        x0 = np.asarray(to_numpy(buf[idx]), np.float64)
        fresh = rng.random(n) < self.fresh
        x0[fresh] = self.noise(rng, int(fresh.sum()))
        return x0, idx

    def store(self, idx, x):
        if self.use_buffer:
            buf = self._values()
            buf[idx] = _like(buf, x)

    def rows(self, rng, n):
        """n rows of the buffer drawn at random (without replacement while n <= its size), float64 NumPy."""
        buf = np.asarray(to_numpy(self._values()), np.float64)
        return buf[rng.choice(len(buf), size=n, replace=n > len(buf))]

    def latest(self, n):
        """n rows of the buffer (repeated if it is smaller), as float64 NumPy. Only those rows are
        copied (every training batch's feeds ask for them, then replace them by fresh chains)."""
        buf = self._values()
        reps = int(math.ceil(n / len(buf)))
        out = np.asarray(to_numpy(buf[:n] if reps == 1 else buf), np.float64)
        return np.tile(out, (reps, 1))[:n] if reps > 1 else out


def _like(buf, x):
    """x on the buffer's device (NumPy or CuPy)."""
    mod = type(buf).__module__.split(".")[0]
    if mod == "numpy":
        return np.asarray(to_numpy(x))
    import cupy

    return cupy.asarray(x)


# --- the report ----------------------------------------------------------------------------
def energies(model, ctx, x):
    prog = model.program("energy", ctx)
    return tools.run_batched(prog, lambda lo, hi: {"x_energy": x[lo:hi]}, len(x), "energy")


def draw_samples(model, ctx, n, steps, seed):
    """n samples by `steps` Langevin steps from model.sample_start: uniform noise over the training
    range, or rows of the replay buffer (the persistent chains of training, continued)."""
    sampler: Replay = model.extras["sampler"]
    rng = seeds.rng(seed, "ebm.report")
    x = sampler.rows(rng, n) if model.extras["cfg"]["sample_start"] == "replay" else sampler.noise(rng, n)
    prog = model.program("langevin_step", ctx)
    with seeds.seeded_streams(model.graph, seed, "ebm.report"):  # the same noise whatever ran before
        return np.asarray(to_numpy(run_langevin(prog, x, steps)), np.float64)


def report_ebm(model, data, ctx) -> dict:
    cfg = model.extras["cfg"]
    out = {}
    ref = data.x_test if data.n_test else data.x_train
    n = int(ctx.spec.get("output", {}).get("samples", 64)) if ctx.spec else 64
    n = max(n, len(ref) // 2)  # enough samples for the two-sample statistics
    samples = draw_samples(model, ctx, n, cfg["sample_steps"], ctx.seed)
    out.update(two_sample_summary(samples, data, ctx.seed))
    out["energy_data_mean"] = float(np.mean(energies(model, ctx, ref)))
    out["energy_samples_mean"] = float(np.mean(energies(model, ctx, samples)))
    save_samples(ctx, data, data.unscale_x(samples))
    if ctx.plots and ctx.run_dir is not None:
        drawn = plots.sample_picture(data.unscale_x(samples), data.unscale_x(ref), data.image_shape, ctx.path,
                                     "Langevin samples")
        if drawn == "scatter":
            xs, ys, grid = tools.grid_2d(np.concatenate([data.x_train, samples]))
            e = energies(model, ctx, grid)
            e = np.minimum(e, np.quantile(energies(model, ctx, ref), 0.5) + 12.0)  # colour scale near the data
            axes = data.unscale_x(np.stack([xs, ys], axis=1))
            tools.landscape(axes[:, 0], axes[:, 1], e, data.unscale_x(data.x_train), data.unscale_x(samples[:300]),
                            ctx.path("energy.png"), "energy landscape E(x) (clipped above)", "E(x)")
    return out


plugin = EBM()
