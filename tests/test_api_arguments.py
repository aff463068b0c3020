"""The Python API takes what the CLI takes, refuses what it refuses with the same kind of message,
and speaks in its own words: defects found by a review of gengraph.run / load / Run."""

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest

import gengraph
from gengraph.plugins.run.checkpoint import CheckpointError
from gengraph.plugins.run.inspection import InspectError
from gengraph.plugins.run.sampling import SampleError

ROOT = Path(__file__).resolve().parents[1]
TINY = {"run": {"name": "tiny", "seed": 3}, "data": {"source": "linear", "n": 60},
        "model": {"kind": "mlp", "layers": [{"units": 4}]}, "train": {"epochs": 2}, "output": {"plots": False}}
# a diffusion model of 1-D data: it samples, but no picture suits its samples
LINE = {"run": {"name": "line", "seed": 1}, "data": {"source": "linear", "n": 200},
        "model": {"kind": "diffusion", "layers": [{"units": 16, "activation": "silu"}],
                  "schedule": {"kind": "cosine", "T": 10}},
        "train": {"epochs": 1, "batch_size": 32}, "output": {"plots": False, "samples": 20}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("apiargs")
    return {"tiny": gengraph.run(TINY, out=base / "tiny", progress=None),
            "line": gengraph.run(LINE, out=base / "line", progress=None),
            "moons": gengraph.run("diffusion_moons", {"train.epochs": 1}, out=base / "moons", progress=None)}


def test_graph_defaults_to_the_program_the_spec_compiles(tmp_path):
    ols = gengraph.run("ols_franke", out=tmp_path / "ols", progress=None)  # closed form: no train_step
    assert "program evaluate, stage optimized" in str(ols.graph())


def test_graph_refuses_what_the_cli_refuses(runs):
    for kwargs, message in (({"batch": -5}, "batch must be a positive integer.*found -5"),
                            ({"batch": 2.5}, "batch must be a positive integer"),
                            ({"collapse": -1}, "collapse must be None or an integer >= 0, found -1")):
        with pytest.raises(InspectError, match=message):
            runs["tiny"].graph(**kwargs)


@pytest.mark.parametrize("spec, message", [
    ({**TINY, "model": {"kind": "rbm"}}, "^<spec dict>: model.visible: binary visible units need 0/1 data"),
    ({**TINY, "data": {"source": "linear", "n": 3, "test_fraction": 0.9}},
     "^<spec dict>: data: data.test_fraction = 0.9 leaves no training example"),
    ({**TINY, "data": {"source": "csv", "path": "no_such_file.csv"}}, "^<spec dict>: data.path: .*no such file"),
])
def test_errors_in_a_dict_spec_name_no_line_of_it(spec, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for call in (lambda: gengraph.validate(spec), lambda: gengraph.run(spec, out=tmp_path / "r", progress=None)):
        with pytest.raises(gengraph.SpecError, match=message):
            call()


def test_a_run_pickles_and_copies_after_it_has_sampled(runs):
    run = runs["moons"]
    first = run.sample(4)
    for twin in (pickle.loads(pickle.dumps(run)), copy.deepcopy(run)):
        assert twin.dir == run.dir and np.array_equal(twin.sample(4), first)


def test_sample_options_are_checked_as_the_cli_checks_them(runs):
    moons = runs["moons"]
    for options, message in (({"steps": 2.5}, "steps must be a positive integer, found 2.5"),
                             ({"steps": "5"}, "steps must be a positive integer, found '5'"),
                             ({"steps": True}, "steps must be a positive integer, found True"),
                             ({"steps": 0}, "steps must be a positive integer, found 0"),
                             ({"sampler": 1}, "sampler must be a sampler's name"),
                             ({"guidance": float("nan")}, "guidance must be a finite number")):
        with pytest.raises(SampleError, match=message):
            moons.sample(4, sampler=options.pop("sampler", "ddim"), **options)
    assert moons.sample(4, sampler="ddim", steps=np.int64(2)).shape == (4, 2)


def test_as_image_refuses_samples_no_picture_suits(runs):
    with pytest.raises(SampleError, match=r"as_image=True: a picture needs image data or 2-D data; these samples "
                                          r"have 1 feature \("):
        runs["line"].sample(5, as_image=True)
    with pytest.raises(ValueError, match="a picture needs image data or 2-D data"):
        gengraph.show_samples(np.zeros((5, 3)), runs["line"])
    assert runs["moons"].sample(5, as_image=True).array.shape == (5, 2)  # a scatter suits 2-D samples


def test_one_string_is_one_path_or_name(runs, tmp_path):
    plugin = ROOT / "examples" / "plugin_polyfit.py"
    resolved = gengraph.validate(ROOT / "examples" / "plugin_polyfit.toml", plugins=str(plugin))
    assert resolved["model"]["kind"] == "polyfit"
    report = str(runs["tiny"].gradcheck(params="output/dense0/W")).splitlines()
    assert [line.split()[0] for line in report if line.startswith("output/")] == ["output/dense0/W"]
    with pytest.raises(gengraph.SpecError, match="overrides: expected a dict .* found int 5"):
        gengraph.validate("linear_perceptron", 5)
    assert gengraph.validate("linear_perceptron", (f"train.epochs={n}" for n in [7]))["train"]["epochs"] == 7


def test_messages_use_the_api_words(runs, capsys):
    with pytest.raises(CheckpointError, match=r"to train on, pass overrides=\{'train.epochs': N\} with N > 2"):
        gengraph.run(out=runs["tiny"].dir, resume=True, progress=None)
    gengraph.run(TINY, out=runs["tiny"].dir, overwrite=True, progress=None)
    out = capsys.readouterr().out
    assert "note: overwrite=True removed the earlier run's files" in out and "--overwrite" not in out


def test_arguments_of_the_wrong_type_name_the_argument(tmp_path, monkeypatch):
    # out=5, load(None) and plugins=[5] failed inside pathlib; overwrite="no" replaced the run;
    # out="~/x" made a folder named "~"
    done = gengraph.run(TINY, out=tmp_path / "r", progress=None)
    for call, words in [(lambda: gengraph.run(TINY, out=5), "out must be a path"),
                        (lambda: gengraph.load(None), "run_dir must be a path"),
                        (lambda: gengraph.validate(TINY, plugins=[5]), "plugins must be paths"),
                        (lambda: gengraph.run(TINY, out=done.dir, overwrite="no"), "overwrite must be True or False"),
                        (lambda: gengraph.run(TINY, out=done.dir, resume="yes"), "resume must be True or False"),
                        (lambda: gengraph.show_samples(np.zeros((2, 2)), None), "run must be a gengraph Run"),
                        (lambda: gengraph.validate(42), "spec must be a path"),
                        (lambda: gengraph.run(["x.toml"]), "spec must be a path")]:
        with pytest.raises(TypeError, match=words):
            call()
    assert done.summary["epochs"] == 2 and (done.dir / "checkpoint.npz").is_file()  # untouched
    with pytest.raises(gengraph.SpecError, match="the name is empty"):
        gengraph.validate("")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    run = gengraph.run(TINY, out="~/runs/t", progress=None)
    assert run.dir == tmp_path / "home" / "runs" / "t" and not (tmp_path / "~").exists()
    assert gengraph.load("~/runs/t").dir == run.dir


def test_the_errors_the_api_raises_are_exported_and_listed(tmp_path):
    # a notebook could not write `except gengraph.RunDirError`, and tab completion found nothing
    from gengraph.plugins.run.rundir import RunDirError

    assert gengraph.RunDirError is RunDirError and {"run", "load", "validate", "Run"} <= set(dir(gengraph))
    for name in ("CheckpointError", "RunInterrupted", "DivergenceError", "DataError", "PluginError",
                 "PluginCrash", "InspectError", "SampleError", "SpecError", "UserError"):
        assert isinstance(getattr(gengraph, name), type) and issubclass(getattr(gengraph, name), Exception), name
    for name in ("SpecError", "DataError", "RunDirError", "CheckpointError", "SampleError", "InspectError", "PluginError"):
        assert issubclass(getattr(gengraph, name), gengraph.UserError), name  # one base to catch a user's mistake
    gengraph.run(TINY, out=tmp_path / "r", progress=None)
    with pytest.raises(gengraph.RunDirError, match="holds another run"):
        gengraph.run(TINY, out=tmp_path / "r", progress=None)


def test_a_run_shows_what_it_wrote_and_a_broken_one_says_why(tmp_path):
    # the notebook picture was redrawn without the plugin's loss label and a fit's final values,
    # and a run whose metrics line was damaged, or whose folder was deleted, raised from the display
    import base64
    import shutil

    run = gengraph.run({**TINY, "output": {"plots": True}}, out=tmp_path / "r", progress=None)
    html = run._repr_html_()
    assert base64.b64encode((run.dir / "loss.png").read_bytes()).decode() in html  # the run's own loss.png
    (run.dir / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n{"epoch": 2}\n')
    bare = gengraph.load(run.dir)
    (run.dir / "loss.png").unlink()
    assert "cannot be shown" in bare._repr_html_()
    shutil.rmtree(run.dir)
    assert "cannot be shown" in bare._repr_html_() and "cannot be read" in repr(bare)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        bare.params
