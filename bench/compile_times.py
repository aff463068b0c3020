"""Compile time per spec in specs/: spec file -> compiled programs, as `gengraph run` does it.

    python bench/compile_times.py [--reps 5]

For each specs/*.toml: load + validate the spec (``plugins.loading.load``), build data and
model (``plugins.run.runner.build``), then ``Trainer(...).compile_programs()`` (gradients,
optimizer update nodes, passes, code generation for every program the model declares).
Reported: the median over `reps` fresh repetitions of the whole path and of the
compile_programs part alone, the first (cold) repetition separately, and the kernel count
of each program. A spec whose plugin does not import is listed with the reason.
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
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tomllib  # noqa: E402

SPECS = Path(__file__).resolve().parent.parent / "specs"


def time_spec(path: Path, reps: int = 5, overrides=()) -> dict:
    from gengraph.plugins.run.loading import load
    from gengraph.plugins.run.runner import RunContext, build
    from gengraph.plugins.run.trainer import Trainer

    totals, compiles, builds = [], [], []
    progs = None
    for _ in range(reps):
        t0 = time.perf_counter()
        spec = load(path, overrides).data
        data, plugin, graph, model = build(spec, base_dir=path.parent)
        t1 = time.perf_counter()
        tr = Trainer(plugin, model, data, spec["train"], RunContext(spec, None, spec["run"]["seed"]))
        progs = tr.compile_programs(with_optimizer=getattr(plugin, "trains_by_gradient", True))
        t2 = time.perf_counter()
        totals.append(t2 - t0)
        builds.append(t1 - t0)
        compiles.append(t2 - t1)
    return {"kind": spec["model"]["kind"], "total_s": statistics.median(totals), "build_s": statistics.median(builds),
            "compile_programs_s": statistics.median(compiles), "first_total_s": totals[0], "reps": reps,
            "programs": {k: p.n_kernels for k, p in progs.items()},
            "graph_nodes": len(graph.nodes)}


def compile_times(reps: int = 5, specs_dir: Path = SPECS) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(specs_dir.glob("*.toml")):
            try:
                overrides = _stand_in_data(path, Path(tmp))
                out[path.name] = time_spec(path, reps, overrides)
                if overrides:
                    out[path.name]["data"] = "synthetic MNIST-format files: data.dir lacks the real ones"
            except Exception as exc:  # noqa: BLE001 - a broken plugin or spec is reported, not fatal
                out[path.name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def _stand_in_data(path: Path, tmp: Path) -> list[str]:
    """For an mnist / fashion_mnist spec whose data.dir does not hold the files: --set overrides
    pointing it at synthetic MNIST-format files of the real shape (compile time depends on the
    shapes alone); [] otherwise."""
    from gengraph.plugins.datasets import DataError
    from gengraph.plugins.datasets.mnist import find_files, synthetic, write_folder
    from gengraph.plugins.datasets.prepare import find_data_path

    data = tomllib.loads(path.read_text()).get("data", {})
    if data.get("source") not in ("mnist", "fashion_mnist"):
        return []
    try:  # where a run of the spec would look: beside it, then the working directory
        find_files(find_data_path(data.get("dir", f"data/{data['source']}"), path.parent), data["source"], "")
        return []
    except DataError:
        folder = tmp / "mnist"
        if not folder.exists():
            write_folder(folder, synthetic(n_train=512, n_test=128))
        return [f"data.dir={folder}"]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    res = compile_times(a.reps)
    for name, r in res.items():
        if "error" in r:
            print(f"{name:28s} ERROR {r['error']}")
        else:
            print(f"{name:28s} {r['kind']:10s}{' (synthetic data)' if 'data' in r else ''} total {r['total_s'] * 1e3:7.1f} ms (compile_programs "
                  f"{r['compile_programs_s'] * 1e3:6.1f} ms, first run {r['first_total_s'] * 1e3:6.1f} ms) "
                  f"programs {r['programs']}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
