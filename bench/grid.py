"""The MLP over a grid of batch sizes and widths: gengraph / hand-written NumPy in one run.

    python bench/grid.py --threads 1 [--quick] [--batches 1,16,128,1024] [--widths 32,128,512] [--json out.json]

Each cell is the digits MLP 64-W-W-10 (ReLU, softmax cross-entropy, Adam) built from
specs/mlp_digits.toml with `model.layers` and `train.batch_size` overridden, compiled by the
trainer, against `numpy_mlp.NumpyMLP` from the same initial parameters on the same batches;
the two are checked equal (float32, parameters after one step) and timed alternately.
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
import time  # noqa: E402

import numpy as np  # noqa: E402

from ._common import interleaved, rel_diff, summarize  # noqa: E402

BATCHES = (1, 16, 128, 1024)
WIDTHS = (32, 128, 512)


def build(width, batch, dtype="float32"):
    from gengraph.plugins.run.context import RunContext
    from gengraph.plugins.run.loading import load
    from gengraph.plugins.run.runner import build as build_model
    from gengraph.plugins.run.trainer import Trainer

    from .gg_models import SPECS

    layer = f'{{ units = {width}, activation = "relu" }}'
    spec = load(SPECS / "mlp_digits.toml", [f'run.dtype="{dtype}"', f"model.layers=[{layer}, {layer}]",
                                            f"train.batch_size={batch}"]).data
    data, plugin, graph, model = build_model(spec)
    tr = Trainer(plugin, model, data, spec["train"], RunContext(spec, None, spec["run"]["seed"]))
    progs = tr.compile_programs()
    return data, graph, model, progs["train_step"]


def cell(width, batch, quick=False):
    from .numpy_mlp import NumpyMLP
    from .workloads import _batches

    data, graph, model, prog = build(width, batch)
    init = [graph.value(p).copy() for p in model.params]
    x = data.x_train.astype(np.float32)
    batches = _batches(x, 64, batch, seed=1, y=data.y_train)
    npm = NumpyMLP(init)
    # check: one step of each from the same start. The parameters after a first Adam step are
    # about lr * sign(gradient), blind to a gradient's size (a 3x gradient passed): the step's loss,
    # accuracy and gradient norm are compared too
    xb, yb = batches[0]
    saved = {k: np.array(v, copy=True) for k, v in graph.values.items()}  # parameters and optimizer state
    outs = [float(v) for v in prog.run({"x": xb, "y": yb}).values()]
    hand = npm.step(xb, yb)
    diff = max([rel_diff(a, graph.value(p)) for a, p in zip(npm.params, model.params)]
               + [rel_diff(np.float64(a), np.float64(b)) for a, b in zip(outs, hand)] + [float(len(outs) != len(hand))])
    if not diff < 1e-4:
        raise AssertionError(f"grid cell width {width} batch {batch}: gengraph and NumPy disagree ({diff:.1e})")
    for k, v in saved.items():  # back to the start for both: parameters and Adam's state, in place
        graph.values[k][...] = v
    npm = NumpyMLP(init)
    names = ["x", "y"]

    def gg(i):
        out = prog.run(dict(zip(names, batches[i % len(batches)])))
        return [float(v) for v in out.values()]

    def hand(i):
        return npm.step(*batches[i % len(batches)])

    t0 = time.perf_counter()  # steps per block: about 20 ms of work, at least 2
    for i in range(3):
        hand(i)
    per = (time.perf_counter() - t0) / 3
    block = max(2, min(50, int(0.02 / max(per, 1e-6))))
    reps = 6 if quick else 12  # even: each of the two orders equally often
    cpu = {}
    times = interleaved({"gengraph": gg, "numpy": hand}, reps, block, cpu=cpu)
    st = {k: summarize(v) for k, v in times.items()}
    ct = {k: summarize(v) for k, v in cpu.items()}
    return {"width": width, "batch": batch, "block": block, "rounds": reps, "check_rel_diff": diff,
            "gengraph_us": st["gengraph"]["median_us"], "numpy_us": st["numpy"]["median_us"],
            "ratio": st["gengraph"]["median_us"] / st["numpy"]["median_us"],
            "gengraph_cpu_us": ct["gengraph"]["median_us"], "numpy_cpu_us": ct["numpy"]["median_us"],
            "ratio_cpu": ct["gengraph"]["median_us"] / ct["numpy"]["median_us"]}


def run(quick=False, batches=BATCHES, widths=WIDTHS) -> dict:
    cells = []
    for w in widths:
        for b in batches:
            c = cell(w, b, quick)
            print(f"[grid] width {w:4d} batch {b:5d}: gengraph {c['gengraph_us']:9.1f} us, numpy "
                  f"{c['numpy_us']:9.1f} us, ratio {c['ratio']:.2f} (CPU time: {c['ratio_cpu']:.2f})", flush=True)
            cells.append(c)
    return {"desc": "MLP 64-W-W-10 ReLU, softmax CE, Adam (specs/mlp_digits.toml with model.layers and "
                    "train.batch_size overridden), gengraph / hand-NumPy", "cells": cells,
            "worst_ratio": max(c["ratio"] for c in cells), "worst_ratio_cpu": max(c["ratio_cpu"] for c in cells)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    res = run(a.quick, [int(b) for b in a.batches.split(",")], [int(w) for w in a.widths.split(",")])
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
