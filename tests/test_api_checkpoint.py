"""Run.params reads checkpoint.npz with the checks sampling makes: a damaged file or the checkpoint
of another run is the CheckpointError `Run.sample` / `gengraph sample` give, never a raw zipfile
error or another run's weights."""

import shutil

import numpy as np
import pytest

import gengraph
from gengraph.plugins.run.checkpoint import CheckpointError

TINY = {
    "run": {"name": "tiny", "seed": 3},
    "data": {"source": "linear", "n": 60},
    "model": {"kind": "mlp", "layers": [{"units": 4, "activation": "tanh"}]},
    "train": {"epochs": 1, "batch_size": 16},
    "output": {"plots": False},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ckpt")
    four = gengraph.run(TINY, out=base / "four", progress=None)
    five = gengraph.run(TINY, overrides={"model.layers[0].units": 5}, out=base / "five", progress=None)
    return four, five


def copy_of(run, to):
    shutil.copytree(run.dir, to)
    return gengraph.load(to)


def sampling_error(run) -> str:
    with pytest.raises(CheckpointError) as exc:
        run.sample(2)
    return str(exc.value)


def test_params_of_a_sound_checkpoint_are_its_arrays(runs):
    four, _ = runs
    params = four.params
    with np.load(four.dir / "checkpoint.npz", allow_pickle=False) as z:
        assert set(params) == {k[len("param/"):] for k in z.files if k.startswith("param/")}
        np.testing.assert_array_equal(params["hidden/dense0/W"], z["param/hidden/dense0/W"])


def test_a_truncated_checkpoint_is_the_error_sampling_gives(runs, tmp_path):
    run = copy_of(runs[0], tmp_path / "cut")
    ckpt = run.dir / "checkpoint.npz"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    with pytest.raises(CheckpointError) as exc:
        run.params
    assert str(exc.value) == sampling_error(run)
    assert "not a loadable checkpoint" in str(exc.value)


def test_another_runs_checkpoint_is_refused_as_sampling_refuses_it(runs, tmp_path):
    four, five = runs
    run = copy_of(four, tmp_path / "swapped")
    shutil.copy(five.dir / "checkpoint.npz", run.dir / "checkpoint.npz")
    with pytest.raises(CheckpointError) as exc:
        run.params
    assert str(exc.value) == sampling_error(run)
    assert "belongs to a run with another spec" in str(exc.value) and "model.layers[0].units" in str(exc.value)


def test_no_checkpoint_is_still_file_not_found(runs, tmp_path):
    run = copy_of(runs[0], tmp_path / "none")
    (run.dir / "checkpoint.npz").unlink()
    with pytest.raises(FileNotFoundError, match="no checkpoint.npz"):
        run.params
