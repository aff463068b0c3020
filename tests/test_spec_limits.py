"""Sizes far past anything a model can use are spec errors at their key, before anything is built
or allocated: before, they were tracebacks (IndexError, ZeroDivisionError, OverflowError,
"array is too big") or built until the memory ran out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.engine import Graph, ops
from gengraph.engine.errors import GraphTooLarge
from gengraph.plugins.run.runner import blamed_key, named_child

SPECS = Path(__file__).resolve().parents[1] / "specs"
HUGE = 2 ** 63 - 1


def _validate(spec, *sets):
    args = ["validate", str(SPECS / spec)] + [a for s in sets for a in ("--set", s)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    return r.output


@pytest.mark.parametrize("spec,key,value,words", [
    ("rbm_gaussian.toml", "data.k", HUGE, "must be <= 1000000"),           # IndexError
    ("score_moons.toml", "model.score.levels", HUGE, "must be <= 100000"),  # IndexError in geomspace
    ("diffusion_moons.toml", "model.schedule.T", HUGE, "must be <= 1000000"),  # "needs T >= 1 steps"
    ("vdm_digits.toml", "model.fourier_features", "[3, 4, 2000]", "must be <= 24"),  # OverflowError
])
def test_bounded_counts_are_refused_at_their_key(spec, key, value, words):
    out = _validate(spec, f"{key}={value}")
    assert f"--set: {key}" in out and words in out


@pytest.mark.parametrize("spec,key", [
    ("vae_digits.toml", "model.elbo.samples"),      # ValueError: array is too big
    ("ebm_moons.toml", "model.replay.size"),
    ("rbm_digits.toml", "model.n_hidden"),
])
def test_allocations_past_the_address_space_are_memory_errors(spec, key):
    assert "does not fit in memory (a size in [model] or [data] is too large)" in _validate(spec, f"{key}={HUGE}")


def test_a_layer_output_past_the_limit_is_refused_at_the_layer():
    # padding = 2^63 - 1: the next layer's sizes overflowed (ZeroDivisionError in its initializer)
    out = _validate("vae_conv_digits.toml", f"model.encoder[0].padding={HUGE}")
    # at the --set that made it (the one inside the layer)
    assert re.search(r"--set: model.encoder\[0\].padding: conv2d layer: its output 16x\d+x\d+ has [\d,]+ values per "
                     r"example, more than 2,147,483,648", out), out


def test_graphs_stop_growing_at_the_node_limit(monkeypatch):
    # CD-k with k = 10^8 unrolled Gibbs sweeps into the graph until the memory ran out
    monkeypatch.setattr(Graph, "MAX_NODES", 50)
    g = Graph()
    x = g.input("x", (3,))
    with pytest.raises(GraphTooLarge, match="the graph grew past 50 nodes while it was built"):
        for _ in range(100):
            x = ops.tanh(x)
    assert len(g.nodes) == 50
    monkeypatch.setattr(Graph, "MAX_NODES", 2000)
    out = _validate("rbm_digits.toml", "model.k=100000")
    assert "--set: model.k: the graph grew past 2,000 nodes while it was built" in out, out  # the --set that made it


def test_sweeps_too_large_to_check_are_refused(tmp_path):
    # num = 2^63 - 1 was an IndexError; a grid of 10^12 trials filled the memory (MemoryError)
    text = (SPECS / "sweep_ridge_franke.toml").read_text()
    line = next(i for i, s in enumerate(text.splitlines(), 1) if s.startswith('"model.lam"'))
    huge = tmp_path / "s.toml"
    huge.write_text(text.replace("num = 6", f"num = {HUGE}"))
    r = CliRunner().invoke(main, ["validate", str(huge)])
    assert r.exit_code == 2 and f's.toml:{line}:1: sweep.axes."model.lam": range num = 9,223,372,036,854,775,807 ' \
                                 "is more values than a sweep runs" in r.output, r.output
    many = tmp_path / "m.toml"
    many.write_text(text.replace("num = 6", "num = 50000"))
    r = CliRunner().invoke(main, ["validate", str(many)])
    assert r.exit_code == 2 and "sweep.axes: the sweep has 400,000 trials, more than 100,000" in r.output, r.output


def test_a_sweep_axis_typo_is_located_at_the_axis(tmp_path):
    # '"mdoel.degree" = [...]' was reported as "--set: mdoel: unknown key", with no file or line
    text = (SPECS / "sweep_ridge_franke.toml").read_text().replace('"model.degree"', '"mdoel.degree"')
    line = next(i for i, s in enumerate(text.splitlines(), 1) if s.startswith('"mdoel.degree"'))
    (tmp_path / "s.toml").write_text(text)
    r = CliRunner().invoke(main, ["validate", str(tmp_path / "s.toml")])
    assert r.exit_code == 2
    assert f's.toml:{line}:1: sweep.axes."mdoel.degree": mdoel: unknown key; did you mean "model"?' in r.output


def test_a_layer_error_points_at_the_key_it_names():
    # --set 'model.encoder[0].padding="oops"' was blamed on the layer's line in the file
    out = _validate("vae_conv_digits.toml", 'model.encoder[0].padding="oops"')
    assert "--set: model.encoder[0].padding: conv2d layer: padding must be" in out
    cli = ("--set", None, None)
    positions = {"model.encoder[0]": ("s.toml", 3, 1), "model.encoder[0].padding": cli,
                 "model.encoder[0].stride": cli, "model.encoder[0].kernel": ("s.toml", 3, 20)}
    assert named_child(positions, "model.encoder[0]", "stride 2 and padding 1 ...") == "model.encoder[0].stride"
    assert named_child(positions, "model.encoder[0]", "paddings ...") == "model.encoder[0]"
    # a key from the file keeps the table's position (its word may name something else)
    assert named_child(positions, "model.encoder[0]", "kernel 3 ...") == "model.encoder[0]"


def test_an_error_about_a_key_from_the_file_points_at_the_set_that_caused_it():
    # groups = 8 (in the file) no longer divides channels given by --set: the error named the file's
    # groups line, a key the user had not touched
    out = _validate("diffusion_unet_digits.toml", "model.network.channels=[12, 24]")
    assert "--set: model.network.channels: groups = 8 does not divide the channels [12]" in out, out
    out = _validate("diffusion_unet_digits.toml", "model.network.groups=5")  # the --set key itself
    assert "--set: model.network.groups: groups = 5 does not divide" in out, out
    out = _validate("diffusion_unet_digits.toml", "model.network.groups=5", "model.network.channels=[12, 24]")
    assert "--set: model.network.groups: groups = 5" in out, out  # both given: the key the check is about
    # only keys the check names as its own: a --set sibling merely mentioned in the words is not blamed
    out = _validate("diffusion_digits.toml", "data.scale=standardize", "model.symmetric=true")
    assert "diffusion_digits.toml:17:1: model.decoder: " in out, out
    cli = ("--set", None, None)
    positions = {"model.network": ("s.toml", 30, 1), "model.network.groups": ("s.toml", 35, 1),
                 "model.network.channels": cli, "model.network.blocks": cli, "model.elbo.samples": cli,
                 "model.elbo.iw_samples": ("s.toml", 31, 1), "model.depth": ("s.toml", 32, 1)}
    also = ("model.network.channels",)
    message = "groups = 8 does not divide the channels [12]"
    assert blamed_key(positions, "model.network.groups", message, also) == "model.network.channels"
    assert blamed_key(positions, "model.network.groups", message) == "model.network.groups"  # not named by the check
    assert blamed_key(positions, "model.elbo.iw_samples", "k samples of one example at once") == "model.elbo.iw_samples"
    # a key left at its default: the key the user wrote (in the file) that the check is also about
    assert blamed_key(positions, "model.width", "width 3 does not fit depth 2", ("model.depth",)) == "model.depth"
    assert blamed_key(positions, "model", "channels ...") == "model"  # a table: named_child's rule alone
    # the one --set inside what the error is about made it (the decoder's end, after --set of a layer's stride)
    assert blamed_key(positions, "model.elbo", "k ...") == "model.elbo.samples"
    assert blamed_key(positions, "model.network", "the network ...") == "model.network"  # two --sets inside: which?
    out = _validate("vae_conv_digits.toml", "model.decoder[3].stride=4")
    assert "error: --set: model.decoder[3].stride: the decoder ends in images 16x14x14" in out, out


@pytest.mark.parametrize("edit, said", [
    (lambda s: s.replace("[run]\n", "[run]\nseed = 1\nseed = 2\n", 1), ":6:1: invalid TOML: seed is set twice"),
    (lambda s: s + "\n[run]\nseed = 3\n", "invalid TOML: the table [run] is declared twice"),
    (lambda s: s + "\n[[model.layers]]\nunits = 3\n", "model.layers was given a whole value already"),
    (lambda s: s.replace('kind = "mlp"', "kind = mlp"), 'text is quoted in TOML (kind = "mlp")'),
    (lambda s: s.replace('source = "digits"', "source = \u201cdigits\u201d"), "curly quotes"),
])
def test_toml_syntax_errors_are_said_in_the_specs_words(tmp_path, edit, said):
    # tomllib's "Cannot overwrite a value" named no key, "Cannot declare ('run',) twice" showed a
    # Python tuple, and a bare word got "Invalid value" without a hint to quote it
    spec = tmp_path / "s.toml"
    spec.write_text(edit((SPECS / "mlp_digits.toml").read_text()))
    r = CliRunner().invoke(main, ["validate", str(spec)])
    assert r.exit_code == 2 and said in r.output and "Traceback" not in r.output, r.output


def test_keys_other_tables_use_and_a_misspelt_spec_version_get_a_suggestion(tmp_path):
    # a layer's `kind` listed the known keys (every other table chooses its kind by `kind`), and
    # spec_verison had no did-you-mean: spec_version was no candidate
    out = _validate("mlp_digits.toml", 'model.layers[0].kind="dense"')
    assert 'model.layers[0].kind: unknown key; did you mean "type"?' in out, out
    out = _validate("mlp_digits.toml", 'train.optimizer.type="adam"')
    assert 'train.optimizer.type: unknown key; did you mean "kind"?' in out, out
    spec = tmp_path / "s.toml"
    spec.write_text((SPECS / "mlp_digits.toml").read_text().replace("spec_version = 1", "spec_verison = 1"))
    r = CliRunner().invoke(main, ["validate", str(spec)])
    assert r.exit_code == 2 and 'spec_verison: unknown key; did you mean "spec_version"?' in r.output, r.output


def test_gpu_suggests_cuda_and_one_class_has_entropy_plus_zero():
    import math

    from gengraph.plugins.blocks.sample_quality import label_entropy

    r = CliRunner().invoke(main, ["validate", str(SPECS / "mlp_digits.toml"), "--set", "run.device=\"gpu\""])
    assert r.exit_code == 2 and 'did you mean "cuda"?' in r.output, r.output  # it suggested "cpu"
    assert math.copysign(1.0, label_entropy([3, 3, 3])) == 1.0  # -0.0 was printed as "-0"
