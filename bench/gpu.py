"""GPU: gengraph on CuPy vs PyTorch CUDA eager, on the issue-7 workloads (MLP, VAE, DDPM).

    python -m bench.gpu [--quick] [--only mlp,vae,ddpm,sample] [--json bench/results_gpu.json]

gengraph's programs are the ones `gengraph run --device cuda` runs: the same spec, built by
``bench/gg_models.py`` (``plugins.run.runner.build`` + ``plugins.run.trainer.Trainer``), compiled by
``Trainer.compile_programs`` with the run context's backend set to "cupy" (parameters and
optimizer state live on the GPU). PyTorch is the same model in eager mode on CUDA
(``bench/torch_models.py`` with ``device="cuda"``: nn.Linear, autograd, torch.optim.Adam
with its CUDA default, float32, TF32 off). Both start from gengraph's initial parameters,
read the same mini-batches (already on the device) in the same order and the same noise:
the PyTorch side draws it from CuPy generators seeded exactly like gengraph's random
streams on CuPy and wraps it with DLPack (no copy).

Two ways to step, both timed alternately (a round is `block` steps of gengraph, then of
PyTorch, ...; one warm-up round; the device is synchronized before and after each block):

* ``readback``: as the trainer does, every output (loss, metrics, grad norm) is read back
  to the host as a Python float after each step (gengraph ``float(v)``, PyTorch ``.item()``);
* ``no readback``: outputs stay on the device; only the block's end synchronizes, so this
  is the launch-bound throughput of the step.

Before timing, three steps of each from the same start are compared (step outputs, and the
parameters after them), and for the DDPM 200 sampled points. DDPM ancestral sampling of
2000 points (T = 100 program calls, noise pre-drawn on the device) is timed the same way.

Exits 0 with a message, writing nothing, when CuPy, a CUDA device or torch.cuda is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench._pin import pin_from_argv  # noqa: E402

if __name__ == "__main__":
    pin_from_argv()

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import numpy as np  # noqa: E402

from ._common import machine, rel_diff, summarize  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = Path("bench-results") / "results_gpu.json"  # in the working directory, as python -m bench's
CHECK_TOL = 1e-4  # float32, max |diff| / max |gengraph|, on the first step's outputs
MODES = ("readback", "no readback")
# rounds x steps per round, per mode (one warm-up round more); sampling: rounds x 1 call
DEVICE = "cuda"  # PyTorch's device
PLAN = {"full": {"train": (30, 20), "sample": (10, 1), "warmup_steps": 30},
        "quick": {"train": (6, 10), "sample": (3, 1), "warmup_steps": 10}}


# --- availability ----------------------------------------------------------------------------
def skip_reason():
    """None if CuPy, a CUDA device and torch.cuda all work, else why not."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'gengraph[cuda]')"
    from gengraph.engine import cupy_available

    if not cupy_available():
        return "CuPy is installed but finds no usable CUDA device"
    try:
        assert float((cupy.arange(3, dtype=cupy.float32) * 2).sum()) == 6.0
    except Exception as exc:  # noqa: BLE001 - e.g. no NVRTC for CuPy's kernels
        return f"CuPy cannot run a kernel: {type(exc).__name__}: {exc}"
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return f"torch.cuda is not available (torch {torch.__version__})"
    return None


def gpu_info():
    import cupy
    import torch

    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return {"gpu": name, "gpu_memory_gib": round(props["totalGlobalMem"] / 2 ** 30, 1),
            "driver": cupy.cuda.runtime.driverGetVersion(), "cuda_runtime_cupy": cupy.cuda.runtime.runtimeGetVersion(),
            "cupy": cupy.__version__, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "torch_device": torch.cuda.get_device_name(0),
            "torch_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "torch_tf32_cudnn": torch.backends.cudnn.allow_tf32}


# --- helpers ---------------------------------------------------------------------------------
def _to_gpu(gg):
    """Recompile the GG record's programs on CuPy, as `gengraph run --device cuda` compiles them
    (the run context's backend is "cupy"; Trainer.compile_programs moves params to the GPU)."""
    tr = gg.trainer
    tr.ctx.backend = "cupy"
    # build the programs' definitions again for cupy, as a cuda run builds them (an optimizer with
    # fused = "auto" then uses its fused update kernels); fresh optimizer state, same parameters
    tr._defs = None
    try:
        gg.programs = tr.compile_programs()
        gg.gpu_note = "all programs compiled on cupy"
    except Exception as exc:  # noqa: BLE001 - keep what the benchmark needs
        from gengraph.engine import compile

        defs = tr.program_defs()
        gg.programs = {k: compile(gg.graph, *defs[k], backend="cupy") for k in ("train_step", "sample_step")
                       if k in defs}
        gg.gpu_note = f"Trainer.compile_programs on cupy failed ({type(exc).__name__}: {exc}); " \
                      f"compiled {sorted(gg.programs)} alone"
    return gg


def _cupy_stream(seed, stream):
    """The CuPy generator gengraph's RandomStreams uses for `stream` on the GPU (engine/ops/random.py)."""
    import cupy

    from gengraph.engine.ops.random import stream_seed

    return cupy.random.RandomState(int(stream_seed(seed, stream).generate_state(1)[0]))


def _torch_view(a):
    """A torch tensor over a CuPy array's memory (no copy)."""
    import torch

    try:
        return torch.from_dlpack(a)
    except Exception:  # noqa: BLE001
        return torch.as_tensor(a, device=DEVICE)


def _torch_class(base):
    """`base` (a bench.torch_models model) with a switch: readback (the CPU bench's step,
    `.item()` of every output) or not (outputs stay on the device as tensors)."""

    class GPUModel(base):
        readback = True

        def _finish(self, loss, extras):
            if self.readback:
                return super()._finish(loss, extras)
            import torch

            from .torch_models import _grad_norm

            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            out = [loss.detach()] + [e.detach() for e in extras]
            if self.grad_norm:
                with torch.no_grad():
                    out.append(_grad_norm(self.params))
            if callable(self.lr):
                self.opt.param_groups[0]["lr"] = self.lr(self.t)
            self.t += 1
            self.opt.step()
            return out

    GPUModel.__name__ = f"GPU{base.__name__}"
    return GPUModel


def _scalar(v):
    return float(v.item()) if hasattr(v, "item") else float(v)


# --- workloads ---------------------------------------------------------------------------------
class GPUWorkload:
    """One workload's gengraph (CuPy) and PyTorch (CUDA) steppers, built from scratch."""

    name = ""
    batch_size = 128
    batch_seed = 0

    def __init__(self, n_batches=200):
        import cupy
        import torch

        from .workloads import WORKLOADS, _batches, _out_names

        self.cp, self.torch = cupy, torch
        self.desc = WORKLOADS[self.name].desc
        gg = self.gg = _to_gpu(self.build_gg())
        self.prog = gg.programs["train_step"]
        self.outputs = _out_names(self.prog)
        x, y = self.data_xy()
        host = _batches(x.astype(np.float32), n_batches, self.batch_size, seed=self.batch_seed, y=y)
        names = self.prog.feed_names
        dtypes = {n.name: n.dtype for n in self.prog.feed_nodes}
        self.feeds = []
        for b in host:
            arrs = dict(zip(["x", "y"], b))
            self.feeds.append([cupy.asarray(arrs[k].astype(dtypes[k], copy=False)) for k in names])
        self.tbatches = [tuple(torch.from_numpy(np.ascontiguousarray(a)).to(DEVICE) for a in b) for b in host]
        self.init = gg.values()
        self.tm = self.build_torch(monitor="grad_norm" in self.outputs)

    def gg_step(self, i, readback):
        out = self.prog.run_positional(*self.feeds[i % len(self.feeds)])
        return [float(v) for v in out.values()] if readback else list(out.values())

    def torch_step(self, i, readback):
        self.tm.readback = readback
        return self.tm.step(*self.torch_inputs(i))

    def params_after(self):
        """(gengraph's, PyTorch's) parameters in gengraph's layout, as NumPy."""
        tp = [p.detach().cpu().numpy() for p in self.tm.params]
        return self.gg.values(), [p.T if p.ndim == 2 else p for p in tp]


class MLP(GPUWorkload):
    name, batch_seed = "mlp", 1

    def build_gg(self):
        from . import gg_models as G

        return G.build_mlp("float32")

    def data_xy(self):
        d = self.gg.data
        return d.x_train, np.asarray(d.y_train, np.int64)

    def build_torch(self, monitor):
        from .torch_models import TorchMLP

        return _torch_class(TorchMLP)(self.init, self.gg.adam(), grad_norm=monitor, device=DEVICE)

    def torch_inputs(self, i):
        return self.tbatches[i % len(self.tbatches)]


class VAE(GPUWorkload):
    name, batch_seed = "vae", 2

    def build_gg(self):
        from . import gg_models as G

        return G.build_vae("float32")

    def data_xy(self):
        return self.gg.data.x_train, None

    def build_torch(self, monitor):
        from . import gg_models as G
        from .torch_models import TorchVAE

        self.eps_rng = _cupy_stream(self.gg.graph.seed, G.VAE_EPS_STREAM)
        return _torch_class(TorchVAE)(self.init, self.gg.adam(), grad_norm=monitor, device=DEVICE)

    def torch_inputs(self, i):
        eps = self.eps_rng.standard_normal((self.batch_size, 16), dtype=np.float32)
        return self.tbatches[i % len(self.tbatches)][0], _torch_view(eps)


class DDPM(GPUWorkload):
    name, batch_seed, batch_size = "ddpm", 3, 256

    def build_gg(self):
        from . import gg_models as G

        return G.build_ddpm("float32")

    def data_xy(self):
        return self.gg.data["data"].x_train, None

    def build_torch(self, monitor):
        from .torch_models import TorchDDPM

        info = self.gg.data
        self.desc = self.desc.replace("denoiser", f"{info['activation']} denoiser", 1)
        seed = self.gg.graph.seed
        self.u_rng, self.e_rng = _cupy_stream(seed, info["t_stream"]), _cupy_stream(seed, info["eps_stream"])
        return _torch_class(TorchDDPM)(self.init, info, self.gg.adam(), grad_norm=monitor, device=DEVICE)

    def torch_inputs(self, i):
        B = self.batch_size
        u = self.u_rng.random_sample((B,), dtype=np.float32)
        e = self.e_rng.standard_normal((B, 2), dtype=np.float32)
        return self.tbatches[i % len(self.tbatches)][0], _torch_view(u), _torch_view(e)

    # ancestral sampling, noise pre-drawn on the device (shared by both)
    def sample_noise(self, n, seed=1234):
        rs = self.cp.random.RandomState(seed)
        steps = self.gg.data["steps"]
        return rs.standard_normal((n, 2), dtype=np.float32), rs.standard_normal((len(steps), n, 2), dtype=np.float32)

    def gg_sampler(self, x_T, noises):
        cp = self.cp
        prog = self.gg.programs["sample_step"]
        names = prog.feed_names
        n = x_T.shape[0]
        ix, dt = names.index("x_t"), {nd.name: nd.dtype for nd in prog.feed_nodes}
        args = []
        for k, s in enumerate(self.gg.data["steps"]):
            v = {"t": cp.full((n,), s.t, dtype=dt["t"]), "coef_x0": cp.asarray(s.a, dtype=dt["coef_x0"]),
                 "coef_eps": cp.asarray(s.b, dtype=dt["coef_eps"]), "sigma": cp.asarray(s.sigma, dtype=dt["sigma"]),
                 "noise": noises[k], "x_t": None}
            args.append([v[nm] for nm in names])

        def run(_i=0):
            x = x_T
            for a in args:
                a[ix] = x
                x = prog.run_positional(*a)["x_next"]
            return x

        return run

    def torch_sampler(self, x_T, noises):
        torch, tm = self.torch, self.tm
        xT, zs = _torch_view(x_T), [_torch_view(noises[k]) for k in range(noises.shape[0])]
        steps = self.gg.data["steps"]
        tab = tm.tab
        tcol = torch.empty((xT.shape[0], 1), dtype=tm.dtype, device=DEVICE)

        @torch.no_grad()
        def run(_i=0):  # TorchDDPM.sample, with the noise already on the device
            x = xT
            for s, z in zip(steps, zs):
                tcol.fill_(s.t)
                f = tm.net(torch.cat([x, tcol * (1.0 / tm.T)], dim=1))
                x0_hat = (x - tab["sqrt_1m_abar"][s.t] * f) / tab["sqrt_abar"][s.t]
                x = s.a * x0_hat + s.b * f + s.sigma * z
            return x

        return run

    def sample_quality(self, samples):
        data = self.gg.data["data"].x_train
        s = np.asarray(samples, np.float64)
        d2 = (s * s).sum(1)[:, None] - 2 * s @ data.T + (data * data).sum(1)[None, :]
        return float(np.mean(np.sqrt(np.maximum(d2.min(axis=1), 0))))


WORKLOADS = {"mlp": MLP, "vae": VAE, "ddpm": DDPM}


# --- timing ----------------------------------------------------------------------------------
def _syncs():
    import cupy
    import torch

    dev = cupy.cuda.Device()
    return {"gengraph": dev.synchronize, "torch": torch.cuda.synchronize}


def interleaved_gpu(fns, reps, block, counters, warmup=1):
    """Alternate the frameworks (A, B, A, B, ...), `block` calls per turn; the device is
    synchronized (each framework's own call) before the clock starts and before it stops."""
    syncs = _syncs()
    times = {k: [] for k in fns}
    gc.collect()
    for r in range(warmup + reps):
        for name, fn in fns.items():
            i0 = counters[name]
            syncs[name]()
            t0 = time.perf_counter()
            for i in range(i0, i0 + block):
                fn(i)
            syncs[name]()
            dt = time.perf_counter() - t0
            counters[name] = i0 + block
            if r >= warmup:
                times[name].append(dt / block)
    return times


def _ratio(stats):
    return stats["gengraph"]["median_us"] / stats["torch"]["median_us"]


def check(cls, n_steps=3):
    """Fresh instances; n_steps of each from the same start, same batches and noise."""
    w = cls(n_batches=n_steps)
    outs = {"gengraph": [w.gg_step(i, True) for i in range(n_steps)],
            "torch": [w.torch_step(i, True) for i in range(n_steps)]}
    res = {f"step{k}_outputs_rel_diff": max(rel_diff(t, g) for t, g in zip(outs["torch"][k], outs["gengraph"][k]))
           for k in range(n_steps)}
    gp, tp = w.params_after()
    res[f"params_after_{n_steps}_steps_rel_diff"] = max(rel_diff(t, g) for t, g in zip(tp, gp))
    if isinstance(w, DDPM):
        x_T, noises = w.sample_noise(200, seed=5)
        a, b = w.gg_sampler(x_T, noises)(), w.torch_sampler(x_T, noises)()
        res["samples_200_rel_diff"] = rel_diff(b.cpu().numpy(), w.cp.asnumpy(a))
    res["ok"] = bool(res["step0_outputs_rel_diff"] < CHECK_TOL)
    return res


def run_workload(name, plan, do_check=True, sample=True):
    cls = WORKLOADS[name]
    res = {}
    if do_check:
        res["check"] = chk = check(cls)
        if not chk["ok"]:
            print(f"WARNING {name}: PyTorch's first step disagrees with gengraph's: {chk}", flush=True)
    w = cls()
    res.update(desc=w.desc, gengraph_path=w.gg.path, gengraph_programs=w.gg.gpu_note, outputs=w.outputs,
               kernels=w.prog.n_kernels, batch_size=w.batch_size)
    logs = {"gengraph": [], "torch": []}
    counters = {"gengraph": 0, "torch": 0}

    def logged(key, fn, readback):
        def step(i):
            out = fn(i, readback)
            logs[key].append(out[0])

        return step

    # warm-up (CuPy compiles its kernels on first use; cuBLAS / allocator warm-up)
    for key, fn in (("gengraph", w.gg_step), ("torch", w.torch_step)):
        for i in range(plan["warmup_steps"]):
            logged(key, fn, True)(i)
        counters[key] = plan["warmup_steps"]
    _syncs()["gengraph"]()
    reps, block = plan["train"]
    res["modes"] = {}
    for mode in MODES:
        rb = mode == "readback"
        fns = {"gengraph": logged("gengraph", w.gg_step, rb), "torch": logged("torch", w.torch_step, rb)}
        times = interleaved_gpu(fns, reps, block, counters)
        stats = {k: summarize(v) for k, v in times.items()}
        res["modes"][mode] = {"time_per_step": stats, "gengraph/torch": _ratio(stats), "rounds": reps,
                              "steps_per_round": block}
    losses = {k: [_scalar(v) for v in vs] for k, vs in logs.items()}
    res["steps"] = len(losses["gengraph"])
    res["loss_reached"] = {k: float(np.mean(v[-block:])) for k, v in losses.items()}
    res["loss_at_step"] = {k: {str(j): v[j] for j in (0, len(v) // 2, len(v) - 1)} for k, v in losses.items()}
    out = {name: res}
    if name == "ddpm" and sample and "sample_step" in w.gg.programs:
        n = 2000
        x_T, noises = w.sample_noise(n)
        runs = {"gengraph": w.gg_sampler(x_T, noises), "torch": w.torch_sampler(x_T, noises)}
        samples = {}

        def keep(k, f):
            def g(i):
                samples[k] = f(i)

            return g

        fns = {k: keep(k, f) for k, f in runs.items()}
        for f in fns.values():  # warm-up
            f(0)
        sreps, sblock = plan["sample"]
        st = interleaved_gpu(fns, sreps, sblock, {"gengraph": 0, "torch": 0})
        sstats = {k: summarize(v) for k, v in st.items()}
        host = {"gengraph": w.cp.asnumpy(samples["gengraph"]), "torch": samples["torch"].cpu().numpy()}
        out["sample"] = {"desc": f"DDPM ancestral sampling of {n} points, T={w.gg.data['T']} (one sample_step "
                                 "program call / one eager denoiser pass per step), trained models, noise "
                                 "pre-drawn on the device and shared",
                         "rounds": sreps, "time_per_call": sstats, "gengraph/torch": _ratio(sstats),
                         "nn_dist_to_data": {k: w.sample_quality(v) for k, v in host.items()}}
    return out


# --- where the time goes (--profile) -----------------------------------------------------------
def launch_cost(n=2000):
    """Host-side µs per call of one tiny elementwise op (no sync inside the loop): CuPy, PyTorch, NumPy."""
    import cupy
    import torch

    out = {}
    a, b, c = (cupy.ones((128, 128), np.float32) for _ in range(3))
    ta, tb, tc = (torch.ones((128, 128), device=DEVICE) for _ in range(3))
    na, nb, nc = (np.ones((128, 128), np.float32) for _ in range(3))
    cases = {"cupy add(out=)": lambda: cupy.add(a, b, out=c), "cupy a + b": lambda: a + b,
             "cupy maximum(a, 0.0)": lambda: cupy.maximum(a, np.float32(0)),
             "torch add(out=)": lambda: torch.add(ta, tb, out=tc), "torch a + b": lambda: ta + tb,
             "numpy add(out=)": lambda: np.add(na, nb, out=nc)}
    syncs = _syncs()
    for k, f in cases.items():
        for _ in range(200):
            f()
        syncs["gengraph"]()
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        dt = time.perf_counter() - t0
        syncs["gengraph"]()
        out[k] = dt / n * 1e6
    return out


def gpu_kernels(fn, n, first=0):
    """CUDA kernels (and copies/memsets) the device ran for n calls of fn, per call, from
    torch.profiler (CUPTI sees CuPy's launches too): count, busy µs, the most frequent names."""
    import collections

    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    with tprofile(activities=[ProfilerActivity.CUDA]) as p:
        for i in range(first, first + n):
            fn(i)
        torch.cuda.synchronize()
    evs = [e for e in p.events() if getattr(e, "device_type", None) == DeviceType.CUDA]
    names = collections.Counter(e.name[:60] for e in evs)
    busy = sum(e.time_range.elapsed_us() for e in evs)
    return {"per_step": len(evs) / n, "busy_us_per_step": busy / n,
            "top": {k: v / n for k, v in names.most_common(8)}}


def profile(name, steps=50):
    """Host time per op of gengraph's CuPy train_step (each kernel call timed, no sync), by op and
    by scope; the device kernels per step of both frameworks."""
    import collections

    w = WORKLOADS[name](n_batches=50)
    prog = w.prog
    for i in range(20):
        w.gg_step(i, True)
        w.torch_step(i, True)
    sync = _syncs()["gengraph"]
    res = {}
    for key, fn in (("gengraph", w.gg_step), ("torch", w.torch_step)):
        try:
            res[f"device_{key}"] = gpu_kernels(lambda i, f=fn: f(i, False), 20, first=20)
        except Exception as exc:  # noqa: BLE001 - CUPTI may be unavailable
            res[f"device_{key}"] = {"error": f"{type(exc).__name__}: {exc}"}
    sync()
    t0 = time.perf_counter()
    for i in range(steps):
        w.gg_step(i, False)
    host_plain = (time.perf_counter() - t0) / steps  # no sync: host-side cost of launching a step
    sync()
    env = prog._fn.__globals__
    ops = [n for n in prog.nodes if not n.is_leaf]
    orig = {f"k{i}": env[f"k{i}"] for i in range(len(ops))}
    acc = collections.defaultdict(float)

    def timed(key, f):
        def call(*a, **kw):
            t = time.perf_counter()
            r = f(*a, **kw)
            acc[key] += time.perf_counter() - t
            return r

        return call

    try:
        for k, f in orig.items():
            env[k] = timed(k, f)
        for i in range(steps):
            w.gg_step(i, False)
        sync()
    finally:
        env.update(orig)
    by_op, by_scope = collections.defaultdict(lambda: [0, 0.0]), collections.defaultdict(lambda: [0, 0.0])
    for i, n in enumerate(ops):
        us = acc[f"k{i}"] / steps * 1e6
        for table, key in ((by_op, n.op), (by_scope, (n.scope or "-").split("/")[0])):
            table[key][0] += 1
            table[key][1] += us
    kern = sum(v for v in acc.values()) / steps * 1e6
    res.update(host_us_per_step_no_sync=host_plain * 1e6, kernels=len(ops), kernel_calls_host_us=kern,
               by_op={k: {"kernels": c, "host_us": round(t, 1)} for k, (c, t) in
                      sorted(by_op.items(), key=lambda kv: -kv[1][1])},
               by_scope={k: {"kernels": c, "host_us": round(t, 1)} for k, (c, t) in
                         sorted(by_scope.items(), key=lambda kv: -kv[1][1])})
    return res


def markdown(results) -> str:
    lines = [("| workload | gengraph CuPy (ms) | PyTorch CUDA (ms) | gengraph / PyTorch | "
              "gengraph CuPy, no readback (ms) | PyTorch CUDA, no readback (ms) | gengraph / PyTorch, no readback | "
              "loss reached (gengraph / PyTorch) |"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, r in results["workloads"].items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error'].splitlines()[-1]} | | | | | | |")
            continue
        if name == "sample":
            s = r["time_per_call"]
            q = r["nn_dist_to_data"]
            lines.append(f"| ddpm sampling (2000 pts, ms/run) | {s['gengraph']['median_us'] / 1e3:.2f} | "
                         f"{s['torch']['median_us'] / 1e3:.2f} | **{r['gengraph/torch']:.2f}** | | | | "
                         f"nearest-data distance {q['gengraph']:.3f} / {q['torch']:.3f} |")
            continue
        a, b = r["modes"]["readback"], r["modes"]["no readback"]
        ms = lambda m, k: m["time_per_step"][k]["median_us"] / 1e3  # noqa: E731
        lr = r["loss_reached"]
        lines.append(f"| {name} | {ms(a, 'gengraph'):.3f} | {ms(a, 'torch'):.3f} | **{a['gengraph/torch']:.2f}** | "
                     f"{ms(b, 'gengraph'):.3f} | {ms(b, 'torch'):.3f} | **{b['gengraph/torch']:.2f}** | "
                     f"{lr['gengraph']:.4f} / {lr['torch']:.4f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="mlp,vae,ddpm,sample")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="instead of timing: launch cost per op, host time per op of gengraph's steps, device "
                         "kernels per step of both (torch.profiler)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads of the host side (pinned before NumPy)")
    ap.add_argument("--json", default=None,
                    help=f"write the results here ('' for nowhere); default {DEFAULT_JSON} in the working "
                         "directory when timing (bench/results_gpu.json, which the README quotes, only when named), "
                         "nowhere with --profile")
    a = ap.parse_args(argv)
    reason = skip_reason()
    if reason:
        print(f"bench.gpu: skipped: {reason}")
        return None
    import torch

    torch.set_num_threads(a.threads)
    plan = PLAN["quick" if a.quick else "full"]
    only = a.only.split(",")
    t0 = time.time()
    results = {"command": "python -m bench.gpu" + (" --quick" if a.quick else "") +
               (f" --only {a.only}" if a.only != "mlp,vae,ddpm,sample" else ""),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": {**machine(), **gpu_info()},
               "plan": plan, "workloads": {}}
    if a.profile:
        results["command"] = results["command"] + " --profile"
        results["profile"] = {"launch_cost_us": launch_cost()}
        costs = results["profile"]["launch_cost_us"]
        print("launch cost (host µs per call):", {k: round(v, 1) for k, v in costs.items()})
        for name in [n for n in only if n in WORKLOADS]:
            try:
                results["profile"][name] = r = profile(name)
            except Exception:  # noqa: BLE001
                results["profile"][name] = r = {"error": traceback.format_exc()}
            print(f"[profile] {name}: " + json.dumps(r, indent=None)[:3000], flush=True)
        only = []
    for name in [n for n in only if n in WORKLOADS]:
        print(f"[gpu] {name} ...", flush=True)
        try:
            results["workloads"].update(run_workload(name, plan, not a.no_check, sample="sample" in only))
        except Exception:  # noqa: BLE001 - report the others anyway
            results["workloads"][name] = {"error": traceback.format_exc()}
            print(results["workloads"][name]["error"], flush=True)
    results["seconds"] = round(time.time() - t0, 1)
    for name, r in results["workloads"].items():
        if "check" in r:
            print(f"  check {name}: " + ", ".join(f"{k} {v:.1e}" if isinstance(v, float) else f"{k} {v}"
                                                  for k, v in r["check"].items()))
    print(markdown(results))
    out = a.json if a.json is not None else ("" if a.profile else str(DEFAULT_JSON))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=1))
        print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
