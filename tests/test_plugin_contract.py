"""A plugin author's ordinary slips get one message naming the plugin's file and what was expected,
not a traceback from deep inside the runner: declarations when the file registers, what build,
report and epoch_metrics give back when the runner calls them, a schema default that breaks its
own field, a data task the plugin does not take."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.plugins.model import MODELS
from gengraph.plugins.model import plugin_contract_issue

ROOT = Path(__file__).resolve().parents[1]
BASE = (ROOT / "examples" / "plugin_polyfit.py").read_text()
SPEC = (ROOT / "examples" / "plugin_polyfit.toml").read_text().replace('optimizer = { kind = "lbfgs" }',
                                                                        'epochs = 1')

# (name, the change to the example plugin, what the author is told)
AT_REGISTRATION = [
    ("kind_space", ('    kind = "polyfit"', '    kind = "poly fit"'), 'kind "poly fit": kind must be a name without '
                                                                  "spaces or control characters"),
    ("no_build", ("    def build(self", "    def build_it(self"), "the plugin defines no build(cfg, graph, data, rng)"),
    ("schema_dict", ("    schema = Table({", "    schema = dict({"), "schema must be a gengraph.plugins.spec.schema."
                                                                       "Table of Fields (the [model] keys), found dict"),
    ("schema_kind", ('"degree": Field(int, 2,', '"kind": Field(str, "x", "oops"), "degree": Field(int, 2,'),
     'its schema declares "kind"'),
    ("tasks_str", ('tasks = ("regression",)', 'tasks = ("regression")'), "tasks must be a tuple of some of"),
    ("names_str", ('tasks = ("regression",)', 'tasks = ("regression",)\n    summary_metric_names = ("coefficients")'),
     "summary_metric_names must be a tuple of metric names (strings), found 'coefficients'"),
    ("field_type", ('Field(float, 0.0, "ridge', 'Field("float", 0.0, "ridge'),
     "Field type must be a Python type or a tuple of types"),
]
AT_RUN = [
    ("ret_tuple", ("        return Model(", "        return 1, Model("), "build returned tuple, not a gengraph.plugins"),
    ("sig", ("def build(self, cfg, graph, data, rng):", "def build(self, cfg, graph, data):"),
     "build must take (cfg, graph, data, rng)"),
    ("unchanged", ('{"x": x, "y": y}, metrics=', '{"x": x, "y": y}, metrics='), None),  # the example runs
    ("loss_float", ("return Model(graph, [theta], loss,", "return Model(graph, [theta], 0.5,"),
     "Model.loss is float 0.5, not a graph node"),
    ("wrapped_build", ("    def build(self, cfg, graph, data, rng):",
                       "    @functools.wraps(lambda self, cfg, graph, data: None)\n"
                       "    def build(self, cfg, graph, data, rng):"), None),  # its own signature is what is called
    ("metric_float", ('metrics={"mse": mse}', 'metrics={"mse": 1.0}'), "metric 'mse' is float 1.0, not a graph node"),
    ("metric_vector", ('metrics={"mse": mse}', 'metrics={"mse": pred - y}'),
     "metric 'mse' has shape (?); a metric is one number per batch"),
    ("param_input", ("return Model(graph, [theta]", "return Model(graph, [theta, x]"),
     "Model.params lists an input node (x)"),
    ("report_list", ('        return {"coefficients": model.graph.value(model.extras["theta"]).tolist()}',
                     '        return [1.0]'), "report returned list, not a dict of name -> value"),
    ("epoch_float", ("    def report(self", "    def epoch_metrics(self, model, data, ctx, epoch):\n"
                                          "        return 3.0\n\n    def report(self"),
     "epoch_metrics returned float 3.0, not a dict"),
]


@pytest.fixture(autouse=True)
def own_registry():
    with MODELS.scoped():  # the in-process CLI registers each file's kind; every test its own
        yield


def write(tmp_path, name, change):
    """The example changed, under a kind of its own (another test may have registered polyfit)."""
    path = tmp_path / f"{name}.py"
    assert change[0] in BASE
    text = BASE.replace(change[0], change[1], 1)
    text = "import functools\n" + text if "functools" in text else text
    if '    kind = "polyfit"' in text:
        text = text.replace('    kind = "polyfit"', f'    kind = "{name}"')
    path.write_text(text)
    (tmp_path / "spec.toml").write_text(SPEC.replace('kind = "polyfit"', f'kind = "{name}"'))
    return path


@pytest.mark.parametrize("name, change, message", AT_REGISTRATION, ids=[c[0] for c in AT_REGISTRATION])
def test_declarations_are_checked_when_the_file_registers(tmp_path, name, change, message):
    path = write(tmp_path, name, change)
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "spec.toml"), "--plugin", str(path)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {path}") and message in result.output, result.output


@pytest.mark.parametrize("name, change, message", AT_RUN, ids=[c[0] for c in AT_RUN])
def test_what_the_hooks_give_back_is_checked_when_they_are_called(tmp_path, name, change, message):
    path = write(tmp_path, name, change)
    result = CliRunner().invoke(main, ["run", str(tmp_path / "spec.toml"), "--plugin", str(path),
                                       "--out", str(tmp_path / "run"), "-q"])
    if message is None:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 2, result.output
    said = result.output.replace("\n", " ")
    assert said.startswith(f'error: the "{name}" plugin ({path}): ') and message in said, result.output
    assert "Traceback" not in result.output


def test_an_import_error_names_its_line(tmp_path):
    path = write(tmp_path, "nameerr", ('Field(float, 0.0, "ridge', 'Field(flaot, 0.0, "ridge'))
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "spec.toml"), "--plugin", str(path)])
    line = BASE.splitlines().index(next(t for t in BASE.splitlines() if '"l2": Field(' in t)) + 1
    assert result.output.startswith(f"error: {path}:{line}: --plugin: plugin file failed to import: NameError")


def test_a_default_that_breaks_its_own_field_is_the_schema_s_mistake(tmp_path):
    path = write(tmp_path, "default", ('Field(float, 0.0, "ridge penalty on the coefficients", min=0.0)',
                                       'Field(float, -1.0, "ridge penalty on the coefficients", min=0.0)'))
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "spec.toml"), "--plugin", str(path)])
    assert result.exit_code == 2
    assert ("model.l2: not set, and its default -1.0 is refused by its own field (must be >= 0.0, found -1.0): a mistake in "
            "the schema that declares it; set the key") in result.output.replace("\n", " ")
    fixed = CliRunner().invoke(main, ["validate", str(tmp_path / "spec.toml"), "--plugin", str(path),
                                      "--set", "model.l2=0.5"])
    assert fixed.exit_code == 0, fixed.output


def test_a_data_task_the_plugin_does_not_take_is_refused(tmp_path):
    path = write(tmp_path, "tasks", ('tasks = ("regression",)', 'tasks = ("classification",)'))
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "spec.toml"), "--plugin", str(path)])
    assert result.exit_code == 2
    assert 'data.source: model kind "tasks" takes classification data; "polynomial" gives a regression task' \
        in result.output


def test_a_shape_error_in_a_plugin_names_its_line(tmp_path):
    path = write(tmp_path, "shape", ("np.zeros(cfg[\"degree\"] + 1)", "np.zeros(cfg[\"degree\"] + 2)"))
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "spec.toml"), "--plugin", str(path)])
    line = BASE.splitlines().index(next(t for t in BASE.splitlines() if "pred = powers @ theta" in t)) + 1
    assert f"(raised at {path}:{line}, in the plugin)" in result.output.replace("\n", " ")


def test_every_built_in_kind_keeps_the_contract():
    MODELS.load_all()
    for kind in MODELS.names():
        assert plugin_contract_issue(MODELS.get(kind)) is None, kind


@pytest.mark.parametrize("name, change", [
    ("dotted", ('    kind = "polyfit"', '    kind = "poly.fit"')),
    ("tasks_set", ('tasks = ("regression",)', 'tasks = {"regression"}')),
    ("names_set", ('tasks = ("regression",)', 'tasks = ("regression",)\n    summary_metric_names = {"coefficients"}')),
    ("union_type", ('Field(float, 0.0, "ridge', 'Field(int | float, 0.0, "ridge')),
])
def test_declarations_that_ran_before_still_register(tmp_path, name, change):
    path = write(tmp_path, name, change)
    kind = "poly.fit" if name == "dotted" else name
    (tmp_path / "spec.toml").write_text(SPEC.replace('kind = "polyfit"', f'kind = "{kind}"'))
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "spec.toml"), "--plugin", str(path)])
    assert result.exit_code == 0, result.output


def test_a_regression_may_fit_the_side_value_of_unlabelled_data():
    # the swiss roll is unsupervised, its y the roll's parameter t: an mlp regressed it before tasks were checked
    result = CliRunner().invoke(main, ["validate", "mlp_digits", "--set", 'data={source="swiss_roll"}',
                                       "--set", 'model.loss="mse"'])
    assert result.exit_code == 0, result.output
    refused = CliRunner().invoke(main, ["validate", "ridge_franke", "--set", 'data={source="swiss_roll"}'])
    assert refused.exit_code == 2 and "gives an unsupervised task" in refused.output, refused.output


@pytest.mark.parametrize("returned, message", [
    ("np.zeros((3, data.n_features))", "sample returned an array of shape (3, 1) for n = 5"),
    ("[0.0] * n", "sample returned an array of shape (5,) for n = 5"),
    ("{'x': 1}", "sample returned dict for n = 5"),
    ("np.zeros((n, data.n_features))", None),  # as asked: the samples
])
def test_what_sample_gives_back_is_checked(tmp_path, returned, message):
    # 3 rows for 5 asked were written as the user's 3 samples; a list became "shape (5,)"
    change = ("    def report(self", f"    def sample(self, model, data, ctx, n, *, label=None):\n"
                                     f"        import numpy as np\n        return {returned}\n\n    def report(self")
    path = write(tmp_path, "sampler", change)
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["run", str(tmp_path / "spec.toml"), "--plugin", str(path), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["sample", str(out), "--plugin", str(path), "--n", "5",
                                    "--out", str(tmp_path / "s.npy")])
    if message is None:
        assert res.exit_code == 0 and np.load(tmp_path / "s.npy").shape == (5, 1), res.output
    else:
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output
        assert f'the "sampler" plugin ({path}' in res.output and not (tmp_path / "s.npy").exists()


def test_an_activation_a_plugin_file_registers_is_a_valid_choice(tmp_path):
    # the layer schemas copied the activation names at import: "softsign" was refused by validation
    from gengraph.plugins.blocks.layer_base import ACTIVATIONS

    path = tmp_path / "softsign.py"
    path.write_text(BASE.replace('    kind = "polyfit"', '    kind = "softsign_host"') + (
        "\nfrom gengraph.engine import ops\nfrom gengraph.plugins.blocks.layer_base import ACTIVATIONS\n"
        "ACTIVATIONS.register('softsign', lambda x: x / (1.0 + ops.abs(x)))\n"))
    spec = tmp_path / "mlp.toml"
    spec.write_text((ROOT / "specs" / "mlp_digits.toml").read_text())
    with ACTIVATIONS.scoped():
        res = CliRunner().invoke(main, ["validate", str(spec), "--plugin", str(path),
                                        "--set", "model.layers[0].activation=softsign"])
        assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["validate", str(spec), "--set", "model.layers[0].activation=softsign"])
    assert res.exit_code == 2 and '"softsign" is not one of' in res.output  # without the file: not a choice


def test_what_a_plugin_file_registers_is_undone_after_an_api_call(tmp_path):
    # only the model kind was undone: a data source the file registered stayed for every later call
    import gengraph
    from gengraph.plugins.datasets.sources import DATASETS

    path = tmp_path / "withsource.py"
    path.write_text(BASE.replace('    kind = "polyfit"', '    kind = "withsource"') + (
        "\nfrom gengraph.plugins.datasets.sources import DATASETS\n"
        "DATASETS.register('also_poly', DATASETS.get('polynomial'))\n"))
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace('kind = "polyfit"', 'kind = "withsource"').replace(
        'source = "polynomial"', 'source = "also_poly"'))
    gengraph.validate(spec, plugins=[path])
    assert "also_poly" not in DATASETS.names() and "withsource" not in MODELS.names()


def test_a_plugin_file_may_only_register_a_data_source(tmp_path):
    # such a file was refused: "the file defines no ModelPlugin instance with a kind"
    from gengraph.plugins.registry import scoped_all

    path = tmp_path / "source_only.py"
    path.write_text("from gengraph.plugins.datasets.sources import DATASETS\n"
                    "DATASETS.register('poly_again', DATASETS.get('polynomial'))\n")
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace('source = "polynomial"', 'source = "poly_again"').replace(
        'kind = "polyfit"', 'kind = "regression"').replace("degree = 2", "").replace("l2 = 0.0", ""))
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with scoped_all():
        res = CliRunner().invoke(main, ["validate", str(spec), "--plugin", str(path)])
        assert res.exit_code == 0, res.output
        res = CliRunner().invoke(main, ["validate", str(spec), "--plugin", str(empty)])
        assert res.exit_code == 2 and "defines no ModelPlugin instance with a kind and registers nothing" in res.output


def test_two_local_files_of_one_kind_name_the_first_file(tmp_path):
    # the message named an internal module (gengraph_local_plugin_first), not the file
    first, second = tmp_path / "first.py", tmp_path / "second.py"
    first.write_text(BASE.replace('    kind = "polyfit"', '    kind = "twice"'))
    second.write_text(BASE.replace('    kind = "polyfit"', '    kind = "twice"'))
    (tmp_path / "spec.toml").write_text(SPEC.replace('kind = "polyfit"', 'kind = "twice"'))
    res = CliRunner().invoke(main, ["validate", str(tmp_path / "spec.toml"), "--plugin", str(first),
                                    "--plugin", str(second)])
    assert res.exit_code == 2 and f'defines kind "twice", which {first} already provides' in res.output, res.output


def test_a_nan_of_the_reports_own_is_not_blamed_on_training(tmp_path):
    # "check the data's scale and the learning rate" for a value the plugin's report computed
    change = ('        return {"coefficients": model.graph.value(model.extras["theta"]).tolist()}',
              '        return {"ratio": float("nan")}')
    path = write(tmp_path, "nanreport", change)
    res = CliRunner().invoke(main, ["run", str(tmp_path / "spec.toml"), "--plugin", str(path),
                                    "--out", str(tmp_path / "run"), "-q"])
    assert res.exit_code == 1 and "final metrics are not finite: ratio" in res.output, res.output
    assert f"the nanreport plugin's report ({path}" in res.output and "learning rate" not in res.output


def test_an_exception_in_a_plugins_own_code_names_the_hook_and_line(tmp_path):
    # a bug in a plugin's report printed ~50 lines of traceback through click and gengraph, naming
    # neither the plugin nor the hook; the training it followed is kept, and --resume writes the report
    change = ('        return {"coefficients": model.graph.value(model.extras["theta"]).tolist()}',
              '        return {"ratio": 1 / 0}')
    path = write(tmp_path, "crashy", change)
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "1 / 0" in t)
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["run", str(tmp_path / "spec.toml"), "--plugin", str(path), "--out", str(out), "-q"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert (f'the "crashy" plugin ({path}): its report raised ZeroDivisionError: division by zero (at {path}:{line}); '
            f"the training is in {out / 'checkpoint.npz'}") in res.output, res.output
    assert f"gengraph run --resume {out} writes the report" in res.output
    path.write_text(path.read_text().replace("1 / 0", "1 / 2"))  # mended: the report, without retraining
    res = CliRunner().invoke(main, ["run", "--resume", str(out), "--plugin", str(path), "-q"])
    assert res.exit_code == 0, res.output
    debug = CliRunner().invoke(main, ["run", str(tmp_path / "spec.toml"), "--plugin", str(write(
        tmp_path, "crashy2", ("        return Model(", "        raise RuntimeError('oops')\n        return Model("))),
        "--out", str(tmp_path / "run2"), "--debug"])
    assert debug.exit_code == 1 and "its build raised RuntimeError: oops" in debug.output, debug.output


def test_a_spec_typo_a_plugin_looks_up_is_the_specs_error_not_a_crash(tmp_path):
    # UnknownKind (a KeyError) from ACTIVATIONS.get in a plugin's build became "its build raised"
    change = ("    def build(self, cfg, graph, data, rng):",
              "    def build(self, cfg, graph, data, rng):\n"
              "        from gengraph.plugins.blocks.layer_base import ACTIVATIONS\n"
              "        ACTIVATIONS.get('tanhh')")
    path = write(tmp_path, "lookup", change)
    res = CliRunner().invoke(main, ["validate", str(tmp_path / "spec.toml"), "--plugin", str(path)])
    assert res.exit_code == 2 and 'unknown activation "tanhh"; did you mean "tanh"?' in res.output, res.output
    assert "its build raised" not in res.output
