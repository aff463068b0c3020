"""Program.run refuses a feed name that is no input of its graph (`prog.run(x=X, lables=Y)` ran
without a word), naming it, the program's inputs and the input it probably meant. An input of the
graph that the program does not use is passed over, as before: one feed dict serves a model's
programs (training, evaluation, gradient checks), and d(2x)/dx needs no x."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import gengraph
from gengraph.engine import Graph, compile, grad, ops

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def prog():
    g = Graph(dtype="float64")
    x = g.input("x", (None, 3))
    labels = g.input("labels", (None, 3))
    g.input("weights", (None,))  # an input of the graph that this program does not use
    return compile(g, {"s": x * labels + 1.0})


X, L = np.arange(6.0).reshape(2, 3), np.full((2, 3), 2.0)


def test_an_unknown_feed_is_named_with_the_inputs(prog):
    with pytest.raises(KeyError) as info:
        prog.run(x=X, labels=L, noise=L)
    msg = str(info.value)
    assert "unknown input 'noise'" in msg and "this program needs ['x', 'labels']" in msg, msg
    assert "missing" not in msg and "did you mean" not in msg, msg
    with pytest.raises(KeyError, match=r"unknown inputs 'a', 'b'; this program needs \['x', 'labels'\]"):
        prog.run({"x": X, "labels": L, "a": 1, "b": 2})  # the dict form too


def test_a_misspelt_feed_is_suggested(prog):
    with pytest.raises(KeyError) as info:
        prog.run(x=X, lables=L)
    assert str(info.value) == ("\"missing input 'labels'; unknown input 'lables' (did you mean 'labels'?); "
                               "this program needs ['x', 'labels']\"")
    with pytest.raises(KeyError, match=r"unknown input 'Labels' \(did you mean 'labels'\?\)"):
        prog.run({"x": X, "labels": L, "Labels": L})  # case counts for nothing in the suggestion
    with pytest.raises(KeyError, match=r"unknown input 'wieghts' \(did you mean 'weights'\? an input of the graph "
                                       r"that this program does not use\); this program needs \['x', 'labels'\]"):
        prog.run(x=X, labels=L, wieghts=L[:, 0])


def test_a_missing_feed_says_so_as_before(prog):
    with pytest.raises(KeyError, match=r"missing input 'labels'; this program needs \['x', 'labels'\]"):
        prog.run(x=X)


def test_exact_feeds_run_and_give_the_same_values(prog):
    want = X * L + 1.0
    for out in (prog.run(x=X, labels=L), prog.run({"x": X, "labels": L}), prog.run({"labels": L}, x=X),
                prog.run_positional(X, L), prog.numpy(x=X, labels=L)):
        np.testing.assert_array_equal(out["s"] if isinstance(out, dict) else out, want)


def test_an_input_of_the_graph_that_the_program_does_not_use_is_passed_over(prog):
    np.testing.assert_array_equal(prog.run(x=X, labels=L, weights=L[:, 0])["s"], X * L + 1.0)
    with pytest.raises(KeyError, match=r"^\"missing input 'labels'; this program needs \['x', 'labels'\]\"$"):
        prog.run(x=X, weights=L[:, 0])
    g = Graph(dtype="float64")  # a gradient that does not depend on the input it is taken for
    x = g.input("x", (3,))
    np.testing.assert_array_equal(compile(g, grad(ops.sum(2.0 * x), x)).run(x=np.ones(3)), 2.0)


def test_a_program_without_inputs():
    g = Graph(dtype="float64")
    p = compile(g, {"c": g.constant(np.ones(2)) * 2.0})
    np.testing.assert_array_equal(p.run()["c"], [2.0, 2.0])
    with pytest.raises(KeyError, match=r"unknown input 'x'; this program needs \[\]"):
        p.run(x=X)


def test_gradients_of_expressions_with_an_input_they_do_not_use():
    # one feed dict for the value and the gradient programs, neither of which takes y
    value, grads = gengraph.value_and_grad("sum(x**2)", {"x": [1.0, 2.0], "y": [3.0]}, ["x"])
    assert float(value) == 5.0 and grads["x"].tolist() == [2.0, 4.0]
    report = gengraph.check_grads("sum(x**2)", {"x": [1.0, 2.0], "y": [3.0]})
    assert report.ok and [r.name for r in report.rows] == ["x", "y"]


def test_a_shipped_spec_trains_evaluates_and_gradchecks(tmp_path):
    # the trainer's step and evaluation, the report, sampling, and the gradient check, whose one feed dict
    # (x, x_neg and the frozen noise) goes to programs that each take part of it
    run = gengraph.run("ebm_moons", overrides={"train.epochs": 1, "output.plots": False, "output.samples": 16},
                       out=tmp_path / "ebm", progress=None)
    assert run.summary["steps"] >= 1 and np.isfinite(run.summary["test_energy_distance"]), run.summary
    assert run.gradcheck(batch=4, max_entries=3).ok
    assert run.sample(4).shape == (4, 2)


PLUGIN_EXTRA_FEED = '''
    def build(self, cfg, graph, data, rng):
        model = super().build(cfg, graph, data, rng)
        w = graph.input("w", (None,))  # used by one program only, fed with every batch
        model.programs["weighted"] = ({"wsum": ops.sum(w) * ops.sum(model.extras["theta"])}, {})
        model.feeds = lambda x, y: {"x": x, "y": y, "w": np.ones(len(x))}
        return model
'''


@pytest.mark.parametrize("train", ["epochs = 2", 'optimizer = { kind = "lbfgs" }'])
def test_a_model_feeding_an_input_some_programs_do_not_take_still_trains(tmp_path, train):
    text = (ROOT / "examples" / "plugin_polyfit.py").read_text()
    text = text.replace("\nplugin = PolyFit()", "\nclass WFit(PolyFit):\n    kind = \"wfit\"\n" + PLUGIN_EXTRA_FEED
                        + "\nplugin = WFit()")
    (tmp_path / "wfit.py").write_text(text)
    spec = (ROOT / "examples" / "plugin_polyfit.toml").read_text().replace('kind = "polyfit"', 'kind = "wfit"')
    spec = spec.replace('optimizer = { kind = "lbfgs" }', train)
    (tmp_path / "s.toml").write_text(spec)
    run = gengraph.run(tmp_path / "s.toml", out=tmp_path / "run", progress=None, plugins=[tmp_path / "wfit.py"])
    assert run.summary["steps"] >= 2 and np.isfinite(run.summary["test_loss"]), run.summary
    if "lbfgs" in train:  # the example's exact fit
        np.testing.assert_allclose(run.summary["coefficients"], [1.0, 2.0, -3.0], atol=1e-6)
