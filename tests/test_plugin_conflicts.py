"""Two plugins claiming one kind: which one a spec meant cannot be told, so it is refused by name.

A local file (--plugin) may not take a kind that is installed or registered already; two
installed packages providing the same kind, or an entry point whose plugin says another kind,
make that kind unusable with a message naming both sources. A plugin whose loss is not a scalar
is refused before anything runs."""

from importlib.metadata import EntryPoint

import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.plugins import registry
from gengraph.plugins.registry import Registry, UnknownKind

MLP = "gengraph.plugins.models.mlp:plugin"


def _registry(monkeypatch, *points):
    monkeypatch.setattr(registry.metadata, "entry_points",
                        lambda group: [EntryPoint(name, value, group) for name, value in points])
    return Registry("model", "test.group")


def test_two_packages_providing_one_kind(monkeypatch):
    # the first one found won, silently (discovery order decided which model a spec ran)
    reg = _registry(monkeypatch, ("mlp", MLP), ("mlp", "plugin_polyfit:plugin"), ("vae", "gengraph.plugins.models.vae:plugin"))
    with pytest.raises(UnknownKind, match=r'model "mlp" cannot be used: two installed packages provide it, '
                                          r'gengraph.plugins.models.mlp:plugin and plugin_polyfit:plugin; uninstall one'):
        reg.get("mlp")
    assert reg.names() == ["vae"] and "mlp" in reg.broken()
    assert reg.get("vae").kind == "vae"


def test_an_entry_point_named_for_another_kind(monkeypatch):
    reg = _registry(monkeypatch, ("foo", MLP))
    with pytest.raises(UnknownKind, match=r'model "foo" cannot be used: its entry point '
                                          r'\(gengraph.plugins.models.mlp:plugin\) is named "foo" but gives a plugin of kind "mlp"'):
        reg.get("foo")
    assert "foo" not in reg.names()


def test_the_same_entry_point_twice_is_no_conflict(monkeypatch):
    reg = _registry(monkeypatch, ("mlp", MLP), ("mlp", MLP))
    assert reg.get("mlp").kind == "mlp"


COLLIDING = '''
from gengraph.plugins.models.mlp import MLP

class Mine(MLP):
    pass

PLUGIN = Mine()
'''

NON_SCALAR = '''
from gengraph.engine import ops
from gengraph.plugins.models.mlp import MLP

class PerExample(MLP):
    kind = "per_example"

    def build(self, cfg, graph, data, rng):
        model = super().build(cfg, graph, data, rng)
        model.loss = ops.softmax_cross_entropy(model.extras["output"], model.inputs["y"])  # no ops.mean
        return model

PLUGIN = PerExample()
'''


def test_a_local_plugin_may_not_take_a_builtin_kind(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(COLLIDING)
    for command in (["plugins", "--plugin", path], ["validate", "mlp_digits", "--plugin", path]):
        result = CliRunner().invoke(main, [str(a) for a in command])
        assert result.exit_code == 2, result.output
        assert (f'error: {path}: --plugin: defines kind "mlp", which gengraph.plugins.models.mlp already provides; '
                "give the plugin a kind of its own") in result.output


def test_the_same_plugin_file_twice_is_no_conflict(tmp_path):
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    example = root / "examples" / "plugin_polyfit.py"
    result = CliRunner().invoke(main, ["validate", str(root / "examples" / "plugin_polyfit.toml"),
                                       "--plugin", str(example), "--plugin", str(example)])
    assert result.exit_code == 0, result.output


def test_a_plugin_whose_loss_is_per_example(tmp_path):
    # grad raised "needs a scalar output" from deep in the trainer, a traceback, after the run folder
    # had been written
    path = tmp_path / "per_example.py"
    path.write_text(NON_SCALAR)
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    spec = tmp_path / "spec.toml"
    spec.write_text((root / "specs" / "mlp_digits.toml").read_text().replace('kind = "mlp"', 'kind = "per_example"'))
    out = tmp_path / "run"
    for command in (["run", spec, "--plugin", path, "--out", out, "-q"], ["gradcheck", spec, "--plugin", path]):
        result = CliRunner().invoke(main, [str(a) for a in command])
        assert result.exit_code == 2, result.output
        assert (f'error: the "per_example" plugin ({path}): built a loss of shape (?); '
                "a loss is one number per batch: reduce it, e.g. ops.mean(...)") in result.output.replace("\n", " ")
    assert not out.exists()


BAD_DECLARATIONS = '''
from gengraph.plugins.models.mlp import MLP

class NoSchema(MLP):
    kind = "noschema"
    schema = None

class TasksString(MLP):
    kind = "taskstr"
    tasks = "classification"

NOSCHEMA, TASKSTR = NoSchema(), TasksString()
'''


def test_an_installed_plugin_is_held_to_the_declarations_a_plugin_file_is(tmp_path, monkeypatch):
    # an entry point's plugin skipped the checks a --plugin file gets: schema = None crashed validation
    # with an AttributeError traceback, and tasks = "classification" read as "takes c or l or a ..."
    from gengraph.plugins.model import MODELS

    (tmp_path / "bad_installed.py").write_text(BAD_DECLARATIONS)
    monkeypatch.syspath_prepend(str(tmp_path))
    points = {"noschema": "bad_installed:NOSCHEMA", "taskstr": "bad_installed:TASKSTR"}
    monkeypatch.setattr(MODELS, "_entry_points", {**MODELS._entry_points,
                                                  **{k: EntryPoint(k, v, "gengraph.plugins") for k, v in points.items()}})
    monkeypatch.setattr(MODELS, "_conflicts", dict(MODELS._conflicts))
    spec = tmp_path / "s.toml"
    for kind, why in (("noschema", "schema must be a gengraph.plugins.spec.schema.Table"),
                      ("taskstr", "tasks must be a tuple of some of")):
        spec.write_text(f'spec_version = 1\n[data]\nsource = "moons"\n[model]\nkind = "{kind}"\n')
        res = CliRunner().invoke(main, ["validate", str(spec)])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert f'model kind "{kind}" cannot be used: its plugin ({points[kind]}): {why}' in res.output, res.output


def test_smaller_parts_install_through_the_same_entry_point_group(tmp_path, monkeypatch):
    # only the model kinds read entry points: an installed activation or data source was never found
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: [
        EntryPoint("mlp", MLP, group), EntryPoint("activation.softsign", "mod:softsign", group),
        EntryPoint("data_source.sines", "mod:SINES", group)])
    models = Registry("model kind", "test.group")
    activations = Registry("activation", "test.group", part=True)
    sources = Registry("data source", "test.group", part=True)
    assert models.names() == ["mlp"] and activations.names() == ["softsign"] and sources.names() == ["sines"]
    assert registry.part_prefix("ELBO term") == "elbo_term." and registry.part_prefix("data source") == "data_source."


def test_an_installed_activation_is_a_valid_choice_and_runs(tmp_path, monkeypatch):
    from gengraph.plugins.blocks.layer_base import ACTIVATIONS

    (tmp_path / "softsign_pkg.py").write_text("from gengraph.engine import ops\n\n"
                                              "def softsign(x):\n    return x / (1.0 + ops.abs(x))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ACTIVATIONS.names()  # scanned first, then the installed one added as a scan would find it
    monkeypatch.setattr(ACTIVATIONS, "_entry_points", {**ACTIVATIONS._entry_points,
                        "softsign": EntryPoint("activation.softsign", "softsign_pkg:softsign", "gengraph.plugins")})
    monkeypatch.setattr(ACTIVATIONS, "_objects", dict(ACTIVATIONS._objects))
    res = CliRunner().invoke(main, ["run", "mlp_digits", "--out", str(tmp_path / "run"), "-q", "--set", "train.epochs=1",
                                    "--set", "model.layers[0].activation=softsign"])
    assert res.exit_code == 0, res.output
    assert ACTIVATIONS.get("softsign").__module__ == "softsign_pkg"


def test_an_installed_model_kind_may_hold_a_dot(monkeypatch):
    # "acme.mlp" worked until parts took dotted entry-point names; then it was dropped unsaid
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: [
        EntryPoint("acme.mlp", MLP, group), EntryPoint("activation.softsign", "mod:softsign", group)])
    assert Registry("model kind", "test.group").names() == ["acme.mlp"]
    assert Registry("activation", "test.group", part=True).names() == ["softsign"]
