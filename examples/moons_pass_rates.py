"""How often a trained 2-D sampler passes the two-sample test: the README's "10 draws" table.

    python examples/moons_pass_rates.py runs/ebm_moons [runs/score_moons ...]

One run's MMD p-values are one draw. For each run folder this draws 1000 samples ten times
(sampler seeds 100..109, as `gengraph sample RUN --n 1000 --seed S`) and counts the draws that
no bandwidth (h/5, h/2, h, 2h) rejects at 0.05 against the run's held-out rows
(plugins/blocks/sample_quality.two_sample_report, permutation seed S). Beside it, the same
count for 1000 of the run's training rows (the report's baseline draw) and for 1000 fresh
i.i.d. points of the data source at seed S: what a perfect sampler would score.
"""

from __future__ import annotations

import sys

import gengraph
from gengraph.plugins.blocks.sample_quality import two_sample_report
from gengraph.plugins.datasets import make_dataset

SEEDS = range(100, 110)
N = 1000


def passes(report: dict, prefix: str) -> bool:
    return all(v >= 0.05 for k, v in report.items() if k.startswith(prefix) and k.endswith("_pvalue"))


def pass_rates(run_dir) -> dict:
    run = gengraph.load(run_dir)
    data = run.opened().data
    test, train = data.unscale_x(data.x_test), data.unscale_x(data.x_train)
    counts = {"samples": 0, "training rows": 0, "i.i.d.": 0}
    for seed in SEEDS:
        report = two_sample_report(run.sample(N, seed=seed), test, train, seed=seed)
        counts["samples"] += passes(report, "test_mmd2")
        counts["training rows"] += passes(report, "baseline_mmd2")
        fresh = make_dataset({**run.spec["data"], "n": N, "test_fraction": 0.0}, seed)
        counts["i.i.d."] += passes(two_sample_report(fresh.unscale_x(fresh.x_train), test, train, seed=seed,
                                                     baseline=False), "test_mmd2")
    return {k: v / len(SEEDS) for k, v in counts.items()}


if __name__ == "__main__":
    for run_dir in sys.argv[1:] or ["runs/ebm_moons"]:
        rates = pass_rates(run_dir)
        print(run_dir, "  ".join(f"{k} {v:.1f}" for k, v in rates.items()))
