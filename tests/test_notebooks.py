"""examples/notebooks: one notebook per lecture chapter, stored without outputs, each run end
to end in quick mode (GENGRAPH_NOTEBOOK_QUICK=1) by nbclient. Executing them needs the
`notebooks` extra (nbclient, nbformat, ipykernel); without it those tests skip."""

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "examples" / "notebooks"
CHAPTERS = ["01_regression", "02_backprop", "03_optimizers", "04_boltzmann", "05_energy_langevin",
            "06_vae_elbo", "07_diffusion"]
MISSING = 'the notebooks extra is not installed (pip install -e ".[notebooks]")'

# what each notebook must print or show (its own cells assert the numerical checks)
EXPECTED = {
    "01_regression": ["Lasso  test MSE", "zeros:", "lowest test MSE at degree"],
    "02_backprop": ["W1  max |hand - engine| =", "nodes with gradients and updates", "within tolerance"],
    "03_optimizers": ["L-BFGS    test MSE", "Adam      test MSE"],
    "04_boltzmann": ["test_loglik_ais", "rbm samples"],
    "05_energy_langevin": ["test_mmd2_hdiv5", "baseline_mmd2_hdiv5"],
    "06_vae_elbo": ["test -ELBO", "IW bound (k =  10)", "vae samples"],
    "07_diffusion": ["DDPM, 100 steps", "DDIM, 5 steps"],
}


def _cells(name):
    return json.loads((FOLDER / f"{name}.ipynb").read_text())["cells"]


def test_one_notebook_per_chapter_stored_without_outputs():
    assert sorted(p.stem for p in FOLDER.glob("*.ipynb")) == CHAPTERS
    for name in CHAPTERS:
        code = [c for c in _cells(name) if c["cell_type"] == "code"]
        assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), name
        first = code[0]
        assert "parameters" in first["metadata"].get("tags", []), name
        assert "GENGRAPH_NOTEBOOK_QUICK" in "".join(first["source"]) and "QUICK =" in "".join(first["source"])


def _text_of(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("display_data", "execute_result"):
                parts += [str(v) for k, v in out.data.items() if k in ("text/plain", "text/html")]
    return "\n".join(parts)


@pytest.mark.notebooks
@pytest.mark.parametrize("name", CHAPTERS)
def test_notebook_runs_in_quick_mode(name, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason=MISSING)
    nbclient = pytest.importorskip("nbclient", reason=MISSING)
    pytest.importorskip("ipykernel", reason=MISSING)
    monkeypatch.setenv("GENGRAPH_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("GENGRAPH_NOTEBOOK_RUNS", str(tmp_path / "runs"))
    work = tmp_path / "work"
    work.mkdir()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # the kernel inherits these
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    nb = nbformat.read(FOLDER / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(work)}})
    client.execute()  # raises CellExecutionError at the first cell that fails
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    text = _text_of(nb)
    for expected in EXPECTED[name]:
        assert expected in text, (name, expected)
    pictures = [o for c in code for o in c.outputs if o.output_type in ("display_data", "execute_result")
                and ("image/png" in o.data or "data:image/png;base64" in str(o.data.get("text/html", "")))]
    assert pictures, f"{name} shows no figure"
    assert not list(work.iterdir())  # runs go to GENGRAPH_NOTEBOOK_RUNS (or a temporary folder), not the cwd
    runs = [p.parent for p in (tmp_path / "runs").rglob("summary.json")]
    assert runs and all((r / "checkpoint.npz").is_file() for r in runs)


def test_a_notebooks_runs_replace_their_own_when_a_cell_is_run_again():
    # every run cell wrote into a fixed folder without overwrite=True: running it again (what the
    # optimizers notebook tells its reader to do) raised RunDirError
    import re

    for name in CHAPTERS:
        source = "".join("".join(c["source"]) for c in _cells(name) if c["cell_type"] == "code")
        calls = re.findall(r"(?:gengraph\.run|run_sweep)\((?:[^()]|\([^()]*\))*\)", source)
        assert calls, name
        assert all("overwrite=True" in call for call in calls), (name, [c for c in calls if "overwrite" not in c])


@pytest.mark.notebooks
def test_the_optimizers_notebook_runs_twice_in_one_kernel(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason=MISSING)
    nbclient = pytest.importorskip("nbclient", reason=MISSING)
    pytest.importorskip("ipykernel", reason=MISSING)
    monkeypatch.setenv("GENGRAPH_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("GENGRAPH_NOTEBOOK_RUNS", str(tmp_path / "runs"))
    nb = nbformat.read(FOLDER / "03_optimizers.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        for _ in range(2):
            for index, cell in enumerate(nb.cells):
                if cell.cell_type == "code":
                    client.execute_cell(cell, index)  # raises CellExecutionError where a cell fails
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
