"""conv2d's three kernels, im2col vs Winograd F(2x2, 3x3) and F(4x4, 3x3), and PyTorch's conv2d forward + backward.

    python bench/winograd_bench.py [--threads 1] [--rounds 5] [--out FILE.json]   # ~40 s of CPU

3x3 convolutions, padding 1, float32, batch 64: 32 -> 64 channels at 28x28 and 14x14, and
the digits U-Net's sizes (16 -> 16 at 8x8, 32 -> 32 at 4x4, 48 -> 32 at 8x8), and 32 -> 32 at
12x12 to 24x24 (where F(4x4, 3x3) starts to pay). For each size: the forward (conv2d), the
input gradient (conv_transpose2d) and the weight gradient (conv2d_backward_weight) kernels of
engine/ops/conv.py with CONV_ALGO forced to "im2col", to "winograd" with F(2x2, 3x3) only and
with F(4x4, 3x3) whenever it applies ("winograd43": needs Numba), the same three under the
default rule ("auto", as programs run them), and
torch.nn.functional.conv2d forward + backward (dx and dw). All results are checked equal
(max |diff| / max |im2col| < 1e-4) before timing. Timed alternately in blocks (process CPU
time, robust on a shared machine), medians over rounds; ratios in the same run.
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
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from gengraph.engine.heap import tune_heap  # noqa: E402
from gengraph.engine.ops import conv, winograd43  # noqa: E402

B = 64
SIZES = [(32, 64, 28), (32, 64, 14), (16, 16, 8), (32, 32, 4), (48, 32, 8),  # (C_in, C_out, H = W)
         (32, 32, 12), (32, 32, 16), (32, 32, 20), (32, 32, 24), (64, 64, 28)]
# name -> (CONV_ALGO, winograd43.MIN_PIXELS, .MIN_TILE_USE): F(2x2, 3x3) only,
# F(4x4, 3x3) whenever it applies, the default rule
DEFAULT = (winograd43.MIN_PIXELS, winograd43.MIN_TILE_USE)
ALGOS = {"im2col": ("im2col", *DEFAULT), "winograd": ("winograd", 1 << 62, 0.0),
         "winograd43": ("winograd", 0, 0.0), "auto": ("auto", *DEFAULT)}
ONE = (1, 1)


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _one(k, x, w, gy):
    """Kernel k of conv2d(x, w, padding=1) with output gradient gy: 0 y, 1 dx, 2 dw."""
    if k == 0:
        return conv._conv2d_forward(np, x, w, ONE, ONE, ONE, 1)
    if k == 1:
        return conv._conv_transpose2d_forward(np, gy, w, ONE, ONE, (0, 0), ONE, 1)
    return conv._conv2d_backward_weight_forward(np, gy, x, (3, 3), ONE, ONE, ONE, 1)


def use(algo):
    conv.CONV_ALGO, winograd43.MIN_PIXELS, winograd43.MIN_TILE_USE = ALGOS[algo]


def kernels(algo, x, w, gy):
    """(y, dx, dw) under ALGOS[algo]."""
    use(algo)
    return tuple(_one(k, x, w, gy) for k in range(3))


def alternate(fns: dict, rounds: int, block: int) -> dict:
    """Median CPU milliseconds per call of each fn, timed in alternating blocks after a warm-up block."""
    for f in fns.values():
        for _ in range(block):
            f()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.process_time()
            for _ in range(block):
                f()
            times[k].append(1e3 * (time.process_time() - t0) / block)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch

    tune_heap()  # the malloc thresholds a run sets when it compiles, for both frameworks in this process
    torch.set_num_threads(args.threads)
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    results = []
    for c, o, hw in SIZES:
        x = rng.standard_normal((B, c, hw, hw), dtype=np.float32)
        w = (rng.standard_normal((o, c, 3, 3)) * 0.05).astype(np.float32)
        gy = rng.standard_normal((B, o, hw, hw), dtype=np.float32)
        tx, tw = (torch.from_numpy(a.copy()).requires_grad_(True) for a in (x, w))
        tg = torch.from_numpy(gy)

        def torch_step():
            tx.grad = tw.grad = None
            ty = F.conv2d(tx, tw, padding=1)
            ty.backward(tg)
            return ty

        ref = kernels("im2col", x, w, gy)
        ty = torch_step()
        check = {algo: max(rel(a, b) for a, b in zip(kernels(algo, x, w, gy), ref)) for algo in ALGOS}
        check["torch"] = max(rel(a.detach().numpy(), b) for a, b in zip((ty, tx.grad, tw.grad), ref))
        assert max(check.values()) < 1e-4, check
        fns = {"torch": torch_step}
        names = ("fwd", "dx", "dw")
        for algo in ALGOS:
            for k, name in enumerate(names):
                def run(algo=algo, k=k):
                    use(algo)
                    return _one(k, x, w, gy)
                fns[f"{algo}_{name}"] = run
        block = max(1, int(20 // max(1e-3, 1e3 * B * c * o * hw * hw * 18 / 100e9)))  # ~20 ms of work per block
        t = alternate(fns, args.rounds, block)
        row = {"size": f"{B}x{c}->{o} {hw}x{hw}", "check": check, "times_ms": t, "block": block}
        for algo in ALGOS:
            row[f"{algo}_total_ms"] = sum(t[f"{algo}_{n}"] for n in names)
            row[f"{algo}_vs_torch"] = row[f"{algo}_total_ms"] / t["torch"]
        row["winograd_speedup"] = row["im2col_total_ms"] / row["winograd_total_ms"]
        row["winograd43_vs_winograd"] = row["winograd43_total_ms"] / row["winograd_total_ms"]
        results.append(row)
        print(row["size"], {k: round(v, 2) for k, v in t.items()}, f"check {check}", flush=True)
    use("auto")
    print_table(results)
    if args.out:
        Path(args.out).write_text(json.dumps({"threads": args.threads, "rounds": args.rounds,
                                              "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
                                              "results": results}, indent=1))



def print_table(results):
    print("\n| size | im2col fwd / dx / dw (ms) | F(2x2) fwd / dx / dw (ms) | F(4x4) fwd / dx / dw (ms) | auto total | "
          "PyTorch fwd+bwd | im2col / PyTorch | F(2x2) / PyTorch | F(4x4) / PyTorch | auto / PyTorch | F(4x4) / F(2x2) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        t = r["times_ms"]
        three = {a: " / ".join(f"{t[f'{a}_{n}']:.2f}" for n in ("fwd", "dx", "dw")) for a in ALGOS}
        print(f"| {r['size']} | {three['im2col']} | {three['winograd']} | {three['winograd43']} | {r['auto_total_ms']:.2f} | "
              f"{t['torch']:.2f} | {r['im2col_vs_torch']:.2f} | {r['winograd_vs_torch']:.2f} | "
              f"{r['winograd43_vs_torch']:.2f} | {r['auto_vs_torch']:.2f} | {r['winograd43_vs_winograd']:.2f} |")


if __name__ == "__main__":
    main()
