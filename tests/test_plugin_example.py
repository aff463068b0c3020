"""The example third-party plugin loads with --plugin and runs end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.plugins.model import MODELS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin_polyfit.py"

SPEC = """spec_version = 1
[run]
name = "polyfit"
dtype = "float64"
[data]
source = "polynomial"
coefficients = [1.0, 2.0, -3.0]
noise = 0.0
n = 200
[model]
kind = "polyfit"
degree = 2
[train]
optimizer = { kind = "lbfgs" }
"""


def test_example_plugin_runs_end_to_end(tmp_path):
    spec = tmp_path / "poly.toml"
    spec.write_text(SPEC)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(spec), "--plugin", str(EXAMPLE), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    np.testing.assert_allclose(summary["coefficients"], [1.0, 2.0, -3.0], atol=1e-6)
    assert summary["test_mse"] < 1e-10
    assert "polyfit" in (out / "spec.toml").read_text()


def test_a_spec_alone_does_not_load_the_example(tmp_path):
    MODELS._objects.pop("polyfit", None)
    spec = tmp_path / "poly.toml"
    spec.write_text(SPEC)
    result = CliRunner().invoke(main, ["validate", str(spec)])
    assert result.exit_code == 2
    assert 'unknown model kind "polyfit"' in result.output
    assert "--plugin" in result.output


def test_plugin_file_that_fails_to_import_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad_plugin.py"
    bad.write_text("import does_not_exist\n")
    spec = tmp_path / "poly.toml"
    spec.write_text(SPEC)
    result = CliRunner().invoke(main, ["validate", str(spec), "--plugin", str(bad)])
    assert result.exit_code == 2
    assert "failed to import" in result.output and "does_not_exist" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("degree", [1, 3])
def test_example_plugin_gradient_matches_finite_differences(degree):
    from gengraph.engine import Graph, compile, grad
    from gengraph.engine.gradcheck import central_differences, compare
    from gengraph.plugins.datasets import make_dataset
    from gengraph.plugins.run.loading import load_plugin_file

    load_plugin_file(EXAMPLE)
    plugin = MODELS.get("polyfit")
    data = make_dataset({"source": "polynomial", "n": 20}, seed=0)
    g = Graph(dtype="float64")
    model = plugin.build({"degree": degree, "l2": 0.1}, g, data, np.random.default_rng(0))
    theta = model.params[0]
    g.set_value(theta, np.random.default_rng(1).normal(size=degree + 1))
    feeds = {"x": data.x_train, "y": data.y_train}
    loss = compile(g, model.loss)
    analytic = compile(g, grad(model.loss, theta)).run(feeds)
    numeric = central_differences(lambda: loss.run(feeds), g.values[theta.id])
    assert compare("theta", analytic, numeric, 1e-7, 1e-9).ok


def test_an_installed_plugin_that_fails_to_import_is_listed_as_broken_and_breaks_nothing(tmp_path):
    from importlib.metadata import EntryPoint

    MODELS._scan()
    MODELS._entry_points["brokenkind"] = EntryPoint("brokenkind", "gengraph_no_such_module:plugin",
                                                     "gengraph.plugins")
    try:
        result = CliRunner().invoke(main, ["plugins", "--json"])
        assert result.exit_code == 0, result.output
        inv = json.loads(result.output)
        assert "gengraph_no_such_module" in inv["broken"]["brokenkind"]
        assert "mlp" in inv["models"] and "brokenkind" not in inv["models"]
        spec = tmp_path / "s.toml"
        spec.write_text(SPEC.replace('kind = "polyfit"', 'kind = "brokenkind"'))
        out = CliRunner().invoke(main, ["validate", str(spec)])
        assert out.exit_code == 2 and "failed to import" in out.output
        ok = CliRunner().invoke(main, ["validate", str(ROOT / "specs" / "mlp_digits.toml")])
        assert ok.exit_code == 0, ok.output
    finally:
        MODELS._entry_points.pop("brokenkind", None)
        MODELS._broken.pop("brokenkind", None)


def test_shipped_example_spec_runs(tmp_path, monkeypatch):
    """examples/plugin_polyfit.toml is the spec the plugin guide runs."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "examples/plugin_polyfit.toml", "--plugin", "examples/plugin_polyfit.py",
                                       "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    np.testing.assert_allclose(summary["coefficients"], [1.0, 2.0, -3.0], atol=1e-6)


def test_plugin_guide_lists_every_public_op():
    import inspect

    from gengraph.engine import ops

    guide = (ROOT / "docs" / "writing-plugins.md").read_text()
    public = [n for n in dir(ops) if not n.startswith("_") and inspect.isfunction(getattr(ops, n))]
    internal = {"apply", "as_node", "broadcast_shapes", "defop", "adam_step", "correct", "ema",
                "softmax_minus_one_hot"}
    missing = [n for n in public if n not in internal and f"`{n}`" not in guide]
    assert missing == []
    assert 'dtype="int64"' in guide and "from gengraph.engine import ops" in guide
