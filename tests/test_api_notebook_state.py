"""A notebook kernel outlives one call: Run objects, plugin files, working directories and the
arrays handed back must not carry one run's state into another."""

import os

import numpy as np
import pytest

import gengraph
from gengraph.engine import Graph, compile_graph, ops, value_and_grad
from gengraph.plugins.model import MODELS
from gengraph.plugins.run.rundir import RunDirError

TINY = {
    "run": {"name": "tiny", "seed": 3},
    "data": {"source": "linear", "n": 60},
    "model": {"kind": "mlp", "layers": [{"units": 4, "activation": "tanh"}]},
    "train": {"epochs": 1, "batch_size": 16, "optimizer": {"kind": "adam", "lr": 0.01}},
    "output": {"plots": False},
}


def test_a_run_object_reads_its_folder_again_after_a_resume(tmp_path):
    out = tmp_path / "r"
    first = gengraph.run(TINY, out=out, progress=None)
    assert first.summary["epochs"] == 1 and first.spec["train"]["epochs"] == 1
    old_params = first.params
    first.opened()  # cache the rebuilt model
    again = gengraph.run(TINY, overrides={"train.epochs": 3}, out=out, resume=True, progress=None)
    assert first.summary == again.summary and first.summary["epochs"] == 3
    assert first.spec["train"]["epochs"] == 3
    for name, value in first.params.items():
        assert not np.array_equal(value, old_params[name])
    # the rebuilt model is the resumed one, as a fresh load rebuilds it
    fresh = gengraph.load(out).opened()
    np.testing.assert_array_equal(first.opened().model.graph.value(first.opened().model.params[0]),
                                  fresh.model.graph.value(fresh.model.params[0]))


def test_a_run_object_follows_an_overwrite_with_another_kind(tmp_path):
    out = tmp_path / "r"
    first = gengraph.run(TINY, out=out, progress=None)
    assert first.kind == "mlp"
    regression = {"run": {"name": "reg", "seed": 1}, "data": {"source": "linear", "n": 60},
                  "model": {"kind": "regression", "method": "ols"}, "output": {"plots": False}}
    gengraph.run(regression, out=out, overwrite=True, progress=None)
    assert first.kind == "regression" and "coefficients" in first.summary


def test_a_run_object_keeps_its_folder_across_a_chdir(tmp_path):
    here = os.getcwd()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        os.chdir(tmp_path / "a")
        a = gengraph.run(TINY, out="runs/x", progress=None)
        os.chdir(tmp_path / "b")
        gengraph.run(TINY, overrides={"run.seed": 9}, out="runs/x", progress=None)
        assert a.dir == tmp_path / "a" / "runs" / "x"
        assert a.spec["run"]["seed"] == 3 and len(a.metrics) == 1
        assert gengraph.load("runs/x").spec["run"]["seed"] == 9
    finally:
        os.chdir(here)


def test_metrics_of_a_run_stopped_while_writing_a_row(tmp_path, capsys):
    run = gengraph.run(TINY, overrides={"train.epochs": 2}, out=tmp_path / "r", progress=None)
    path = run.dir / "metrics.jsonl"
    text = path.read_text()
    path.write_text(text + text.splitlines()[0][:17])  # a torn third row
    assert [r["epoch"] for r in gengraph.load(run.dir).metrics] == [1, 2]
    assert "dropped the partial last line" in capsys.readouterr().out
    path.write_text("{not json\n" + text)
    with pytest.raises(ValueError, match=r"metrics\.jsonl:1: damaged line"):
        gengraph.load(run.dir).metrics


PLUGIN = '''
from gengraph.plugins.models.mlp import MLP

class StudentMLP(MLP):
    kind = "student_mlp"

    def report(self, model, data, ctx):
        out = super().report(model, data, ctx)
        out["from_student_plugin"] = 1.0
        return out

PLUGIN = StudentMLP()
'''


def test_a_plugin_file_given_to_one_call_is_registered_for_that_call_and_its_run(tmp_path):
    # plugins= registered the file's kinds for the whole kernel (a student's kind "mlp" then replaced
    # the built-in one in every later run; such a collision is now refused, see below)
    path = tmp_path / "student.py"
    path.write_text(PLUGIN)
    spec = {**TINY, "model": {**TINY["model"], "kind": "student_mlp"}}
    with_plugin = gengraph.run(spec, out=tmp_path / "p", progress=None, plugins=[path])
    assert with_plugin.summary["from_student_plugin"] == 1.0
    assert "student_mlp" not in MODELS
    with pytest.raises(gengraph.SpecError, match='unknown model kind "student_mlp" is not installed'):
        gengraph.run(spec, out=tmp_path / "q", progress=None)
    # the Run made with the plugin rebuilds its model with it, and leaves nothing registered
    assert type(with_plugin.opened().plugin).__name__ == "StudentMLP"
    assert "student_mlp" not in MODELS
    assert type(gengraph.load(with_plugin.dir, plugins=[path]).opened().plugin).__name__ == "StudentMLP"


def test_a_plugin_file_may_not_take_a_builtin_kind(tmp_path):
    path = tmp_path / "student.py"
    path.write_text(PLUGIN.replace('kind = "student_mlp"', 'kind = "mlp"'))
    builtin = MODELS.get("mlp")
    with pytest.raises(gengraph.SpecError, match='defines kind "mlp", which gengraph.plugins.models.mlp already '
                                                 'provides; give the plugin a kind of its own'):
        gengraph.run(TINY, out=tmp_path / "p", progress=None, plugins=[path])
    assert MODELS.get("mlp") is builtin


def test_folder_messages_name_the_python_arguments(tmp_path):
    gengraph.run(TINY, out=tmp_path / "r", progress=None)
    with pytest.raises(RunDirError) as info:
        gengraph.run(TINY, out=tmp_path / "r", progress=None)
    msg = str(info.value)
    assert "overwrite=True" in msg and "resume=True" in msg and "--" not in msg


def test_an_output_that_is_a_fed_array_is_a_copy():
    x = np.array([1.0, 2.0, 3.0])
    y = np.array([4.0, 5.0, 6.0])
    _, grads = value_and_grad("sum(x * y)", {"x": x, "y": y}, ["x"])
    assert grads["x"].tolist() == [4.0, 5.0, 6.0] and not np.shares_memory(grads["x"], y)
    g = Graph(dtype="float64")
    a = g.input("a", (None, 3))
    prog = compile_graph(g, {"a": a, "aT": ops.transpose(a, (1, 0)), "s": ops.sum(a)})
    fed = np.ones((2, 3))
    out = prog.run(a=fed)
    assert not np.shares_memory(out["a"], fed) and not np.shares_memory(out["aT"], fed)
    out["a"][...] = 7.0
    assert fed.tolist() == [[1.0] * 3] * 2
