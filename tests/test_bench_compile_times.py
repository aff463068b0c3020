"""bench/compile_times.py times the MNIST specs on stand-in files when the real ones are absent."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.compile_times import compile_times
from bench.report import compile_table

SPECS = Path(__file__).resolve().parent.parent / "specs"


def test_an_mnist_spec_without_its_files_is_timed_on_synthetic_ones(tmp_path):
    shutil.copy(SPECS / "cnn_mnist.toml", tmp_path)  # data.dir = data/mnist: absent next to the copy
    shutil.copy(SPECS / "mlp_digits.toml", tmp_path)
    res = compile_times(reps=1, specs_dir=tmp_path)
    cnn, mlp = res["cnn_mnist.toml"], res["mlp_digits.toml"]
    assert "error" not in cnn and cnn["kind"] == "mlp" and cnn["data"].startswith("synthetic MNIST-format")
    assert cnn["programs"]["train_step"] > mlp["programs"]["train_step"] > 0
    assert "data" not in mlp  # a spec on shipped data runs as it is
    assert not (tmp_path / "data").exists()  # the stand-in files went to a temporary folder, now gone
    row = next(line for line in compile_table(res) if line.startswith("| cnn_mnist.toml"))
    assert row.startswith("| cnn_mnist.toml | mlp (synthetic MNIST-format files") and "error" not in row


def test_an_mnist_spec_finds_its_files_where_a_run_would(tmp_path, monkeypatch):
    # data/mnist under the working directory is where `gengraph run` also looks; the benchmark
    # looked beside the spec only and timed synthetic files instead
    from gengraph.plugins.datasets.mnist import synthetic, write_folder

    (tmp_path / "specs").mkdir()
    shutil.copy(SPECS / "cnn_mnist.toml", tmp_path / "specs")
    write_folder(tmp_path / "data" / "mnist", synthetic(n_train=64, n_test=16))
    monkeypatch.chdir(tmp_path)
    res = compile_times(reps=1, specs_dir=tmp_path / "specs")["cnn_mnist.toml"]
    assert "error" not in res and "data" not in res
