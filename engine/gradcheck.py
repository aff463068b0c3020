"""Central finite differences in float64: the check behind the tests and `gengraph gradcheck`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class GradCheckRow:
    name: str
    max_abs_err: float
    max_rel_err: float
    ok: bool


@dataclass
class GradCheckReport:
    rows: list[GradCheckRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def __str__(self):
        lines = [f"{'parameter':30s} {'max abs err':>12s} {'max rel err':>12s}  result"]
        for r in self.rows:
            lines.append(f"{r.name:30s} {r.max_abs_err:12.3e} {r.max_rel_err:12.3e}  {'ok' if r.ok else 'FAIL'}")
        return "\n".join(lines)

    def assert_ok(self):
        if not self.ok:
            raise AssertionError("gradient check failed:\n" + str(self))


def central_differences(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f / d x by central differences, perturbing x in place (restored afterwards)."""
    g = np.zeros(x.shape, dtype=np.float64)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = float(f())
        flat[i] = old - eps
        fm = float(f())
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def compare(name, analytic, numeric, rtol, atol) -> GradCheckRow:
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    err = np.abs(analytic - numeric)
    scale = np.maximum(np.abs(analytic), np.abs(numeric))
    rel = np.where(scale > 0, err / np.where(scale > 0, scale, 1), 0.0)
    ok = bool(np.all(err <= atol + rtol * scale))
    return GradCheckRow(name, float(err.max(initial=0.0)), float(rel.max(initial=0.0)), ok)


def check_grads(f, inputs: dict, wrt=None, *, eps=1e-6, rtol=1e-5, atol=1e-8, seed=0) -> GradCheckReport:
    """Compare the engine's gradients with central finite differences, in float64.

    `f` is an expression string or a function ``f(**nodes) -> Node`` building the output
    from input nodes; a non-scalar output is contracted with a fixed random cotangent so
    that every element is checked. `wrt` defaults to every input.
    """
    from . import expr as expr_lang
    from .autodiff import grad
    from .compiler import compile
    from .graph import Graph
    from . import ops

    wrt = list(inputs) if wrt is None else list(wrt)
    g = Graph(dtype="float64", seed=seed)
    arrays = {k: np.array(v, dtype=np.float64) for k, v in inputs.items()}
    nodes = {k: g.input(k, a.shape) for k, a in arrays.items()}
    out = expr_lang.build(f, nodes) if isinstance(f, str) else f(**nodes)
    if out.shape != ():
        cot = np.random.default_rng(seed).normal(size=out.shape)
        out = ops.sum(out * g.constant(cot, dtype="float64"))
    grads = grad(out, [nodes[k] for k in wrt])
    value_prog = compile(g, out)
    grad_prog = compile(g, dict(zip(wrt, grads)))
    analytic = grad_prog.run(arrays)
    report = GradCheckReport()
    for k in wrt:
        numeric = central_differences(lambda: value_prog.run(arrays), arrays[k], eps)
        report.rows.append(compare(k, analytic[k], numeric, rtol, atol))
    return report


def value_and_grad(expression: str, inputs: dict, wrt: list[str]):
    """Value of a scalar expression and its gradients w.r.t. the named inputs (float64 NumPy)."""
    from . import expr as expr_lang
    from .autodiff import grad
    from .backend import to_numpy
    from .compiler import compile
    from .graph import Graph

    g = Graph(dtype="float64")
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}
    nodes = {k: g.input(k, a.shape) for k, a in arrays.items()}
    unknown = [w for w in wrt if w not in nodes]
    if unknown:
        raise KeyError(f"wrt names {unknown} are not inputs ({sorted(nodes)})")
    out = expr_lang.build(expression, nodes)
    if out.shape != ():
        raise ValueError(f"value_and_grad needs a scalar expression; {expression!r} has shape {out.shape}")
    grads = grad(out, [nodes[w] for w in wrt])
    res = compile(g, [out] + grads).run(arrays)
    return np.asarray(to_numpy(res[0]), np.float64), {w: np.asarray(to_numpy(r), np.float64)
                                                      for w, r in zip(wrt, res[1:])}
