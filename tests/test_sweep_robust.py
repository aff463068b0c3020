"""Sweeps that lose workers: a dead pool worker costs only its own trial (the pool is replaced),
and a trial's files appear whole in its folder; a duplicate run of a finished trial (Dask's
recompute after a lost worker) never truncates or overwrites it; Dask futures are released."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gengraph.plugins.sweep import sweep as sw

CRASHY = '''
import os

from gengraph.plugins.models.regression import Regression
from gengraph.plugins.spec.schema import Field, Table


class Crashy(Regression):
    kind = "crashy"

    @property
    def schema(self):
        return Table({**super().schema.fields, "crash": Field(bool, False, "kill the worker process")})

    def build(self, cfg, graph, data, rng):
        if cfg["crash"]:
            os._exit(7)  # a worker that dies: no exception, no cleanup
        cfg = {k: v for k, v in cfg.items() if k != "crash"}
        return super().build(cfg, graph, data, rng)


plugin = Crashy()
'''

SPEC = """spec_version = 1
[run]
dtype = "float64"
[data]
source = "franke"
n = 60
[model]
kind = "crashy"
method = "ridge"
degree = 2
[output]
plots = false
[sweep]
metric = "test_mse"
[sweep.axes]
"model.crash" = [false, true]
"model.lam" = [1e-4, 1e-3, 1e-2]
"""


@pytest.fixture
def crashy(tmp_path):
    from gengraph.plugins.run.loading import load_plugin_file

    plugin = tmp_path / "crashy.py"
    plugin.write_text(CRASHY)
    load_plugin_file(plugin)
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    return spec, plugin


def test_a_dead_pool_worker_fails_only_its_trial(crashy, tmp_path):
    spec, plugin = crashy
    plan = sw.plan_sweep(spec, out_dir=tmp_path / "t", plugin_files=[plugin])
    result = sw.run_sweep(plan, workers=2, plots=False)
    records = sw.read_records(tmp_path / "t" / "sweep.jsonl")
    crashed = {n: r for n, r in records.items() if r["overrides"]["model.crash"]}
    fine = {n: r for n, r in records.items() if not r["overrides"]["model.crash"]}
    assert len(crashed) == 3 and len(fine) == 3
    assert all(r["status"] == "ok" and r["metrics"]["test_mse"] > 0 for r in fine.values())
    assert all(r["status"] == "failed" and "worker process died while running this trial" in r["error"]
               for r in crashed.values())
    assert result["n_ok"] == 3 and result["n_failed"] == 3
    assert not [p for p in (tmp_path / "t").iterdir() if ".tmp-" in p.name]  # no half-written trial folders


def _payload(tmp_path, attempt="A"):
    spec = Path(__file__).resolve().parents[1] / "specs" / "ols_franke.toml"
    plan = sw.plan_sweep(spec, ["output.plots=false"], ["model.degree=2"], out_dir=tmp_path / "s")
    return {**sw._payload(plan, plan.trials[0]), "attempt": attempt}


def test_a_duplicate_never_overwrites_a_finished_trial(tmp_path):
    payload = _payload(tmp_path)
    first = sw.run_trial(payload)
    assert first["status"] == "ok"
    run_dir = Path(first["run_dir"])
    summary = run_dir / "summary.json"
    before = {p.name: (p.stat().st_ino, p.read_bytes()) for p in run_dir.iterdir()}
    again = sw.run_trial(payload)  # what Dask does when it recomputes a finished task
    assert again["status"] == "ok" and again["metrics"] == first["metrics"]
    assert {p.name: (p.stat().st_ino, p.read_bytes()) for p in run_dir.iterdir()} == before
    assert json.loads(summary.read_text())["test_mse"] == first["metrics"]["test_mse"]
    assert [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]  # no temporary folder left

    newer = sw.run_trial({**payload, "attempt": "B"})  # a new sweep into the same folder replaces it
    assert newer["status"] == "ok" and sw._read_mark(run_dir)["attempt"] == "B"
    assert sw._read_mark(run_dir)["status"] == "ok"


def test_trial_files_appear_whole(tmp_path, monkeypatch):
    import gengraph.plugins.run.runner as runner

    payload = _payload(tmp_path)
    final = Path(payload["run_dir"])
    seen = []
    real = runner.execute

    def spy(spec, run_dir, **kw):
        seen.append((Path(run_dir), final.exists()))
        raise RuntimeError("killed half way")

    monkeypatch.setattr(sw, "execute", spy)
    rec = sw.run_trial(payload)
    assert rec["status"] == "failed" and "killed half way" in rec["error"]
    (tmp, existed), = seen
    assert tmp != final and tmp.parent == final.parent and not existed  # ran elsewhere, moved in at the end
    assert (final / "error.txt").exists() and not tmp.exists()
    monkeypatch.setattr(sw, "execute", real)


def test_dask_futures_are_released_once_recorded(tmp_path):
    distributed = pytest.importorskip("distributed")
    spec = Path(__file__).resolve().parents[1] / "specs" / "sweep_ridge_franke.toml"
    plan = sw.plan_sweep(spec, ["output.plots=false"], out_dir=tmp_path / "d")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        held = []
        real = sw._drain

        def spy(completed, futures, emit, release=None):
            out = real(completed, futures, emit, release)
            held.append(len(futures))
            return out

        sw._drain = spy
        try:
            result = sw.run_sweep(plan, scheduler=client, plots=False)
        finally:
            sw._drain = real
        assert result["n_ok"] == result["n_trials"] > 1
        assert held == [0]
        import time

        def held_keys():
            return [k for k in list(client.refcount) if str(k).startswith("gengraph-trial-")
                    and client.refcount.get(k, 0) > 0]

        deadline = time.monotonic() + 10  # Future.release() decrements on the client's event loop
        while held_keys() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held_keys() == []  # nothing holds a finished trial's result: a lost worker cannot trigger a rerun


def test_a_killed_dask_worker_loses_no_trial(tmp_path):
    """A worker killed (SIGKILL) mid-sweep: every trial still ends ok with its whole metrics.jsonl."""
    distributed = pytest.importorskip("distributed")
    import signal
    import threading
    import time

    spec = tmp_path / "sw.toml"
    spec.write_text('spec_version = 1\n[data]\nsource = "digits"\n[model]\nkind = "mlp"\nlayers = [{ units = 32 }]\n'
                    '[train]\nepochs = 25\nbatch_size = 32\n[output]\nplots = false\n[sweep]\nmethod = "grid"\n'
                    '[sweep.axes]\n"train.optimizer.lr" = [0.001, 0.002, 0.003, 0.004, 0.005, 0.006]\n')
    out = tmp_path / "out"
    plan = sw.plan_sweep(spec, [], out_dir=out)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        res = {}
        th = threading.Thread(target=lambda: res.update(r=sw.run_sweep(plan, scheduler=client, plots=False)))
        th.start()
        deadline = time.time() + 60
        while len(list(out.glob("*/summary.json"))) < 1 and time.time() < deadline:
            time.sleep(0.05)
        os.kill(list(client.run(os.getpid).values())[0], signal.SIGKILL)
        th.join(timeout=120)
    assert res["r"]["n_ok"] == res["r"]["n_trials"] == 6
    for trial in (d for d in out.iterdir() if d.is_dir()):
        rows = (trial / "metrics.jsonl").read_text().splitlines()
        assert len(rows) == 25 and json.loads((trial / "summary.json").read_text())["epochs"] == 25, trial.name
