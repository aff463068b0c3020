"""PNG plots through matplotlib's object API (Figure + Agg canvas; no pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gengraph.plugins.blocks.files import atomic_write


def _figure(w=5.0, h=3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    import io

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    atomic_write(Path(path), buf.getvalue())


def loss_curves(history: list[dict], path, label: str = "loss", final: dict | None = None):
    """Train and test loss per epoch, log scale when positive; `label` says what the loss is.
    A run with one line (a closed-form fit) gets bars of its final values (with `final`, the
    summary's) instead of one dot."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    if label != "loss":
        ax.set_title(label, fontsize=8, wrap=True)
    if len(history) <= 1:
        row = {**(history[0] if history else {}), **(final or {})}  # the summary's train_/test_ values too
        keys = [k for k in row if k.startswith(("train_", "test_")) and isinstance(row[k], (int, float))
                and not isinstance(row[k], bool) and np.isfinite(row[k])]
        ax.bar(range(len(keys)), [row[k] for k in keys], color=["C0" if k.startswith("train_") else "C1"
                                                                 for k in keys])
        ax.set_xticks(range(len(keys)), [k.replace("_", " ") for k in keys], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("final value")
        if label == "loss":
            ax.set_title("one fit, no epochs: final train and test values", fontsize=9)
        _save(fig, path)
        return fig
    epochs = [r["epoch"] for r in history]
    for key, style in (("train_loss", "-"), ("test_loss", "--")):
        ys = [r.get(key) for r in history]
        if any(y is not None for y in ys):
            ax.plot(epochs, [np.nan if y is None else y for y in ys], style, marker="." if len(ys) < 30 else None,
                    label=key.replace("_", " "))
    vals = [r.get(k) for r in history for k in ("train_loss", "test_loss") if r.get(k) is not None]
    if vals and min(vals) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    _save(fig, path)
    return fig


def fit_1d(x, y, x_grid, y_grid, path, title="fit vs data") -> None:
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(x, y, s=8, alpha=0.6, label="data")
    ax.plot(x_grid, y_grid, color="C3", label="model")
    ax.set_title(title)
    ax.legend()
    _save(fig, path)


def confusion_matrix(y_true, y_pred, n_classes, path, labels=None) -> np.ndarray:
    """Counts of (true, predicted) classes; every class is labelled on both axes."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    fig = _figure(4.5, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(cm, cmap="Blues")
    names = [str(c) for c in (labels if labels is not None else range(n_classes))]
    size = 8 if n_classes <= 12 else 6
    ax.set_xticks(range(n_classes), names, fontsize=size, rotation=90 if n_classes > 12 else 0)
    ax.set_yticks(range(n_classes), names, fontsize=size)
    for i in range(n_classes):
        for j in range(n_classes):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax)
    _save(fig, path)
    return cm


def _side_by_side(shape) -> bool:
    """Channels imshow cannot take as colours (2, or more than 4): shown side by side in grey."""
    return len(shape) == 3 and shape[0] not in (1, 3, 4)


def display_image(flat, shape):
    """One image stored as prod(shape) values -> what imshow takes: (H, W) for a shape (H, W)
    or (1, H, W), (H, W, C) for (C, H, W) colour images (C = 3 or 4, NCHW data), and for other
    channel counts the channels side by side, (H, C * W) in grey (imshow refused them)."""
    a = np.asarray(flat).reshape(shape)
    if a.ndim == 3:
        if _side_by_side(shape):
            return np.concatenate(list(a), axis=1)
        a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    return a


def display_hw(shape) -> tuple:
    """(H, W) of what display_image gives for an image shape (H, W) or (C, H, W)."""
    if _side_by_side(shape):
        return (shape[1], shape[0] * shape[2])
    return tuple(shape[-2:])


def is_colour(shape) -> bool:
    """(C, H, W) images that imshow shows in colour (C = 3 or 4)."""
    return len(shape) == 3 and shape[0] in (3, 4)


def unit_range(images):
    """Colour images scaled together to [0, 1], which imshow's RGB(A) takes (it clips the rest:
    grey levels 0..255 were drawn white)."""
    a = np.asarray(images, np.float64)
    lo, hi = (float(np.nanmin(a)), float(np.nanmax(a))) if a.size else (0.0, 1.0)
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def image_grid(images, shape, path, title="", cols=None) -> None:
    """Images (n, prod(shape)) in a grid, grey scale, or in colour for 3 or 4 channels; shape
    (H, W) or (C, H, W)."""
    images = unit_range(images) if is_colour(shape) else np.asarray(images)
    n = len(images)
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig = _figure(cols * 0.6 + 0.4, rows * 0.6 + 0.5)
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(display_image(images[i], shape), cmap="gray_r")
        ax.axis("off")
    if title:
        fig.suptitle(title)
    _save(fig, path)


def sample_picture(samples, ref, image_shape, path_of, title) -> str | None:
    """A generative report's samples.png, in data units: an image grid of the first 64 samples of
    image data, a scatter over the reference rows `ref` of 2-D data; which it drew (None: neither).
    `path_of(name)` gives the file (ctx.path), called only when something is drawn."""
    d = samples.shape[1]
    if image_shape is not None and int(np.prod(image_shape)) == d:
        image_grid(samples[:64], image_shape, path_of("samples.png"), title=title)
        return "images"
    if d == 2:
        scatter_vs_data(samples, ref, path_of("samples.png"), title=title + " vs test data")
        return "scatter"
    return None


def scatter_vs_data(samples, data, path, title="samples vs data") -> None:
    fig = _figure(4.5, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(data[:, 0], data[:, 1], s=4, alpha=0.4, label="data")
    ax.scatter(samples[:, 0], samples[:, 1], s=4, alpha=0.6, color="C3", label="samples")
    ax.set_title(title)
    ax.legend()
    _save(fig, path)


MAX_BARS = 60  # labelled bars that still read at 0.25 inch each (15 + 1.5 inches wide)


def coefficients(terms, theta, path, title="fitted coefficients") -> None:
    """One bar per design-matrix term (a closed-form fit has no curve over epochs to show); past
    MAX_BARS terms the MAX_BARS largest in magnitude, in design order, and the title says so (one
    bar per term made a 136 550-pixel-wide image of 5456 terms, and took 30 s)."""
    theta = np.asarray(theta, np.float64).reshape(-1)
    terms = [str(t) for t in terms]
    shown = np.arange(len(theta))
    if len(theta) > MAX_BARS:
        shown = np.sort(np.argsort(-np.abs(theta), kind="stable")[:MAX_BARS])
        title = f"{title}: the {MAX_BARS} largest |coefficients| of {len(theta)}"
    fig = _figure(max(5.0, 0.25 * len(shown) + 1.5), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    values = theta[shown]
    ax.bar(range(len(shown)), values, color=["C0" if v >= 0 else "C3" for v in values])
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xticks(range(len(shown)), [terms[i] for i in shown], rotation=90, fontsize=7)
    ax.set_ylabel("coefficient")
    ax.set_title(title)
    _save(fig, path)
