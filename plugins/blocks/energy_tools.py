"""Helpers the energy-based plugins (rbm, ebm) share: programs, sample statistics, probes, plots.

* `program(model, ctx, name)`: a named program of the model, compiled by the trainer or now;
* `mmd` (Gaussian kernel, median-heuristic bandwidth) and `energy_distance` between samples;
* `softmax_regression`: a linear softmax classifier fitted with L-BFGS on the engine's
  gradients (used to probe learned features);
* plots: an energy/density landscape over a 2-D grid and a grid of weight filters.
"""

from __future__ import annotations

import numpy as np

from gengraph.engine import Graph, compile, grad, ops, to_numpy


def run_batched(prog, feeds_fn, n, key, batch=4096):
    """Concatenate output `key` of prog over rows 0..n in chunks; feeds_fn(lo, hi) -> feeds."""
    return np.concatenate([to_numpy(prog.run(feeds_fn(i, min(i + batch, n)))[key]) for i in range(0, n, batch)])


# --- two-sample statistics --------------------------------------------------------------
def _sq_dists(a, b):
    d = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def median_bandwidth(x) -> float:
    """The median heuristic: the median pairwise distance between distinct rows of x."""
    x = np.asarray(x, np.float64)
    d = np.sqrt(_sq_dists(x, x))[np.triu_indices(len(x), 1)]
    med = float(np.median(d)) if d.size else 1.0
    return med if med > 0 else 1.0


def mmd(x, y, bandwidth) -> float:
    """sqrt of the biased (V-statistic) squared MMD with kernel exp(-|u - v|^2 / (2 bandwidth^2))."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    k = lambda a, b: np.exp(-_sq_dists(a, b) / (2.0 * bandwidth ** 2))  # noqa: E731
    m2 = k(x, x).mean() + k(y, y).mean() - 2.0 * k(x, y).mean()
    return float(np.sqrt(max(m2, 0.0)))


def energy_distance(x, y) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely), V-statistic form."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = lambda a, b: np.sqrt(_sq_dists(a, b)).mean()  # noqa: E731
    return float(2.0 * d(x, y) - d(x, x) - d(y, y))


NARROW = 5.0  # the *_mmd_narrow statistics use the median-heuristic bandwidth / NARROW


def sample_vs_data_stats(samples, test, seed=0, repeats=10) -> dict:
    """MMD and energy distance of samples vs held-out data, next to the same statistics of two
    disjoint random halves of the held-out data (the resampled-data baseline: what a perfect
    sampler would score at this sample size).

    Each repeat splits the held-out rows into halves A and B at random and draws |A| of the
    samples S: the test statistic is stat(S, B), the baseline stat(A, B), with equal sizes
    and one bandwidth (the median heuristic on the held-out rows); both are averaged over
    the repeats. The MMD is also given at a bandwidth NARROW times smaller, which is more
    sensitive to fine structure (thin manifolds such as the moons)."""
    samples, test = np.asarray(samples, np.float64), np.asarray(test, np.float64)
    rng = np.random.default_rng(seed)
    half = min(len(test) // 2, len(samples))
    bw = median_bandwidth(test)
    sums: dict = {}
    for _ in range(repeats):
        order = rng.permutation(len(test))
        a, b = test[order[:half]], test[order[half:2 * half]]
        s = samples[rng.permutation(len(samples))[:half]]
        for name, fn in (("mmd", lambda u, v: mmd(u, v, bw)), ("mmd_narrow", lambda u, v: mmd(u, v, bw / NARROW)),
                         ("energy_distance", energy_distance)):
            sums[f"test_{name}"] = sums.get(f"test_{name}", 0.0) + fn(s, b) / repeats
            sums[f"baseline_{name}"] = sums.get(f"baseline_{name}", 0.0) + fn(a, b) / repeats
    return {**sums, "mmd_bandwidth": bw, "mmd_sample_size": int(half), "mmd_repeats": repeats}


# --- a linear probe -----------------------------------------------------------------------
def softmax_regression(x_train, y_train, x_test, y_test, n_classes, *, l2=1e-4, max_iter=300) -> dict:
    """Multinomial logistic regression fitted by L-BFGS on engine gradients; train/test accuracy."""
    from gengraph.plugins.blocks.lbfgs import lbfgs

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
    from gengraph.plugins.blocks.plots import _figure, _save

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
    from gengraph.plugins.blocks.plots import _figure, _save, display_image

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
