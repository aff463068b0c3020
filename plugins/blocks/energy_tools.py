"""Helpers the energy-based plugins (rbm, ebm) share: programs, sample statistics, probes, plots.

* `program(model, ctx, name)`: a named program of the model, compiled by the trainer or now;
* sample statistics (MMD with permutation tests, energy distance) live in `sample_quality`;
* `softmax_regression`: a linear softmax classifier fitted with L-BFGS on the engine's
  gradients (used to probe learned features);
* plots: an energy/density landscape over a 2-D grid and a grid of weight filters.
"""

from __future__ import annotations

import numpy as np

from gengraph.engine import Graph, compile, grad, ops, to_numpy
from gengraph.plugins.blocks.lbfgs import lbfgs
from gengraph.plugins.blocks.plots import _figure, _save, display_image


def run_batched(prog, feeds_fn, n, key, batch=4096):
    """Concatenate output `key` of prog over rows 0..n in chunks; feeds_fn(lo, hi) -> feeds."""
    return np.concatenate([to_numpy(prog.run(feeds_fn(i, min(i + batch, n)))[key]) for i in range(0, n, batch)])


# --- a linear probe -----------------------------------------------------------------------
def softmax_regression(x_train, y_train, x_test, y_test, n_classes, *, l2=1e-4, max_iter=300) -> dict:
    """Multinomial logistic regression fitted by L-BFGS on engine gradients; train/test accuracy."""
    x_train, x_test = np.asarray(x_train, np.float64), np.asarray(x_test, np.float64)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    xtr, xte = (x_train - mean) / std, (x_test - mean) / std
    d = xtr.shape[1]
    g = Graph(dtype="float64")
    x = g.input("x", (None, d))
    y = g.input("y", (None,), dtype="int64")
    with g.scope("probe"):
        W = g.param("W", np.zeros((d, n_classes)))
        b = g.param("b", np.zeros(n_classes))
        z = x @ W + b
        loss = ops.mean(ops.softmax_cross_entropy(z, y)) + l2 * ops.sum(ops.square(W))
    prog = compile(g, [loss] + grad(loss, [W, b]))
    predict = compile(g, z)
    feeds = {"x": xtr, "y": np.asarray(y_train, np.int64)}

    def value_and_grad(vec):
        g.set_value(W, vec[:d * n_classes].reshape(d, n_classes))
        g.set_value(b, vec[d * n_classes:])
        out = prog.run(feeds)
        return float(out[0]), np.concatenate([np.asarray(out[1]).ravel(), np.asarray(out[2]).ravel()])

    vec, _, _ = lbfgs(value_and_grad, np.zeros(d * n_classes + n_classes), max_iter=max_iter, tol=1e-9)
    value_and_grad(vec)
    acc = lambda xs, ys: float(np.mean(np.argmax(predict.run(x=xs), 1) == ys))  # noqa: E731
    return {"train_accuracy": acc(xtr, y_train), "test_accuracy": acc(xte, y_test)}


# --- plots ----------------------------------------------------------------------------
def grid_2d(points, n=120, margin=0.25):
    """A square grid covering the points (with a margin): (xs, ys, grid rows (n*n, 2))."""
    lo, hi = points.min(0), points.max(0)
    pad = margin * (hi - lo)
    xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], n)
    ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], n)
    gx, gy = np.meshgrid(xs, ys)
    return xs, ys, np.stack([gx.ravel(), gy.ravel()], axis=1)


def landscape(xs, ys, values, data, samples, path, title, label) -> None:
    """Filled contours of values on the grid (data units), with data and samples on top."""
    fig = _figure(5.2, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    cs = ax.contourf(xs, ys, values.reshape(len(ys), len(xs)), levels=30, cmap="viridis")
    fig.colorbar(cs, ax=ax, label=label)
    ax.scatter(data[:, 0], data[:, 1], s=3, c="white", alpha=0.5, label="data")
    if samples is not None:
        ax.scatter(samples[:, 0], samples[:, 1], s=3, c="C3", alpha=0.6, label="samples")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    _save(fig, path)


def filters(W, shape, path, title="weight filters", max_filters=64) -> None:
    """Columns of W (n_visible, n_hidden) as images, each on its own symmetric colour scale."""
    k = min(W.shape[1], max_filters)
    cols = int(np.ceil(np.sqrt(k)))
    rows = int(np.ceil(k / cols))
    fig = _figure(cols * 0.7 + 0.4, rows * 0.7 + 0.6)
    for j in range(k):
        ax = fig.add_subplot(rows, cols, j + 1)
        w = display_image(W[:, j], shape)
        m = float(np.abs(w).max()) or 1.0
        ax.imshow(w, cmap="RdBu_r", vmin=-m, vmax=m)
        ax.axis("off")
    fig.suptitle(title)
    _save(fig, path)
