"""`gengraph graph` / `gengraph gradcheck` / `gengraph validate` pointed at a finished run's own
spec.toml (or its folder): the run is reopened, as `gengraph sample RUN` reopens it. And the
`--json` of `graph`, `gradcheck` and `sample` (the conventions of `run --json` / `validate --json`:
one JSON object on stdout, an error as {"error": ..., "exit_code": ...}).

The run here asks for more MNIST images than its files hold (n_train = 100 of 40), which runs made
before that check accepted; the check is patched away while the run is made, as in test_mnist.
"""

from __future__ import annotations

import json
import shutil
from unittest import mock

import numpy as np
import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from mnist_util import write_mnist

ASKS = "data.n_train: asks for 100 images"


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    """(run folder, spec file it was made from) of a tiny run made before the image-count check."""
    from gengraph.plugins.datasets import mnist

    tmp = tmp_path_factory.mktemp("reopen")
    write_mnist(tmp / "m", n_train=40, n_test=10)
    spec = tmp / "s.toml"
    spec.write_text(f'spec_version = 1\n[data]\nsource = "mnist"\ndir = "{tmp / "m"}"\nn_train = 100\n'
                    '[model]\nkind = "vae"\nlatent = 2\nencoder = [{ units = 4 }]\ndecoder = [{ units = 4 }]\n'
                    '[train]\nepochs = 1\nbatch_size = 20\n[output]\nplots = false\nsamples = 3\n')
    run = tmp / "run"
    with mock.patch.object(mnist, "reopening", lambda: True):  # the code before the check
        res = CliRunner().invoke(main, ["run", str(spec), "--out", str(run), "-q"])
    assert res.exit_code == 0, res.output
    return run, spec


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("given", ["folder", "spec"])
def test_graph_reads_a_runs_own_spec_as_the_run_was_made(old_run, given):
    # `gengraph graph RUN/spec.toml` was refused by the data check the run predates
    run, _spec = old_run
    res = invoke("graph", run if given == "folder" else run / "spec.toml")
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"{run / 'spec.toml'}: program train_step, stage optimized (vae)\n"), res.output
    assert "totals (train_step, stage optimized):" in res.output and ASKS not in res.output
    res = invoke("graph", run / "spec.toml", "--format", "dot", "--stage", "built")
    assert res.exit_code == 0 and res.output.startswith('digraph "run.train_step.built" {'), res.output


def test_the_same_spec_outside_a_run_folder_still_gets_todays_checks(old_run, tmp_path):
    run, spec = old_run
    shutil.copy(run / "spec.toml", tmp_path / "spec.toml")  # a spec.toml beside none of a run's files
    for args in (("graph", tmp_path / "spec.toml"), ("graph", spec), ("gradcheck", tmp_path / "spec.toml"),
                 ("graph", tmp_path)):
        res = invoke(*args)
        assert res.exit_code == 2 and ASKS in res.output and "Traceback" not in res.output, (args, res.output)


@pytest.mark.parametrize("given", ["folder", "spec"])
def test_gradcheck_reads_a_runs_own_spec_as_the_run_was_made(old_run, given):
    run, _spec = old_run
    res = invoke("gradcheck", run if given == "folder" else run / "spec.toml", "--batch", "2", "--max-entries", "3")
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"gradcheck {run / 'spec.toml'} (vae): loss ")
    assert res.output.rstrip().endswith("ok: 8 parameter(s) within tolerance"), res.output


@pytest.mark.parametrize("given", ["folder", "spec"])
def test_validate_checks_a_runs_own_spec_as_a_new_run_and_says_whose_it_is(old_run, given):
    # the folder was refused ("cannot read spec: a directory") where graph and gradcheck took it
    run, _spec = old_run
    res = invoke("validate", run if given == "folder" else run / "spec.toml")
    assert res.exit_code == 2, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith(f"error: {run / 'spec.toml'}:") and ASKS in lines[0], res.output
    assert lines[1] == (f"note: {run / 'spec.toml'} is the spec of the run in {run}: validate checks it as a new "
                        "run would read it; graph, gradcheck, sample and run --resume read it as that run was "
                        "made (the data checks of its time; sample and --resume also refuse data files changed since)"), \
        res.output
    fixed = invoke("validate", run if given == "folder" else run / "spec.toml", "--set", "data.n_train=40")
    assert fixed.exit_code == 0 and fixed.output == f"{run / 'spec.toml'}: valid (vae on mnist)\n", fixed.output


def test_what_counts_as_a_runs_own_spec(tmp_path):
    from gengraph.plugins.run.loading import run_of_spec, spec_or_run

    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "spec.toml").write_text("spec_version = 1\n")
    (folder / "other.toml").write_text("spec_version = 1\n")
    assert run_of_spec(folder / "spec.toml") is None  # a spec.toml alone: a user's folder
    assert spec_or_run(folder) == (str(folder / "spec.toml"), None)
    for marker in ("checkpoint.npz", "metrics.jsonl", "summary.json"):
        (folder / marker).write_text("")
        assert run_of_spec(folder / "spec.toml") == folder
        assert run_of_spec(folder / "other.toml") is None  # only the run's own spec.toml
        (folder / marker).unlink()
    (folder / "metrics.jsonl").mkdir()  # a folder of that name is no run's file
    assert run_of_spec(folder / "spec.toml") is None
    assert run_of_spec(tmp_path / "missing" / "spec.toml") is None
    assert spec_or_run(tmp_path) == (str(tmp_path), None)  # a folder without spec.toml: loading refuses it


# --- --json ---------------------------------------------------------------------------------------
TOTALS = {"spec", "kind", "program", "stage", "batch", "nodes", "ops", "leaves", "backward_nodes", "nodes_by_op",
          "parameters", "parameter_tensors", "state", "flops", "activation_bytes", "peak_bytes", "passes",
          "collapse", "format"}


def test_graph_json_gives_the_totals_and_the_graph(old_run, tmp_path):
    run, _spec = old_run
    res = invoke("graph", run, "--json", "--batch", "16")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) == TOTALS | {"graph"}
    assert (out["spec"], out["kind"], out["program"], out["stage"], out["batch"], out["format"]) == \
        (str(run / "spec.toml"), "vae", "train_step", "optimized", 16, "json")  # json: the default with --json
    # the node-link graph of the same stage, and its totals
    assert len(out["graph"]["nodes"]) == out["nodes"] == out["ops"] + out["leaves"] == sum(out["nodes_by_op"].values())
    assert out["nodes_by_op"]["param"] == out["parameter_tensors"] == 8
    assert out["parameters"] == 784 * 4 + 4 + 4 * 4 + 4 + 2 * 4 + 4 + 4 * 784 + 784 == \
        sum(n["params"] for n in out["graph"]["nodes"])
    assert out["passes"][-1]["nodes_after"] <= out["passes"][0]["nodes_before"]
    text = json.loads(invoke("graph", run, "--json", "--format", "text", "--stage", "built").stdout)
    assert text["stage"] == "built" and "passes" not in text and text["format"] == "text"
    assert text["graph"].startswith(f"{run / 'spec.toml'}: program train_step, stage built (vae)\n")
    res = invoke("graph", run, "--json", "--format", "dot", "--out", tmp_path / "g.dot")
    assert res.exit_code == 0 and res.output == res.stdout, res.output  # no "wrote ..." line besides the JSON
    written = json.loads(res.stdout)
    assert set(written) == TOTALS | {"out"} and written["out"] == str(tmp_path / "g.dot")
    assert (tmp_path / "g.dot").read_text().startswith('digraph "run.train_step.optimized" {')


def test_graph_json_errors_are_json(old_run):
    run, _spec = old_run
    res = invoke("graph", run, "--json", "--program", "trian_step")
    assert res.exit_code == 2
    out = json.loads(res.stdout)
    assert out["exit_code"] == 2 and out["error"].startswith('unknown program "trian_step"; did you mean "train_step"?')


def test_gradcheck_json_gives_the_report(old_run):
    run, _spec = old_run
    res = invoke("gradcheck", run, "--json", "--batch", "2", "--max-entries", "3")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["spec"], out["kind"], out["ok"], out["rows"], out["seed"], out["max_entries"]) == \
        (str(run / "spec.toml"), "vae", True, 2, 0, 3)
    assert out["verdict"] == "ok: 8 parameter(s) within tolerance" and "error" not in out
    assert [p["name"] for p in out["params"]][:2] == ["encoder/dense0/W", "encoder/dense0/b"]
    first = out["params"][0]
    assert (first["shape"], first["checked"], first["total"], first["result"]) == ([784, 4], 3, 3136, "ok")
    assert len(out["params"]) == 8 and all(p["ok"] and p["result"] in ("ok", "zero") for p in out["params"])
    assert all(p["passed_by"] in ("rtol", "atol+roundoff", "-") for p in out["params"])
    assert np.isfinite(out["loss"]) and out["loss"] > 0


def test_gradcheck_json_of_a_failed_check_is_one_object_with_its_error(old_run):
    run, _spec = old_run
    # a step of 0.1 with no tolerance: the differences' truncation error fails every parameter
    res = invoke("gradcheck", run, "--json", "--batch", "2", "--max-entries", "3", "--eps", "0.1", "--rtol", "0",
                 "--atol", "0", "--param", "decoder/dense0/W")
    assert res.exit_code == 1, res.output
    out = json.loads(res.stdout)  # one object: the report and its error
    assert out["ok"] is False and out["exit_code"] == 1 and out["error"] == out["verdict"]
    assert out["verdict"].startswith("gradient check failed for 1 of 1 parameter(s): decoder/dense0/W")
    assert [p["result"] for p in out["params"]] == ["FAIL"]


def test_sample_json_gives_the_samples(old_run, tmp_path):
    run, _spec = old_run
    res = invoke("sample", run, "--n", "3", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) == {"run_dir", "kind", "n", "shape", "seed", "label", "options", "samples"}
    assert (out["run_dir"], out["kind"], out["n"], out["shape"], out["seed"], out["label"], out["options"]) == \
        (str(run), "vae", 3, [3, 1, 28, 28], 0, None, {})
    # the run's seed and n: the run's own samples.npy
    np.testing.assert_allclose(np.array(out["samples"]), np.load(run / "samples.npy"), rtol=1e-7)
    res = invoke("sample", run, "--n", "2", "--seed", "5", "--json", "--out", tmp_path / "s.npy")
    assert res.exit_code == 0 and res.output == res.stdout, res.output
    out = json.loads(res.stdout)
    assert (out["out"], out["written"], out["seed"], out["shape"]) == \
        (str(tmp_path / "s.npy"), "array (2, 1, 28, 28)", 5, [2, 1, 28, 28])
    assert np.load(tmp_path / "s.npy").shape == (2, 1, 28, 28) and "samples" not in out


def test_sample_json_errors_are_json(old_run, tmp_path):
    run, _spec = old_run
    for args, said in (((run, "--label", "3"), "the vae model is not class-conditional: it takes no label"),
                       ((tmp_path / "none",), f"{tmp_path / 'none'}: not a run directory (no such folder)")):
        res = invoke("sample", *args, "--json")
        assert res.exit_code == 2 and json.loads(res.stdout) == {"error": said, "exit_code": 2}, res.output


def test_the_python_validate_takes_a_run_folder_too(old_run):
    import gengraph

    run, _spec = old_run
    from_folder = gengraph.validate(run, ["data.n_train=40"])
    assert from_folder == gengraph.validate(run / "spec.toml", ["data.n_train=40"])
    assert from_folder["data"]["n_train"] == 40 and from_folder["model"]["latent"] == 2
