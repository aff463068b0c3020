"""Data files that are not what they claim, or hold values no model can use: one clear DataError
naming the file (and the row and column where there is one), never a NumPy traceback or a
misleading hint."""

from __future__ import annotations

import gzip
import zipfile

import numpy as np
import pytest

from gengraph.plugins.datasets import DataError, make_dataset


def csv(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def load(source, path, **kw):
    return make_dataset({"source": source, "path": path, **kw}, 0)


# --- item 5: NaN / inf / overflow at load time ------------------------------------------------
@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity", "1e400"])
def test_csv_non_finite_feature_names_line_and_column(tmp_path, bad):
    p = csv(tmp_path, f"a,b,y\n1,2,3\n4,{bad},5\n6,7,8\n")
    with pytest.raises(DataError, match=rf"d\.csv:3: column 'b' \(1\): expected a finite number.*found '{bad}'"):
        load("csv", p)


def test_csv_non_finite_target(tmp_path):
    p = csv(tmp_path, "a,y\n1,0.5\n2,nan\n3,1.5\n")
    with pytest.raises(DataError, match=r"d\.csv:3: column 'y' \(1\) \(the target\): expected a finite number"):
        load("csv", p)


def test_npz_non_finite_names_row_and_column(tmp_path):
    x = np.ones((4, 3))
    x[2, 1] = np.inf
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(4.0) + 0.5)
    with pytest.raises(DataError, match=r"d\.npz: array 'x', row 2, column 1: expected a finite number, found inf"):
        load("npz", str(tmp_path / "d.npz"))
    np.savez(tmp_path / "t.npz", x=np.ones((4, 3)), y=np.array([0.5, np.nan, 1.5, 2.5]))
    with pytest.raises(DataError, match=r"t\.npz: target of row 1: expected a finite number"):
        load("npz", str(tmp_path / "t.npz"), task="regression")


def test_idx_float_nan(tmp_path):
    a = np.ones((2, 2, 2), dtype=">f4")
    a[1, 0, 1] = np.nan
    (tmp_path / "im").write_bytes(bytes([0, 0, 0x0D, 3]) + b"".join(int(s).to_bytes(4, "big") for s in a.shape)
                                  + a.tobytes())
    with pytest.raises(DataError, match=r"im: IDX item, row 1, column 1: expected a finite number"):
        make_dataset({"source": "idx", "images": str(tmp_path / "im")}, 0)


# --- item 14: degenerate or foreign files -----------------------------------------------------
def test_csv_with_one_column_or_binary_content(tmp_path):
    with pytest.raises(DataError, match=r"d\.csv: expected feature columns besides the target, found 1 "
                                        r"column\(s\) in all \(is the delimiter right\?\)"):
        load("csv", csv(tmp_path, "y\n1\n2\n3\n"))
    p = tmp_path / "b.csv"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 20)
    with pytest.raises(DataError, match=r"b\.csv: expected a CSV text file, found binary data"):
        load("csv", str(p))


def test_npz_degenerate_or_not_an_npz(tmp_path):
    np.savez(tmp_path / "rows.npz", x=np.zeros((0, 3)), y=np.zeros(0))
    with pytest.raises(DataError, match=r"rows\.npz: array 'x' has shape \(0, 3\): expected at least one row"):
        load("npz", str(tmp_path / "rows.npz"))
    np.savez(tmp_path / "feat.npz", x=np.zeros((4, 0)), y=np.zeros(4))
    with pytest.raises(DataError, match=r"feat\.npz: array 'x' has shape \(4, 0\)"):
        load("npz", str(tmp_path / "feat.npz"))
    (tmp_path / "text.npz").write_text("hello, this is not an archive\n")
    with pytest.raises(DataError, match=r"text\.npz: not a NumPy \.npz archive") as exc:
        load("npz", str(tmp_path / "text.npz"))
    assert "allow_pickle" not in str(exc.value)
    np.save(tmp_path / "one.npy", np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"found a single \.npy array"):
        load("npz", str(tmp_path / "one.npy"))


def test_idx_zero_images_or_zero_dimension(tmp_path):
    for shape in [(0, 2, 2), (3, 0, 2)]:
        (tmp_path / "im").write_bytes(bytes([0, 0, 0x08, 3]) + b"".join(s.to_bytes(4, "big") for s in shape))
        with pytest.raises(DataError, match=rf"im: IDX header says shape \({shape[0]}, {shape[1]}, 2\): "
                                            "expected at least one image"):
            make_dataset({"source": "idx", "images": str(tmp_path / "im")}, 0)


# --- item 10 (data part): an npz zip bomb is refused from its headers --------------------------
def test_npz_bomb_refused_from_the_member_header(tmp_path, monkeypatch):
    import gengraph.plugins.blocks.memory as memory

    header = {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
    buf = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", buf.getvalue() + b"\0" * 100000)
        z.writestr("y.npy", buf.getvalue())
    with pytest.raises(DataError, match=r"bomb\.npz: array 'x' of shape \(1000000, 1000000\) needs .* more than"):
        load("npz", str(tmp_path / "bomb.npz"))
    monkeypatch.setattr(memory, "available_bytes", lambda: 1000)
    np.savez(tmp_path / "ok.npz", x=np.zeros((100, 3)), y=np.zeros(100))
    with pytest.raises(DataError, match=r"ok\.npz: array 'x' of shape \(100, 3\) needs"):
        load("npz", str(tmp_path / "ok.npz"))


def test_gzip_bomb_is_bounded(tmp_path, monkeypatch):
    import gengraph.plugins.blocks.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 2000)
    with gzip.open(tmp_path / "im.gz", "wb") as fh:
        fh.write(bytes([0, 0, 8, 3]) + b"\0\0\0\x10" * 3 + b"\0" * 4096)
    with pytest.raises(DataError, match=r"im\.gz: decompresses to more than 1000 bytes"):
        make_dataset({"source": "idx", "images": str(tmp_path / "im.gz")}, 0)


# --- item 23: whole-number targets and task = "auto" -------------------------------------------
def test_auto_task_many_integer_values_is_regression(tmp_path):
    rows = "\n".join(f"{i},{i * 37 % 1000}" for i in range(200))
    ds = load("csv", csv(tmp_path, "a,y\n" + rows + "\n"))
    assert ds.task == "regression"
    rows = "\n".join(f"{i},{i % 3}" for i in range(30))
    assert load("csv", csv(tmp_path, "a,y\n" + rows + "\n", "c.csv")).task == "classification"


def test_regression_on_inferred_classes_suggests_task_regression(tmp_path):
    from click.testing import CliRunner

    from gengraph.cli.main import main

    rows = "\n".join(f"{i},{i % 3}" for i in range(30))
    csv(tmp_path, "a,y\n" + rows + "\n")
    spec = tmp_path / "s.toml"
    spec.write_text('spec_version = 1\n[data]\nsource = "csv"\npath = "d.csv"\n[model]\nkind = "regression"\n')
    r = CliRunner().invoke(main, ["validate", str(spec)])
    assert r.exit_code == 2
    assert 'set data.task = "regression" to fit them as numbers' in r.output
