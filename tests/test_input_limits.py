"""Hostile or extreme input: non-finite numbers, out-of-range integers, huge expressions,
huge keys and deep nesting give one clear error instead of a hang, a crash or a traceback."""

from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.plugins.spec.errors import SpecError
from gengraph.plugins.spec.schema import Field, Table, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLS = os.path.join(ROOT, "specs", "ols_franke.toml")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# --- item 11: non-finite floats, integers past 64 bits ---------------------------------------
@pytest.mark.parametrize("key,value", [
    ("data.test_fraction", "nan"), ("train.optimizer.lr", "inf"), ("data.noise", "-inf"),
])
def test_non_finite_floats_are_rejected(key, value):
    r = invoke("validate", OLS, "--set", f"{key}={value}")
    assert r.exit_code == 2
    assert f"{key}: must be a finite number, found {value}" in r.output


def test_integers_past_64_bits_are_rejected():
    r = invoke("validate", OLS, "--set", f"run.seed={2**64}")
    assert r.exit_code == 2
    assert "run.seed: integer out of range (TOML integers are 64-bit" in r.output
    assert "integer out of range" in str(_issues(Field(list, [], item=int), [1, -(2**70)]))


def test_a_field_may_allow_non_finite_values():
    schema = Table({"x": Field(float, 0.0, finite=False), "y": Field(float, 0.0)})
    assert validate(schema, {"x": float("inf")})["x"] == float("inf")
    assert "y: must be a finite number, found nan" in str(_issues(Field(float, 0.0), float("nan"), "y"))


def _issues(field, value, key="v"):
    with pytest.raises(SpecError) as exc:
        validate(Table({key: field}), {key: value})
    return exc.value


# --- item 22: run files follow the umask, not mkstemp's 0600 ----------------------------------
def test_atomic_write_follows_the_umask(tmp_path):
    from gengraph.plugins.blocks.files import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.txt", "x")
        os.umask(0o077)
        atomic_write(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600


def test_ci_does_not_pass_when_pytest_collects_nothing():
    script = open(os.path.join(ROOT, ".ci", "run")).read()
    assert "set -euo pipefail" in script and "python -m pytest -q" in script
    assert "-eq 5" not in script and "set +e" not in script  # exit 5 is not turned into success


# --- item 8: constant folding and expression size/depth are bounded --------------------------
def _expr_error(src):
    from gengraph.engine import Graph
    from gengraph.engine.expr import ExprError, build

    g = Graph("float64")
    x = g.input("x", (3,))
    with pytest.raises(ExprError) as exc:
        build(src, {"x": x})
    return str(exc.value)


@pytest.mark.parametrize("src,words", [
    ("x * 10**10**10", "column 5: constant is too large for a float"),
    ("x * (1/0)", "constant divides by zero"),
    ("x * (-8)**0.5", "not a real number"),
    ("1" + "0" * 5000 + " * x", "number too long"),
    ("(" * 300 + "x" + ")" * 300, "nested too deeply"),
    ("x" + "+x" * 3000, "nested too deeply"),
    ("-" * 9000 + "x", "nested too deeply"),
    ("x" + "+x" * 6000, "expression too long (12001 characters; at most 10000)"),
], ids=["pow", "div0", "complex", "digits", "parens", "sum", "unary", "long"])
def test_expression_bounds(src, words):
    msg = _expr_error(src)
    assert words in msg
    assert len(msg) < 300  # a long expression is not echoed in full


def test_small_integer_constants_still_fold_exactly():
    from gengraph.engine.expr import _fold
    import ast

    assert _fold(ast.Pow(), 2, 10) == 1024 and isinstance(_fold(ast.Pow(), 2, 10), int)
    assert _fold(ast.Pow(), 10, 100) == 1e100 and isinstance(_fold(ast.Pow(), 10, 100), float)


def test_huge_power_in_a_spec_is_a_spec_error_quickly():
    r = invoke("validate", os.path.join(ROOT, "specs", "ebm_moons.toml"), "--set", 'model.energy="x * 10**10**10"')
    assert r.exit_code == 2
    assert "model.energy: in expression 'x * 10**10**10', column 5: constant is too large" in r.output


# --- item 9 (and the file part of 10): bounded spec size, key length and nesting ---------------
def _validate_text(tmp_path, text, *sets, binary=False):
    p = tmp_path / "spec.toml"
    p.write_bytes(text if binary else text.encode())
    return invoke("validate", p, *[a for s in sets for a in ("--set", s)])


def test_long_dotted_key_is_refused_fast(tmp_path):
    import time

    t = time.perf_counter()
    r = _validate_text(tmp_path, "spec_version = 1\n" + ".".join(["a"] * 20000) + " = 1\n")
    assert time.perf_counter() - t < 5
    assert r.exit_code == 2
    assert "spec.toml:2:1: dotted key with more than 32 parts" in r.output and len(r.output) < 300


def test_long_key_deep_array_and_huge_file_are_refused(tmp_path):
    r = _validate_text(tmp_path, 'spec_version = 1\n"' + "b" * 30000 + '" = 1\n')
    assert r.exit_code == 2 and "too long (30000 characters; at most 256)" in r.output and len(r.output) < 300
    r = _validate_text(tmp_path, "spec_version = 1\nx = " + "[" * 200 + "]" * 200 + "\n")
    assert r.exit_code == 2 and "spec.toml:2:1: x[0][0]" in r.output and "nested too deeply (more than 32" in r.output
    r = _validate_text(tmp_path, "spec_version = 1\n" + "#" * (2 << 20) + "\n")
    assert r.exit_code == 2 and "spec too large (" in r.output


def test_deep_override_values_and_paths_are_refused():
    r = invoke("validate", OLS, "--set", "a=" + "[" * 300 + "]" * 300)
    assert r.exit_code == 2 and "--set a: value nested too deeply" in r.output
    r = invoke("validate", OLS, "--set", "a=" + "[" * 3000 + "]" * 3000)
    assert r.exit_code == 2 and "--set a: value nested too deeply" in r.output
    r = invoke("validate", OLS, "--set", ".".join(["a"] * 500) + "=1")
    assert r.exit_code == 2 and "key path nested too deeply (500 parts; at most 32)" in r.output


def test_non_regular_and_non_utf8_spec_files(tmp_path):
    r = invoke("validate", "/dev/zero")
    assert r.exit_code == 2 and "/dev/zero: cannot read spec: not a regular file" in r.output
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    r = invoke("validate", fifo)
    assert r.exit_code == 2 and "cannot read spec: not a regular file" in r.output
    r = _validate_text(tmp_path, b'spec_version = 1\n[run]\nname = "\xff"\n', binary=True)
    assert r.exit_code == 2 and "spec.toml:3:9: not UTF-8 text (byte 0xff)" in r.output


# --- item 10: sizes checked against memory before anything is allocated ------------------------
DIGITS = os.path.join(ROOT, "specs", "mlp_digits.toml")


def test_huge_layer_is_refused_before_allocation():
    import resource
    import time

    t = time.perf_counter()
    r = invoke("validate", DIGITS, "--set", "model.layers[0].units=1000000000")
    assert time.perf_counter() - t < 20
    assert r.exit_code == 2
    assert "--set: model.layers[0].units: a parameter of shape (64, 1000000000)" in r.output
    assert "more than the" in r.output and "of memory available" in r.output
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 4 * 2**20  # KiB: nothing near 1.9 TiB


@pytest.mark.parametrize("key, shape", [
    ("model.encoder[1].channels", "(10000000, 16, 3, 3)"),  # conv2d: (out, in, kH, kW)
    ("model.decoder[3].channels", "(32, 10000000, 4, 4)"),  # conv_transpose2d: (in, out, kH, kW)
    ("model.encoder[3].units", "(512, 100000000)"),
])
def test_huge_image_layer_is_refused_at_its_key(key, shape):
    # conv weights were reported at "model" (the [model] table's line)
    value = "100000000" if key.endswith("units") else "10000000"
    r = invoke("validate", os.path.join(ROOT, "specs", "vae_conv_digits.toml"), "--set", f"{key}={value}")
    assert r.exit_code == 2
    assert f"--set: {key}: a parameter of shape {shape}" in r.output and "of memory available" in r.output


def test_huge_data_n_is_refused():
    r = invoke("validate", OLS, "--set", "data.n=1000000000000")
    assert r.exit_code == 2 and "data.n = 1000000000000" in r.output and "of memory available" in r.output
    assert "--set: data.n: " in r.output  # at the key (it was the [data] table's line)


def test_activations_of_a_batch_are_estimated(monkeypatch):
    import gengraph.plugins.blocks.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 40 * 2**20)  # 40 MiB
    r = invoke("validate", DIGITS, "--set", "model.layers[0].units=4096", "--set", "train.batch_size=1024")
    assert r.exit_code == 2
    assert "train.batch_size: 1024 rows at once need about" in r.output and "lower train.batch_size" in r.output
    monkeypatch.setattr(memory, "available_bytes", lambda: 2**20)
    r = invoke("validate", DIGITS)  # evaluation: the test split (449 rows) in one batch
    assert r.exit_code == 2 and "model: 449 rows at once need about" in r.output
    monkeypatch.setattr(memory, "available_bytes", lambda: 200 * 2**10)
    r = invoke("validate", DIGITS)
    assert r.exit_code == 2 and "model.layers[0].units: a parameter of shape (64, 128)" in r.output


@pytest.mark.parametrize("name", ["diffusion_unet_digits", "vae_conv_digits"])
def test_activation_estimate_is_near_what_the_programs_allocate(name):
    # the estimate summed every batch-shaped node of the whole graph (all programs) x 3: for the
    # U-Net 21x the training step's peak and 57x evaluation's, which refused diffusion_mnist on
    # full-size MNIST at any batch size
    import tracemalloc
    from pathlib import Path

    import numpy as np

    from gengraph.plugins.blocks.memory import model_estimate
    from gengraph.plugins.run.loading import load
    from gengraph.plugins.run.runner import RunContext, build
    from gengraph.plugins.run.trainer import Trainer

    spec = load(Path(ROOT) / "specs" / f"{name}.toml", [])
    data, plugin, graph, model = build(spec.data)
    programs = Trainer(plugin, model, data, spec.data["train"], RunContext(spec.data, None, 0)).compile_programs()
    rows = 512
    feeds = model.feed(data.x_train[:rows].astype(graph.dtype), None)
    estimate = model_estimate(model, rows, rows, 0)
    for program, key in (("train_step", "train"), ("evaluate", "evaluate")):
        programs[program].run(feeds)  # warm: scratch kept between calls is not a batch's cost
        tracemalloc.start()
        programs[program].run(feeds)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert 0.4 * peak < estimate[key] < 3 * peak, (program, estimate[key] / peak)
    assert np.isfinite(estimate["params"]) and estimate["samples"] == 0


def test_memory_error_while_building_is_a_spec_error(monkeypatch):
    import gengraph.plugins.models.mlp as mlp

    def boom(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(mlp, "build_stack", boom)
    r = invoke("validate", DIGITS)
    assert r.exit_code == 2 and "model: the model does not fit in memory" in r.output


def test_huge_iw_samples_is_refused_before_running():
    r = invoke("validate", os.path.join(ROOT, "specs", "vae_digits.toml"), "--set", "model.elbo.iw_samples=1000000000")
    assert r.exit_code == 2
    assert "--set: model.elbo.iw_samples: iw_samples = 1000000000 (k samples of one example at once) needs" in r.output


def test_the_iw_bound_is_estimated_at_the_rows_it_runs_at():
    # the importance-weighted program was sized at output.samples rows (it runs in batches of
    # iw_rows): vae_mnist with a 256-level likelihood was refused for ~30 GiB "of output.samples"
    from pathlib import Path

    from gengraph.engine.graph import topo_order
    from gengraph.engine.metrics import peak_live_bytes
    from gengraph.engine.views import GraphView, output_dict
    from gengraph.plugins.blocks.memory import model_estimate
    from gengraph.plugins.models.latent_common import iw_rows
    from gengraph.plugins.run.loading import load
    from gengraph.plugins.run.runner import build

    spec = load(Path(ROOT) / "specs" / "vae_digits.toml", ["model.elbo.iw_samples=2000"])
    model = build(spec.data)[3]
    rows = iw_rows(model.extras["hierarchy"], 2000, model.params)
    assert model.program_rows == {"iw": rows} and rows < 100

    def at(name, n):
        outs = output_dict(model.programs[name][0])
        return 2 * peak_live_bytes(GraphView(topo_order(list(outs.values())), outs, []), n)

    estimate = model_estimate(model, 64, 64, 100)
    assert estimate["programs"] == at("iw", rows) and estimate["programs_rows"] == rows
    others = max(at(name, 100) for name in model.programs if name != "iw")
    assert estimate["samples"] == others < at("iw", 100)


def test_lbfgs_memory_is_counted_for_the_whole_training_set(monkeypatch):
    import gengraph.plugins.blocks.memory as memory

    # L-BFGS evaluates all 1348 training rows at once; the estimate took batch_size (64) rows
    monkeypatch.setattr(memory, "available_bytes", lambda: 8 * 2**20)
    r = invoke("validate", DIGITS, "--set", 'train.optimizer={kind="lbfgs"}', "--set", "model.layers[0].units=512")
    assert r.exit_code == 2, r.output
    assert "train.optimizer.kind: 1348 rows at once need about" in r.output
    assert "L-BFGS takes every training row at once: use a mini-batch optimizer" in r.output
    assert invoke("validate", DIGITS, "--set", "model.layers[0].units=512").exit_code == 0  # adam: 64 at once


def test_a_huge_parameter_whose_size_comes_from_the_layer_before_says_so(monkeypatch):
    # encoder[1]'s weight is too big because encoder[0] made its input 100000 channels wide: the
    # message named encoder[1].channels alone, a key the user had not changed
    import gengraph.plugins.blocks.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 100 * 2**20)  # encoder[0]'s 29 MB fits, [1]'s 0.9 GB not
    r = invoke("validate", os.path.join(ROOT, "specs", "vae_conv_digits.toml"), "--set", "model.encoder[0].channels=100000")
    assert r.exit_code == 2
    assert ("model.encoder[1].channels: a parameter of shape (32, 100000, 3, 3) (with its gradient and optimizer "
            "state; its input has 100000 channels) needs") in r.output, r.output
