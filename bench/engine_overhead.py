"""Per-node dispatch cost of a compiled Program, and the MLP step against hand-NumPy and PyTorch.

    python bench/engine_overhead.py --threads 1 [--quick] [--no-torch]

Dispatch: a chain of 1000 elementwise ops on shape-(4,) float32 arrays, so that the
kernels themselves cost almost nothing. Two chains:

* ``ufunc``  -- alternating tanh and multiply-by-constant: ops whose kernel *is* the NumPy
  ufunc (``OpDef.ufunc``), so the generated line calls np.tanh directly;
* ``lambda`` -- alternating relu and softplus: ops whose kernel is a
  ``functools.partial(forward, xp)`` around a lambda that calls NumPy.

Each is timed alternately against "bare NumPy": the program's own generated code with
each kernel call replaced by the NumPy call it stands for (same arguments, same ``out=``
buffer reuse, same ``del`` lines), so only the engine's share differs: the kernel wrappers
(functools.partial, the op's Python forward) and Program.run's feed handling.
Reported per node: the raw program time (program total / 1000) and the overhead (program
minus bare), for ``Program.run(dict)`` and the positional fast path.
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
import re  # noqa: E402

import numpy as np  # noqa: E402

from ._common import interleaved, load_torch, machine, summarize  # noqa: E402

N_NODES = 1000


def chain_program(kind: str, n: int = N_NODES):
    from gengraph.engine import Graph, compile, ops

    g = Graph("float32")
    x = g.input("x", (4,))
    y = x
    for i in range(n):
        if kind == "ufunc":
            y = ops.tanh(y) if i % 2 == 0 else y * 0.999
        else:
            y = ops.relu(y) if i % 2 == 0 else ops.softplus(y)
    prog = compile(g, y)
    assert prog.n_kernels == n, (prog.n_kernels, prog.pass_stats)
    return prog


# the same NumPy calls the kernels make (softplus: gengraph's overflow-safe form, five ufunc calls,
# not NumPy's logaddexp, which would time another computation; where Numba is installed, the
# float32 kernel's one loop, numba_math.softplus32, called straight)
_BARE = {"tanh": "tanh({0}{out})", "mul": "multiply({0}, {1}{out})", "relu": "maximum({0}, 0{out})",
         "softplus": "add(maximum({0}, 0), log1p(exp(negative(absolute({0})))){out})"}
_BARE_LOOPS = dict(_BARE, softplus="softplus_loop({0})")


def _softplus_loop(loops):
    def softplus_loop(x):
        out = np.empty(x.shape, x.dtype)
        loops.softplus32(x, out)
        return out
    return softplus_loop


def bare_function(prog):
    """The program's own generated code with every kernel call replaced by the bare NumPy call
    it stands for (same arguments, same ``out=`` buffer reuse, same ``del`` lines): what the
    computation costs with no engine around it."""
    from gengraph.engine.ops import cpu_loops

    ops_ = [n for n in prog.nodes if not n.is_leaf]
    env = {"tanh": np.tanh, "multiply": np.multiply, "maximum": np.maximum, "add": np.add, "log1p": np.log1p,
           "exp": np.exp, "negative": np.negative, "absolute": np.absolute}
    loops = cpu_loops.load_loops() if prog.graph.dtype == np.float32 else None
    bare_calls = _BARE_LOOPS if loops else _BARE
    if loops:
        env["softplus_loop"] = _softplus_loop(loops)
    env.update({k: v for k, v in prog._fn.__globals__.items() if k[:1] == "c" and k[1:].isdigit()})
    pat = re.compile(r"^(\s*)(\w+) = k(\d+)\((.*?)(, out=\w+)?\)$")
    lines = []
    for line in prog.source.splitlines()[1:]:
        m = pat.match(line)
        if m:
            indent, target, k, args, out = m.groups()
            # the arrays only: a kernel called as the op's forward also gets _xp and its attrs
            arrays = [a.strip() for a in args.split(",") if a.strip() != "_xp" and "=" not in a]
            call = bare_calls[ops_[int(k)].op].format(*arrays, out=out or "")
            line = f"{indent}{target} = {call}"
        elif "k" in line.split("=")[-1] and "(" in line:
            raise ValueError(f"unexpected line in generated code: {line!r}")
        lines.append(line)
    src = prog.source.splitlines()[0].replace("def run", "def bare") + "\n" + "\n".join(lines) + "\n"
    exec(compile(src, "<bare numpy>", "exec"), env)
    return env["bare"]


def dispatch(quick=False) -> dict:
    reps, block = (30, 20) if quick else (150, 40)
    out = {"n_nodes": N_NODES, "shape": [4], "dtype": "float32", "rounds": reps, "calls_per_round": block}
    x = np.linspace(-1, 1, 4).astype(np.float32)
    for kind in ("ufunc", "lambda"):
        prog = chain_program(kind)
        bare = bare_function(prog)
        ref = bare(x.copy())
        got = prog.run({"x": x})
        assert np.allclose(got, ref), (got, ref)
        fns = {"program.run": lambda i: prog.run({"x": x}),
               "program.run_positional": lambda i: prog.run_positional(x),
               "bare_numpy": lambda i: bare(x)}
        t = {k: summarize(v) for k, v in interleaved(fns, reps, block, warmup=3).items()}
        bare_us = t["bare_numpy"]["median_us"]
        out[kind] = {
            "ops": "tanh, mul(const)" if kind == "ufunc" else "relu, softplus",
            "total_us": {k: v["median_us"] for k, v in t.items()},
            "us_per_node_raw": {k: v["median_us"] / N_NODES for k, v in t.items() if k != "bare_numpy"},
            "us_per_node_bare_numpy": bare_us / N_NODES,
            "us_per_node_overhead": {k: (v["median_us"] - bare_us) / N_NODES for k, v in t.items()
                                     if k != "bare_numpy"},
        }
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    from .workloads import run_workload

    torch = load_torch(a.threads, not a.no_torch)
    res = {"machine": machine(), "dispatch": dispatch(a.quick)}
    res["mlp"] = run_workload("mlp", torch, a.quick)["mlp"]
    for kind in ("ufunc", "lambda"):
        d = res["dispatch"][kind]
        print(f"[{a.threads} thr] dispatch {kind:6s} ({d['ops']}): raw "
              f"{d['us_per_node_raw']['program.run']:.3f} us/node, bare NumPy {d['us_per_node_bare_numpy']:.3f}, "
              f"overhead {d['us_per_node_overhead']['program.run']:.3f} us/node "
              f"(positional {d['us_per_node_overhead']['program.run_positional']:.3f})")
    m = res["mlp"]
    print(f"[{a.threads} thr] MLP step: " + ", ".join(f"{k} {v['median_us']:.0f} us" for k, v in
                                                        m["time_per_step"].items())
          + " | " + ", ".join(f"{k} = {v:.2f}" for k, v in m["ratios"].items()))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
