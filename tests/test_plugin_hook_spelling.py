"""A plugin method whose name is a slip for a hook (`reprot` for `report`) never ran, without a word:
it is warned about, naming the class, the method and the hook, for --plugin files and installed
plugins alike; helpers whose names are words of their own (`sampler`, `build_net`) are not."""

from __future__ import annotations

import warnings
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from click.testing import CliRunner

import gengraph
from gengraph.cli.main import main
from gengraph.plugins.model import MODELS, misspelt_hooks, plugin_contract_issue, resembled_hook

ROOT = Path(__file__).resolve().parents[1]
BASE = (ROOT / "examples" / "plugin_polyfit.py").read_text()
SPEC = (ROOT / "examples" / "plugin_polyfit.toml").read_text()


@pytest.fixture(autouse=True)
def own_registry():
    with MODELS.scoped():
        yield


@pytest.mark.parametrize("name, hook", [
    ("reprot", "report"), ("repot", "report"), ("smaple", "sample"), ("sampel", "sample"), ("buidl", "build"),
    ("bulid", "build"), ("trian_batch", "train_batch"), ("trainbatch", "train_batch"),
    ("epoch_metric", "epoch_metrics"), ("loss_lable", "loss_label"),
    ("fits_without_gradient", "fits_without_gradients"), ("Report", "report")])
def test_slips_resemble_their_hook(name, hook):
    assert resembled_hook(name) == hook


@pytest.mark.parametrize("name", [
    "sampler", "samples", "resample", "sampling", "sample_chain", "simple", "builder", "rebuild", "build_net",
    "built", "fitted", "refit", "fits", "reports", "report_per_class", "export", "retort", "repeat", "predict",
    "train_step", "train_epoch", "loss_value", "metrics", "label", "task", "schema"])
def test_words_of_their_own_do_not(name):
    assert resembled_hook(name) is None


def plugin_file(tmp_path, kind, methods):
    """The example plugin under `kind`, with extra methods (source text, class-level indent)."""
    text = BASE.replace('    kind = "polyfit"', f'    kind = "{kind}"', 1)
    text = text.replace("\n\nplugin = PolyFit()", "\n" + methods + "\n\nplugin = PolyFit()")
    path = tmp_path / f"{kind}.py"
    path.write_text(text)
    (tmp_path / "spec.toml").write_text(SPEC.replace('kind = "polyfit"', f'kind = "{kind}"'))
    return path


def ours(record):
    return [str(w.message) for w in record if "looks like a misspelling" in str(w.message)]


def test_a_plugin_file_with_a_misspelt_hook_is_warned_about(tmp_path):
    path = plugin_file(tmp_path, "typo", "    def smaple(self, model, data, ctx, n, **options):\n        return None\n")
    with pytest.warns(UserWarning) as record:
        result = CliRunner().invoke(main, ["validate", str(tmp_path / "spec.toml"), "--plugin", str(path)])
    assert result.exit_code == 0, result.output  # a warning, not a refusal: the plugin still runs
    assert ours(record) == [
        'plugin PolyFit (kind "typo"): its method smaple() looks like a misspelling of the hook sample(), which it '
        "does not define, so smaple() is never called; rename it sample, or give a helper a name that does not "
        "resemble a hook (e.g. _smaple)"]
    warned = next(w for w in record if "smaple" in str(w.message))
    assert (warned.filename, warned.lineno) == (str(path), path.read_text().splitlines().index(
        "    def smaple(self, model, data, ctx, n, **options):") + 1)  # shown at the method's own line


def test_the_api_warns_too(tmp_path):
    path = plugin_file(tmp_path, "typo_api", "    def trian_batch(self, model, programs, feeds, ctx):\n        return {}\n")
    with pytest.warns(UserWarning, match=r"plugin PolyFit \(kind \"typo_api\"\): its method trian_batch\(\) looks "
                                         r"like a misspelling of the hook train_batch\(\)"):
        gengraph.validate(tmp_path / "spec.toml", plugins=[path])


def test_helpers_and_overridden_hooks_are_not_warned_about(tmp_path):
    methods = ("    def sampler(self):\n        return None\n\n"
               "    def build_net(self):\n        return None\n\n"
               "    def _reprot(self):\n        return None\n\n"
               "    @staticmethod\n    def simple():\n        return None\n\n"
               "    def reports(self):\n        return None\n\n"
               "    def repotr(self):  # report() is defined: a helper, however it is spelt\n        return None\n")
    path = plugin_file(tmp_path, "helpers", methods)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, ["validate", str(tmp_path / "spec.toml"), "--plugin", str(path)])
    assert result.exit_code == 0, result.output
    assert ours(record) == []


def test_a_misspelt_build_is_named_in_the_refusal(tmp_path):
    path = plugin_file(tmp_path, "nobuild", "")
    path.write_text(path.read_text().replace("    def build(self", "    def buidl(self", 1))
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "spec.toml"), "--plugin", str(path)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert ('kind "nobuild": the plugin defines no build(cfg, graph, data, rng) method; its method buidl() looks '
            "like a misspelling of build") in said, result.output


def test_an_installed_plugin_is_warned_about_the_same_way(tmp_path, monkeypatch):
    # entry points go through Registry.get, whose check is plugin_contract_issue as for --plugin files
    path = plugin_file(tmp_path, "typo_installed", "    def loss_lable(self, cfg):\n        return 'mse'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(MODELS, "_entry_points", {**MODELS._entry_points, "typo_installed": EntryPoint(
        "typo_installed", f"{path.stem}:plugin", "gengraph.plugins")})
    monkeypatch.setattr(MODELS, "_conflicts", dict(MODELS._conflicts))
    monkeypatch.setattr(MODELS, "_objects", dict(MODELS._objects))
    with pytest.warns(UserWarning, match=r"plugin PolyFit \(kind \"typo_installed\"\): its method loss_lable\(\) "
                                         r"looks like a misspelling of the hook loss_label\(\)"):
        plugin = MODELS.get("typo_installed")
    assert plugin.kind == "typo_installed"  # still usable


def test_a_subclass_inherits_its_parents_slip():
    from gengraph.plugins.model import ModelPlugin

    class Base(ModelPlugin):
        def reprot(self, model, data, ctx):
            return {}

    class Child(Base):
        kind = "child"

    assert [(c.__name__, n, h) for c, n, h in misspelt_hooks(Child())] == [("Base", "reprot", "report")]


def test_no_built_in_kind_is_warned_about():
    MODELS.load_all()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for kind in MODELS.names():
            assert plugin_contract_issue(MODELS.get(kind)) is None, kind
            assert misspelt_hooks(MODELS.get(kind)) == [], kind
    assert ours(record) == []
