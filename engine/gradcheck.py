"""Central finite differences in float64: the check behind the tests and `gengraph gradcheck`.

One finite-difference loop (`central_differences`) and one report (`GradCheckReport`,
one `GradCheckRow` per checked input or parameter) serve both checks:

* ``check_grads(f, inputs)`` checks an expression or graph-building function of fed
  inputs (every entry);
* ``check_loss_grads(loss, params, feeds)`` checks a built model's scalar loss with respect
  to its parameters, on the graph's own values (perturbed in place and restored), on a
  seeded subset of entries for big parameters; random draws and ``stop_gradient`` values
  are frozen first, so stochastic losses become deterministic functions of the parameters.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from . import expr as expr_lang
from .expr import ExprError, UnknownInput
from . import ops
from .autodiff import grad
from .backend import to_numpy
from .compiler import compile_graph
from .graph import Graph, Node, topo_order
from .metrics import fmt_shape
from .ops import OPS
from .passes import clone
from .tables import render_rows

ROUNDOFF_FACTOR = 8


@dataclass
class GradCheckRow:
    """One checked input or parameter: the worst entry's errors and whether all passed."""

    name: str
    max_abs_err: float
    max_rel_err: float
    ok: bool
    shape: tuple = ()
    checked: int = 0  # entries compared
    total: int = 0  # entries in the array (more than `checked` when a random subset was checked)
    zero: bool = False  # every checked entry is exactly 0 on both sides: agreement that verifies nothing


@dataclass
class GradCheckReport:
    """Rows of a gradient check; for a model loss also the loss and what was held fixed."""

    rows: list[GradCheckRow] = field(default_factory=list)
    loss: float | None = None
    frozen_random: int = 0  # random draws computed once and fed as constants
    frozen_stop_gradient: int = 0  # stop_gradient values computed once and fed as constants
    roundoff_floor: float = 0.0  # added to atol: the finite differences' own rounding error
    scale: float = 0.0  # the largest |scalar| the loss is computed from (sets the floor)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def table(self) -> str:
        header, rows, right = self.table_rows()
        lines = render_rows(header, rows, right)
        if self.roundoff_floor:  # said: an entry within it passes though its relative error may be large
            lines.append(f"(an entry passes within atol + rtol * |gradient| + {self.roundoff_floor:.3g}, what central "
                         f"differences can resolve at an output of {self.scale:.3g})")
        return "\n".join(lines)

    def table_rows(self):
        """(header, rows, right-aligned column indices) of `table`, for other renderings (HTML)."""
        header = ("parameter", "shape", "checked", "max abs err", "max rel err", "result")
        rows = []
        for r in self.rows:
            checked = f"{r.checked}/{r.total}" + (" (random subset)" if r.checked < r.total else "")
            rows.append((r.name, fmt_shape(r.shape), checked, f"{r.max_abs_err:.3e}", f"{r.max_rel_err:.3e}",
                         "FAIL" if not r.ok else "zero" if r.zero else "ok"))
        return header, rows, (3, 4)

    def __str__(self):
        return self.table()

    def assert_ok(self):
        if not self.ok:
            raise AssertionError("gradient check failed:\n" + str(self))


def central_differences(f, x: np.ndarray, eps: float = 1e-6, index=None) -> np.ndarray:
    """d f / d x by central differences, perturbing x in place (restored afterwards).

    With `index` (flat positions) only those entries, as a 1-D array; else all, shaped like x.
    x must be writable through ``x.reshape(-1)`` (C-contiguous).
    """
    if not x.flags.c_contiguous:  # reshape(-1) would copy, and the perturbations would go nowhere
        raise ValueError("central_differences needs a C-contiguous array to perturb in place")
    flat = x.reshape(-1)
    positions = range(flat.size) if index is None else index
    out = np.empty(len(positions), dtype=np.float64)
    for j, i in enumerate(positions):
        old = flat[i].item()  # a Python float: on CuPy flat[i] is a 0-d view, which the next line would change
        flat[i] = old + eps
        fp = float(f())
        flat[i] = old - eps
        fm = float(f())
        flat[i] = old
        out[j] = (fp - fm) / (2 * eps)
    return out.reshape(x.shape) if index is None else out


def compare(name, analytic, numeric, rtol, atol, shape=None, total=None) -> GradCheckRow:
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    err = np.abs(analytic - numeric)
    scale = np.maximum(np.abs(analytic), np.abs(numeric))
    rel = np.where(scale > 0, err / np.where(scale > 0, scale, 1), 0.0)
    ok = bool(np.all(err <= atol + rtol * scale))
    shape = tuple(analytic.shape) if shape is None else tuple(shape)
    return GradCheckRow(name, float(err.max(initial=0.0)), float(rel.max(initial=0.0)), ok, shape, int(err.size),
                        int(err.size) if total is None else int(total),
                        zero=bool(err.size and not np.any(analytic) and not np.any(numeric)))


def check_grads(f, inputs: dict, wrt=None, *, eps=1e-6, rtol=1e-5, atol=1e-8, seed=0) -> GradCheckReport:
    """Compare the engine's gradients with central finite differences, in float64.

    `f` is an expression string or a function ``f(**nodes) -> Node`` building the output
    from input nodes; a non-scalar output is contracted with a fixed random cotangent so
    that every element is checked. `wrt` defaults to every input. An entry passes when its
    error is at most atol + rtol * |gradient| + the differences' rounding floor (`roundoff_floor`,
    as `gengraph gradcheck`'s; in the report).
    """
    wrt = list(inputs) if wrt is None else ([wrt] if isinstance(wrt, str) else list(wrt))
    if not (isinstance(eps, numbers.Real) and 0 < eps < 1):  # 0 divided by zero; a negative one passed
        raise ValueError(f"check_grads: eps must be a step in (0, 1), e.g. 1e-6; found {eps!r}")
    g = Graph(dtype="float64", seed=seed)
    arrays = {k: np.array(v, dtype=np.float64, order="C") for k, v in inputs.items()}
    nodes = {k: g.input(k, a.shape) for k, a in arrays.items()}
    _check_wrt(f if isinstance(f, str) else getattr(f, "__name__", "f"), wrt, nodes)  # was a bare KeyError
    out = _output_node(f, expr_lang.build(f, nodes) if isinstance(f, str) else f(**nodes))
    if out.shape != ():
        cot = np.random.default_rng(seed).normal(size=out.shape)
        out = ops.sum(out * g.constant(cot, dtype="float64"))
    grads = grad(out, [nodes[k] for k in wrt])
    value_prog = compile_graph(g, out)
    grad_prog = compile_graph(g, dict(zip(wrt, grads)))
    analytic = grad_prog.run(arrays)
    # the differences' own rounding (a second-order check's loss of 2e5 rounds to ~3e-11, 3e-5 after
    # the division by eps): without it correct gradients were reported as FAIL
    floor, scale = roundoff_floor(g, out, float(value_prog.run(arrays)), arrays, eps, terms=False)
    report = GradCheckReport(roundoff_floor=floor, scale=scale)
    for k in wrt:
        numeric = central_differences(lambda: value_prog.run(arrays), arrays[k], eps)
        report.rows.append(compare(k, analytic[k], numeric, rtol, atol + floor))
    return report


def roundoff_floor(graph, out: Node, value: float, feeds: dict, eps: float, backend="numpy",
                   terms=True) -> tuple[float, float]:
    """(floor, scale): central differences of the scalar `out` (worth `value`) resolve no better than its
    rounding, a few units in the last place of `scale`, divided by eps; the floor is added to atol.
    scale is |value|, or with `terms` the largest |scalar| out is computed from (a model's loss that
    is a difference of large terms, like free energies, rounds like those terms; but a large scalar
    that out barely depends on, big * 1e-9 or 0 * big, then makes the floor hide a wrong gradient,
    so check_grads, for any expression, takes |value| alone)."""
    if out.dtype.kind != "f":
        return 0.0, abs(value)
    scalars = [n for n in topo_order([out]) if n.shape == () and not n.is_leaf and n.dtype.kind == "f"] if terms else []
    scale = abs(value)
    if scalars:
        program = compile_graph(graph, scalars, backend=backend)
        scale = max([scale] + [abs(float(to_numpy(v))) for v in program.run({k: feeds[k] for k in program.feed_names})])
    return ROUNDOFF_FACTOR * float(np.finfo(out.dtype).eps) * scale / eps, scale


def _check_wrt(expression, wrt, nodes) -> None:
    """UnknownInput for names in `wrt` that are not inputs."""
    unknown = [w for w in wrt if w not in nodes]
    if unknown:
        raise UnknownInput(expression, None, f"wrt names {unknown} are not inputs (the inputs: {sorted(nodes)})")


def _output_node(expression, out):
    """The built output, which must depend on the inputs: "1+2" built a number, and its shape
    was an AttributeError."""
    if not isinstance(out, Node):
        raise ExprError(expression if isinstance(expression, str) else repr(expression), None,
                        f"the expression is the constant {out!r}; it uses none of the inputs, so it has no "
                        "gradient")
    return out


def value_and_grad(expression: str, inputs: dict, wrt: list[str]):
    """Value of a scalar expression and its gradients w.r.t. the named inputs (float64 NumPy)."""
    g = Graph(dtype="float64")
    arrays = {}
    for k, v in inputs.items():
        try:
            arrays[k] = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError) as exc:  # strings, ragged lists: said of the input, not by NumPy alone
            raise ExprError(expression, None, f"input {k!r} is not an array of numbers ({exc})") from None
    nodes = {k: g.input(k, a.shape) for k, a in arrays.items()}
    wrt = [wrt] if isinstance(wrt, str) else list(wrt)
    _check_wrt(expression, wrt, nodes)
    out = _output_node(expression, expr_lang.build(expression, nodes))
    if out.shape != ():
        raise ExprError(expression, None, f"value_and_grad needs a scalar expression; this one has shape {out.shape} "
                        "(sum(...) or mean(...) it)")
    grads = grad(out, [nodes[w] for w in wrt])
    res = compile_graph(g, [out] + grads).run(arrays)
    return np.asarray(to_numpy(res[0]), np.float64), {w: np.asarray(to_numpy(r), np.float64)
                                                      for w, r in zip(wrt, res[1:])}


# --- the gradient of a built model's loss ------------------------------------------------------
def freeze_nondeterminism(loss: Node):
    """`loss` rebuilt with every random draw and stop_gradient value replaced by a fed input.

    Neither kind passes a gradient, so the engine's gradient is unchanged; but finite
    differences of the rebuilt loss see neither new noise nor the parameter dependence
    hidden behind stop_gradient (Langevin or Gibbs negatives). Returns
    (new loss, {input node: original node}).
    """
    g = loss.graph
    new: dict[int, Node] = {}
    frozen: dict[int, tuple] = {}
    for n in topo_order([loss]):
        op = OPS.get(n.op)
        if not n.is_leaf and (n.op == "stop_gradient" or (op is not None and op.random)):
            inp = g.add_node("input", shape=n.shape, dtype=n.dtype, name=f"__frozen{len(g.nodes)}_{n.id}")
            new[id(n)] = inp
            frozen[inp.id] = (inp, n)
            continue
        ins = tuple(new[id(i)] for i in n.inputs)
        new[id(n)] = n if all(a is b for a, b in zip(ins, n.inputs)) else clone(n, ins)
    out = new[id(loss)]
    used = {n.id for n in topo_order([out]) if n.op == "input"}
    return out, {inp: orig for k, (inp, orig) in frozen.items() if k in used}


def check_loss_grads(loss: Node, params, feeds: dict, *, eps=1e-6, rtol=1e-5, atol=1e-8, seed=0,
                     max_entries=50, backend="numpy") -> GradCheckReport:
    """The engine's gradient of scalar `loss` w.r.t. each param vs central differences.

    Runs on the graph's own parameter values (perturbed in place and restored). Params
    with more than `max_entries` entries are checked on a seeded random subset. Noise is
    fixed: random draws and stop_gradient values are computed once, from the graph's
    random streams (whose state is saved and restored, so the check leaves them as it found
    them), and fed as constants. An entry passes when
    |engine - numeric| <= atol + floor + rtol * max(|engine|, |numeric|), where
    floor = 8 * finfo(dtype).eps * scale / eps is the rounding error the finite
    differences themselves carry, `scale` being the largest |scalar| the loss is computed
    from (the loss, its sums and means); it matters for losses made of large terms.
    """
    graph = loss.graph
    if loss.shape != ():
        raise ValueError(f"the loss must be a scalar; it has shape {loss.shape}")
    det_loss, frozen = freeze_nondeterminism(loss)
    feeds = dict(feeds)
    streams_state = None
    if frozen:
        originals = list(frozen.values())
        sampler = compile_graph(graph, originals, backend=backend)
        streams = graph.streams
        for n in sampler.nodes:  # streams are created lazily: make them exist so their state is saved
            if OPS.get(n.op) is not None and OPS[n.op].random:
                streams.rng(n.attrs.get("stream", 0))
        streams_state = streams.state()
        values = sampler.run(feeds)
        streams.set_state(streams_state)
        for (inp, _), v in zip(frozen.items(), values):
            feeds[inp.name] = to_numpy(v)
    grads = grad(det_loss, list(params))
    grad_prog = compile_graph(graph, [det_loss] + list(grads), backend=backend)
    value_prog = compile_graph(graph, det_loss, backend=backend)

    def f():
        if streams_state is not None:
            graph.streams.set_state(streams_state)
        return float(to_numpy(value_prog.run(feeds)))

    res = grad_prog.run(feeds)
    loss_value = float(to_numpy(res[0]))
    floor, scale = roundoff_floor(graph, det_loss, loss_value, feeds, eps, backend)
    rng = np.random.default_rng(seed)
    rows = []
    for p, g in zip(params, res[1:]):
        x = graph.values[p.id]
        analytic = np.asarray(to_numpy(g), np.float64).reshape(-1)
        if not x.flags.c_contiguous:
            raise ValueError(f"parameter {p.label} is not contiguous; cannot perturb it in place")
        idx = np.arange(x.size) if x.size <= max_entries else np.sort(rng.choice(x.size, max_entries, replace=False))
        numeric = central_differences(f, x, eps, idx)
        rows.append(compare(p.label, analytic[idx], numeric, rtol, atol + floor, x.shape, x.size))
    n_random = sum(1 for o in frozen.values() if o.op != "stop_gradient")
    return GradCheckReport(rows, loss_value, n_random, len(frozen) - n_random, floor, scale)
