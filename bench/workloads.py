"""The issue-7 workloads: gengraph vs hand-written NumPy vs PyTorch CPU eager.

    python bench/workloads.py --threads 1 [--quick] [--only mlp,vae,ddpm,sample] [--json out.json]

For each workload the three frameworks start from the same initial parameters (gengraph's),
see the same mini-batches in the same order and the same random numbers (the NumPy and
PyTorch versions draw from the streams gengraph's random ops use), and are timed
alternately in one process: a round is `block` steps of each framework in turn, in the order of
the next row of a balanced Latin square (each framework first, and within a round right after
each other, equally often); medians over rounds are reported, as per-step times and as ratios. Every
framework computes what `gengraph run`'s train_step computes per step: loss, the model's
metrics and the global gradient norm (the trainer's divergence monitor), then an Adam step.
The loss reached (mean over the last round) shows that all did the same work.

Before timing, checks in float64 (tolerance 1e-8) and float32 (1e-4) compare the hand-written gradients (and PyTorch's)
with gengraph's on one batch, and a few full training steps (Adam included).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench._pin import pin_from_argv  # noqa: E402

if __name__ == "__main__":
    pin_from_argv()

import argparse  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402

from ._common import interleaved, load_torch, machine, rel_diff, ratios, stream_rng, summarize  # noqa: E402
from . import gg_models as G  # noqa: E402
from .numpy_ddpm import NumpyDDPM  # noqa: E402
from .numpy_mlp import NumpyMLP  # noqa: E402
from .numpy_vae import NumpyVAE  # noqa: E402

CHECK_TOL = {"float64": 1e-8, "float32": 1e-4}  # max |diff| / max |reference|, worst array


def _batches(x, n_batches, batch_size, seed, y=None):
    """Full mini-batches from per-epoch shuffles, as contiguous arrays (shared by all frameworks)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n_batches:
        order = rng.permutation(len(x))
        for s in range(0, len(x) - batch_size + 1, batch_size):
            idx = order[s:s + batch_size]
            out.append((np.ascontiguousarray(x[idx]),) + ((y[idx],) if y is not None else ()))
            if len(out) == n_batches:
                break
    return out


def _gg_step(prog, names):
    def step(*arrays):
        out = prog.run(dict(zip(names, arrays)))
        return [float(v) for v in out.values()]  # as the trainer does with every output

    return step


# --- workload definitions -------------------------------------------------------------------
def _torch_models():
    from . import torch_models

    return torch_models


def load_jax(enabled=True):
    """bench.jax_models.JaxModel, or None when JAX is not installed (or disabled, also by
    $GENGRAPH_BENCH_NO_JAX, as $GENGRAPH_BENCH_NO_TORCH disables PyTorch)."""
    if not enabled or os.environ.get("GENGRAPH_BENCH_NO_JAX"):
        return None
    try:
        from .jax_models import JaxModel
    except ImportError:
        return None
    return JaxModel


FRAMEWORKS = ("gengraph", "numpy", "torch", "torch_fused", "torch_compile", "jax")
TORCH_VARIANTS = {"torch": "default", "torch_fused": "fused", "torch_compile": "compile"}


class Workload:
    name = ""
    desc = ""
    batch_size = 128

    def __init__(self, torch=None, dtype="float32", jax=None, torch_compile=True):
        self.torch, self.dtype, self.jax = torch, np.dtype(dtype), jax
        self.torch_compile = torch_compile

    def _torch_peers(self, frameworks, make, call):
        """fns for each PyTorch row asked for: make(variant) -> model, call(model, i) -> outputs."""
        fns = {}
        if self.torch is None:
            return fns
        for key, variant in TORCH_VARIANTS.items():
            if key in frameworks and (variant != "compile" or self.torch_compile):
                model = make(variant)
                fns[key] = (lambda m: lambda i: call(m, i))(model)
        return fns

    def _check_peers(self, res, init, adam, steps, make_torch=None, make_jax=None):
        """Three steps of every PyTorch row (default, fused, compiled) and of the jitted JAX step from
        gengraph's initial parameters on the same data as gengraph's `steps`; parameters after them compared."""
        ref = steps["params"]
        if self.torch is not None and make_torch is not None:
            # every PyTorch row that is timed, so that each one's Adam step is checked, not only fused's
            for variant in ("default", "fused") + (("compile",) if self.torch_compile else ()):
                tm = make_torch(init, adam, variant)
                for data in steps["torch"]:
                    tm.step(*data)
                got = [p.detach().cpu().numpy() for p in tm.params]
                got = [g.T if g.ndim == 2 else g for g in got]
                res[f"torch_{variant}_params_after_3_steps_rel_diff"] = max(rel_diff(a, b) for a, b in zip(got, ref))
        if self.jax is not None and make_jax is not None:
            jm = make_jax(init, adam)
            for data in steps["jax"]:
                jm.step(*data)
            res["jax_params_after_3_steps_rel_diff"] = max(rel_diff(a, b) for a, b in zip(jm.values(), ref))



def _out_names(prog):
    keys = prog._out_keys
    return list(keys) if isinstance(keys, list) else [keys]


class MLPWorkload(Workload):
    name = "mlp"
    desc = "MLP 64-128-128-10 ReLU, softmax CE, Adam lr 1e-3, batch 128, digits (specs/mlp_digits.toml)"

    def build_gg(self, dtype):
        return G.build_mlp(str(dtype))

    def setup(self, n_batches, frameworks=FRAMEWORKS):
        gg = self.gg = self.build_gg(self.dtype)
        d = gg.data
        x = d.x_train.astype(self.dtype)
        self.batches = _batches(x, n_batches, self.batch_size, seed=1, y=d.y_train)
        init = gg.values()
        prog = gg.programs["train_step"]
        self.outputs = _out_names(prog)
        monitor = "grad_norm" in self.outputs
        fns = {}
        if "gengraph" in frameworks:
            step = _gg_step(prog, ["x", "y"])
            fns["gengraph"] = lambda i: step(*self.batches[i % len(self.batches)])
        if "numpy" in frameworks:
            npm = NumpyMLP(init, gg.adam(), grad_norm=monitor)
            fns["numpy"] = lambda i: npm.step(*self.batches[i % len(self.batches)])
        if self.torch is not None:
            from .torch_models import TorchMLP

            T = self.torch
            tb = [(T.from_numpy(a), T.from_numpy(b)) for a, b in self.batches]
            fns.update(self._torch_peers(frameworks, lambda v: TorchMLP(init, gg.adam(), grad_norm=monitor, variant=v),
                                         lambda m, i: m.step(*tb[i % len(tb)])))
        if self.jax is not None and "jax" in frameworks:
            import jax

            jb = [tuple(jax.device_put(a) for a in b) for b in self.batches]
            jm = self.jax("mlp", init, gg.adam(), grad_norm=monitor)
            fns["jax"] = lambda i: jm.step(*jb[i % len(jb)])
        return fns

    def check(self, dtype="float64"):
        gg = self.build_gg(dtype)
        x, y = gg.data.x_train[:128].astype(dtype), gg.data.y_train[:128]
        out = gg.grads_program().run({"x": x, "y": y})
        ref = [out[f"grad{i}"] for i in range(len(gg.params))]
        npm = NumpyMLP(gg.values())
        loss, _, grads = npm.loss_and_grads(x, y)
        res = {"numpy_grad_rel_diff": max(rel_diff(a, b) for a, b in zip(grads, ref)),
               "numpy_loss_rel_diff": rel_diff(loss, out["loss"])}
        if self.torch is not None:
            from .torch_models import TorchMLP, grads_numpy

            T = self.torch
            tm = TorchMLP(gg.values())
            tl, _ = tm.loss(T.from_numpy(x), T.from_numpy(y))
            tl.backward()
            res["torch_grad_rel_diff"] = max(rel_diff(a, b) for a, b in zip(grads_numpy(tm.params), ref))
        # three full steps (Adam included): parameters must agree
        prog = gg.programs["train_step"]
        init = [v.copy() for v in gg.values()]
        npm = NumpyMLP(gg.values(), gg.adam())
        data = []
        for k in range(3):
            xb, yb = gg.data.x_train[128 * k:128 * (k + 1)].astype(dtype), gg.data.y_train[128 * k:128 * (k + 1)]
            prog.run({"x": xb, "y": yb})
            npm.step(xb, yb)
            data.append((xb, yb))
        res["numpy_params_after_3_steps_rel_diff"] = max(rel_diff(a, b) for a, b in zip(npm.params, gg.values()))
        steps = {"params": [v.copy() for v in gg.values()], "jax": data}
        if self.torch is not None:
            from .torch_models import TorchMLP

            steps["torch"] = [tuple(self.torch.from_numpy(a) for a in d) for d in data]
        self._check_peers(res, init, gg.adam(), steps,
                          lambda p, a, v: _torch_models().TorchMLP(p, a, variant=v),
                          lambda p, a: self.jax("mlp", p, a))
        return res


class VAEWorkload(Workload):
    name = "vae"
    desc = ("VAE 64-128-(2x16) / 16-128-64 ReLU, Bernoulli likelihood (BCE with logits; the spec with "
            "model.likelihood={kind=\"bernoulli\"}), analytic KL, "
            "1 sample, Adam (the spec's lr), batch 128, digits scaled to [0, 1] (specs/vae_digits.toml)")

    def build_gg(self, dtype):
        return G.build_vae(str(dtype))

    def setup(self, n_batches, frameworks=FRAMEWORKS):
        gg = self.gg = self.build_gg(self.dtype)
        x = gg.data.x_train.astype(self.dtype)
        seed = gg.graph.seed
        self.batches = _batches(x, n_batches, self.batch_size, seed=2)
        init = gg.values()
        prog = gg.programs["train_step"]
        self.outputs = _out_names(prog)
        monitor = "grad_norm" in self.outputs
        B, dt = self.batch_size, self.dtype
        fns = {}
        if "gengraph" in frameworks:
            step = _gg_step(prog, ["x"])
            fns["gengraph"] = lambda i: step(self.batches[i % len(self.batches)][0])
        if "numpy" in frameworks:
            m, rng = NumpyVAE(init, gg.adam(), grad_norm=monitor), stream_rng(seed, G.VAE_EPS_STREAM)
            fns["numpy"] = lambda i: m.step(self.batches[i % len(self.batches)][0],
                                            rng.standard_normal((B, 16), dtype=dt))
        if self.torch is not None:
            from .torch_models import TorchVAE

            T = self.torch
            tb = [T.from_numpy(a) for a, in self.batches]

            def make(variant):
                return TorchVAE(init, gg.adam(), grad_norm=monitor, variant=variant), stream_rng(seed, G.VAE_EPS_STREAM)

            fns.update(self._torch_peers(frameworks, make, lambda m, i: m[0].step(
                tb[i % len(tb)], T.from_numpy(m[1].standard_normal((B, 16), dtype=dt)))))
        if self.jax is not None and "jax" in frameworks:
            import jax

            jb = [jax.device_put(a) for a, in self.batches]
            jm, jrng = self.jax("vae", init, gg.adam(), grad_norm=monitor), stream_rng(seed, G.VAE_EPS_STREAM)
            fns["jax"] = lambda i: jm.step(jb[i % len(jb)], jrng.standard_normal((B, 16), dtype=dt))
        return fns

    def check(self, dtype="float64"):
        gg = self.build_gg(dtype)
        data = gg.data.x_train.astype(dtype)
        x = data[:128]
        out = gg.grads_program(extra=("eps",)).run({"x": x})
        out["eps"] = out["eps"].reshape(128, 16)
        ref = [out[f"grad{i}"] for i in range(len(gg.params))]
        m = NumpyVAE(gg.values())
        loss, _, grads = m.loss_and_grads(x, out["eps"])
        res = {"numpy_grad_rel_diff": max(rel_diff(a, b) for a, b in zip(grads, ref)),
               "numpy_loss_rel_diff": rel_diff(loss, out["loss"])}
        if self.torch is not None:
            from .torch_models import TorchVAE, grads_numpy

            T = self.torch
            tm = TorchVAE(gg.values())
            tl = tm.loss(T.from_numpy(x), T.from_numpy(out["eps"]))[0]
            tl.backward()
            res["torch_grad_rel_diff"] = max(rel_diff(a, b) for a, b in zip(grads_numpy(tm.params), ref))
        gg = self.build_gg(dtype)  # fresh noise streams
        init = [v.copy() for v in gg.values()]
        m, rng = NumpyVAE(gg.values(), gg.adam()), stream_rng(gg.graph.seed, G.VAE_EPS_STREAM)
        used = []
        for k in range(3):
            xb = data[128 * k:128 * (k + 1)]
            gg.programs["train_step"].run({"x": xb})
            e = rng.standard_normal((128, 16), dtype=dtype)
            m.step(xb, e)
            used.append((xb, e))
        res["numpy_params_after_3_steps_rel_diff"] = max(rel_diff(a, b) for a, b in zip(m.params, gg.values()))
        steps = {"params": [v.copy() for v in gg.values()], "jax": used}
        if self.torch is not None:
            steps["torch"] = [tuple(self.torch.from_numpy(a) for a in d) for d in used]
        self._check_peers(res, init, gg.adam(), steps,
                          lambda p, a, v: _torch_models().TorchVAE(p, a, variant=v),
                          lambda p, a: self.jax("vae", p, a))
        return res


class DDPMWorkload(Workload):
    name = "ddpm"
    desc = ("DDPM (diffusion plugin, specs/diffusion_moons.toml): eps-prediction denoiser 3-128-128-128-2 "
            "(input x_t and t/T), T=100 cosine noise schedule, simple MSE loss, Adam with the spec's cosine "
            "learning-rate schedule, batch 256, 2-D moons (4000 points, 3000 for training, standardized)")
    batch_size = 256

    def build_gg(self, dtype):
        return G.build_ddpm(str(dtype))

    def _draws(self, rng_u, rng_e, dt):
        B = self.batch_size
        return rng_u.random((B,), dtype=dt), rng_e.standard_normal((B, 2), dtype=dt)

    def setup(self, n_batches, frameworks=FRAMEWORKS):
        gg = self.gg = self.build_gg(self.dtype)
        info = gg.data
        self.desc = self.desc.replace("denoiser", f"{info['activation']} denoiser", 1)
        self.xdata = info["data"].x_train
        x = self.xdata.astype(self.dtype)
        self.batches = _batches(x, n_batches, self.batch_size, seed=3)
        init = gg.values()
        prog = gg.programs["train_step"]
        self.outputs = _out_names(prog)
        monitor = "grad_norm" in self.outputs
        dt, seed = self.dtype, info["seed"]
        fns, self.models = {}, {}
        if "gengraph" in frameworks:
            step = _gg_step(prog, ["x"])
            fns["gengraph"] = lambda i: step(self.batches[i % len(self.batches)][0])
            self.models["gengraph"] = gg
        if "numpy" in frameworks:
            m = NumpyDDPM(init, info, gg.adam(), grad_norm=monitor)
            ru, re_ = stream_rng(seed, info["t_stream"]), stream_rng(seed, info["eps_stream"])
            fns["numpy"] = lambda i: m.step(self.batches[i % len(self.batches)][0], *self._draws(ru, re_, dt))
            self.models["numpy"] = m
        if self.torch is not None:
            from .torch_models import TorchDDPM

            T = self.torch
            tb = [T.from_numpy(a) for a, in self.batches]

            def make(variant):
                tm = TorchDDPM(init, info, gg.adam(), grad_norm=monitor, variant=variant)
                if variant == "default":
                    self.models["torch"] = tm
                return tm, stream_rng(seed, info["t_stream"]), stream_rng(seed, info["eps_stream"])

            def tstep(m, i):
                u, e = self._draws(m[1], m[2], dt)
                return m[0].step(tb[i % len(tb)], T.from_numpy(u), T.from_numpy(e))

            fns.update(self._torch_peers(frameworks, make, tstep))
        if self.jax is not None and "jax" in frameworks:
            import jax

            jb = [jax.device_put(a) for a, in self.batches]
            jm = self.jax("ddpm", init, gg.adam(), grad_norm=monitor, info=info)
            ju, je = stream_rng(seed, info["t_stream"]), stream_rng(seed, info["eps_stream"])
            fns["jax"] = lambda i: jm.step(jb[i % len(jb)], *self._draws(ju, je, dt))
        return fns

    def samplers(self, n_points=2000):
        """Ancestral sampling of n_points with each (trained) model, the plugin's way (same rng draws)."""
        fns = {}
        seed = 1234
        if "gengraph" in self.models:
            rg = np.random.default_rng(seed)
            fns["gengraph"] = lambda i: G.ddpm_sample(self.models["gengraph"], n_points, rg)
        if "numpy" in self.models:
            rn = np.random.default_rng(seed)
            fns["numpy"] = lambda i: self.models["numpy"].sample(n_points, rn)
        if "torch" in self.models:
            rt = np.random.default_rng(seed)
            fns["torch"] = lambda i: self.models["torch"].sample(n_points, rt).numpy()
        return fns

    def sample_quality(self, samples):
        """Mean distance from each sample to its nearest training point (model units; lower is better)."""
        data = self.xdata
        s = np.asarray(samples, np.float64)
        d2 = (s * s).sum(1)[:, None] - 2 * s @ data.T + (data * data).sum(1)[None, :]
        return float(np.mean(np.sqrt(np.maximum(d2.min(axis=1), 0))))

    def check(self, dtype="float64"):
        gg = self.build_gg(dtype)
        info = gg.data
        data = info["data"].x_train.astype(dtype)
        x = data[:256]
        out = gg.grads_program(extra=("t", "eps")).run({"x": x})
        ref = [out[f"grad{i}"] for i in range(len(gg.params))]
        m = NumpyDDPM(gg.values(), info, gg.adam())
        loss, _, grads = m.loss_and_grads(x, out["t"], out["eps"])
        res = {"numpy_grad_rel_diff": max(rel_diff(a, b) for a, b in zip(grads, ref)),
               "numpy_loss_rel_diff": rel_diff(loss, out["loss"])}
        if self.torch is not None:
            from .torch_models import TorchDDPM, grads_numpy

            T = self.torch
            tm = TorchDDPM(gg.values(), info)
            tl, _ = tm.loss(T.from_numpy(x), T.from_numpy(out["t"]), T.from_numpy(out["eps"]))
            tl.backward()
            res["torch_grad_rel_diff"] = max(rel_diff(a, b) for a, b in zip(grads_numpy(tm.params), ref))
        gg = self.build_gg(dtype)
        init = [v.copy() for v in gg.values()]
        m = NumpyDDPM(gg.values(), info, gg.adam())
        ru, re_ = stream_rng(info["seed"], info["t_stream"]), stream_rng(info["seed"], info["eps_stream"])
        outs, used = [], []
        for k in range(3):
            xb = data[256 * k:256 * (k + 1)]
            o = gg.programs["train_step"].run({"x": xb})
            u, e = ru.random((256,), dtype=dtype), re_.standard_normal((256, 2), dtype=dtype)
            no = m.step(xb, u, e)
            used.append((xb, u, e))
            outs.append(max(rel_diff(a, b) for a, b in zip(no, o.values())))
        res["numpy_params_after_3_steps_rel_diff"] = max(rel_diff(a, b) for a, b in zip(m.params, gg.values()))
        res["numpy_step_outputs_rel_diff"] = max(outs)
        steps = {"params": [v.copy() for v in gg.values()], "jax": used}
        if self.torch is not None:
            steps["torch"] = [tuple(self.torch.from_numpy(a) for a in d) for d in used]
        self._check_peers(res, init, gg.adam(), steps,
                          lambda p, a, v: _torch_models().TorchDDPM(p, info, a, variant=v),
                          lambda p, a: self.jax("ddpm", p, a, info=info))
        # sampling: same parameters, same rng draws -> same points
        s_gg = G.ddpm_sample(gg, 200, np.random.default_rng(5))
        s_np = m.sample(200, np.random.default_rng(5))
        res["numpy_samples_rel_diff"] = rel_diff(s_np, s_gg)
        return res


WORKLOADS = {"mlp": MLPWorkload, "vae": VAEWorkload, "ddpm": DDPMWorkload}

# rounds x steps per round (one warm-up round more); full and --quick
PLAN = {"full": {"mlp": (42, 20), "vae": (42, 20), "ddpm": (30, 20), "sample": (12, 1)},  # rounds: multiples of the orders
        "quick": {"mlp": (8, 10), "vae": (8, 10), "ddpm": (6, 10), "sample": (3, 1)}}


def _losses(fns, n):
    """Wrap steppers so they record the outputs of each step (cheap: a list append)."""
    logs = {k: [] for k in fns}

    def wrap(k, f):
        def g(i):
            out = f(i)
            logs[k].append(out)
            return out

        return g

    return {k: wrap(k, f) for k, f in fns.items()}, logs


def run_workload(name, torch, quick=False, check=True, jax=None, torch_compile=True):
    plan = PLAN["quick" if quick else "full"]
    w = WORKLOADS[name](torch, jax=jax, torch_compile=torch_compile)
    res = {"desc": w.desc}
    if check:
        for dt in ("float64", "float32"):
            res[f"check_{dt}"] = chk = w.check(dt)
            bad = {k: v for k, v in chk.items() if not v < CHECK_TOL[dt]}
            if bad:
                raise AssertionError(f"{name}: hand-written versions disagree with gengraph in {dt}: {bad}")
    reps, block = plan[name]
    fns = w.setup(n_batches=200)
    fns, logs = _losses(fns, (reps + 1) * block)
    cpu = {}
    times = interleaved(fns, reps, block, cpu=cpu)
    stats = {k: summarize(v) for k, v in times.items()}
    cpu_stats = {k: summarize(v) for k, v in cpu.items()}
    res.update(gengraph_path=w.gg.path, steps=(reps + 1) * block, rounds=reps, steps_per_round=block, outputs=w.outputs,
               time_per_step=stats, ratios=ratios(stats), cpu_per_step=cpu_stats, ratios_cpu=ratios(cpu_stats))
    res["loss_reached"] = {k: float(np.mean([o[0] for o in v[-block:]])) for k, v in logs.items()}
    # every row did the same work: the first step's outputs (same init, same batch, same noise) agree
    short = {k: len(v[0]) for k, v in logs.items() if len(v[0]) != len(logs["gengraph"][0])}
    if short:  # zip would compare only the outputs both have
        raise AssertionError(f"{name}: rows return {short} outputs per step, gengraph {len(logs['gengraph'][0])}")
    first = {k: max(rel_diff(a, b) for a, b in zip(v[0], logs["gengraph"][0])) for k, v in logs.items()
             if k != "gengraph"}
    res["first_step_outputs_rel_diff"] = first
    bad = {k: v for k, v in first.items() if not v < CHECK_TOL[str(w.dtype)]}
    if bad:
        raise AssertionError(f"{name}: the first timed step disagrees with gengraph's: {bad}")
    res["loss_at_step"] = {k: [float(v[j][0]) for j in (0, len(v) // 2, len(v) - 1)] for k, v in logs.items()}
    res["program"] = {"kernels": w.gg.programs["train_step"].n_kernels,
                      "pass_stats": w.gg.programs["train_step"].pass_stats}
    out = {name: res}
    if name == "ddpm":
        sreps, sblock = plan["sample"]
        sfns = w.samplers(2000)
        samples = {}

        def keep(k, f):
            def g(i):
                samples[k] = f(i)

            return g

        stimes = interleaved({k: keep(k, f) for k, f in sfns.items()}, sreps, sblock)
        sstats = {k: summarize(v) for k, v in stimes.items()}
        out["sample"] = {"desc": f"DDPM ancestral sampling of 2000 points, T={w.gg.data['T']} steps (one "
                                 "program call per step, plugins.diffusion.sample), with the trained models",
                         "rounds": sreps,
                         "time_per_call": sstats, "ratios": ratios(sstats),
                         "nn_dist_to_data": {k: w.sample_quality(v) for k, v in samples.items()}}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="mlp,vae,ddpm")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--no-torch-compile", action="store_true")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    torch = load_torch(a.threads, not a.no_torch)
    jax = load_jax(not a.no_jax)
    results = {"machine": machine(), "workloads": {}}
    for name in [n for n in a.only.split(",") if n in WORKLOADS]:
        results["workloads"].update(run_workload(name, torch, a.quick, not a.no_check, jax, not a.no_torch_compile))
    for name, r in results["workloads"].items():
        st = r.get("time_per_step") or r.get("time_per_call")
        line = ", ".join(f"{k} {v['median_us'] / 1e3:.3f} ms" for k, v in st.items())
        print(f"[{a.threads} thr] {name:6s} {line} | " + ", ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items()))
        if "loss_reached" in r:
            print("        loss reached: " + ", ".join(f"{k} {v:.5f}" for k, v in r["loss_reached"].items()))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
