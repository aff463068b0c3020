"""Data files at the edges of what the system allows: encodings that are no text encodings, paths the
system cannot look up, process memory limits (ulimit -v, cgroups) and CSV text whose rows, held as
Python strings, took ~44x the file's size. Each ended in a traceback, an exit 1 without the key, a
refusal of a 60-byte file or gigabytes of memory before."""

from __future__ import annotations

import errno
import gzip
import os
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner
from gengraph.cli.main import main
from gengraph.plugins.blocks import memory
from gengraph.plugins.datasets import DataError, files, make_dataset


def _spec(tmp_path, data_lines: str):
    spec = tmp_path / "s.toml"
    spec.write_text(f'spec_version = 1\n[data]\nsource = "csv"\n{data_lines}\n[model]\nkind = "regression"\n')
    return spec


def _csv(tmp_path, text="a,b,y\n1,2,3\n4,5,6\n7,8,9\n", name="d.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _validate(spec):
    return CliRunner().invoke(main, ["validate", str(spec)])


# --- D3: data.encoding names a codec that is no text encoding ------------------------------------
@pytest.mark.parametrize("encoding", ["rot13", "hex", "base64", "undefined"])
def test_a_codec_that_is_no_text_encoding_is_an_error_at_data_encoding(tmp_path, encoding):
    # codecs.lookup accepted them, then bytes.decode raised LookupError (a traceback)
    path = _csv(tmp_path)
    with pytest.raises(DataError, match=rf"^'{encoding}' is not a text encoding") as info:
        make_dataset({"source": "csv", "path": str(path), "encoding": encoding}, 0)
    assert info.value.key == "data.encoding"
    r = _validate(_spec(tmp_path, f'path = "d.csv"\nencoding = "{encoding}"'))
    assert r.exit_code == 2, r.output
    assert r.output.strip() == (f"error: {tmp_path / 's.toml'}:5:1: data.encoding: '{encoding}' is not a text "
                                "encoding (it does not turn bytes into text); give the file's encoding, e.g. "
                                '"utf-8", "latin-1" or "cp1252"')


def test_an_unknown_encoding_is_at_data_encoding_not_data_path(tmp_path):
    _csv(tmp_path)
    r = _validate(_spec(tmp_path, 'path = "d.csv"\nencoding = "klingon"'))
    assert r.exit_code == 2 and ":5:1: data.encoding: " in r.output and "unknown text encoding 'klingon'" in r.output


# --- D4: a data path the system cannot look up -----------------------------------------------------
def test_a_path_too_long_is_an_error_at_its_key_with_the_path_shortened(tmp_path):
    # Path.exists() raised OSError(ENAMETOOLONG): "error: validate failed: a/a/a/...(6000 chars)", exit 1
    long_path = "a/" * 3000 + "x.csv"
    r = _validate(_spec(tmp_path, f'path = "{long_path}"'))
    assert r.exit_code == 2, r.output
    shown = str(tmp_path / long_path)[:80] + "…"  # where it is looked up first: beside the spec
    assert r.output.strip() == f"error: {tmp_path / 's.toml'}:4:1: data.path: {shown}: file name too long"
    with pytest.raises(DataError, match="file name too long") as info:  # any source: npz too
        make_dataset({"source": "npz", "path": "/" + long_path}, 0)
    assert info.value.key == "data.path"


def test_a_symlink_loop_says_so(tmp_path):
    # it was "no such file", beside a file the user can see in `ls`
    (tmp_path / "d.csv").symlink_to(tmp_path / "e.csv")
    (tmp_path / "e.csv").symlink_to(tmp_path / "d.csv")
    r = _validate(_spec(tmp_path, 'path = "d.csv"'))
    assert r.exit_code == 2 and r.output.strip().endswith("d.csv: too many levels of symbolic links"), r.output
    assert ":4:1: data.path: " in r.output


def test_a_folder_that_may_not_be_searched_is_an_error_at_its_key(tmp_path, monkeypatch):
    # PermissionError from Path.exists() ended as "validate failed" (exit 1); simulated, as root may search anything
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        if "locked" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    r = _validate(_spec(tmp_path, 'path = "locked/d.csv"\ntest_path = "locked/t.csv"'))
    assert r.exit_code == 2 and ":4:1: data.path: " in r.output and "locked/d.csv: permission denied" in r.output


def test_a_home_folder_of_no_user_is_an_error(tmp_path):
    # Path.expanduser() raised RuntimeError("Could not determine home directory.")
    with pytest.raises(DataError, match=r"^~no_such_user_gg/d\.csv: cannot expand '~no_such_user_gg': no such user"):
        make_dataset({"source": "csv", "path": "~no_such_user_gg/d.csv"}, 0, base_dir=tmp_path)


# --- D5a: the process's own memory limits ------------------------------------------------------------
@pytest.fixture
def limits(tmp_path, monkeypatch):
    """Point the cgroup and /proc/self/statm files at files of the test's, the system at 1 TiB free and
    RLIMIT_AS at unlimited; returns a function that writes one of those files."""
    import resource

    v2, v1 = tmp_path / "v2", tmp_path / "v1"
    v2.mkdir(), v1.mkdir()
    cgroups = ((str(v2 / "memory.max"), str(v2 / "memory.current"), str(v2 / "memory.stat"), "inactive_file"),
               (str(v1 / "limit"), str(v1 / "usage"), str(v1 / "stat"), "total_inactive_file"))
    monkeypatch.setattr(memory, "CGROUP_FILES", cgroups, raising=False)  # (not there before: MemAvailable only)
    monkeypatch.setattr(memory, "STATM", str(tmp_path / "statm"), raising=False)
    monkeypatch.setattr(memory, "_system_available", lambda: 2**40, raising=False)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    def write(name, text):
        (tmp_path / name).write_text(text)
    return write


def test_available_memory_is_the_least_of_the_system_cgroup_and_address_space(limits, monkeypatch):
    import resource

    assert memory.available_bytes() == 2**40  # no limit anywhere: MemAvailable
    limits("v2/memory.max", "max\n"), limits("v2/memory.current", "123\n")
    assert memory.available_bytes() == 2**40  # "max": no limit
    limits("v1/limit", "5000000000\n"), limits("v1/usage", "1000000000\n")
    assert memory.available_bytes() == 4_000_000_000  # cgroup v1 limit less its usage
    limits("v2/memory.max", "3000000000\n"), limits("v2/memory.current", "500000000\n")
    assert memory.available_bytes() == 2_500_000_000  # v2 first
    limits("v2/memory.stat", "anon 100000000\nfile 400000000\ninactive_file 300000000\n")
    assert memory.available_bytes() == 2_800_000_000  # the inactive page cache is freed on demand
    limits("v2/memory.stat", "")
    limits("statm", "1000 200 100 1 0 50 0\n")
    monkeypatch.setattr(resource, "getrlimit", lambda which: (2_000_000_000, resource.RLIM_INFINITY))
    assert memory.available_bytes() == 2_000_000_000 - 1000 * os.sysconf("SC_PAGE_SIZE")  # ulimit -v
    limits("statm", "garbage\n"), limits("v2/memory.current", "")
    assert memory.available_bytes() == 4_000_000_000  # unreadable sources are ignored: v1 again


def test_a_small_gz_file_does_not_ask_for_half_the_memory_at_once(tmp_path, monkeypatch):
    # gzip's read(available // 2 + 1) allocated its whole buffer first: under ulimit -v 4000000 a
    # 60-byte .csv.gz "does not fit in memory"
    monkeypatch.setattr(memory, "available_bytes", lambda: 2**36)
    path = tmp_path / "d.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    tracemalloc.start()
    try:
        data = files.read_bytes(path, "a CSV file")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data == b"a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n"
    assert peak < 4 * 2**20, peak


# --- D6: CSV text is parsed into numbers as it is read -----------------------------------------------
def test_csv_arrays_that_do_not_fit_are_refused_before_they_are_made(tmp_path, monkeypatch):
    text = "a,b,y\n" + "1,2,0\n" * 10_000  # 60 kB of text, 10,000 x 3 numbers
    path = _csv(tmp_path, text)
    monkeypatch.setattr(memory, "available_bytes", lambda: 200_000)
    with pytest.raises(DataError, match=r"d\.csv: 10000 rows of 3 numbers needs 468\.8 KiB, more than the "
                                        r"195\.3 KiB of memory available") as info:
        make_dataset({"source": "csv", "path": str(path)}, 0)
    assert info.value.key == "data.path"
    monkeypatch.setattr(memory, "available_bytes", lambda: 100_000)  # a plain file, like a .gz, at most half
    with pytest.raises(DataError, match=r"d\.csv: holds 60006 bytes, more than half the memory available "
                                        r"\(expected a CSV file\)"):
        make_dataset({"source": "csv", "path": str(path)}, 0)


def test_parsing_a_csv_takes_a_small_multiple_of_its_numbers(tmp_path):
    # every row was kept as a list of strings: 18x the numbers' 8 bytes each here (12.8 GB for a
    # 300 MB text); now the file's bytes, the arrays and one block of rows
    rng = np.random.default_rng(0)
    table = np.column_stack([rng.standard_normal((30_000, 6)), rng.integers(0, 3, 30_000)])
    path = tmp_path / "d.csv"
    np.savetxt(path, table, fmt="%.6f", delimiter=",", header="a,b,c,d,e,f,y", comments="")
    tracemalloc.start()
    try:
        ds = make_dataset({"source": "csv", "path": str(path), "test_fraction": 0.0, "shuffle": False}, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(ds.x_train, np.round(table[:, :6], 6))
    assert ds.y_train.tolist() == table[:, 6].astype(int).tolist() and ds.feature_names == list("abcdef")
    assert peak < 3.5 * table.nbytes, (peak, table.nbytes)


def test_values_across_blocks_and_text_pieces_read_as_all_at_once(tmp_path, monkeypatch):
    # the rows are decoded, parsed and converted a piece at a time: cuts inside a character, a quoted
    # line break or a CRLF, and targets that turn from integers to floats to text, change nothing;
    # a bad byte is named at its line
    monkeypatch.setattr(files, "BLOCK_ROWS", 2)
    monkeypatch.setattr(files, "TEXT_CHUNK", 3)
    rows = ["1,Köln", "2,Kéln", '3,"Kö\nln"', "4,Köln"]
    path = tmp_path / "t.csv"
    path.write_bytes(("\ufeffa,city\r\n" + "\r\n".join(rows) + "\r\n").encode())
    ds = make_dataset({"source": "csv", "path": str(path), "test_fraction": 0.0, "shuffle": False}, 0)
    assert ds.meta["classes"] == ["Kéln", "Kö\nln", "Köln"] and ds.y_train.tolist() == [2, 0, 1, 2]
    for targets, expect in ((["1", "2", "3", "4.5"], [1.0, 2.0, 3.0, 4.5]),
                            (["1", "2", "3", "99999999999999999999"], [1.0, 2.0, 3.0, 1e20])):
        path.write_text("a,y\n" + "".join(f"{i},{t}\n" for i, t in enumerate(targets)))
        ds = make_dataset({"source": "csv", "path": str(path), "test_fraction": 0.0, "shuffle": False,
                           "task": "regression"}, 0)
        assert ds.y_train.tolist() == expect
    path.write_text("a,y\n0,1\n1,2\n2,1e999\n3,x\n4,NA\n")
    with pytest.raises(DataError, match=r"t\.csv:6: column 'y' \(1\) \(the target\): missing value 'NA'"):
        make_dataset({"source": "csv", "path": str(path)}, 0)
    path.write_text("a,y\n0,1\n1,2\n2,1e999\n3,4\n")
    with pytest.raises(DataError, match=r"t\.csv:4: column 'y' \(1\) \(the target\): expected a finite number, "
                                        r"found '1e999'"):
        make_dataset({"source": "csv", "path": str(path)}, 0)
    path.write_bytes(b"\xef\xbb\xbfa,y\n0,1\n1,2\n2,K\xf6ln\n")  # after a BOM it named the byte 3 before: 0x32
    with pytest.raises(DataError, match=r"t\.csv:4: not UTF-8 text \(byte 0xF6\)"):
        make_dataset({"source": "csv", "path": str(path)}, 0)
