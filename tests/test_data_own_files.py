"""Users' own data files as other programs write them: channels-last image arrays, a test file with a
class the training file lacks, Excel's UTF-16 "Unicode text", values past float32, European CSVs.
Each was read wrong without a word, or refused with a message that did not say what to do."""

from __future__ import annotations

import codecs
import re

import numpy as np
import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.plugins.datasets import DataError, make_dataset
from gengraph.plugins.datasets.files import idx_bytes
from gengraph.plugins.run import trainer

TABLE = "a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n"


def _write(path, data):
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return str(path)


def _csv(path, **kw):
    return make_dataset({"source": "csv", "path": str(path), **kw}, 0)


def _npz(tmp_path, name, x, y):
    np.savez(tmp_path / name, x=x, y=y)
    return str(tmp_path / name)


# ---- 1: (N, H, W, C) images were read as (N, C, H, W): C=H, W=C, scrambled pixels ----------------
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_channels_last_images_are_refused_with_the_conversion(tmp_path, channels):
    x = np.zeros((12, 8, 8, channels))
    path = _npz(tmp_path, "d.npz", x, np.arange(12) % 2)
    with pytest.raises(DataError) as info:
        make_dataset({"source": "npz", "path": path}, 0)
    msg = str(info.value)
    assert info.value.key == "data.path"
    assert msg.startswith(f"{path}: array 'x' has shape (12, 8, 8, {channels})"), msg
    assert "(N, C, H, W)" in msg and "np.transpose(x, (0, 3, 1, 2))" in msg and "np.moveaxis(x, -1, 1)" in msg


def test_a_channels_last_test_file_is_refused_at_its_key(tmp_path):
    train = _npz(tmp_path, "tr.npz", np.zeros((12, 3, 8, 8)), np.arange(12) % 2)
    test = _npz(tmp_path, "te.npz", np.zeros((4, 8, 8, 3)), np.arange(4) % 2)
    with pytest.raises(DataError, match=r"te\.npz: array 'x' has shape \(4, 8, 8, 3\)") as info:
        make_dataset({"source": "npz", "path": train, "test_path": test}, 0)
    assert info.value.key == "data.test_path"


@pytest.mark.parametrize("shape, image", [((12, 8, 8), (1, 8, 8)), ((12, 1, 8, 8), (1, 8, 8)),
                                          ((12, 3, 8, 8), (3, 8, 8)), ((12, 4, 6, 3), (4, 6, 3)),
                                          ((12, 2, 5, 1), (2, 5, 1))])
def test_channels_first_images_are_still_read(tmp_path, shape, image):
    ds = make_dataset({"source": "npz", "path": _npz(tmp_path, "d.npz", np.ones(shape), np.arange(12) % 2)}, 0)
    assert ds.image_shape == image


# ---- 2: a label only in the test file became a class without a training example -------------------
def test_a_test_label_the_training_file_lacks_is_refused(tmp_path):
    train = _write(tmp_path / "tr.csv", TABLE)
    test = _write(tmp_path / "te.csv", "a,b,y\n1,2,0\n\n3,4,5\n5,6,5\n")
    with pytest.raises(DataError) as info:
        _csv(train, test_path=test)
    assert info.value.key == "data.test_path"
    assert str(info.value).startswith(f"{test}: test label 5 (2 of 3 rows, the first at line 4) never occurs in "
                                      "the training data: the training split has no example of it"), info.value


def test_a_text_test_label_the_training_file_lacks_is_refused(tmp_path):
    train = _write(tmp_path / "tr.csv", TABLE)
    test = _write(tmp_path / "te.csv", "a,b,y\n1,2,cat\n3,4,1\n")
    with pytest.raises(DataError, match=r"te\.csv: test label 'cat' \(1 of 2 rows, the first at line 2\)") as info:
        _csv(train, test_path=test)
    assert info.value.key == "data.test_path"


def test_many_unseen_npz_labels_are_listed_a_few_with_the_count(tmp_path):
    train = _npz(tmp_path, "tr.npz", np.ones((6, 2)), np.array([0, 1, 0, 1, 0, 1]))
    test = _npz(tmp_path, "te.npz", np.ones((8, 2)), np.array([1, 2, 3, 4, 5, 6, 7, 0]))
    with pytest.raises(DataError, match=r"te\.npz: test labels 2, 3, 4, 5, 6 and 1 more \(6 of 8 rows, the first "
                                        r"at row 1\) never occur in the training data") as info:
        make_dataset({"source": "npz", "path": train, "test_path": test}, 0)
    assert info.value.key == "data.test_path"


def test_unseen_idx_test_labels_point_at_data_test_labels(tmp_path):
    paths = {}
    for key, a in (("images", np.zeros((4, 2, 2), np.uint8)), ("labels", np.array([0, 1, 0, 1], np.uint8)),
                   ("test_images", np.zeros((2, 2, 2), np.uint8)), ("test_labels", np.array([1, 9], np.uint8))):
        paths[key] = _write(tmp_path / key, idx_bytes(a))
    with pytest.raises(DataError, match=r"test_labels: test label 9 \(1 of 2 rows, the first at row 1\)") as info:
        make_dataset({"source": "idx", **paths}, 0)
    assert info.value.key == "data.test_labels"


def test_test_labels_among_the_training_ones_are_read(tmp_path):
    train = _write(tmp_path / "tr.csv", "a,b,y\n1,2,0\n3,4,1\n5,6,2\n7,8,1\n")
    ds = _csv(train, test_path=_write(tmp_path / "te.csv", "a,b,y\n1,2,1\n3,4,1\n"), task="classification")
    assert ds.n_classes == 3 and ds.y_test.tolist() == [1, 1]


# ---- 3: UTF-16/32 text (Excel's "Unicode text") was refused for its NUL bytes ---------------------
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
@pytest.mark.parametrize("given", [{}, {"encoding": "utf-16"}])
def test_utf16_and_utf32_files_with_a_byte_order_mark_are_read(tmp_path, encoding, given):
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(encoding, b"")
    path = _write(tmp_path / "d.csv", bom + TABLE.replace("\n", "\r\n").encode(encoding))
    ds, plain = _csv(path, **given), _csv(_write(tmp_path / "p.csv", TABLE))
    assert np.array_equal(ds.x_train, plain.x_train) and ds.feature_names == ["a", "b"]


def test_utf16_without_a_byte_order_mark_is_read_with_the_encoding_and_refused_with_a_hint(tmp_path):
    path = _write(tmp_path / "d.csv", TABLE.encode("utf-16-le"))
    assert _csv(path, encoding="utf-16-le").feature_names == ["a", "b"]
    assert _csv(path, encoding="utf-16").feature_names == ["a", "b"]
    with pytest.raises(DataError, match=r'd\.csv: expected a CSV text file, found binary data \(a NUL byte\); a '
                                        r'UTF-16 text file .* needs data\.encoding = "utf-16"'):
        _csv(path)


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_utf16_and_utf32_without_a_mark_are_read_in_the_byte_order_their_text_shows(tmp_path, codec):
    # "utf-16" read a big-endian file in the machine's order: "a,b,y" became CJK characters
    path = _write(tmp_path / "d.csv", TABLE.encode(codec))
    ds, plain = _csv(path, encoding=codec[:6]), _csv(_write(tmp_path / "p.csv", TABLE))
    assert np.array_equal(ds.x_train, plain.x_train) and ds.feature_names == ["a", "b"]


def test_a_bad_utf16_character_is_reported_at_its_line(tmp_path):
    # U+010A is 0A 01 in UTF-16-LE: counting 0x0A bytes put the error a line too far
    text = "a,b,y\n1,2,\u010a\n".encode("utf-16") + b"\x00\xd8" + "1,2,x\n".encode("utf-16-le")
    with pytest.raises(DataError, match=r"d\.csv:3: not utf-16 text"):
        _csv(_write(tmp_path / "d.csv", text))


# ---- 4: 1e300 is finite in float64 but inf in float32: "training loss became nan" ----------------
def test_values_past_float32_are_refused_with_where_and_what_to_do(tmp_path):
    path = _write(tmp_path / "d.csv", "a,b,y\n1,2,0\n3,1e300,1\n5,6,0\n7,8,1\n")
    ds = _csv(path, test_fraction=0.0).flat()
    with pytest.raises(DataError) as info:
        trainer.check_in_dtype(ds, "float32")
    assert info.value.key == "data.path"
    assert str(info.value) == (f'{path}: the training data hold values beyond the range of run.dtype = "float32" '
                               "(±3.4e+38): feature 'b' (1) reaches 1e+300; set run.dtype = \"float64\", or scale "
                               'the data (data.scale = "standardize")')
    trainer.check_in_dtype(ds, "float64")
    trainer.check_in_dtype(_csv(path, test_fraction=0.0, scale="standardize").flat(), "float32")


def test_a_test_file_or_target_past_float32_names_its_key(tmp_path):
    train = _write(tmp_path / "tr.csv", "a,y\n1,0.5\n2,1.5\n3,2.5\n")
    test = _write(tmp_path / "te.csv", "a,y\n1,0.5\n2,-4e38\n")
    with pytest.raises(DataError, match=r"te\.csv: the test data hold .* the target reaches 4e\+38; .*"
                                        r"data\.scale_target = true") as info:
        trainer.check_in_dtype(_csv(train, test_path=test, task="regression").flat(), "float32")
    assert info.value.key == "data.test_path"


def test_a_run_on_values_past_float32_stops_before_writing_anything(tmp_path):
    _write(tmp_path / "d.csv", "a,b,y\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)) + "1,1e300,0\n")
    spec = tmp_path / "s.toml"
    spec.write_text('spec_version = 1\n[data]\nsource = "csv"\npath = "d.csv"\n[model]\nkind = "mlp"\n'
                    'layers = [{ units = 4 }]\n[train]\nepochs = 1\nbatch_size = 8\n[output]\nplots = false\n')
    r = CliRunner().invoke(main, ["run", str(spec), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2, r.output
    assert "beyond the range of run.dtype = \"float32\"" in r.output and "became nan" not in r.output
    assert not (tmp_path / "run" / "metrics.jsonl").exists() and not (tmp_path / "run" / "spec.toml").exists()


# ---- 5: a European CSV (a;b;y, 1,5;2;0) read with "," said only "expected 1 fields" ---------------
@pytest.mark.parametrize("delimiter, text", [(";", "a;b;y\n1,5;2,3;0\n3,1;4,0;1\n"),
                                             ("|", "a|b|y\n1,5|2|0\n3|4|1\n"),
                                             ("\\t", "a\tb\ty\n1,5\t2,5\t0\n3\t4\t1\n")])
def test_a_wrong_delimiter_names_the_one_that_fits(tmp_path, delimiter, text):
    path = _write(tmp_path / "d.csv", text)
    with pytest.raises(DataError, match=rf"d\.csv:2: expected 1 fields \(as in the header\), found \d \(is the "
                                        rf'delimiter right\? data\.delimiter = "{re.escape(delimiter)}"\)'):
        _csv(path)


def test_a_ragged_row_without_a_better_delimiter_gets_no_hint(tmp_path):
    with pytest.raises(DataError, match=r"d\.csv:3: expected 3 fields \(as in the header\), found 2$"):
        _csv(_write(tmp_path / "d.csv", "a,b,y\n1,2,0\n3,4\n"))


def test_values_beyond_float32_are_refused_by_validate_too(tmp_path):
    # the check ran when the trainer was built: gengraph validate passed the spec
    from click.testing import CliRunner

    from gengraph.cli.main import main

    (tmp_path / "big.csv").write_text("a,b,y\n1,2,0\n1e300,3,1\n2,4,0\n3,5,1\n4,6,0\n5,7,1\n6,8,0\n7,9,1\n")
    spec = tmp_path / "s.toml"
    spec.write_text('spec_version = 1\n[data]\nsource = "csv"\npath = "big.csv"\ntarget = "y"\n'
                    '[model]\nkind = "mlp"\nlayers = [{ units = 4 }]\n[train]\nepochs = 1\n')
    res = CliRunner().invoke(main, ["validate", str(spec)])
    assert res.exit_code == 2 and "s.toml:4:1: data.path: " in res.output and "beyond the range" in res.output
    res = CliRunner().invoke(main, ["validate", str(spec), "--set", 'run.dtype="float64"'])
    assert res.exit_code == 0, res.output


def test_square_channels_first_arrays_are_not_taken_for_channels_last(tmp_path):
    # (40, 16, 4, 4): 16 channels of 4x4 (stored latents) was refused as (N, H, W, C)
    from gengraph.plugins.datasets import make_dataset

    np.savez(tmp_path / "lat.npz", x=np.random.default_rng(0).normal(size=(40, 16, 4, 4)), y=np.zeros(40))
    ds = make_dataset({"source": "npz", "path": str(tmp_path / "lat.npz"), "task": "unsupervised"}, 0)
    assert ds.image_shape == (16, 4, 4)


def test_a_run_made_before_the_unseen_class_check_still_resumes(tmp_path, monkeypatch):
    # the new refusals broke runs made before them (their spec.toml cannot be edited): a run's own
    # data are read as it trained on them
    from click.testing import CliRunner

    from gengraph.cli.main import main
    from gengraph.plugins.datasets import files

    rows = "".join(f"{i % 5},{(i * 7) % 3},{i % 2}\n" for i in range(40))
    (tmp_path / "tr.csv").write_text("a,b,y\n" + rows)
    (tmp_path / "te.csv").write_text("a,b,y\n1,2,0\n2,1,1\n3,0,2\n")
    spec = tmp_path / "s.toml"
    spec.write_text(f'spec_version = 1\n[data]\nsource = "csv"\npath = "{tmp_path / "tr.csv"}"\n'
                    f'test_path = "{tmp_path / "te.csv"}"\ntarget = "y"\n[model]\nkind = "mlp"\n'
                    'layers = [{ units = 4 }]\n[train]\nepochs = 1\n[output]\nplots = false\n')
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(files, "reopening", lambda: True)  # the code before the check
        assert CliRunner().invoke(main, ["run", str(spec), "--out", str(out), "-q"]).exit_code == 0
    res = CliRunner().invoke(main, ["run", "--resume", str(out), "--set", "train.epochs=2", "-q"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["run", str(spec), "--out", str(tmp_path / "new"), "-q"])  # a new run: refused
    assert res.exit_code == 2 and "never occurs in the training data" in res.output, res.output
