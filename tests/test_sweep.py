"""`gengraph sweep`: grid/random expansion, executors (process pool, Dask LocalCluster) giving
identical trials, failed trials recorded, --resume, spec errors before anything runs, plots."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.plugins.sweep import sweep as sw
from gengraph.plugins.spec.errors import SpecError
from gengraph.plugins.run.loading import load

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "specs" / "sweep_ridge_franke.toml"

RIDGE = """spec_version = 1
[run]
seed = 3
dtype = "float64"
[data]
source = "franke"
n = 80
noise = 0.1
[model]
kind = "regression"
method = "ridge"
degree = 3
lam = 1e-3
[output]
plots = false
[sweep]
name = "grid"
[sweep.axes]
"model.degree" = [2, 5]
"model.lam" = [1e-4, 1e-1]
"""

CSV_SPEC = """spec_version = 1
[run]
dtype = "float64"
[data]
source = "csv"
path = "a.csv"
[model]
kind = "regression"
method = "ridge"
degree = 2
[output]
plots = false
[sweep]
[sweep.axes]
"data.path" = ["a.csv", "missing.csv", "b.csv"]
"model.lam" = [1e-4, 1e-2]
"""


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def write(tmp_path, text, name="spec.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def metrics_by_trial(result):
    return {r["trial"]: r["metrics"] for r in result["trials"]}


def write_csvs(folder):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 40)
    y = 1 + 2 * x - 3 * x ** 2 + 0.05 * rng.normal(size=40)
    for name, sign in (("a.csv", 1), ("b.csv", -1)):
        rows = "\n".join(f"{float(a)!r},{float(sign * b)!r}" for a, b in zip(x, y))
        (folder / name).write_text("x,y\n" + rows + "\n")


# --- expansion ---------------------------------------------------------------------------


def test_grid_expands_every_combination_with_safe_deterministic_names(tmp_path):
    plan = sw.plan_sweep(write(tmp_path, RIDGE), out_dir=tmp_path / "out")
    assert [t.name for t in plan.trials] == ["degree=2_lam=0.0001", "degree=2_lam=0.1",
                                             "degree=5_lam=0.0001", "degree=5_lam=0.1"]
    assert plan.trials[2].sets == ["model.degree=5", "model.lam=0.0001"]
    assert plan.trials[2].values == {"model.degree": 5, "model.lam": 1e-4}
    assert plan.name == "grid" and plan.metric == "test_mse" and plan.mode == "min"
    again = sw.plan_sweep(write(tmp_path, RIDGE), out_dir=tmp_path / "out")
    assert [t.spec_sha for t in again.trials] == [t.spec_sha for t in plan.trials]
    assert len({t.spec_sha for t in plan.trials}) == 4


def test_shipped_spec_is_an_8_by_6_log_spaced_grid():
    plan = sw.plan_sweep(SHIPPED)
    degree, lam = plan.axes
    assert degree.values == [1, 2, 3, 4, 5, 6, 7, 8]
    assert lam.values == [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    assert len(plan.trials) == 48 and plan.metric == "test_mse"
    assert plan.out_dir == Path("runs") / "sweep_ridge_franke"


def test_random_sweep_draws_reproducibly_within_ranges(tmp_path):
    text = RIDGE.replace('name = "grid"', 'name = "rnd"\nmethod = "random"\ntrials = 7\nseed = 5').replace(
        '"model.lam" = [1e-4, 1e-1]', '"model.lam" = { low = 1e-6, high = 1e-1, log = true }').replace(
        '"model.degree" = [2, 5]', '"model.degree" = { low = 1, high = 6 }\n"data.noise" = [0.1, 0.2]')
    a = sw.plan_sweep(write(tmp_path, text))
    b = sw.plan_sweep(write(tmp_path, text))
    assert [t.values for t in a.trials] == [t.values for t in b.trials]
    assert len(a.trials) == 7 and a.trials[0].name.startswith("0_degree=")
    for t in a.trials:
        assert 1e-6 <= t.values["model.lam"] <= 1e-1
        assert isinstance(t.values["model.degree"], int) and 1 <= t.values["model.degree"] <= 6
        assert t.values["data.noise"] in (0.1, 0.2)
    other = sw.plan_sweep(write(tmp_path, text.replace("seed = 5", "seed = 6")))
    assert [t.values for t in other.trials] != [t.values for t in a.trials]


def test_axis_option_parsing():
    assert sw.parse_axis_option("model.lam=1e-4,1e-3") == ("model.lam", [1e-4, 1e-3])
    assert sw.parse_axis_option("data.path=a.csv,b.csv") == ("data.path", ["a.csv", "b.csv"])
    assert sw.parse_axis_option('train.optimizer={kind="sgd"},{kind="adam", lr=0.1}') == (
        "train.optimizer", [{"kind": "sgd"}, {"kind": "adam", "lr": 0.1}])
    assert sw.parse_axis_option("model.layers[0].units=8, 16") == ("model.layers[0].units", [8, 16])
    assert sw.parse_axis_option("model.lam={low=1e-4, high=1e-1, log=true}") == (
        "model.lam", {"low": 1e-4, "high": 1e-1, "log": True})
    with pytest.raises(SpecError, match="expected KEY=V1,V2"):
        sw.parse_axis_option("model.lam")


# --- spec errors come before any trial runs -----------------------------------------------


def test_unknown_axis_key_is_a_spec_error_with_a_suggestion_before_anything_runs(tmp_path):
    spec = write(tmp_path, RIDGE.replace('"model.lam" = [', '"model.lamda" = ['))
    with pytest.raises(SpecError) as err:
        sw.plan_sweep(spec, out_dir=tmp_path / "out")
    assert str(err.value) == f'{spec}:20:1: sweep.axes."model.lamda": unknown key; did you mean "lam"?'
    result = invoke("sweep", spec, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert 'did you mean "lam"?' in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    result = invoke("sweep", write(tmp_path, RIDGE, "ok.toml"), "--axis", "model.degre=1,2", "--out", tmp_path / "o2")
    assert result.exit_code == 2
    assert 'error: --axis model.degre: unknown key; did you mean "degree"?' in result.output
    assert not (tmp_path / "o2").exists()


def test_bad_axis_values_and_sweep_keys_are_located(tmp_path):
    spec = write(tmp_path, RIDGE.replace("[1e-4, 1e-1]", "[1e-4, -1.0]"))
    with pytest.raises(SpecError, match=r'spec.toml:20:1: sweep.axes."model.lam": must be >= 0'):
        sw.plan_sweep(spec)
    with pytest.raises(SpecError, match=r'sweep.metrc: unknown key; did you mean "metric"\?'):
        sw.plan_sweep(write(tmp_path, RIDGE.replace('name = "grid"', 'metrc = "test_r2"')))
    with pytest.raises(SpecError, match="needs num >= 2"):
        sw.plan_sweep(write(tmp_path, RIDGE.replace("[1e-4, 1e-1]", "{ low = 1e-4, high = 1e-1 }")))
    with pytest.raises(SpecError, match="nothing to sweep"):
        sw.plan_sweep(ROOT / "specs" / "ridge_franke.toml")


def test_a_spec_without_sweep_resolves_as_before():
    spec = load(ROOT / "specs" / "ridge_franke.toml")
    assert "sweep" not in spec.data and "[sweep" not in spec.to_toml()
    shipped = load(SHIPPED)
    assert shipped.data["sweep"]["axes"]["model.lam"] == {"low": 1e-6, "high": 1e-1, "num": 6, "log": True}


# --- running ----------------------------------------------------------------------------


def test_process_pool_and_dask_local_cluster_give_identical_trials(tmp_path):
    distributed = pytest.importorskip("distributed")
    spec = write(tmp_path, RIDGE)
    pool = sw.run_sweep(sw.plan_sweep(spec, out_dir=tmp_path / "pool"), workers=2)
    inline = sw.run_sweep(sw.plan_sweep(spec, out_dir=tmp_path / "inline"), workers=1)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, host="127.0.0.1",
                                  protocol="tcp", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        dask = sw.run_sweep(sw.plan_sweep(spec, out_dir=tmp_path / "dask"), scheduler=cluster.scheduler_address)
    for result in (pool, inline, dask):
        assert result["n_trials"] == 4 and result["n_ok"] == 4 and result["n_failed"] == 0
    assert metrics_by_trial(pool) == metrics_by_trial(dask) == metrics_by_trial(inline)  # bit for bit
    # each trial is an ordinary run: its summary.json agrees with the record, its spec has no [sweep]
    for rec in pool["trials"]:
        on_disk = json.loads((Path(rec["run_dir"]) / "summary.json").read_text())
        assert on_disk["test_mse"] == rec["metrics"]["test_mse"]
        spec_toml = (Path(rec["run_dir"]) / "spec.toml").read_text()
        assert "[sweep" not in spec_toml and f'name = "grid/{rec["trial"]}"' in spec_toml
    # ranked by test_mse, best first; the sweep's files agree
    mses = [r["metrics"]["test_mse"] for r in pool["trials"]]
    assert mses == sorted(mses) and pool["best"]["metrics"]["test_mse"] == min(mses)
    assert pool["best"]["trial"] == "degree=5_lam=0.0001"  # the flexible model with a light penalty
    assert all(r["metrics"]["test_mse"] > 0.01 for r in pool["trials"] if r["overrides"]["model.lam"] == 0.1)
    recorded = lines(tmp_path / "pool" / "sweep.jsonl")
    assert [r["trial"] for r in recorded] == [t for t in ["degree=2_lam=0.0001", "degree=2_lam=0.1",
                                                          "degree=5_lam=0.0001", "degree=5_lam=0.1"]]
    assert all(r["status"] == "ok" and r["error"] is None for r in recorded)
    assert json.loads((tmp_path / "pool" / "sweep.json").read_text())["best"]["trial"] == "degree=5_lam=0.0001"
    text = (tmp_path / "pool" / "summary.txt").read_text()
    assert "best: degree=5_lam=0.0001" in text
    # the same trial run alone with `gengraph run --set` gives the same numbers
    alone = invoke("run", spec, "--set", "model.degree=5", "--set", "model.lam=0.0001", "--out", tmp_path / "alone",
                   "--json")
    assert json.loads(alone.output)["summary"]["test_mse"] == pool["best"]["metrics"]["test_mse"]


def test_a_crashing_trial_is_recorded_and_the_others_complete_then_resume_reruns_it(tmp_path):
    write_csvs(tmp_path)
    spec = write(tmp_path, CSV_SPEC)
    out = tmp_path / "out"
    result = invoke("sweep", spec, "--out", out, "--workers", "2")
    assert result.exit_code == 1, result.output
    assert "2 of 6 trials failed" in result.output, result.output
    recorded = {r["trial"]: r for r in lines(out / "sweep.jsonl")}
    assert len(recorded) == 6
    failed = {n for n, r in recorded.items() if r["status"] == "failed"}
    assert failed == {"path=missing.csv_lam=0.0001", "path=missing.csv_lam=0.01"}
    for name in failed:
        assert "missing.csv: no such file" in recorded[name]["error"] and recorded[name]["metrics"] == {}
        assert "Traceback" in (out / name / "error.txt").read_text()
    ok = [r for r in recorded.values() if r["status"] == "ok"]
    assert len(ok) == 4 and all(r["metrics"]["test_r2"] > 0.99 for r in ok)
    # y -> -y leaves a ridge fit's errors unchanged
    assert recorded["path=a.csv_lam=0.01"]["metrics"]["test_mse"] == pytest.approx(
        recorded["path=b.csv_lam=0.01"]["metrics"]["test_mse"], rel=1e-9)
    stamp = {n: (out / n / "summary.json").stat().st_mtime_ns for n, r in recorded.items() if r["status"] == "ok"}

    (tmp_path / "missing.csv").write_text((tmp_path / "a.csv").read_text())
    result = invoke("sweep", spec, "--out", out, "--workers", "1", "--resume")
    assert result.exit_code == 0, result.output
    assert result.output.count("(recorded in sweep.jsonl)") == 4 and result.output.count("] ok ") == 2
    assert {n: (out / n / "summary.json").stat().st_mtime_ns for n in stamp} == stamp  # not run again
    recorded = lines(out / "sweep.jsonl")
    assert len(recorded) == 6 and all(r["status"] == "ok" for r in recorded)  # one line per trial


def test_resume_skips_recorded_trials_and_reruns_a_changed_spec(tmp_path):
    spec = write(tmp_path, RIDGE)
    out = tmp_path / "out"
    first = sw.run_sweep(sw.plan_sweep(spec, out_dir=out), workers=1)
    jsonl = out / "sweep.jsonl"
    kept = jsonl.read_text().splitlines()[:2]
    jsonl.write_text("\n".join(kept) + '\n{"trial": "degree=5_lam')  # interrupted mid-write

    seen = []
    again = sw.run_sweep(sw.plan_sweep(spec, out_dir=out), workers=1, resume=True,
                         on_result=lambda rec, done, total: seen.append((rec["trial"], bool(rec.get("skipped")))))
    assert seen == [("degree=2_lam=0.0001", True), ("degree=2_lam=0.1", True),
                    ("degree=5_lam=0.0001", False), ("degree=5_lam=0.1", False)]
    assert metrics_by_trial(again) == metrics_by_trial(first)
    assert len(lines(jsonl)) == 4

    seen.clear()  # the base spec changed: no recorded trial fits it any more
    sw.run_sweep(sw.plan_sweep(spec, ["data.noise=0.2"], out_dir=out), workers=1, resume=True,
                 on_result=lambda rec, done, total: seen.append(bool(rec.get("skipped"))))
    assert seen == [False] * 4
    seen.clear()  # ranking by another metric changes no trial: all are skipped
    res = sw.run_sweep(sw.plan_sweep(spec, ["data.noise=0.2", 'sweep.metric="test_r2"', 'sweep.mode="max"'],
                                     out_dir=out), workers=1, resume=True,
                       on_result=lambda rec, done, total: seen.append(bool(rec.get("skipped"))))
    assert seen == [True] * 4
    r2 = [r["metrics"]["test_r2"] for r in res["trials"]]
    assert r2 == sorted(r2, reverse=True)


def test_plots_heatmap_for_two_axes_and_curve_for_one(tmp_path):
    from gengraph.plugins.sweep import plots as sweep_plots

    spec = write(tmp_path, RIDGE.replace("[2, 5]", "[1, 3, 5]").replace("[1e-4, 1e-1]", "[1e-5, 1e-3, 1e-1]"))
    result = invoke("sweep", spec, "--out", tmp_path / "two", "--workers", "1", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["plots"] == ["heatmap.png"] and summary["n_ok"] == 9
    png = (tmp_path / "two" / "heatmap.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    plan = sw.plan_sweep(spec)
    z = sweep_plots.heatmap(plan.axes, summary["trials"], "test_mse", "min", tmp_path / "h.png")
    by = {(r["overrides"]["model.degree"], r["overrides"]["model.lam"]): r["metrics"]["test_mse"]
          for r in summary["trials"]}
    assert z[1, 2] == by[(3, 0.1)] and z[0, 0] == by[(1, 1e-5)]  # rows: degree, columns: lambda
    assert sweep_plots.scale_of(plan.axes[1].values) == "log" and sweep_plots.scale_of([1, 3, 5]) == "linear"

    result = invoke("sweep", spec, "--set", "sweep.axes={}", "--axis", "model.lam=1e-5,1e-3,1e-1",
                    "--out", tmp_path / "one", "--workers", "1", "--quiet")
    assert result.exit_code == 0 and result.output == ""
    assert (tmp_path / "one" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "one" / "heatmap.png").exists()


def test_missing_dask_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    result = invoke("sweep", write(tmp_path, RIDGE), "--scheduler", "local-dask", "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert "pip install 'gengraph[dask]'" in result.output and "Traceback" not in result.output


def test_shipped_sweep_finds_an_interior_optimum(tmp_path):
    result = sw.run_sweep(sw.plan_sweep(SHIPPED, out_dir=tmp_path / "s"), workers=1)
    assert result["n_ok"] == 48 and result["plots"] == ["heatmap.png"]
    best = result["best"]
    assert best["overrides"]["model.degree"] not in (1, 8)  # too simple / too flexible lose
    assert best["overrides"]["model.lam"] not in (1e-6, 1e-1)  # too little / too much penalty lose
    assert best["metrics"]["test_mse"] < 0.02 < max(r["metrics"]["test_mse"] for r in result["trials"])
    assert all(math.isfinite(r["metrics"]["test_mse"]) for r in result["trials"])
    assert os.path.getsize(tmp_path / "s" / "heatmap.png") > 10_000


def test_the_default_metric_is_one_the_model_reports(tmp_path):
    # a VAE on the labelled digits defaulted to test_accuracy, which it never reports: every
    # trial ran, then the sweep refused the metric
    from gengraph.plugins.sweep.sweep import plan_sweep

    root = Path(__file__).resolve().parents[1]
    plan = plan_sweep(root / "specs" / "vae_digits.toml", axis_options=["model.latent=2,3"], out_dir=tmp_path / "s")
    assert (plan.metric, plan.mode) == ("test_loss", "min")
    plan = plan_sweep(root / "specs" / "mlp_digits.toml", axis_options=["train.optimizer.lr=0.01,0.1"],
                      out_dir=tmp_path / "m")
    assert (plan.metric, plan.mode) == ("test_accuracy", "max")


def test_an_inline_sweeps_plugin_file_is_not_left_registered(tmp_path):
    # with workers=1 the trials run in this process; each loaded the plugin file for good (a kind
    # that replaced a built-in then stayed for every later run of the kernel)
    from gengraph.plugins.model import MODELS
    from gengraph.plugins.run import loading

    plugin = tmp_path / "student.py"
    plugin.write_text("from gengraph.plugins.models.regression import Regression\n\n"
                      "class Student(Regression):\n"
                      "    kind = 'student_regression'\n\n"
                      "    def report(self, model, data, ctx):\n"
                      "        return {**super().report(model, data, ctx), 'from_student': 1.0}\n\n"
                      "PLUGIN = Student()\n")
    spec = write(tmp_path, RIDGE.replace('kind = "regression"', 'kind = "student_regression"'))
    with loading.plugin_files([plugin]):  # as the CLI's --plugin does for the plan
        plan = sw.plan_sweep(spec, out_dir=tmp_path / "s", plugin_files=[plugin])
    assert "student_regression" not in MODELS
    result = sw.run_sweep(plan, workers=1)
    assert [r["status"] for r in result["trials"]] == ["ok"] * 4
    assert all(r["metrics"]["from_student"] == 1.0 for r in result["trials"])
    assert "student_regression" not in MODELS


def test_a_plot_that_cannot_be_written_is_a_note(tmp_path, monkeypatch):
    # a full disk while drawing heatmap.png: the RuntimeWarning was silenced by the CLI and the
    # plot went missing from "sweep directory: ..." unsaid
    import errno

    from gengraph.plugins.sweep import plots as sweep_plots

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sweep_plots, "heatmap", full)
    spec = write(tmp_path, RIDGE)
    result = CliRunner().invoke(main, ["sweep", str(spec), "--out", str(tmp_path / "o"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "note: sweep plot heatmap.png not written: OSError: [Errno 28] No space left on device" in result.output
    assert json.loads((tmp_path / "o" / "sweep.json").read_text())["plots"] == []


def test_a_required_hyper_parameter_the_axes_give_is_not_missing(tmp_path):
    # "--set: train.schedule.gamma: missing required key": the base spec was checked without the axes
    # that give it (by --axis, or by [sweep.axes])
    mlp = ROOT / "specs" / "mlp_digits.toml"
    plan = sw.plan_sweep(mlp, ["train.schedule.kind=exponential"], ["train.schedule.gamma=0.5,0.9"])
    assert [t.values for t in plan.trials] == [{"train.schedule.gamma": 0.5}, {"train.schedule.gamma": 0.9}]
    text = mlp.read_text() + '\n[sweep]\nname = "g"\n[sweep.axes]\n"train.schedule.step_size" = [10, 20]\n'
    plan = sw.plan_sweep(write(tmp_path, text), ["train.schedule.kind=step"])
    assert [t.values["train.schedule.step_size"] for t in plan.trials] == [10, 20]
    with pytest.raises(SpecError, match="train.schedule.gamma: missing required key"):  # no axis gives it
        sw.plan_sweep(mlp, ["train.schedule.kind=exponential"], ["train.optimizer.lr=0.1,0.2"])
