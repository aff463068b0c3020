"""Image workloads: gengraph vs PyTorch CPU eager (issue: image models at the lecture's scale).

    python -m bench.conv_bench [--threads 1] [--rounds 6] [--out bench-results/results_conv.json]

1. conv2d forward + backward (dx, dW) against ``torch.nn.functional.conv2d``: batch 64,
   32 -> 64 channels, 3x3, padding 1, at 28x28 and 14x14;
2. a conv-VAE training step (``specs/vae_mnist.toml``) and
3. a U-Net DDPM training step (``specs/diffusion_mnist.toml``), both on 1x28x28 images,
   batch 64, built by ``runner.build`` + ``Trainer.compile_programs`` (what ``gengraph run``
   runs, on synthetic MNIST-format files), against the same models written with
   ``torch.nn.functional`` from gengraph's initial parameters.

Before timing, each pair is checked on the same batch and the same noise (gengraph's draws,
fetched from its graph): loss and every gradient, max |diff| / max |gengraph| < 1e-4 (float32)
or the run stops. Steps are timed alternately (gengraph block, PyTorch block, ...), CPU time
of the process (robust on a shared machine), medians over rounds; the step is forward +
backward + gradient norm + Adam update on both sides. Also: peak memory of a step (a fresh
process per framework: peak RSS over 3 steps minus the RSS before the first, optimizer state made
before that on both sides; gengraph's
tracemalloc peak of one step beside it) and the compile time of the U-Net spec.
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
import gzip  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

from bench._common import interleaved  # noqa: E402
from bench.memory import peak_rss_mb, reset_peak_rss, rss_mb  # noqa: E402
from gengraph.engine.heap import tune_heap  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
B = 64


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))


def write_fake_mnist(folder: Path, n_train=640, n_test=64, seed=0):
    """MNIST-format files with random digits-like content (timing does not depend on the pixels)."""
    from gengraph.plugins.datasets.mnist import FILES

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28)) * (rng.random((n_train, 28, 28)) < 0.2),
              "train_labels": np.arange(n_train) % 10,
              "test_images": rng.integers(0, 256, (n_test, 28, 28)) * (rng.random((n_test, 28, 28)) < 0.2),
              "test_labels": np.arange(n_test) % 10}
    for k, a in arrays.items():
        a = np.asarray(a, np.uint8)
        head = bytes([0, 0, 8, a.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in a.shape)
        (folder / (FILES[k] + ".gz")).write_bytes(gzip.compress(head + a.tobytes()))


def alternate(fns: dict, rounds: int, block: int) -> dict:
    """Median CPU seconds per call of each fn (and the quartiles), timed in alternating blocks by
    bench._common.interleaved (each round in the order of a balanced Latin square) after a warm-up
    round; no pause between blocks."""
    cpu = {}
    interleaved(fns, rounds, block, warmup=1, cpu=cpu, pause=0.0)
    return {k: {"median_ms": 1e3 * statistics.median(v), "p25_ms": 1e3 * float(np.percentile(v, 25)),
                "p75_ms": 1e3 * float(np.percentile(v, 75))} for k, v in cpu.items()}


# --- 1. conv2d forward + backward --------------------------------------------------------------
def conv_micro(torch, rounds):
    from gengraph.engine import Graph, compile, grad, ops

    out = {}
    rng = np.random.default_rng(0)
    for hw in (28, 14):
        x = rng.standard_normal((B, 32, hw, hw), dtype=np.float32)
        w = (rng.standard_normal((64, 32, 3, 3)) * 0.05).astype(np.float32)
        r = rng.standard_normal((B, 64, hw, hw), dtype=np.float32)
        g = Graph(dtype="float32")
        xn, wn, rn = g.input("x", x.shape), g.input("w", w.shape), g.input("r", r.shape)
        y = ops.conv2d(xn, wn, padding=1)
        dx, dw = grad(ops.sum(y * rn), [xn, wn])
        prog = compile(g, [y, dx, dw])
        tx, tw, tr = (torch.from_numpy(a.copy()).requires_grad_(k < 2) for k, a in enumerate((x, w, r)))

        def tstep(i):
            tx.grad = tw.grad = None
            ty = torch.nn.functional.conv2d(tx, tw, padding=1)
            ty.backward(tr)
            return ty

        res = prog.run(x=x, w=w, r=r)
        ty = tstep(0)
        check = {"y": rel(res[0], ty.detach().numpy()), "dx": rel(res[1], tx.grad.numpy()),
                 "dw": rel(res[2], tw.grad.numpy())}
        assert max(check.values()) < 1e-4, check
        t = alternate({"gengraph": lambda i: prog.run(x=x, w=w, r=r), "torch": tstep}, rounds, 5)
        flops = 3 * 2 * B * 64 * hw * hw * 32 * 9
        out[f"conv2d_{hw}x{hw}"] = {"times": t, "check": check, "ratio": t["gengraph"]["median_ms"] /
                                    t["torch"]["median_ms"], "gflops_gengraph": flops / t["gengraph"]["median_ms"] / 1e6,
                                    "gflops_torch": flops / t["torch"]["median_ms"] / 1e6}
    return out


# --- gengraph programs from the specs ------------------------------------------------------------
def gg_build(spec_name, data_dir, extra=()):
    from gengraph.plugins.run.loading import load
    from gengraph.plugins.run.runner import RunContext, build
    from gengraph.plugins.run.trainer import Trainer

    t0, c0 = time.perf_counter(), time.process_time()
    spec = load(REPO / "specs" / spec_name, [f"data.dir={data_dir}", f"train.batch_size={B}",
                                             "train.optimizer.clip_norm=0.0", *extra])
    data, plugin, graph, model = build(spec.data)
    ctx = RunContext(spec.data, None, spec.data["run"]["seed"])
    tr = Trainer(plugin, model, data, spec.data["train"], ctx)
    progs = tr.compile_programs()
    return {"data": data, "graph": graph, "model": model, "trainer": tr, "step": progs["train_step"],
            "adam": torch_adam_args(spec.data["train"]["optimizer"]),
            "compile_s": time.perf_counter() - t0, "compile_cpu_s": time.process_time() - c0}


def random_nodes(graph, loss):
    from gengraph.engine import topo_order

    return [n for n in topo_order([loss]) if n.op in ("random_normal", "random_uniform")]


def gg_check_program(gg):
    from gengraph.engine import compile

    m, tr = gg["model"], gg["trainer"]
    rnd = random_nodes(gg["graph"], m.loss)
    outs = {"loss": m.loss, **{f"rand{i}": n for i, n in enumerate(rnd)},
            **{f"grad{i}": g for i, g in enumerate(tr.grads)}}
    return compile(gg["graph"], outs), rnd


def torch_params(torch, gg):
    return {p.label: torch.from_numpy(np.array(gg["graph"].value(p), np.float32)).requires_grad_(True)
            for p in gg["model"].params}


# --- 2. the conv VAE ------------------------------------------------------------------------------
def torch_vae(torch, P, cfg):
    F = torch.nn.functional
    latent = cfg["latent"]

    def net(h, prefix, layers, out):
        i = 0
        for i, lay in enumerate(list(layers) + [out]):
            name = "out" if i == len(layers) else f"{lay.get('type', 'dense')}{i}"
            kind = lay.get("type", "dense")
            if kind == "conv2d":
                h = F.conv2d(h, P[f"{prefix}/{name}/W"], stride=lay["stride"], padding=lay["padding"]) + \
                    P[f"{prefix}/{name}/b"]
            elif kind == "conv_transpose2d":
                h = F.conv_transpose2d(h, P[f"{prefix}/{name}/W"], stride=lay["stride"], padding=lay["padding"],
                                       output_padding=lay["output_padding"]) + P[f"{prefix}/{name}/b"]
            elif kind == "flatten":
                h = h.reshape(h.shape[0], -1)
                continue
            elif kind == "reshape":
                h = h.reshape((h.shape[0],) + tuple(lay["shape"]))
                continue
            else:
                h = h.reshape(h.shape[0], -1) @ P[f"{prefix}/{name}/W"] + P[f"{prefix}/{name}/b"]
            act = lay["activation"]
            h = {"silu": F.silu, "relu": F.relu, "identity": lambda z: z}[act](h)
        return h

    enc_out = {"units": 2 * latent, "activation": "identity"}
    dec_out = {"type": "conv2d", "stride": 1, "padding": 1, "activation": "identity"}

    def loss(x, eps):
        z = net(x.reshape(-1, 1, 28, 28), "encoder", cfg["encoder"], enc_out)
        mu, logvar = z[:, :latent], z[:, latent:]
        h = mu + torch.exp(0.5 * logvar) * eps
        logits = net(h, "decoder", cfg["decoder"], dec_out).reshape(x.shape[0], -1)
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
        kl = 0.5 * (mu ** 2 + torch.exp(logvar) - 1.0 - logvar).sum(1)
        return (rec + kl).mean()

    return loss


# --- 3. the U-Net DDPM --------------------------------------------------------------------------------
def torch_ddpm(torch, P, gg):
    F = torch.nn.functional
    m = gg["model"]
    cfg, D, T = m.extras["cfg"], m.extras["D"], m.extras["T"]
    net_cfg = cfg["network"]
    groups, chans, nb = net_cfg["groups"], net_cfg["channels"], net_cfg["blocks"]
    sched = m.extras["schedule"]
    sa_tab = torch.from_numpy(np.concatenate([[1.0], np.sqrt(sched.alpha_bar)]).astype(np.float32))
    sb_tab = torch.from_numpy(np.concatenate([[0.0], np.sqrt(1.0 - sched.alpha_bar)]).astype(np.float32))
    half = cfg["time_embedding"]["dim"] // 2
    freqs = torch.from_numpy(np.exp(-math.log(cfg["time_embedding"]["max_period"]) * np.arange(half) / half)
                             .astype(np.float32))
    S = "denoiser"

    def conv(x, name, stride=1):
        W = P[f"{S}/{name}/W"]
        return F.conv2d(x, W, stride=stride, padding=W.shape[2] // 2) + P[f"{S}/{name}/b"]

    def gn(x, name):
        return F.group_norm(x, groups, eps=1e-5) * P[f"{S}/{name}/weight"] + P[f"{S}/{name}/bias"]

    def res(x, name, temb):
        h = conv(F.silu(gn(x, f"{name}/norm1")), f"{name}/conv1")
        h = h + (F.silu(temb) @ P[f"{S}/{name}/temb/W"] + P[f"{S}/{name}/temb/b"])[:, :, None, None]
        h = conv(F.silu(gn(h, f"{name}/norm2")), f"{name}/conv2")
        return h + (conv(x, f"{name}/skip") if f"{S}/{name}/skip/W" in P else x)

    def attention(x, name):
        n, c, hh, ww = x.shape
        seq = gn(x, f"{name}/norm").reshape(n, c, hh * ww).transpose(1, 2)
        qkv = seq @ P[f"{S}/{name}/qkv/W"] + P[f"{S}/{name}/qkv/b"]
        q, k, v = qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:]
        a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), dim=-1) @ v
        o = a @ P[f"{S}/{name}/proj/W"] + P[f"{S}/{name}/proj/b"]
        return x + o.transpose(1, 2).reshape(n, c, hh, ww)

    def unet(xt, emb):
        temb = F.silu(emb @ P[f"{S}/time_mlp/dense0/W"] + P[f"{S}/time_mlp/dense0/b"]) @ \
            P[f"{S}/time_mlp/dense1/W"] + P[f"{S}/time_mlp/dense1/b"]
        h = conv(xt.reshape(-1, 1, 28, 28), "stem")
        skips = [h]
        for lv in range(len(chans)):
            for b in range(nb):
                h = res(h, f"down{lv}/res{b}", temb)
                skips.append(h)
            if lv < len(chans) - 1:
                h = conv(h, f"down{lv}/downsample", stride=2) if net_cfg["downsample"] == "conv" \
                    else F.avg_pool2d(h, 2)
                skips.append(h)
        h = res(h, "mid/res0", temb)
        if net_cfg["attention"]:
            h = attention(h, "mid/attention")
        h = res(h, "mid/res1", temb)
        for lv in reversed(range(len(chans))):
            for b in range(nb + 1):
                h = res(torch.cat([h, skips.pop()], 1), f"up{lv}/res{b}", temb)
            if lv > 0:
                h = conv(F.interpolate(h, scale_factor=2, mode="nearest"), f"up{lv}/upsample")
        h = conv(F.silu(gn(h, "out/norm")), "out")
        return h.reshape(h.shape[0], -1)

    def loss(x, u, eps):
        x0 = x * 2.0 - 1.0 if cfg["symmetric"] else x
        t = (torch.clamp(torch.floor(u * T), max=T - 1) + 1).long()
        sa, sb = sa_tab[t][:, None], sb_tab[t][:, None]
        xt = sa * x0 + sb * eps
        args = t.float()[:, None] * freqs[None, :]
        f = unet(xt, torch.cat([torch.cos(args), torch.sin(args)], 1))
        return ((eps - f) ** 2).sum(1).mean() / D

    return loss


# --- steps, checks, timing ------------------------------------------------------------------------------
def compare(torch, gg, loss_fn, feeds_fn):
    """Loss and gradients of both on one batch with gengraph's noise."""
    prog, rnd = gg_check_program(gg)
    x = gg["data"].x_train[:B].astype(np.float32)
    out = prog.run(x=x)
    P = gg["P"]
    tl = loss_fn(torch.from_numpy(x), *feeds_fn(out, rnd))
    tl.backward()
    labels = [p.label for p in gg["model"].params]
    worst = max(rel(out[f"grad{i}"], P[lab].grad.numpy()) for i, lab in enumerate(labels))
    for p in P.values():
        p.grad = None
    check = {"loss": rel(out["loss"], tl.detach().numpy()), "grads": worst}
    assert max(check.values()) < 1e-4, check
    return check


def torch_adam_args(opt: dict) -> dict:
    """torch.optim.Adam's arguments for the spec's optimizer: the same lr, betas and eps (the
    timing does not depend on them; the two sides should still run the same update)."""
    assert opt["kind"] == "adam" and not opt.get("weight_decay"), opt
    return {"lr": opt["lr"], "betas": (opt.get("beta1", 0.9), opt.get("beta2", 0.999)), "eps": opt.get("eps", 1e-8)}


def torch_step_fn(torch, P, loss_fn, batches, noise, adam, fused=False):
    """PyTorch's training step: default Adam with a Python-sum gradient norm, or (fused) PyTorch at
    its best, Adam(fused=True) with torch._foreach_norm, as bench/torch_models.py's rows."""
    from .torch_models import _grad_norm, _grad_norm_foreach  # imports torch: only where torch runs

    params = list(P.values())
    opt = torch.optim.Adam(params, **adam, **({"fused": True} if fused else {}))
    norm = _grad_norm_foreach if fused else _grad_norm  # the trainer's grad_norm monitor

    def step(i):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(batches[i % len(batches)], *noise(i))
        loss.backward()
        gnorm = norm(params)
        opt.step()
        return float(loss.detach()), float(gnorm.detach())

    step.opt, step.params = opt, params  # for memory_child
    return step


def gg_step_fn(gg, batches):
    prog = gg["step"]

    def step(i):
        out = prog.run(x=batches[i % len(batches)])
        return {k: float(v) for k, v in out.items()}

    return step


def peak_memory(fn):
    """(tracemalloc peak MiB, RSS growth MiB) over one call after a warm-up call."""
    fn(0)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    fn(1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2 ** 20, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024


def model_bench(torch, name, rounds, data_dir):
    fns = model_fns(torch, name, data_dir)
    gg, check = fns.pop("_gg"), fns.pop("_check")
    times = alternate(fns, rounds, 2 if name == "ddpm" else 3)
    tm = {k: dict(zip(("tracemalloc_peak_mib", "rss_growth_mib"), peak_memory(f))) for k, f in fns.items()}
    return {"times": times, "check": check, "tracemalloc": tm["gengraph"]["tracemalloc_peak_mib"],
            "compile_s": gg["compile_s"], "ratio": times["gengraph"]["median_ms"] / times["torch"]["median_ms"],
            "ratio_fused": times["gengraph"]["median_ms"] / times["torch_fused"]["median_ms"],
            "kernels": len(gg["step"].nodes), "params": int(sum(np.size(gg["graph"].value(p))
                                                                 for p in gg["model"].params))}


def model_fns(torch, name, data_dir, check=True):
    rng = np.random.default_rng(1)
    if name == "vae":
        gg = gg_build("vae_mnist.toml", data_dir)
        gg["P"] = torch_params(torch, gg)
        loss_fn = torch_vae(torch, gg["P"], gg["model"].extras["hierarchy"] and _vae_cfg(gg))
        fused_P = torch_params(torch, gg)  # the fused row's own parameters (same initial values)
        fused_loss = torch_vae(torch, fused_P, gg["model"].extras["hierarchy"] and _vae_cfg(gg))
        latent = gg["model"].extras["hierarchy"].sizes[0]
        check = compare(torch, gg, loss_fn, lambda out, rnd: [torch.from_numpy(out["rand0"].reshape(B, latent))]) \
            if check else None
        noise = [(torch.from_numpy(rng.standard_normal((B, latent), dtype=np.float32)),) for _ in range(8)]
    else:
        gg = gg_build("diffusion_mnist.toml", data_dir)
        gg["P"] = torch_params(torch, gg)
        loss_fn = torch_ddpm(torch, gg["P"], gg)
        fused_P = torch_params(torch, gg)
        fused_loss = torch_ddpm(torch, fused_P, gg)
        by_op = {n.op: i for i, n in enumerate(gg_check_program(gg)[1])}

        def feeds(out, rnd):
            return [torch.from_numpy(out[f"rand{by_op['random_uniform']}"]),
                    torch.from_numpy(out[f"rand{by_op['random_normal']}"])]

        check = compare(torch, gg, loss_fn, feeds) if check else None
        noise = [(torch.from_numpy(rng.random(B, dtype=np.float32)),
                  torch.from_numpy(rng.standard_normal((B, 784), dtype=np.float32))) for _ in range(8)]
    x = gg["data"].x_train.astype(np.float32)
    batches = [x[i * B:(i + 1) * B] for i in range(len(x) // B)]
    tb = [torch.from_numpy(b) for b in batches]
    return {"gengraph": gg_step_fn(gg, batches),
            "torch": torch_step_fn(torch, gg["P"], loss_fn, tb, lambda i: noise[i % len(noise)], gg["adam"]),
            "torch_fused": torch_step_fn(torch, fused_P, fused_loss, tb, lambda i: noise[i % len(noise)], gg["adam"],
                                         fused=True),
            "_gg": gg, "_check": check}


def memory_child(torch, name, framework, data_dir) -> dict:
    """In a fresh process: the RSS before the first step and the peak RSS over 3 steps of one
    framework, both with their optimizer state made before the baseline. gengraph makes Adam's
    moments when it compiles; PyTorch in its first step, which counted them as step memory: its
    Adam's state is made here as its first step would make it (a step counter and two zero
    moments per parameter; no gradient is allocated and freed, which malloc could keep resident
    in the baseline)."""
    fns = model_fns(torch, name, data_dir, check=False)
    fn = fns[framework]
    if framework.startswith("torch"):
        for p in fn.params:
            fn.opt.state[p].update(step=torch.zeros((), dtype=torch.float32),
                                   exp_avg=torch.zeros_like(p, memory_format=torch.preserve_format),
                                   exp_avg_sq=torch.zeros_like(p, memory_format=torch.preserve_format))
    if framework == "gengraph":  # Numba and its loops (the fast extra) are a fixed cost, not step memory
        from gengraph.engine.ops.cpu_loops import warm

        warm("float32")
    base = rss_mb()
    reset = reset_peak_rss()  # ru_maxrss would keep the set-up's peak and, across fork + exec, the parent's
    for i in range(3):
        fn(i)
    peak = peak_rss_mb()
    return {"rss_before_mib": base, "peak_rss_mib": peak, "step_peak_mib": peak - base, "peak_reset": reset}


def step_memory(name, data_dir, threads) -> dict:
    import subprocess

    out = {}
    for fw in ("gengraph", "torch"):
        cmd = [sys.executable, "-m", "bench.conv_bench", "--threads", str(threads), "--mem-child",
               f"{name},{fw},{data_dir}"]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), check=True)
        out[fw] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def _vae_cfg(gg):
    from gengraph.plugins.run.loading import load

    return load(REPO / "specs" / "vae_mnist.toml").data["model"]


def unet_compile_time(data_dir, reps=5):
    out = []
    for _ in range(reps):
        gg = gg_build("diffusion_mnist.toml", data_dir)
        out.append((gg["compile_s"], gg["compile_cpu_s"]))
    return {"wall_s": statistics.median(o[0] for o in out), "cpu_s": statistics.median(o[1] for o in out)}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=6)  # a multiple of the 6 orders of 3 frameworks
    ap.add_argument("--out", default="bench-results/results_conv.json",
                    help="JSON file for the results (default under the untracked bench-results/; "
                         "bench/results_conv.json is the copy bench/README.md quotes)")
    ap.add_argument("--only", default="conv,vae,ddpm,memory,compile")
    ap.add_argument("--mem-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    try:
        import torch
    except ImportError:  # every row here is against PyTorch: nothing to measure without it
        ap.exit(2, "bench.conv_bench times gengraph's image models against PyTorch's, which is not installed "
                   "in this environment: pip install -e '.[bench]' (python -m bench runs without it)\n")

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    if a.mem_child:
        name, fw, data_dir = a.mem_child.split(",", 2)
        print(json.dumps(memory_child(torch, name, fw, data_dir)))
        return None
    # the malloc thresholds a run sets when it compiles (engine/heap.py), before anything is timed:
    # the conv2d rows run before any compile, and in one process they hold for both frameworks
    res_heap = tune_heap()
    parts = a.only.split(",")
    command = "python -m bench.conv_bench" + "".join(f" {x}" for x in (argv if argv is not None else sys.argv[1:]))
    res = {"command": command, "rounds": a.rounds, "threads": a.threads, "torch": torch.__version__,
           "numpy": np.__version__, "batch": B, "malloc_tuned": res_heap,
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_avg_start": list(__import__("os").getloadavg())}
    with tempfile.TemporaryDirectory() as tmp:
        write_fake_mnist(Path(tmp))
        if "conv" in parts:
            res["conv2d"] = conv_micro(torch, a.rounds)
            print(json.dumps(res["conv2d"], indent=1))
        for name in ("vae", "ddpm"):
            if name in parts:
                res[name] = model_bench(torch, name, a.rounds, tmp)
                print(name, json.dumps(res[name], indent=1))
        if "memory" in parts:
            res["step_memory"] = {name: step_memory(name, tmp, a.threads) for name in ("vae", "ddpm")}
            print("memory", json.dumps(res["step_memory"], indent=1))
        if "compile" in parts:
            res["unet_compile_s"] = unet_compile_time(tmp)
            print("unet compile s", res["unet_compile_s"])
    res["load_avg_end"] = list(__import__("os").getloadavg())
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
