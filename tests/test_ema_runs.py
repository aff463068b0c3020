"""Weight averaging in runs ([train.optimizer] ema): the checkpoint keeps the trained parameters
and their moving averages; the logged test figures, the report and a reopened run use the
debiased averages."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gengraph
from gengraph.engine import compile, to_numpy
from gengraph.plugins.run.sampling import open_run

D = 0.6
TINY = {
    "run": {"name": "tiny_ema", "seed": 3},
    "data": {"source": "linear", "n": 60},
    "model": {"kind": "mlp", "layers": [{"units": 4, "activation": "tanh"}]},
    "train": {"epochs": 3, "batch_size": 16, "optimizer": {"kind": "adam", "lr": 0.05, "ema": D}},
    "output": {"plots": False},
}


def test_a_run_reports_with_the_averaged_weights(tmp_path):
    run = gengraph.run(TINY, out=tmp_path / "r", progress=None)
    with np.load(run.dir / "checkpoint.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
    n = float(arrays["state/optimizer/opt/step"])
    assert n == 9  # 3 epochs of 3 batches
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    averages = {k: arrays[f"state/optimizer/adam/{k}/ema"] / (1 - D ** n) for k in params}
    assert all(not np.allclose(params[k], averages[k]) for k in params)  # trained weights are kept
    opened = open_run(run.dir)
    g = opened.model.graph
    for p in g.params():  # the reopened run holds the debiased averages
        np.testing.assert_allclose(g.value(p), averages[p.label], rtol=1e-6)
    m = opened.model
    prog = compile(g, {"loss": m.loss, **m.metrics})
    d = opened.data
    out = prog.run(m.feed(d.x_test, d.y_test))
    summary = json.loads((run.dir / "summary.json").read_text())
    assert summary["test_loss"] == pytest.approx(float(to_numpy(out["loss"])), rel=1e-6)
    assert run.metrics[-1]["test_loss"] == summary["test_loss"]


def test_ema_out_of_range_is_a_spec_error():
    bad = {**TINY, "train": {**TINY["train"], "optimizer": {"kind": "adam", "ema": 1.5}}}
    with pytest.raises(gengraph.SpecError, match=r'train\.optimizer\.ema: must be < 1, found 1\.5'):
        gengraph.validate(bad)
