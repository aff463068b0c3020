"""Peak memory of a training run, one fresh process per (workload, framework).

    python -m bench.memory --workload mlp --framework numpy --steps 200 [--data DIR]

The parent (``python -m bench``) first writes, per workload, the initial parameters, the
mini-batches and the Adam settings to an .npz (``prepare``), so that no peer builds or runs a
gengraph model (each process imports ``gengraph.blas_setup`` for the BLAS pinning, and the VAE
and DDPM peers gengraph's random-stream helper to draw the same noise). Each measuring process
then imports its framework,
builds its model from the .npz (same initial parameters, same batches: one data path for
all) and runs `steps` training steps. Reported, in MiB, like for like:

* ``rss_import``   -- what importing the framework added to the resident set (interpreter and
  NumPy already loaded): the framework's fixed cost, its own column (for gengraph also the
  modules that building a model from a spec imports);
* ``rss_setup``    -- what building the model, its optimizer state and the batches added, and
  the first WARM_STEPS training steps (first-call work: PyTorch creates Adam's state and its
  allocator caches in the first step, JAX its buffers);
* ``rss_training`` -- the peak resident set during the further training steps minus the level
  before them (the peak is reset through /proc/self/clear_refs first): activations, gradients
  and temporaries of training itself. At these model sizes a step needs well under a MiB, about
  what RSS can resolve;
* ``rss_peak``     -- ru_maxrss of the whole process, for reference (dominated by the import);
* ``traced_step_peak`` -- tracemalloc's peak during 20 further steps minus its level before
  them: the NumPy-side temporaries of one step (gengraph and NumPy only: PyTorch's and XLA's
  allocators are invisible to tracemalloc, so it is None there).

gengraph's process builds its programs the way `gengraph run` does (spec -> runner.build ->
Trainer.compile_programs; the spec's own data set is loaded there and counted in setup), then
takes its parameters and batches from the .npz like the others.
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
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM), Linux >= 4.0; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return _peak_mb()


def prepare(workload: str, path: Path, n_batches: int = 50) -> Path:
    """Write init params, batches and settings of a workload (float32) for the measuring processes."""
    import numpy as np

    from .workloads import WORKLOADS

    w = WORKLOADS[workload](None)
    w.setup(n_batches, frameworks=())
    gg = w.gg
    arrays = {f"param{i}": v for i, v in enumerate(gg.values())}
    for i, b in enumerate(w.batches):
        for j, a in enumerate(b):
            arrays[f"batch{i}_{j}"] = a
    meta = {"workload": workload, "n_params": len(gg.params), "n_batches": len(w.batches),
            "parts": len(w.batches[0]), "adam": gg.adam(table=5000), "monitor": "grad_norm" in w.outputs,
            "seed": gg.graph.seed}
    if workload == "vae":
        from .gg_models import VAE_EPS_STREAM

        meta["vae_eps_stream"] = VAE_EPS_STREAM
    if workload == "ddpm":
        info = gg.data
        meta.update(T=info["T"], activation=info["activation"], t_stream=info["t_stream"],
                    eps_stream=info["eps_stream"], seed=info["seed"], tables=list(info["tables"]))
        arrays.update({f"table_{k}": v for k, v in info["tables"].items()})
    path = Path(path) / f"{workload}.npz"
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
    return path


WARM_STEPS = 2  # steps run before the training peak is measured; their memory counts as setup


def measure(workload: str, framework: str, data_dir: Path, steps: int) -> dict:
    import numpy as np  # noqa: F401  (every framework's process has NumPy before the import measured)

    rss_before = rss_mb()
    if framework == "torch":
        from ._common import load_torch

        torch = load_torch()
        if torch is None:
            return {"error": "torch not installed"}
        from . import torch_models  # noqa: F401
    elif framework == "gengraph":
        # the engine, the plugins and what building a model from a spec imports (the runner, the
        # spec loader, the data sets, the model kinds): ~10 MiB that otherwise counted as setup
        import gengraph.plugins.datasets  # noqa: F401
        import gengraph.plugins.run.loading  # noqa: F401
        import gengraph.plugins.run.runner  # noqa: F401
        from gengraph.engine.ops.cpu_loops import warm

        warm("float32")  # Numba (the fast extra) and its loops, which the first step would load: a fixed cost too
        from gengraph.plugins.model import MODELS

        from . import gg_models  # noqa: F401
        for kind in ("mlp", "vae", "diffusion"):
            MODELS.get(kind)
    elif framework == "numpy":
        from . import numpy_ddpm, numpy_mlp, numpy_vae  # noqa: F401
    else:
        try:
            from . import jax_models  # noqa: F401
        except ImportError:
            return {"error": "jax not installed"}
    rss_import = rss_mb()

    z = np.load(Path(data_dir) / f"{workload}.npz", allow_pickle=False)
    meta = json.loads(str(z["meta"]))
    init = [z[f"param{i}"] for i in range(meta["n_params"])]
    batches = [tuple(z[f"batch{i}_{j}"] for j in range(meta["parts"])) for i in range(meta["n_batches"])]
    if workload == "ddpm":
        meta["info"] = {"T": meta["T"], "activation": meta["activation"], "steps": [],
                        "tables": {k: z[f"table_{k}"] for k in meta["tables"]}}
    step = _stepper(workload, framework, init, batches, meta)  # JAX: the step is compiled ahead here
    for i in range(WARM_STEPS):  # first-call work (PyTorch's Adam state and allocator, JAX's buffers) is setup
        step(i)
    rss_setup = rss_mb()
    reset = reset_peak_rss()
    for i in range(WARM_STEPS, WARM_STEPS + steps):
        step(i)
    peak = peak_rss_mb() if reset else _peak_mb()
    out = {"rss_import": rss_import - rss_before, "rss_setup": rss_setup - rss_import,
           "rss_training": peak - rss_setup, "rss_peak": _peak_mb(), "steps": steps, "peak_reset": reset}
    out["traced_step_peak"] = None
    if framework in ("gengraph", "numpy"):
        import tracemalloc

        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for i in range(WARM_STEPS + steps, WARM_STEPS + steps + 20):
            step(i)
        out["traced_step_peak"] = (tracemalloc.get_traced_memory()[1] - base) / 2**20
        tracemalloc.stop()
    return out


def _stepper(workload, framework, init, batches, meta):
    import numpy as np

    from ._common import stream_rng

    nb, adam, mon, seed = len(batches), dict(meta["adam"]), meta["monitor"], meta["seed"]
    adam.pop("schedule", None)
    if isinstance(adam["lr"], list):
        lrs = adam["lr"]
        adam["lr"] = lambda t: lrs[min(t, len(lrs) - 1)]
    if framework == "gengraph":
        from . import gg_models as G

        gg = {"mlp": G.build_mlp, "vae": G.build_vae, "ddpm": G.build_ddpm}[workload]("float32")
        for p, v in zip(gg.params, init):  # the same initial parameters as the others, from the .npz
            gg.graph.set_value(p, v)
        prog = gg.programs["train_step"]
        names = ["x", "y"] if workload == "mlp" else ["x"]

        def step(i):
            out = prog.run(dict(zip(names, batches[i % nb])))
            return [float(v) for v in out.values()]

        return step
    if framework == "jax":
        import jax

        from .jax_models import JaxModel

        info = meta.get("info")
        m = JaxModel(workload, init, adam, grad_norm=mon, info=info)
        jb = [tuple(jax.device_put(a) for a in b) for b in batches]
        extra = {"mlp": (), "vae": ((batches[0][0].shape[0], 16),),
                 "ddpm": ((batches[0][0].shape[0],), (batches[0][0].shape[0], 2))}[workload]
        m.compile(*jb[0], *(np.zeros(s, np.float32) for s in extra))  # XLA compilation counts as setup
        if workload == "mlp":
            return lambda i: m.step(*jb[i % nb])
        if workload == "vae":
            rng, B = stream_rng(seed, meta["vae_eps_stream"]), batches[0][0].shape[0]
            return lambda i: m.step(jb[i % nb][0], rng.standard_normal((B, 16), dtype=np.float32))
        ru, re_ = stream_rng(seed, meta["t_stream"]), stream_rng(seed, meta["eps_stream"])
        B = batches[0][0].shape[0]
        return lambda i: m.step(jb[i % nb][0], ru.random((B,), dtype=np.float32),
                                re_.standard_normal((B, 2), dtype=np.float32))
    if workload == "mlp":
        if framework == "numpy":
            from .numpy_mlp import NumpyMLP

            m = NumpyMLP(init, adam, grad_norm=mon)
            return lambda i: m.step(*batches[i % nb])
        import torch

        from .torch_models import TorchMLP

        m = TorchMLP(init, adam, grad_norm=mon)
        tb = [tuple(torch.from_numpy(a) for a in b) for b in batches]
        return lambda i: m.step(*tb[i % nb])
    if workload == "vae":
        rng = stream_rng(seed, meta["vae_eps_stream"])  # gengraph's stream helper only: no gengraph model
        B = batches[0][0].shape[0]
        if framework == "numpy":
            from .numpy_vae import NumpyVAE

            m = NumpyVAE(init, adam, grad_norm=mon)
            return lambda i: m.step(batches[i % nb][0], rng.standard_normal((B, 16), dtype=np.float32))
        import torch

        from .torch_models import TorchVAE

        m = TorchVAE(init, adam, grad_norm=mon)
        tb = [torch.from_numpy(b[0]) for b in batches]
        return lambda i: m.step(tb[i % nb], torch.from_numpy(rng.standard_normal((B, 16), dtype=np.float32)))
    # ddpm
    ru, re_ = stream_rng(seed, meta["t_stream"]), stream_rng(seed, meta["eps_stream"])
    B = batches[0][0].shape[0]

    def draws():
        return ru.random((B,), dtype=np.float32), re_.standard_normal((B, 2), dtype=np.float32)

    if framework == "numpy":
        from .numpy_ddpm import NumpyDDPM

        m = NumpyDDPM(init, meta["info"], adam, grad_norm=mon)
        return lambda i: m.step(batches[i % nb][0], *draws())
    import torch

    from .torch_models import TorchDDPM

    m = TorchDDPM(init, meta["info"], adam, grad_norm=mon)
    tb = [torch.from_numpy(b[0]) for b in batches]

    def tstep(i):
        u, e = draws()
        return m.step(tb[i % nb], torch.from_numpy(u), torch.from_numpy(e))

    return tstep


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True)
    ap.add_argument("--framework", required=True, choices=["gengraph", "numpy", "torch", "jax"])
    ap.add_argument("--data", required=True, help="folder with the prepared <workload>.npz")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    print(json.dumps(measure(a.workload, a.framework, Path(a.data), a.steps)))


if __name__ == "__main__":
    main()
