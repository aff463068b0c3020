"""A run's data files are the ones it started with: the saved spec pins relative data paths to
absolute ones (so --resume, sample and load read them from anywhere), and the checkpoint
fingerprints their contents (so --resume refuses a file that changed)."""

import tomllib

import numpy as np
import pytest

import gengraph
from gengraph.plugins.run.checkpoint import CheckpointError
from gengraph.plugins.run.sampling import open_run

SPEC = """spec_version = 1
[run]
seed = 0
[data]
source = "csv"
path = "data.csv"
[model]
kind = "mlp"
layers = [{ units = 8, activation = "tanh" }]
[train]
optimizer = { kind = "adam", lr = 1e-2 }
epochs = 2
batch_size = 16
[output]
plots = false
"""


def write_csv(path, offset=0.0, seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, 60))
    rows = "\n".join(f"{x!r},{z!r},{x + 2 * z + offset!r}" for x, z in zip(a.tolist(), b.tolist()))
    path.write_text("a,b,y\n" + rows + "\n")
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """specdir/spec.toml reading specdir/data.csv; the working directory holds another data.csv."""
    specdir = tmp_path / "specdir"
    specdir.mkdir()
    (specdir / "spec.toml").write_text(SPEC)
    write_csv(specdir / "data.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_csv(elsewhere / "data.csv", offset=100.0, seed=1)  # same name, other data
    monkeypatch.chdir(elsewhere)
    run = gengraph.run(str(specdir / "spec.toml"), out=tmp_path / "run1", progress=None)
    return specdir, run.dir


def test_the_saved_spec_holds_the_absolute_path_and_the_written_text(project):
    specdir, run_dir = project
    text = (run_dir / "spec.toml").read_text()
    assert tomllib.loads(text)["data"]["path"] == str(specdir / "data.csv")
    assert '# as written: "data.csv"' in text


def test_resume_reads_the_file_the_run_started_with(project, tmp_path):
    specdir, run_dir = project
    write_csv(run_dir / "data.csv", offset=100.0, seed=2)  # a decoy beside the run's spec.toml too
    resumed = gengraph.run(None, {"train.epochs": 4}, out=run_dir, resume=True, progress=None)
    straight = gengraph.run(str(specdir / "spec.toml"), {"train.epochs": 4}, out=tmp_path / "straight",
                            progress=None)
    assert resumed.summary["test_mse"] == straight.summary["test_mse"] < 10
    assert '# as written: "data.csv"' in (run_dir / "spec.toml").read_text()  # kept by the resumed run


def test_sample_and_load_open_the_same_data_from_elsewhere(project, tmp_path, monkeypatch):
    specdir, run_dir = project
    monkeypatch.chdir(tmp_path)  # no data.csv here
    opened = open_run(run_dir)
    x = np.loadtxt(specdir / "data.csv", delimiter=",", skiprows=1)[:, :2]
    both = np.concatenate([opened.data.x_train, opened.data.x_test])
    assert sorted(map(tuple, both)) == sorted(map(tuple, x))
    assert gengraph.load(run_dir).graph("evaluate") is not None


def test_resume_refuses_a_data_file_whose_contents_changed(project):
    specdir, run_dir = project
    write_csv(specdir / "data.csv", offset=0.5)  # same path, same size class, other numbers
    with pytest.raises(CheckpointError, match=r"data\.path.*" + str(specdir / "data.csv") + ".*changed"):
        gengraph.run(None, {"train.epochs": 4}, out=run_dir, resume=True, progress=None)
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2  # nothing rewritten
    with pytest.raises(CheckpointError, match="the data changed since the run started"):
        open_run(run_dir)  # sampling would unscale with other data's statistics


MNIST_SPEC = """spec_version = 1
[run]
seed = 0
[data]
source = "mnist"
dir = "idx"
[model]
kind = "mlp"
layers = [{ units = 8, activation = "relu" }]
[train]
optimizer = { kind = "adam", lr = 1e-2 }
epochs = 1
batch_size = 16
[output]
plots = false
"""


@pytest.fixture
def mnist_run(tmp_path):
    from mnist_util import write_mnist

    (tmp_path / "spec.toml").write_text(MNIST_SPEC)
    write_mnist(tmp_path / "idx", n_train=32, n_test=8)
    run = gengraph.run(str(tmp_path / "spec.toml"), out=tmp_path / "run", progress=None)
    return tmp_path / "idx", run.dir


def test_a_data_folder_is_recorded_by_the_files_its_source_reads(mnist_run):
    folder, run_dir = mnist_run
    (folder / "notes.txt").write_text("an unrelated file beside the four IDX files")
    resumed = gengraph.run(None, {"train.epochs": 2}, out=run_dir, resume=True, progress=None)
    assert len(resumed.metrics) == 2  # resumed: the folder's other files are not the run's data
    (folder / "t10k-labels-idx1-ubyte").write_bytes((folder / "t10k-labels-idx1-ubyte").read_bytes()[:-1] + b"\x05")
    with pytest.raises(CheckpointError, match=r"data\.dir.*the data changed since the run started"):
        gengraph.run(None, {"train.epochs": 3}, out=run_dir, resume=True, progress=None)


def test_a_folder_recorded_whole_by_an_earlier_version_still_resumes(mnist_run):
    from gengraph.plugins.run import data_files
    from test_resume_state_checks import _rewrite

    folder, run_dir = mnist_run
    whole = data_files._fingerprint(folder)  # the earlier record: every file of the folder, no "files"
    _rewrite(run_dir, lambda meta: meta["data_files"].update({"data.dir": whole}), redigest=True)
    resumed = gengraph.run(None, {"train.epochs": 2}, out=run_dir, resume=True, progress=None)
    assert len(resumed.metrics) == 2
