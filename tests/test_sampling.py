"""Sampling a finished run: `draw`, the plugins' `sample` hooks and `gengraph sample`.

Each generative kind is trained for a moment (tiny --set overrides) through the CLI; the
samples drawn later from its run directory must equal the run's own samples.npy.
"""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.engine.ops.random import RandomStreams
from gengraph.plugins.run.sampling import SampleError, check_request, draw, open_run

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"

TINY = {
    "rbm_binary": ("rbm_digits.toml", ["train.epochs=1", "model.n_hidden=8", "model.sample_steps=10",
                                       "output.samples=12"]),
    "rbm_gaussian": ("rbm_gaussian.toml", ["train.epochs=1", "data.n=200", "model.sample_steps=10",
                                           "output.samples=30"]),
    "ebm": ("ebm_moons.toml", ["train.epochs=1", "data.n=120", "model.sample_steps=10", "output.samples=30",
                               "model.langevin.steps=3", "model.layers=[{units=8}]"]),
    "vae": ("vae_digits.toml", ["train.epochs=1", "output.samples=12", "model.elbo.iw_samples=2",
                                "model.latent=2"]),
    "hvae": ("hvae_digits.toml", ["train.epochs=1", "output.samples=12", "model.elbo.iw_samples=2"]),
    "diffusion": ("diffusion_moons.toml", ["train.epochs=2", "data.n=300", "model.schedule.T=20",
                                           "output.samples=40", 'train.schedule={kind="constant"}',
                                           "model.layers=[{units=16, activation=\"silu\"}]"]),
    "vdm": ("vdm_digits.toml", ["train.epochs=1", "model.schedule.T=8", "output.samples=10", "model.bound_samples=2",
                                "model.layers=[{units=16, activation=\"silu\"}]"]),
}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def train(spec, overrides, out):
    args = ["run", SPECS / spec, "--out", out, "-q", "--set", "output.plots=false"]
    for o in overrides:
        args += ["--set", o]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    return {name: train(spec, ov, base / name) for name, (spec, ov) in TINY.items()}


@pytest.mark.parametrize("kind", list(TINY))
def test_draw_with_the_runs_seed_reproduces_samples_npy(runs, kind):
    ref = np.load(runs[kind] / "samples.npy")
    again = draw(runs[kind], len(ref))
    np.testing.assert_array_equal(again, ref)
    other = draw(runs[kind], len(ref), seed=123)
    assert other.shape == ref.shape and np.all(np.isfinite(other))
    assert not np.array_equal(other, ref)
    np.testing.assert_array_equal(draw(runs[kind], len(ref), seed=123), other)  # a seed fixes the draw


def test_samples_are_in_data_units(runs):
    rbm = draw(runs["rbm_binary"], 20)
    assert rbm.shape == (20, 1, 8, 8) and set(np.unique(rbm)) <= {0.0, 1.0}
    vae = draw(runs["vae"], 20)  # Bernoulli means of [0, 1]-scaled digits: data units 0..16
    assert vae.shape == (20, 1, 8, 8) and vae.min() >= 0.0 and vae.max() <= 16.0 and vae.max() > 1.0
    run = open_run(runs["rbm_gaussian"])
    x = draw(runs["rbm_gaussian"], 400, steps=30)
    ref = run.data.unscale_x(run.data.x_train)  # the mixture's radius-2 circle, not standardized units
    assert abs(np.std(x) - np.std(ref)) < 0.5 * np.std(ref)


def test_diffusion_sampler_and_steps(runs):
    d = runs["diffusion"]
    ref = np.load(d / "samples.npy")
    np.testing.assert_array_equal(draw(d, len(ref), sampler="ddpm"), ref)  # the spec's sampler
    ddim = draw(d, 50, sampler="ddim", steps=5)
    assert ddim.shape == (50, 2) and np.all(np.isfinite(ddim))
    assert not np.allclose(ddim, draw(d, 50, sampler="ddim", steps=10))
    np.testing.assert_array_equal(ddim, draw(d, 50, sampler="ddim", steps=5))
    with pytest.raises(SampleError, match='ddpm sampler takes all T steps.*"ddim"'):
        draw(d, 5, sampler="ddpm", steps=3)
    with pytest.raises(SampleError, match='unknown sampler "euler"'):
        draw(d, 5, sampler="euler")


def test_reseeded_streams_restore_their_state():
    s = RandomStreams(7)
    s.rng(1).normal((3,), np.float64)
    state = json.dumps(s.state())
    with s.reseeded(99):
        a = s.rng(1).normal((4,), np.float64)
    with s.reseeded(99):
        b = s.rng(1).normal((4,), np.float64)
    np.testing.assert_array_equal(a, b)
    assert json.dumps(s.state()) == state


# --- user errors ----------------------------------------------------------------------------
def test_errors_are_one_line_sample_errors(runs, tmp_path):
    with pytest.raises(SampleError, match="not a run directory"):
        draw(tmp_path, 3)
    broken = tmp_path / "copy"
    shutil.copytree(runs["vae"], broken)
    (broken / "checkpoint.npz").unlink()
    with pytest.raises(SampleError, match="no checkpoint.npz"):
        draw(broken, 3)
    with pytest.raises(SampleError, match="the vae model takes no option steps \\(it takes none\\)"):
        draw(runs["vae"], 3, steps=4)
    with pytest.raises(SampleError, match="the ebm model takes no options guidance, sampler \\(it takes: steps\\)"):
        draw(runs["ebm"], 3, guidance=1.0, sampler="ddim")
    with pytest.raises(SampleError, match="not class-conditional"):
        draw(runs["rbm_binary"], 3, label=0)
    with pytest.raises(SampleError, match="n must be a positive integer"):
        draw(runs["vae"], 0)


def test_label_range_of_a_conditional_model(runs):
    run = open_run(runs["vae"])
    run.model.n_labels = 3  # as a class-conditional plugin sets it
    assert check_request(run, 4, label=2, options={"steps": None}) == {}
    for bad in (3, -1, 1.5, True):
        with pytest.raises(SampleError, match=r"label must be an integer in 0\.\.2"):
            check_request(run, 4, label=bad)


def test_a_kind_that_cannot_sample(tmp_path):
    out = train("linear_perceptron.toml", ["train.epochs=1"], tmp_path / "lin")
    result = invoke("sample", out)
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and line.startswith('error: a "mlp" model does not generate samples (kinds that do:')
    assert "diffusion" in line and "vae" in line and "regression" not in line


# --- the command ----------------------------------------------------------------------------
def test_cli_writes_npy_png_and_text(runs, tmp_path):
    d = runs["diffusion"]
    r = invoke("sample", d, "--n", 7, "--out", tmp_path / "s.npy", "--sampler", "ddim", "--steps", 4, "--seed", 3)
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), draw(d, 7, sampler="ddim", steps=4, seed=3))
    r = invoke("sample", d, "--n", 5)
    assert r.exit_code == 0
    np.testing.assert_allclose(np.loadtxt(io.StringIO(r.stdout)), draw(d, 5), rtol=1e-5, atol=1e-5)
    for kind, what in (("diffusion", "scatter over the data"), ("vae", "image grid")):
        png = tmp_path / f"{kind}.png"
        r = invoke("sample", runs[kind], "--n", 9, "--out", png)
        assert r.exit_code == 0 and what in r.output
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_cli_user_errors_exit_2_with_one_line(runs, tmp_path):
    cases = [
        (("sample", tmp_path), "not a run directory"),
        (("sample", runs["vae"], "--sampler", "ddim"), "the vae model takes no option sampler"),
        (("sample", runs["rbm_binary"], "--label", 1), "not class-conditional"),
        (("sample", runs["diffusion"], "--guidance", 2.0), "guidance needs a class-conditional model"),
        (("sample", runs["vae"], "--out", tmp_path / "s.txt"), "expected a .npy or .png file"),
    ]
    for args, message in cases:
        r = invoke(*args)
        assert r.exit_code == 2, (args, r.output)
        assert r.output.count("\n") == 1 and message in r.output and "Traceback" not in r.output


def test_an_unfinished_run_is_sampled_with_a_note(runs, tmp_path):
    # a run stopped at epoch 420 of 5000 was sampled as if finished ("the finished generative run")
    import warnings

    import gengraph

    stopped = tmp_path / "stopped"
    shutil.copytree(runs["vae"], stopped)
    (stopped / "summary.json").unlink()  # what a run stopped before its report leaves
    result = CliRunner().invoke(main, ["sample", str(stopped), "--n", "2"])
    assert result.exit_code == 0
    assert f"note: {stopped} has no summary.json: its run has not finished (stopped, or still going); these " \
           "samples come from its last checkpoint (epoch 1 of 1)" in result.output
    assert "note:" not in CliRunner().invoke(main, ["sample", str(runs["vae"]), "--n", "2"]).output
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gengraph.load(stopped).sample(2)
    assert any("has no summary.json" in str(w.message) for w in caught)


def test_a_checkpoint_that_does_not_match_its_spec_is_named_as_such(runs, tmp_path):
    # sampling said "--resume cannot change model.latent", though nothing was resumed
    edited = tmp_path / "edited"
    shutil.copytree(runs["vae"], edited)
    spec = edited / "spec.toml"
    spec.write_text(spec.read_text().replace("latent = 2", "latent = 3"))
    from gengraph.plugins.run.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=r"belongs to a run with another spec than the spec.toml beside it "
                                              r"\(model.latent = 2 in the checkpoint, 3 now\); "
                                              r"restore that run's spec.toml"):
        draw(edited, 2)


def test_sampling_on_cuda_without_cupy_names_the_backend(runs, monkeypatch):
    # Run.sample(backend="cuda") said "--set: run.device: ..." (the override open_run applied)
    from gengraph.engine import backend as backends

    def no_cupy(name):
        raise backends.BackendError("the cupy backend needs CuPy: pip install 'gengraph[cuda]'")

    monkeypatch.setattr("gengraph.plugins.run.sampling.get_backend", no_cupy)
    with pytest.raises(SampleError, match=r"^backend 'cuda': the cupy backend needs CuPy"):
        open_run(runs["vae"], backend="cuda")
    with pytest.raises(SampleError, match=r'unknown backend "gpu" \(choose from numpy, cpu, cupy, cuda\)'):
        open_run(runs["vae"], backend="gpu")
