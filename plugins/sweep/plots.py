"""Sweep figures: a heatmap for 2-axis grids, a curve for 1 axis, one panel per axis otherwise.

Matplotlib's object API only (Figure + Agg canvas, via plots._figure/_save). Numeric axes
whose values are log-spaced (or span more than a factor of 20) get a log scale; other
numeric axes a linear one; anything else (strings, tables) is drawn as categories.
Failed trials show as grey cells (heatmap) or are counted in the title.
"""

from __future__ import annotations

import math

import numpy as np

from gengraph.plugins.blocks.plots import _figure, _save


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def scale_of(values, log_hint: bool = False) -> str:
    """"log", "linear" or "cat" for an axis's values."""
    if not values or not all(_number(v) for v in values) or len(set(values)) != len(values):
        return "cat"
    vs = sorted(float(v) for v in values)
    if vs[0] > 0 and (log_hint or (len(vs) > 1 and vs[-1] / vs[0] >= 20)):
        return "log"
    if vs[0] > 0 and len(vs) >= 3:
        steps = np.diff(np.log(vs))
        if steps.min() > math.log(1.5) and steps.max() - steps.min() < 0.05 * steps.mean():
            return "log"  # 1, 2, 4, 8 or 16, 32, 64, 128
    return "linear"


def _edges(centers: np.ndarray, kind: str) -> np.ndarray:
    t = np.log10(centers) if kind == "log" else np.asarray(centers, float)
    if len(t) == 1:
        e = np.array([t[0] - 0.5, t[0] + 0.5])
    else:
        mid = (t[1:] + t[:-1]) / 2
        e = np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])
    return 10 ** e if kind == "log" else e


def _label(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v) if isinstance(v, (int, str)) else repr(v)


def _axis_layout(values, kind):
    """(order of the values along the axis, cell centres, cell edges, tick labels)."""
    n = len(values)
    if kind == "cat":
        order = list(range(n))
        centers = np.arange(n, dtype=float)
        return order, centers, np.arange(n + 1) - 0.5, [_label(v) for v in values]
    order = sorted(range(n), key=lambda i: values[i])
    centers = np.array([float(values[i]) for i in order])
    return order, centers, _edges(centers, kind), [_label(values[i]) for i in order]


def _set_ticks(axis, kind, centers, labels):
    from matplotlib.ticker import FixedLocator, NullLocator

    if kind == "log":
        axis.set_major_locator(FixedLocator(centers))
        axis.set_minor_locator(NullLocator())
    else:
        axis.set_major_locator(FixedLocator(centers))
    axis.set_ticklabels(labels)


SPAN = 1e4  # colour and y ranges stop at SPAN x the best value: a diverged 1e300 must not squash the rest


def _norm(z: np.ndarray):
    from matplotlib.colors import LogNorm, Normalize

    finite = z[np.isfinite(z)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 10:
        return LogNorm(vmin=finite.min(), vmax=min(finite.max(), finite.min() * SPAN))
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        return Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-12)
    return Normalize(0, 1)


def _metric_value(record, metric):
    v = record.get("metrics", {}).get(metric) if record.get("status") == "ok" else None
    return float(v) if _number(v) else math.nan


def heatmap(axes, records, metric, mode, path, title="") -> np.ndarray:
    """Metric over a 2-axis grid: rows = first axis, columns = second; best cell outlined.

    Returns the metric matrix (rows/columns in the plotted order; NaN where a trial failed).
    """
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    a0, a1 = axes
    n0, n1 = len(a0.values), len(a1.values)
    z = np.full((n0, n1), np.nan)
    failed = np.zeros((n0, n1), bool)
    for r in records:
        i, j = divmod(r["index"], n1)
        z[i, j] = _metric_value(r, metric)
        failed[i, j] = r.get("status") != "ok"
    k0, k1 = scale_of(a0.values, a0.log), scale_of(a1.values, a1.log)
    o0, c0, e0, l0 = _axis_layout(a0.values, k0)
    o1, c1, e1, l1 = _axis_layout(a1.values, k1)
    z, failed = z[np.ix_(o0, o1)], failed[np.ix_(o0, o1)]

    fig = _figure(min(12.0, max(5.2, 1.9 + 0.8 * n1)), min(10.0, max(3.8, 1.3 + 0.42 * n0)))
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["viridis_r" if mode == "min" else "viridis"].with_extremes(bad="0.85", over="0.55")
    norm = _norm(z)
    mesh = ax.pcolormesh(e1, e0, np.ma.masked_invalid(z), cmap=cmap, norm=norm, shading="flat")
    if k1 == "log":
        ax.set_xscale("log")
    if k0 == "log":
        ax.set_yscale("log")
    _set_ticks(ax.xaxis, k1, c1, l1)
    _set_ticks(ax.yaxis, k0, c0, l0)
    if n0 * n1 <= 200:
        for i in range(n0):
            for j in range(n1):
                if failed[i, j]:
                    text, color = "failed", "black"
                elif math.isnan(z[i, j]):
                    text, color = "-", "black"
                else:
                    r, g, b, _ = cmap(norm(z[i, j]))
                    text, color = f"{z[i, j]:.3g}", "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                ax.text(c1[j], c0[i], text, ha="center", va="center", fontsize=7, color=color)
    if np.isfinite(z).any():
        flat = np.nanargmin(z) if mode == "min" else np.nanargmax(z)
        i, j = divmod(int(flat), n1)
        ax.add_patch(Rectangle((e1[j], e0[i]), e1[j + 1] - e1[j], e0[i + 1] - e0[i], fill=False,
                               edgecolor="red", linewidth=2))
    ax.set_xlabel(a1.key + (" (log scale)" if k1 == "log" else ""))
    ax.set_ylabel(a0.key + (" (log scale)" if k0 == "log" else ""))
    over = bool(np.isfinite(z).any() and np.nanmax(z) > norm.vmax)
    fig.colorbar(mesh, ax=ax, label=metric, extend="max" if over else "neither")
    nf = int(failed.sum())
    ax.set_title(title + (f"; {nf} failed" if nf else ""), fontsize=10)
    _save(fig, path)
    return z


def _scatter_axis(ax, axis, records, metric, mode, connect):
    xs = [r["overrides"].get(axis.key) for r in records]
    ys = [_metric_value(r, metric) for r in records]
    if axis.values is not None:
        cats = list({repr(v): v for v in axis.values}.values())  # distinct, in the written order
        kind = scale_of(cats, axis.log)
    else:  # a random range: numbers
        cats, kind = None, "log" if axis.log else "linear"
    if kind == "cat":
        keys = [repr(v) for v in cats]
        pos = [keys.index(repr(x)) if repr(x) in keys else math.nan for x in xs]
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels([_label(v) for v in cats], rotation=30 if len(cats) > 6 else 0)
    else:
        pos = [float(x) if _number(x) else math.nan for x in xs]
        if kind == "log":
            ax.set_xscale("log")
    pts = sorted((p, y) for p, y in zip(pos, ys) if not math.isnan(p) and not math.isnan(y))
    if pts:
        px, py = zip(*pts)
        ax.plot(px, py, "-o" if connect else "o", markersize=4)
        best = min(pts, key=lambda t: t[1]) if mode == "min" else max(pts, key=lambda t: t[1])
        ax.plot([best[0]], [best[1]], "*", color="red", markersize=13, label=f"best {best[1]:.4g}")
        ax.legend(fontsize=8)
        if min(py) > 0 and max(py) / min(py) > 10:
            ax.set_yscale("log")
            if max(py) / min(py) > SPAN:
                off = sum(y > min(py) * SPAN for y in py)
                ax.set_ylim(min(py) / 1.5, min(py) * SPAN)
                ax.text(0.98, 0.98, f"{off} above the scale", transform=ax.transAxes, ha="right", va="top",
                        fontsize=8)
    ax.set_xlabel(axis.key + (" (log scale)" if kind == "log" else ""))
    ax.set_ylabel(metric)
    return sum(r.get("status") != "ok" for r in records)


def curve(axis, records, metric, mode, path, title="") -> None:
    """Metric against the one swept axis; the best trial starred."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    nf = _scatter_axis(ax, axis, records, metric, mode, connect=axis.values is not None)
    ax.set_title(title + (f"; {nf} failed" if nf else ""), fontsize=10)
    _save(fig, path)


def panels(axes, records, metric, mode, path, title="") -> None:
    """One panel per axis: the metric of every trial against that axis's value."""
    n = len(axes)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = _figure(4.0 * cols, 3.3 * rows + 0.4)
    nf = 0
    for k, axis in enumerate(axes):
        ax = fig.add_subplot(rows, cols, k + 1)
        nf = _scatter_axis(ax, axis, records, metric, mode, connect=False)
    fig.suptitle(title + (f"; {nf} failed" if nf else ""), fontsize=10)
    _save(fig, path)
