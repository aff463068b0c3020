"""Rich displays for notebooks (Jupyter's `_repr_html_` / `_repr_svg_` / `_repr_png_`) and the
choice of progress output.

* a Run: its summary table and loss plot (an inline base64 PNG);
* a graph (`Run.graph()`): SVG drawn by Graphviz's `dot` when it is on PATH, else an HTML
  table of the nodes and the totals; its text repr is `gengraph graph`'s table;
* a gradcheck report (`Run.gradcheck()`): an HTML table;
* samples (`Run.sample(n, as_image=True)` or `show_samples(array, run)`): an image
  grid for image data, a scatter over the data for 2-D data.

Pictures come from gengraph.plugins.blocks.plots (the files a run writes), rendered into
a temporary folder and inlined.
"""

from __future__ import annotations

import base64
import html
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from gengraph.engine import export, tables
from gengraph.plugins.blocks.plots import loss_curves
from gengraph.plugins.model import MODELS
from gengraph.plugins.blocks import plots
from gengraph.plugins.run.progress import Progress


# --- small HTML helpers --------------------------------------------------------------------------
def _esc(v) -> str:
    return html.escape(str(v))


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list) and len(v) > 6:
        return "[" + ", ".join(fmt(x) for x in v[:6]) + f", … ({len(v)} values)]"
    if isinstance(v, list):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def html_table(header, rows, right=(), caption=None) -> str:
    """An HTML table; columns in `right` right-aligned."""
    def cell(tag, i, v):
        style = ' style="text-align:right"' if i in right else ' style="text-align:left"'
        return f"<{tag}{style}>{_esc(v)}</{tag}>"

    out = ['<table class="gengraph">']
    if caption:
        out.append(f"<caption>{_esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(cell("th", i, h) for i, h in enumerate(header)) + "</tr></thead><tbody>")
    out += ["<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows]
    out.append("</tbody></table>")
    return "".join(out)


def png_of(draw) -> bytes:
    """The PNG that draw(path) writes (a plots.* function), as bytes."""
    with tempfile.TemporaryDirectory(prefix="gengraph-display-") as tmp:
        path = Path(tmp) / "figure.png"
        draw(path)
        return path.read_bytes()


def img_tag(png: bytes, alt="") -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'


# --- a run -------------------------------------------------------------------------------------------
def run_html(run) -> str:
    """Title, the summary table and the loss curves of a Run; what stands in the way (a folder
    deleted since, a damaged metrics line) as a line of its own: a display never raises."""
    try:
        return _run_html(run)
    except (OSError, ValueError, KeyError) as exc:
        return f"<div><b>{_esc(run.dir)}</b>: <i>cannot be shown: {_esc(exc)}</i></div>"


def _run_html(run) -> str:
    spec = run.spec
    title = f"{spec['run']['name']}: {run.kind} on {spec['data']['source']}"
    parts = [f"<div><b>{_esc(title)}</b><br/><code>{_esc(run.dir)}</code></div>"]
    summary = run.summary
    if summary:
        rows = [(k, fmt(v)) for k, v in summary.items()]
        parts.append(html_table(("metric", "value"), rows, right=(1,)))
    else:
        parts.append("<div><i>no summary.json yet (the run has not finished)</i></div>")
    written = run.dir / "loss.png"
    if written.is_file():  # the run's own picture (its plugin's loss label, the final values of a fit)
        parts.append(img_tag(written.read_bytes(), alt="loss curves"))
    elif history := run.metrics:  # no plots written (output.plots = false) or not yet
        parts.append(img_tag(png_of(lambda p: loss_curves(history, p, _loss_label(run), final=summary or None)),
                             alt="loss curves"))
    return '<div style="display:flex;gap:1.5em;flex-wrap:wrap;align-items:flex-start">' + "".join(parts) + "</div>"


def _loss_label(run) -> str:
    """The plugin's words for its training loss (loss.png's title), where its kind is known."""
    try:
        return MODELS.get(run.kind).loss_label(run.spec["model"])
    except Exception:  # noqa: BLE001 -- a kind not installed here, a spec it cannot read: plain "loss"
        return "loss"


# --- a graph ----------------------------------------------------------------------------------------
class GraphDisplay:
    """One stage of one program (engine.views.GraphView) as `gengraph graph` shows it.

    repr/str: the text table and totals; .dot(), .json(), .graphml(): the exports;
    _repr_svg_: drawn by Graphviz's `dot` (None without it); _repr_html_: that SVG, or an
    HTML table of the nodes and the totals when `dot` is missing."""

    def __init__(self, view, *, batch=128, collapse=None, name="gengraph"):
        self.view, self.batch, self.collapse, self.name = view, batch, collapse, name
        self._svg = None

    @property
    def nodes(self) -> list:
        return self.view.nodes

    def text(self) -> str:
        return tables.summary(self.view, self.batch, self.collapse)

    def dot(self) -> str:
        return export.to_dot(self.view, self.batch, self.collapse, name=self.name)

    def json(self) -> str:
        return export.to_json(self.view, self.batch, self.collapse)

    def graphml(self) -> str:
        return export.to_graphml(self.view, self.batch, self.collapse)

    def __repr__(self) -> str:
        return self.text()

    __str__ = __repr__

    def svg(self) -> str | None:
        """The graph drawn by Graphviz (`dot -Tsvg`), or None when `dot` is not on PATH."""
        if self._svg is None:
            exe = shutil.which("dot")
            if exe is None:
                return None
            proc = subprocess.run([exe, "-Tsvg"], input=self.dot(), text=True, capture_output=True, timeout=60)
            if proc.returncode != 0:
                return None
            self._svg = proc.stdout
        return self._svg

    def _repr_svg_(self):
        return self.svg()

    def table_html(self) -> str:
        header, rows, right = tables.table_rows(self.view, self.batch, self.collapse)
        title = self.view.title or f"program {self.view.program}, stage {self.view.stage}"
        return (html_table(header, rows, right, caption=title)
                + f"<pre>{_esc(tables.totals(self.view, self.batch))}</pre>")

    def _repr_html_(self) -> str:
        svg = self.svg()
        if svg is not None:
            start = svg.find("<svg")
            return f'<div style="overflow:auto">{svg[start:] if start >= 0 else svg}</div>'
        return ("<div><i>Graphviz's <code>dot</code> is not on PATH: the graph as a table "
                "(install graphviz for a drawing)</i></div>" + self.table_html())


# --- a gradient check -------------------------------------------------------------------------------
def gradcheck_html(report) -> str:
    header, rows, right = report.table_rows()
    head = "<br/>".join(_esc(line).replace("\n", "<br/>") for line in report.header())
    colour = "green" if report.ok else "#c00"
    return (f"<div>{head}</div>" + html_table(header, rows, right)
            + f'<div style="color:{colour}"><b>{_esc(report.verdict())}</b></div>')


# --- samples ------------------------------------------------------------------------------------------
class SampleImages:
    """Samples that show as a picture: an image grid (image data) or a scatter over the data
    (2-D data); `.array` is the NumPy array. Made by `Run.sample(n, as_image=True)`."""
    def __init__(self, array, data, title="samples"):
        if (why := unplottable(data, array)) is not None:  # said now, not by the notebook's display
            raise ValueError(why)
        self.array, self.data, self.title = array, data, title
        self._png = None

    def __array__(self, dtype=None, copy=None):
        import numpy as np

        return np.asarray(self.array, dtype=dtype)

    def __len__(self):
        return len(self.array)

    @property
    def shape(self):
        return self.array.shape

    def __repr__(self):
        return f"SampleImages({self.title!r}, shape={self.array.shape})"

    def png(self) -> bytes:
        if self._png is None:
            self._png = png_of(lambda p: write_sample_png(self.array, self.data, p, title=self.title))
        return self._png

    def _repr_png_(self):
        return self.png()

    def _repr_html_(self):
        return img_tag(self.png(), alt=self.title)


def sample_plot_kind(data, samples) -> str | None:
    """"images", "scatter" or None: the picture that suits these samples."""
    import math

    shape = data.image_shape
    d = math.prod(samples.shape[1:]) if samples.ndim > 1 else 1
    if shape is not None and math.prod(shape) == d:
        return "images"
    if samples.ndim == 2 and d == 2:
        return "scatter"
    return None


def unplottable(data, samples) -> str | None:
    """Why no picture suits these samples (None: one does)."""
    if sample_plot_kind(data, samples) is not None:
        return None
    n = samples.shape[1] if samples.ndim == 2 else 0
    have = f"{n} feature{'s' * (n != 1)}" if samples.ndim == 2 else f"shape {samples.shape[1:]}"
    return f"a picture needs image data or 2-D data; these samples have {have}"


def write_sample_png(samples, data, path, *, title="samples") -> str:
    """Draw samples into a PNG file: an image grid or a scatter over the data; returns which."""
    kind = sample_plot_kind(data, samples)
    if kind == "images":
        m = min(len(samples), 256)
        plots.image_grid(samples[:m].reshape(m, -1), data.image_shape, path, title=title)
        return "image grid"
    if kind == "scatter":
        ref = data.unscale_x(data.x_test if data.n_test else data.x_train)
        plots.scatter_vs_data(samples, ref, path, title=title + " vs data")
        return "scatter over the data"
    raise ValueError(unplottable(data, samples))


def show_samples(samples, run, title="samples") -> SampleImages:
    """A picture of an array of samples (e.g. from `Run.sample`) drawn like `run`'s data:
    `run` is a Run or the OpenedRun of gengraph.plugins.run.sampling."""
    import numpy as np

    if not (hasattr(run, "data") or hasattr(run, "opened")):
        raise TypeError(f"run must be a gengraph Run (gengraph.run / gengraph.load) or an opened run, "
                        f"not {type(run).__name__} {run!r}")
    data = run.data if hasattr(run, "data") else run.opened().data
    return SampleImages(np.asarray(samples), data, title)


# --- progress --------------------------------------------------------------------------------------------
PROGRESS_MODES = ("auto", "notebook", "bar", "text", "none")


def in_notebook() -> bool:
    """True inside a Jupyter kernel (ipykernel's ZMQ shell)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def has_ipywidgets() -> bool:
    import importlib.util

    return importlib.util.find_spec("ipywidgets") is not None


def choose_progress(progress="auto", *, stream=None) -> str:
    """notebook (tqdm's widget bar), bar (tqdm on a terminal), text (a line every few epochs) or none."""
    if progress in (None, False, "none", "quiet"):
        return "none"
    if progress is True:
        progress = "auto"
    if progress not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {', '.join(PROGRESS_MODES)} (or None), found {progress!r}")
    if progress == "notebook" and not has_ipywidgets():
        raise ImportError('progress="notebook" needs ipywidgets: pip install ipywidgets (or use progress="text")')
    if progress != "auto":
        return progress
    if in_notebook():
        return "notebook" if has_ipywidgets() else "text"
    stream = stream or sys.stderr
    return "bar" if getattr(stream, "isatty", lambda: False)() else "text"


def make_progress(progress, epochs: int, *, stream=None):
    """A runner progress object (epoch(row), close()) for the chosen mode."""
    mode = choose_progress(progress, stream=stream)
    p = Progress(epochs, quiet=True, stream=stream or sys.stderr)  # builds no bar
    p.mode = mode
    if mode == "none":
        return p
    p.quiet = False
    # the bar is made as training begins (Progress.start), at a resumed run's checkpoint epoch
    if mode == "notebook":
        from tqdm.notebook import tqdm

        p.make_bar = lambda initial, postfix=None: tqdm(total=epochs, initial=initial, unit="epoch", postfix=postfix)
    elif mode == "bar":
        from tqdm import tqdm

        p.make_bar = lambda initial, postfix=None: tqdm(total=epochs, initial=initial, unit="epoch", file=p.stream,
                                                       postfix=postfix)
    return p
