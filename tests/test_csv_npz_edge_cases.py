"""CSV and NPZ files as users write them: column order, trailing delimiters, header detection,
missing and non-UTF-8 values, label types, broken archives, and errors that name the file and
the key it came from. Each case was a wrong number, a lost row or a traceback before."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.plugins.datasets import DataError, make_dataset
from gengraph.plugins.datasets.files import idx_bytes


def _csv(path: Path, text: str, encoding="utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def _rows(rng, n, label=lambda a, b: f"{a + 2 * b:.6f}"):
    a, b = rng.standard_normal(n), rng.standard_normal(n)
    return a, b, [f"{float(x)!r},{float(y)!r},{label(x, y)}" for x, y in zip(a, b)]


def _load(path, **kw):
    return make_dataset({"source": "csv", "path": str(path), **kw}, 0)


def test_a_test_file_is_matched_to_the_training_file_by_column_name(tmp_path):
    # a test header "b,a,y" was read by position: test_mse 49.6 instead of 0.0074
    rng = np.random.default_rng(0)
    a, b, rows = _rows(rng, 40)
    _csv(tmp_path / "train.csv", "a,b,y\n" + "\n".join(rows) + "\n")
    ta, tb, _ = _rows(rng, 10)
    _csv(tmp_path / "test.csv", "b,y,a\n" + "\n".join(f"{float(y)!r},{x + 2 * y:.6f},{float(x)!r}" for x, y in zip(ta, tb)) + "\n")
    ds = _load(tmp_path / "train.csv", test_path=str(tmp_path / "test.csv"), task="regression")
    np.testing.assert_array_equal(ds.x_test, np.column_stack([ta, tb]))
    np.testing.assert_allclose(ds.y_test, ta + 2 * tb, atol=1e-6)
    _csv(tmp_path / "other.csv", "a,c,y\n1,2,3\n")
    with pytest.raises(DataError, match=r"other.csv: columns a, c, y do not match the training file's a, b, y"):
        _load(tmp_path / "train.csv", test_path=str(tmp_path / "other.csv"))


def test_a_trailing_delimiter_is_not_a_column(tmp_path):
    # "a,b,label," made an empty last column the target (one class '', test_accuracy 1.0), and
    # without a header the first data row became the header
    rng = np.random.default_rng(1)
    lines = [f"{float(x)!r},{float(y)!r},{int(x > 0)}," for x, y in zip(rng.standard_normal(30), rng.standard_normal(30))]
    for header in ("a,b,label,\n", ""):
        ds = _load(_csv(tmp_path / "t.csv", header + "\n".join(lines) + "\n"))
        assert ds.task == "classification" and ds.n_classes == 2 and ds.x_train.shape[1] == 2
        assert len(ds.x_train) + len(ds.x_test) == 30


def test_a_headerless_file_with_text_labels_keeps_its_first_row(tmp_path):
    # header = "auto" took a first row with a text label for column names: 19 of 20 rows kept
    rng = np.random.default_rng(2)
    lines = [f"{float(x)!r},{float(y)!r},{'pos' if x > 0 else 'neg'}" for x, y in zip(rng.standard_normal(20), rng.standard_normal(20))]
    ds = _load(_csv(tmp_path / "t.csv", "\n".join(lines) + "\n"), test_fraction=0.0)
    assert len(ds.x_train) == 20 and ds.feature_names is None and ds.n_classes == 2
    named = _load(_csv(tmp_path / "h.csv", "a,b,label\n" + "\n".join(lines) + "\n"), test_fraction=0.0)
    assert len(named.x_train) == 20 and named.feature_names == ["a", "b"]


@pytest.mark.parametrize("missing", ["NA", "", "null", "?"])
def test_a_missing_target_is_an_error_not_a_class(tmp_path, missing):
    # one "NA" among numeric targets made the target text: a regression became a 61-class problem
    rng = np.random.default_rng(3)
    _, _, rows = _rows(rng, 30)
    rows[7] = rows[7].rsplit(",", 1)[0] + "," + missing
    with pytest.raises(DataError, match=rf"t.csv:9: column 'y' \(2\) \(the target\): missing value {missing!r}"):
        _load(_csv(tmp_path / "t.csv", "a,b,y\n" + "\n".join(rows) + "\n"))


def test_text_that_is_not_utf8_is_an_error_or_read_with_the_given_encoding(tmp_path):
    # errors="replace" merged Köln and Kéln into one class 'K\ufffdln'
    text = "a,city\n" + "\n".join(f"{i}.5,{c}" for i, c in enumerate(["Köln", "Kéln"] * 5)) + "\n"
    path = _csv(tmp_path / "t.csv", text, encoding="latin-1")
    with pytest.raises(DataError, match=r"t.csv:2: not UTF-8 text .*data.encoding"):
        _load(path)
    ds = _load(path, encoding="latin-1", test_fraction=0.0)
    assert ds.meta["classes"] == ["Kéln", "Köln"]
    with pytest.raises(DataError, match="^unknown text encoding 'klingon'"):
        _load(path, encoding="klingon")


def test_whole_number_labels_written_as_floats_are_classes(tmp_path):
    # "0.0"/"1.0" labels were a regression target; the task help says whole numbers are classes
    rng = np.random.default_rng(4)
    lines = [f"{float(x)!r},{float(y)!r},{float(x > y)}" for x, y in zip(rng.standard_normal(40), rng.standard_normal(40))]
    ds = _load(_csv(tmp_path / "t.csv", "a,b,label\n" + "\n".join(lines) + "\n"))
    assert ds.task == "classification" and ds.n_classes == 2 and ds.meta["classes"] == [0, 1]


def test_rows_starting_with_a_hash_are_data_past_the_leading_comments(tmp_path):
    # every row whose first field started with "#" was skipped: 21 of 40 rows lost
    rng = np.random.default_rng(5)
    lines = [f"{'#1' if i % 2 else '#2'},{float(x)!r}" for i, x in enumerate(rng.standard_normal(40))]
    ds = _load(_csv(tmp_path / "t.csv", "# colours and values\ncolour,a\n" + "\n".join(lines) + "\n"),
               target="colour", test_fraction=0.0)
    assert len(ds.x_train) == 40 and ds.n_classes == 2 and ds.feature_names == ["a"]


def test_a_target_name_given_twice_is_an_error(tmp_path):
    # header "y,a,y" took the first y silently, the second stayed a feature
    path = _csv(tmp_path / "t.csv", "y,a,y\n0,0.5,1\n1,0.25,0\n0,0.75,1\n")
    with pytest.raises(DataError, match=r"t.csv: the header names 'y' twice \(columns 0 and 2\)"):
        _load(path, target="y")


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("y,what", [
    (np.arange(6) + 1j, "complex128"),
    (np.arange(6).astype("datetime64[D]"), "datetime64[D]"),
    (np.zeros(6, dtype=[("a", "i4"), ("b", "f4")]), "[('a', '<i4'), ('b', '<f4')]"),
])
def test_npz_targets_of_other_types_are_refused(tmp_path, y, what):
    # complex targets lost their imaginary part, dates became day numbers, a structured array
    # was a TypeError traceback
    path = _npz(tmp_path / "d.npz", x=np.ones((6, 2)), y=y)
    with pytest.raises(DataError, match=r"d.npz: array 'y' must hold numbers or text labels, found dtype"):
        make_dataset({"source": "npz", "path": str(path)}, 0)


def test_npz_test_labels_are_checked_like_training_labels(tmp_path):
    # fractional test labels (0.5, 1.7) beside integer training labels became new classes
    train = _npz(tmp_path / "train.npz", x=np.arange(20.0).reshape(10, 2), y=np.arange(10) % 2)
    test = _npz(tmp_path / "test.npz", x=np.ones((3, 2)), y=np.array([0.5, 1.7, 1.0]))
    with pytest.raises(DataError, match=r"test.npz: classification needs whole-number or text labels"):
        make_dataset({"source": "npz", "path": str(train), "test_path": str(test)}, 0)


def test_a_missing_test_target_names_the_test_file(tmp_path):
    # the error named the training file
    train = _npz(tmp_path / "train.npz", x=np.arange(20.0).reshape(10, 2), y=np.linspace(0, 1, 10))
    test = _npz(tmp_path / "test.npz", x=np.ones((3, 2)), y=np.array([0.5, np.nan, 1.0]))
    with pytest.raises(DataError, match=r"test.npz: target of row 1: expected a finite number"):
        make_dataset({"source": "npz", "path": str(train), "test_path": str(test), "task": "regression"}, 0)


def test_a_damaged_npz_is_a_data_error(tmp_path, monkeypatch):
    # zlib.error (a damaged compressed stream) and tokenize.TokenError (a damaged .npy header,
    # from NumPy's header parser) came out as tracebacks
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=np.arange(4000.0).reshape(1000, 4), y=np.arange(1000) % 3)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("x.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw = bytearray(path.read_bytes())
    raw[start + 200:start + 260] = bytes(60)  # zeros inside the deflate stream
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"d.npz: "):
        make_dataset({"source": "npz", "path": str(path)}, 0)

    import tokenize

    good = tmp_path / "g.npz"
    np.savez(good, x=np.ones((4, 2)), y=np.arange(4))

    def broken(*a, **kw):
        raise tokenize.TokenError("EOF in multi-line statement", (2, 0))

    monkeypatch.setattr(np.lib.format, "read_array_header_1_0", broken)
    with pytest.raises(DataError, match=r"g.npz: not a readable NumPy .npz archive: .*EOF in multi-line"):
        make_dataset({"source": "npz", "path": str(good)}, 0)


def test_idx_labels_must_be_whole_numbers(tmp_path):
    # float labels were truncated: 7.7 became class 7
    def write_idx(path, a):
        path.write_bytes(idx_bytes(a))
        return path

    images = write_idx(tmp_path / "img", np.zeros((3, 4, 4), np.uint8))
    labels = write_idx(tmp_path / "lab", np.array([1.0, 7.7, 3.0], np.float32))
    with pytest.raises(DataError, match=r"lab: labels must be whole numbers, found 7.7"):
        make_dataset({"source": "idx", "images": str(images), "labels": str(labels)}, 0)
    write_idx(tmp_path / "lab", np.array([1.0, 7.0, 3.0], np.float32))
    ds = make_dataset({"source": "idx", "images": str(images), "labels": str(labels), "test_fraction": 0.0}, 0)
    assert sorted(ds.meta["classes"]) == [1, 3, 7]


def test_file_errors_point_at_the_key_that_named_the_file(tmp_path):
    # they were located at the [data] table's line ("spec.toml:4:1: data:"), also for a --set path
    _csv(tmp_path / "train.csv", "a,y\n1,2\n2,4\n3,6\n4,8\n")
    _csv(tmp_path / "test.csv", "a,y\n1,2\n2,x\n")
    spec = tmp_path / "s.toml"
    spec.write_text('spec_version = 1\n[data]\nsource = "csv"\npath = "missing.csv"\ntest_path = "test.csv"\n'
                    'task = "regression"\n[model]\nkind = "regression"\ndegree = 1\n')
    r = CliRunner().invoke(main, ["validate", str(spec)])
    assert r.exit_code == 2 and "s.toml:4:1: data.path: " in r.output and "missing.csv: no such file" in r.output
    r = CliRunner().invoke(main, ["validate", str(spec), "--set", 'data.path="train.csv"'])
    assert r.exit_code == 2 and "s.toml:5:1: data.test_path: " in r.output, r.output
    r = CliRunner().invoke(main, ["validate", str(spec), "--set", 'data.path="nowhere.csv"'])
    assert r.exit_code == 2 and "--set: data.path: " in r.output, r.output
