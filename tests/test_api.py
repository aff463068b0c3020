"""gengraph.run / load / validate and the Run they return: the CLI's behaviour from Python."""

import base64
import io
import json
import os
import re
import shutil
import stat
import sys
import tomllib
import traceback
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import gengraph
from gengraph.cli.main import main
from gengraph.plugins.run import display

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "run": {"name": "tiny", "seed": 3},
    "data": {"source": "linear", "n": 60},
    "model": {"kind": "mlp", "layers": [{"units": 4, "activation": "tanh"}]},
    "train": {"epochs": 3, "batch_size": 16, "optimizer": {"kind": "adam", "lr": 0.01}},
    "output": {"plots": False},
}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def cli_error(result) -> str:
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith("error: ") and "\n" not in line
    return line[len("error: "):]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "tiny"
    return gengraph.run(TINY, overrides={"train.optimizer.lr": 0.05}, out=out, progress=None)


# --- run / load / validate ------------------------------------------------------------------
def test_run_on_a_dict_spec_with_overrides(tiny_run):
    run = tiny_run
    assert run.spec["train"]["optimizer"]["lr"] == 0.05 and run.spec["train"]["epochs"] == 3
    assert run.spec == tomllib.loads((run.dir / "spec.toml").read_text())
    assert [r["epoch"] for r in run.metrics] == [1, 2, 3]
    assert run.summary["test_mse"] == pytest.approx(run.metrics[-1]["test_mse"])
    assert run.summary == json.loads((run.dir / "summary.json").read_text())
    assert run.summary["epochs"] == 3 and run.summary["steps"] == 3 * 3  # 45 training rows / 16 per batch
    params = run.params
    assert params["hidden/dense0/W"].shape == (1, 4) and params["output/dense0/W"].shape == (4, 1)
    with np.load(run.dir / "checkpoint.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(params["output/dense0/b"], z["param/output/dense0/b"])


def test_load_reads_the_same_run(tiny_run):
    again = gengraph.load(tiny_run.dir)
    assert again.summary == tiny_run.summary and again.spec == tiny_run.spec
    assert again.metrics == tiny_run.metrics and again.kind == "mlp"
    assert repr(again).startswith(f"Run({str(tiny_run.dir)!r}, kind='mlp', test_loss=")
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        gengraph.load(tiny_run.dir.parent)


def test_a_shipped_name_runs_like_the_cli(tmp_path):
    api = gengraph.run("linear_perceptron", overrides={"train.epochs": 2}, out=tmp_path / "api", progress=False)
    r = invoke("run", "linear_perceptron", "--set", "train.epochs=2", "--out", tmp_path / "cli", "-q")
    assert r.exit_code == 0, r.output
    cli = gengraph.load(tmp_path / "cli")
    assert api.spec == cli.spec and api.spec["run"]["name"] == "linear_perceptron"
    assert api.metrics == cli.metrics
    for k, v in api.params.items():
        np.testing.assert_array_equal(v, cli.params[k])


def test_validate_returns_the_resolved_spec():
    spec = gengraph.validate(TINY, {"train.epochs": 7})
    assert spec["train"]["epochs"] == 7 and spec["train"]["optimizer"]["beta1"] == 0.9  # defaults filled
    assert spec["spec_version"] == 1
    assert gengraph.validate("mlp_digits")["model"]["kind"] == "mlp"
    assert gengraph.validate({**TINY, "train": {"epochs": np.int64(4)}})["train"]["epochs"] == 4


# --- one error type, the CLI's message --------------------------------------------------------
BAD = """spec_version = 1
[data]
source = "linear"
[model]
kind = "mlp"
layers = [{ units = 4, actvation = "tanh" }]
"""


def test_spec_error_message_equals_the_clis(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD)
    expected = cli_error(invoke("validate", bad))
    assert re.match(r".*bad\.toml:6:\d+: model\.layers\[0\]\.actvation: unknown key; did you mean \"activation\"\?",
                    expected)
    for call in (lambda: gengraph.validate(bad), lambda: gengraph.run(bad, out=tmp_path / "r", progress=None)):
        with pytest.raises(gengraph.SpecError) as info:
            call()
        assert str(info.value) == expected
        frames = traceback.extract_tb(info.value.__traceback__)
        assert frames[-1].name == "wrapper" and all(f.filename == __file__ for f in frames[:-1])  # raised where called
        assert info.value.__suppress_context__
        assert info.value._render_traceback_() == [f"SpecError: {expected}"]

    good = ROOT / "specs" / "linear_perceptron.toml"
    expected = cli_error(invoke("run", good, "--set", "train.optimizr.lr=0.1", "--out", tmp_path / "x"))
    with pytest.raises(gengraph.SpecError) as info:
        gengraph.run(good, overrides={"train.optimizr.lr": 0.1}, out=tmp_path / "y")
    assert str(info.value) == expected == '--set: train.optimizr: unknown key; did you mean "optimizer"?'


def test_dict_and_name_mistakes():
    bad = {**TINY, "model": {"kind": "mlp", "layers": [{"units": 4, "actvation": "tanh"}]}}
    with pytest.raises(gengraph.SpecError, match=r'^<spec dict>: model\.layers\[0\]\.actvation: unknown key; '
                                                 r'did you mean "activation"\?$'):
        gengraph.validate(bad)
    with pytest.raises(gengraph.SpecError, match='^mlp_digit: spec file not found; did you mean the shipped spec '
                                                 '"mlp_digits"\\?$'):
        gengraph.run("mlp_digit")
    with pytest.raises(gengraph.SpecError, match="train.epochs: cannot write object"):
        gengraph.validate(TINY, {"train.epochs": object()})
    assert "mlp_digits" in gengraph.shipped_specs()


# --- what the CLI shows ----------------------------------------------------------------------------
def test_graph_is_what_gengraph_graph_prints(tiny_run, tmp_path):
    g = tiny_run.graph()
    r = invoke("graph", tiny_run.dir / "spec.toml")
    assert r.exit_code == 0
    assert repr(g) == r.output  # the same title, table and totals
    assert g.dot().startswith("digraph") and json.loads(g.json())["nodes"]
    built = tiny_run.graph("evaluate", "built")
    assert "stage built" in str(built) and len(built.nodes) < len(g.nodes)
    with pytest.raises(ValueError, match='unknown program "trainstep"; did you mean "train_step"'):
        tiny_run.graph("trainstep")


def test_gradcheck_is_gengraph_gradchecks_report(tiny_run):
    rep = tiny_run.gradcheck()
    r = invoke("gradcheck", tiny_run.dir / "spec.toml")
    assert r.exit_code == 0 and rep.ok
    assert str(rep) + "\n" == r.output
    html = rep._repr_html_()
    assert "<table" in html and "hidden/dense0/W" in html and "ok: 4 parameter(s) within tolerance" in html


def _png_in(html):
    m = re.search(r'src="data:image/png;base64,([^"]+)"', html)
    assert m, html[:200]
    return base64.b64decode(m.group(1))


def test_run_html_shows_summary_and_loss_plot(tiny_run):
    html = tiny_run._repr_html_()
    assert "tiny: mlp on linear" in html and "<table" in html
    assert f"<td style=\"text-align:right\">{tiny_run.summary['test_mse']:.6g}</td>" in html
    assert _png_in(html)[:8] == b"\x89PNG\r\n\x1a\n"


def test_graph_html_without_graphviz_and_svg_with_it(tiny_run, tmp_path, monkeypatch):
    g = tiny_run.graph("evaluate")
    wc = shutil.which("wc")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert g._repr_svg_() is None
    html = g._repr_html_()
    assert "is not on PATH" in html and "<table" in html and ">matmul<" in html and "parameters" in html
    fake = tmp_path / "bin" / "dot"  # a stand-in for Graphviz: echoes an SVG that holds the DOT it read
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho '<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\">'\n"
                    f"{wc} -l\necho '</svg>'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(fake.parent))
    g = tiny_run.graph("evaluate")
    svg = g._repr_svg_()
    assert svg.startswith("<?xml") and svg.rstrip().endswith("</svg>")
    assert int(svg.split(">", 2)[2].split("<")[0]) == len(g.dot().splitlines())  # dot read the whole DOT text
    assert g._repr_html_().startswith('<div style="overflow:auto"><svg')


def test_metrics_frame_with_and_without_pandas(tiny_run, monkeypatch):
    try:
        import pandas  # noqa: F401
    except ImportError:
        pass
    else:
        frame = tiny_run.metrics_frame()
        assert list(frame.index) == [1, 2, 3] and frame["test_mse"].iloc[-1] == tiny_run.metrics[-1]["test_mse"]
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"needs pandas: pip install pandas"):
        tiny_run.metrics_frame()


def test_samples_as_images(tmp_path):
    spec = {"run": {"seed": 0}, "data": {"source": "digits", "scale": "minmax_global"},
            "model": {"kind": "vae", "latent": 2, "encoder": [{"units": 16}], "decoder": [{"units": 16}],
                      "elbo": {"iw_samples": 2}},
            "train": {"epochs": 1}, "output": {"plots": False, "samples": 8}}
    run = gengraph.run(spec, out=tmp_path / "vae", progress=None)
    pic = run.sample(8, as_image=True)
    np.testing.assert_array_equal(np.asarray(pic), np.load(run.dir / "samples.npy"))
    assert pic.shape == (8, 1, 8, 8) and pic._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _png_in(pic._repr_html_()) == pic._repr_png_()
    shown = gengraph.show_samples(run.sample(4, seed=1), run)
    assert shown._repr_png_()[:4] == b"\x89PNG"
    with pytest.raises(gengraph.SampleError, match="not class-conditional"):
        run.sample(2, label=1)


def test_show_samples_is_documented_as_it_is_called():
    import inspect

    takes = set(inspect.signature(gengraph.show_samples).parameters)
    texts = {"display.py": display.__doc__, "show_samples": gengraph.show_samples.__doc__,
             "README.md": (ROOT / "README.md").read_text(encoding="utf-8")}
    texts.update({str(p): p.read_text(encoding="utf-8") for p in (ROOT / "docs").rglob("*.md")})
    for where, text in texts.items():
        for args in re.findall(r"show_samples\(([^)]*)\)", text or ""):
            assert set(re.findall(r"(\w+)\s*=", args)) <= takes, f"{where}: show_samples({args})"


# --- progress ----------------------------------------------------------------------------------------
class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_selection(monkeypatch):
    monkeypatch.setattr(display, "in_notebook", lambda: False)
    assert display.choose_progress("auto", stream=_Stream(True)) == "bar"
    assert display.choose_progress("auto", stream=_Stream(False)) == "text"
    assert display.choose_progress(None) == display.choose_progress(False) == "none"
    monkeypatch.setattr(display, "in_notebook", lambda: True)
    monkeypatch.setattr(display, "has_ipywidgets", lambda: False)
    assert display.choose_progress("auto") == "text"
    with pytest.raises(ImportError, match="needs ipywidgets"):
        display.choose_progress("notebook")
    monkeypatch.setattr(display, "has_ipywidgets", lambda: True)
    assert display.choose_progress("auto") == "notebook"
    with pytest.raises(ValueError, match="progress must be one of"):
        display.choose_progress("fancy")


def test_text_progress_prints_epoch_lines():
    stream = _Stream(True)
    p = display.make_progress("text", 3, stream=stream)
    for e in (1, 2, 3):
        p.epoch({"epoch": e, "step": 2 * e, "train_loss": 1.0 / e})
    p.close()
    assert p.mode == "text" and p.bar is None
    assert stream.getvalue().splitlines() == ["epoch 1 step 2 train_loss=1", "epoch 2 step 4 train_loss=0.5",
                                              "epoch 3 step 6 train_loss=0.33333"]
    quiet = display.make_progress(None, 3, stream=stream)
    quiet.epoch({"epoch": 1, "step": 1, "train_loss": 1.0})
    assert quiet.mode == "none" and stream.getvalue().count("\n") == 3


def test_in_notebook_detects_a_jupyter_kernel(monkeypatch):
    shell = type("ZMQInteractiveShell", (), {})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    assert display.in_notebook()
    terminal = type("TerminalInteractiveShell", (), {})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: terminal))
    assert not display.in_notebook()
    monkeypatch.delitem(sys.modules, "IPython")
    assert not display.in_notebook()


def test_public_names_are_lazy():
    import subprocess

    # SpecError derives from the engine's UserError, so naming it loads the engine; importing
    # gengraph and reading its version must not
    code = "import sys, gengraph; gengraph.__version__; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.stdout.strip() == "False"


def test_resume_continues_a_run(tmp_path):
    first = gengraph.run(TINY, out=tmp_path / "r", progress=None).metrics  # (Run.metrics reads the file)
    assert [m["epoch"] for m in first] == [1, 2, 3]
    more = gengraph.run(None, overrides={"train.epochs": 5}, out=tmp_path / "r", resume=True, progress=None)
    assert [m["epoch"] for m in more.metrics] == [1, 2, 3, 4, 5] and more.summary["epochs"] == 5
    assert more.metrics[:3] == first  # the past is kept as it was
    with pytest.raises(gengraph.SpecError, match="^resume: name the run directory to continue"):
        gengraph.run(None, resume=True)
