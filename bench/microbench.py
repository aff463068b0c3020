"""Small, targeted measurements behind the engine findings in bench/README.md.

    python bench/microbench.py --threads 1

Each figure is the minimum over 7 repeats of a timed loop (robust on a shared machine):

* ``adam``: gengraph's Adam update program alone (the MLP's 6 parameters, gradients fed as
  inputs, update written back in place by the Program) vs the hand-written in-place NumPy Adam;
* ``writeback``: the ``leaf[...] = value`` copies that end an MLP train_step (19 arrays);
* ``softplus``: ``np.logaddexp(0, z)`` (the kernel of softplus and bce_with_logits) vs the
  equally stable ``maximum(z, 0) + log1p(exp(-|z|))`` on float32 (128, 64) and (256, 128);
* ``grad_norm``: the trainer's monitor ``sqrt(sum_i sum(square(g_i)))`` vs ``np.vdot``;
* ``fast_paths``: the NumPy calls behind engine/ops/fastpaths.py on float32: ``np.maximum(x, 0)``
  vs against a zero array of x's shape; ``x.sum(axis=0)`` vs ``ones . x``; ``x.sum(axis=1)``
  vs ``x . ones`` (us per call, at the shapes named in each key);
* ``heap``: a `specs/diffusion_moons.toml` train_step (batch 256) in two fresh processes
  (no PyTorch imported), glibc's malloc untouched (GENGRAPH_MALLOC_TUNING=0) and with the
  thresholds that compiling a NumPy program sets (engine/heap.py); ms per step;
* ``scalar_zero``: the per-call cost of ``x.dtype.type(0)`` (written inside the relu, softplus,
  leaky_relu, elu and bce_with_logits kernels) against a zero made once; ns per call on (4,).
* ``conv_ceiling``: the three 3x3 convolution kernels (forward, input gradient, weight
  gradient; batch 64, 32 -> 64 channels, float32) at 14x14 and 28x28, as dispatched and
  im2col-only, against the BLAS ceiling: one GEMM of the direct convolution's size
  (64 x 288 @ 288 x N*H*W), ms and GFLOP/s. With the kernels faster than that GEMM, what
  is left to a peer is a faster GEMM (bench/README.md, "Convolutions");
* ``group_norm``: group_norm (8 groups) * weight + bias, then SiLU, forward and the gradients
  of x, weight and bias, as gengraph compiles it from its graph ops against the same written
  by hand as one fused NumPy function (statistics as BLAS products); ms at the U-Net's shapes.

    python bench/microbench.py --threads 1 [NAME ...]     # all, or the named ones
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

import json  # noqa: E402
import timeit  # noqa: E402

import numpy as np  # noqa: E402

from ._common import rel_diff  # noqa: E402


def _t(fn, number=200) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def adam() -> dict:
    from gengraph.engine import Graph, compile
    from gengraph.engine.optimizers import make_optimizer

    from .numpy_adam import Adam

    shapes = [(64, 128), (128,), (128, 128), (128,), (128, 10), (10,)]
    rng = np.random.default_rng(0)
    g = Graph("float32")
    params = [g.param(f"p{i}", rng.standard_normal(s)) for i, s in enumerate(shapes)]
    grads_in = [g.input(f"g{i}", s) for i, s in enumerate(shapes)]
    opt = make_optimizer("adam", lr=1e-3)
    prog = compile(g, [], opt.updates(g, params, grads_in))
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    feeds = {f"g{i}": v for i, v in enumerate(grads)}
    npa = Adam([rng.standard_normal(s).astype(np.float32) for s in shapes])
    return {"gengraph_program_us": _t(lambda: prog.run(feeds)),
            "gengraph_run_positional_us": _t(lambda: prog.run_positional(*grads)),
            "numpy_inplace_us": _t(lambda: npa.step(grads)), "gengraph_kernels": prog.n_kernels}


def writeback() -> dict:
    from .gg_models import build_mlp

    prog = build_mlp().programs["train_step"]
    pairs = [(prog.graph.values[t.id], np.empty_like(prog.graph.values[t.id])) for t, _ in prog.updates]
    n = sum(a.size for a, _ in pairs)

    def copy():
        for dst, src in pairs:
            dst[...] = src

    return {"arrays": len(pairs), "elements": int(n), "us": _t(copy)}


def softplus() -> dict:
    out = {}
    for shape in ((128, 64), (256, 128)):
        z = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 3
        a = _t(lambda: np.logaddexp(np.float32(0), z))
        b = _t(lambda: np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z))))
        assert np.allclose(np.logaddexp(np.float32(0), z), np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z))),
                           rtol=1e-6, atol=1e-6)
        out["x".join(map(str, shape))] = {"logaddexp_us": a, "max_log1p_exp_us": b, "speedup": a / b}
    return out


def grad_norm() -> dict:
    rng = np.random.default_rng(0)
    gs = [rng.standard_normal(s).astype(np.float32) for s in [(64, 128), (128,), (128, 128), (128,), (128, 10), (10,)]]
    return {"sum_square_us": _t(lambda: np.sqrt(sum(np.sum(np.square(g)) for g in gs))),
            "vdot_us": _t(lambda: np.sqrt(sum(np.vdot(g, g) for g in gs)))}


def scalar_zero() -> dict:
    from gengraph.engine.ops import OPS

    x = np.linspace(-1, 1, 4).astype(np.float32)
    zero = np.float32(0)
    relu = OPS["relu"].kernel(np, {}, None)
    n = 20000
    return {"dtype_type_0_ns": _t(lambda: x.dtype.type(0), n) * 1e3,
            "relu_kernel_ns": _t(lambda: relu(x), n) * 1e3,
            "np_maximum_prebuilt_zero_ns": _t(lambda: np.maximum(x, zero), n) * 1e3,
            "np_maximum_python_0_ns": _t(lambda: np.maximum(x, 0), n) * 1e3}


def fast_paths() -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for shape in [(128, 128), (1024, 512), (64, 32, 28, 28)]:
        x = rng.standard_normal(shape).astype(np.float32)
        o, z = np.empty_like(x), np.zeros_like(x)
        key = "x".join(map(str, shape))
        n = 20 if x.size > 1e6 else 200
        out[f"maximum_scalar_0_{key}_us"] = _t(lambda: np.maximum(x, 0, out=o), n)
        out[f"maximum_zero_array_{key}_us"] = _t(lambda: np.maximum(x, z, out=o), n)
    for shape in [(128, 10), (128, 128), (1024, 10), (1024, 512)]:
        x = rng.standard_normal(shape).astype(np.float32)
        rows, cols = np.ones(shape[0], np.float32), np.ones(shape[1], np.float32)
        key = "x".join(map(str, shape))
        out[f"sum_axis0_{key}_us"] = _t(lambda: x.sum(axis=0))
        out[f"ones_dot_x_{key}_us"] = _t(lambda: np.dot(rows, x))
        out[f"sum_axis1_{key}_us"] = _t(lambda: x.sum(axis=1))
        out[f"x_dot_ones_{key}_us"] = _t(lambda: np.dot(x, cols))
    return out


_HEAP_STEP = """
import time
from gengraph.plugins.run.context import RunContext
from gengraph.plugins.run.loading import load
from gengraph.plugins.run.runner import build
from gengraph.plugins.run.trainer import Trainer
spec = load("{spec}", ["train.batch_size=256"]).data
data, plugin, graph, model = build(spec)
p = Trainer(plugin, model, data, spec["train"], RunContext(spec, None, 0)).compile_programs()["train_step"]
feeds = {{"x": data.x_train[:256].astype(p.feed_nodes[0].dtype)}}
for _ in range(20):
    p.run(feeds)
best = 1e9
for _ in range(7):
    t = time.perf_counter()
    for _ in range(100):
        p.run(feeds)
    best = min(best, (time.perf_counter() - t) / 100)
print(best * 1e3)
"""


def heap() -> dict:
    import os
    import subprocess

    spec = Path(__file__).resolve().parent.parent / "specs" / "diffusion_moons.toml"
    out = {}
    for key, flag in (("untouched_ms", "0"), ("tuned_ms", "1")):
        env = {**os.environ, "GENGRAPH_MALLOC_TUNING": flag}
        r = subprocess.run([sys.executable, "-c", _HEAP_STEP.format(spec=spec)], env=env, capture_output=True,
                           text=True, check=True)
        out[key] = float(r.stdout.split()[-1])
    return out


def _ms(fn) -> float:
    """ms of one call (after a warm-up call): _t's minimum of 7, for calls too long to loop."""
    fn()
    return _t(fn, number=1) / 1e3


def conv_ceiling() -> dict:
    from gengraph.engine.ops import conv
    from gengraph.engine.ops.registry import OPS

    rng = np.random.default_rng(0)
    attrs = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    out, saved = {}, conv.CONV_ALGO
    try:
        for size in (14, 28):
            x = rng.standard_normal((64, 32, size, size)).astype(np.float32)
            w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
            gy = rng.standard_normal((64, 64, size, size)).astype(np.float32)
            kernels = {
                "forward": lambda: OPS["conv2d"].forward(np, x, w, **attrs),
                "input_grad": lambda: OPS["conv_transpose2d"].forward(np, gy, w, output_padding=(0, 0), **attrs),
                "weight_grad": lambda: OPS["conv2d_backward_weight"].forward(np, gy, x, kernel=(3, 3), **attrs)}
            row = {}
            for algo in ("auto", "im2col"):
                conv.CONV_ALGO = algo
                row[algo] = {name: _ms(fn) for name, fn in kernels.items()}
            a, b = np.ones((64, 288), np.float32), np.ones((288, 64 * size * size), np.float32)
            gemm = _ms(lambda: np.matmul(a, b))
            row["gemm_ms"], row["gemm_gflops"] = gemm, 2 * a.size * b.shape[1] / gemm / 1e6
            row["auto_per_kernel_over_gemm"] = {k: v / gemm for k, v in row["auto"].items()}
            out[f"{size}x{size}"] = row
    finally:
        conv.CONV_ALGO = saved
    return out


def group_norm() -> dict:
    from gengraph.engine import Graph, compile, grad, ops

    rng = np.random.default_rng(0)
    out = {}
    for n, c, h, groups in ((64, 32, 28, 8), (64, 64, 14, 8), (64, 64, 7, 8)):
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        r = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w, b = rng.standard_normal((c, 1, 1)).astype(np.float32), rng.standard_normal((c, 1, 1)).astype(np.float32)
        g = Graph(dtype="float32")
        xn, rn = g.input("x", (None, c, h, h)), g.input("r", (None, c, h, h))
        wn, bn = g.param("w", w), g.param("b", b)
        loss = ops.sum(ops.silu(ops.group_norm(xn, groups, 1e-5) * wn + bn) * rn)
        prog = compile(g, grad(loss, [xn, wn, bn]))
        m = c // groups * h * h
        ones = np.ones(m, np.float32)

        def hand():  # the forward, then d/dx, d/dw, d/db of sum(silu(y) * r)
            xr = x.reshape(n * groups, m)
            xc = xr - ((xr @ ones) / m)[:, None]
            rstd = 1.0 / np.sqrt(np.einsum("ij,ij->i", xc, xc) / m + 1e-5)
            xhat = xc
            xhat *= rstd[:, None]
            xh4 = xhat.reshape(n, c, h, h)
            y = xh4 * w
            y += b
            s = 1.0 / (1.0 + np.exp(-y))
            gy = r * (s * (1.0 + y * (1.0 - s)))
            gb, gw = gy.sum(axis=(0, 2, 3)), np.einsum("nchw,nchw->c", gy, xh4)
            gxh = (gy * w).reshape(n * groups, m)
            gx = gxh - ((gxh @ ones) / m)[:, None]
            gx -= xhat * (np.einsum("ij,ij->i", gxh, xhat) / m)[:, None]
            gx *= rstd[:, None]
            return gx.reshape(x.shape), gw, gb

        got, want = prog.run(x=x, r=r), hand()
        diff = max(rel_diff(np.ravel(a), np.ravel(e)) for a, e in zip(got, want))
        if not diff < 1e-4:
            raise AssertionError(f"group_norm: gengraph and the hand-fused NumPy disagree ({diff:.1e})")
        out[f"{n}x{c}x{h}x{h}"] = {"gengraph_ms": _ms(lambda: prog.run(x=x, r=r)), "hand_fused_ms": _ms(hand),
                                    "rel_diff": diff}
    return out


MEASUREMENTS = {"adam": adam, "writeback": writeback, "softplus": softplus, "grad_norm": grad_norm,
                "fast_paths": fast_paths, "heap": heap, "scalar_zero": scalar_zero, "conv_ceiling": conv_ceiling,
                "group_norm": group_norm}


def run(names=None) -> dict:
    unknown = sorted(set(names or ()) - set(MEASUREMENTS))
    if unknown:
        raise SystemExit(f"microbench: unknown measurement {', '.join(unknown)} (choose from "
                         f"{', '.join(MEASUREMENTS)})")
    return {name: fn() for name, fn in MEASUREMENTS.items() if not names or name in names}


def _names(argv) -> list[str]:
    """The measurement names among the arguments (--threads N is the pinning's)."""
    out, skip = [], False
    for a in argv:
        if skip or a.startswith("--"):
            skip = a == "--threads"
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):  # it ran every measurement (minutes) instead
        print(__doc__)
        sys.exit(0)
    print(json.dumps(run(_names(sys.argv[1:])), indent=1))
