"""python -m bench --readme rewrites only a file's marked results section, checked before the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import markers, readme_problem, update_readme

ROOT = Path(__file__).resolve().parent.parent


def test_only_a_file_with_the_results_markers_is_rewritten(tmp_path, monkeypatch):
    # --readme README.md appended a results section to the main README; a file in a missing folder
    # failed with a traceback after the whole run
    plain = tmp_path / "README.md"
    plain.write_text("# mine\n")
    assert "no results section" in readme_problem(plain) and "cannot read" in readme_problem(tmp_path / "no" / "x.md")
    with pytest.raises(ValueError, match="no results section"):
        update_readme(plain, {})
    assert plain.read_text() == "# mine\n"
    begin, end = markers()
    marked = tmp_path / "bench.md"
    marked.write_text(f"before\n{begin}\nold\n{end}\nafter\n")
    monkeypatch.setattr("bench.report.tables", lambda res: "NEW")
    update_readme(marked, {})
    assert marked.read_text() == f"before\n{begin}\nNEW\n{end}\nafter\n"
    res = subprocess.run([sys.executable, "-m", "bench", "--readme", str(plain), "--out", str(tmp_path / "r")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--readme" in res.stderr and "no results section" in res.stderr, res.stderr
    assert not (tmp_path / "r" / "results.json").exists()
