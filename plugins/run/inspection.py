"""What `gengraph graph` and `gengraph gradcheck` compute, shared by the CLI and `Run.graph()` /
`Run.gradcheck()`: the compiled programs of a spec, a stage of one program, and the
finite-difference check of the model's loss gradient. No printing here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from gengraph.engine import views
from gengraph.engine.tables import render_rows
from gengraph.engine.errors import UserError
from gengraph.engine.gradcheck import check_loss_grads
from gengraph.engine.metrics import totals_of
from gengraph.plugins.run.context import RunContext
from gengraph.plugins.run.trainer import Trainer
from gengraph.plugins.registry import suggest
from gengraph.plugins.spec.schema import is_integer
from gengraph.plugins.run.display import gradcheck_html


class InspectError(UserError, ValueError):
    """A bad request (unknown program or parameter, no data rows); one line for the user."""


def compiled_programs(loaded, data, plugin, model):
    """({name: (outputs, updates, Program)} for every program a run of this spec compiles,
    the first node id created after the model was built)."""
    cfg = loaded.data
    ctx = RunContext(cfg, None, cfg["run"]["seed"], "numpy")
    trainer = Trainer(plugin, model, data, cfg["train"], ctx)
    # nodes with smaller ids are the plugin's; gradients, optimizer and monitors come after
    built_before = max((n.id for n in model.graph.nodes), default=-1) + 1
    with_optimizer = not plugin.fits_without_gradients(model)  # no train_step for a closed-form fit
    defs = trainer.program_defs(with_optimizer)
    progs = trainer.compile_programs(with_optimizer)
    out = {name: (outputs, dict(updates or {}), progs[name]) for name, (outputs, updates) in defs.items()}
    return out, built_before


def program_stage(loaded, data, plugin, model, program=None, stage="optimized", *, label=None):
    """(GraphView of `stage` of `program`, its name): what `gengraph graph` prints or exports.

    program None: train_step when the model trains by gradient, else evaluate."""
    progs, built_before = compiled_programs(loaded, data, plugin, model)
    if program is None:
        program = "train_step" if "train_step" in progs else "evaluate"
    if program not in progs:

        hint = suggest(program, list(progs))
        raise InspectError(f'unknown program "{program}"' + (f'; did you mean "{hint}"?' if hint else "")
                           + f" (this spec compiles: {', '.join(progs)})")
    if stage not in views.STAGES:
        raise InspectError(f'unknown stage "{stage}" (choose from {", ".join(views.STAGES)})')
    outputs, updates, prog = progs[program]
    view = views.view_stage(stage, outputs, updates, prog, name=program, built_before=built_before)
    view.title = f"{label or loaded.file}: program {program}, stage {stage} ({loaded.data['model']['kind']})"
    return view, program


def graph_facts(view, batch: int = 128) -> dict:
    """The totals of a stage of a program as `gengraph graph --json` gives them (the numbers of the
    text table's "totals" lines): node counts, parameters, FLOPs per step and activation bytes for
    `batch` rows, and what each compiler pass did (optimized stage)."""
    t = totals_of(view, batch)
    facts = {"program": view.program, "stage": view.stage, "batch": int(batch), "nodes": int(t.nodes),
             "ops": int(t.nodes - t.leaves), "leaves": int(t.leaves), "backward_nodes": int(t.backward_nodes),
             "nodes_by_op": {str(op): int(c) for op, c in t.by_op.items()}, "parameters": int(t.params),
             "parameter_tensors": int(t.param_tensors), "state": int(t.state), "flops": int(t.flops),
             "activation_bytes": int(t.activation_bytes), "peak_bytes": int(t.peak_bytes)}
    if view.stage == "optimized" and view.pass_stats:
        facts["passes"] = [{"name": name, "nodes_before": int(before), "nodes_after": int(after)}
                           for name, before, after in view.pass_stats]
    return facts


@dataclass(repr=False)
class GradcheckReport:
    """The result of `gengraph gradcheck`: `lines()` is what the command prints."""
    spec: str
    kind: str
    result: object  # engine.gradcheck.GradCheckReport
    rows: int
    eps: float
    rtol: float
    atol: float
    seed: int
    max_entries: int
    notes: list = field(default_factory=list)
    perturb: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.result.rows if not r.ok]

    def header(self) -> list[str]:
        r = self.result
        lines = [f"gradcheck {self.spec} ({self.kind}): loss {r.loss:.6g} on {self.rows} training rows, float64, "
                 f"eps {self.eps:g}, rtol {self.rtol:g}, atol {self.atol:g}, seed {self.seed}",
                 f"an entry passes when |engine - numeric| <= atol + rtol * max(|engine|, |numeric|) + "
                 f"{r.roundoff_floor:.1e}\n  (the differences' own roundoff: 8 * float64 eps * {r.scale:.3g} / eps, "
                 f"{r.scale:.3g} = largest |scalar| the loss is computed from)"]
        if self.perturb:
            lines.append(f"checked at the initial parameters plus N(0, {self.perturb:g}^2) noise on every entry "
                         f"(--perturb, drawn with --seed {self.seed})")
        if r.frozen_random or r.frozen_stop_gradient:
            lines.append(f"noise fixed: {r.frozen_random} random draw(s) and {r.frozen_stop_gradient} "
                         "stop_gradient value(s) computed once and held constant")
        subset = [p for p in r.rows if p.checked < p.total]
        if subset:
            lines.append(f"{len(subset)} parameter(s) larger than {self.max_entries} entries: a random subset of "
                         f"{self.max_entries} entries each is checked (--max-entries, --seed)")
        return lines

    def verdict(self) -> str:
        n = len(self.result.rows)
        if not math.isfinite(float(self.result.loss)):  # every difference is then nan: not the gradient's fault
            return (f"gradient check failed: the loss is {self.result.loss} at these parameters, so neither "
                    "side can be compared (a huge --perturb, or data the model overflows on)")
        if self.failed:
            hint = "" if self.perturb else ("; where an activation sits exactly at a kink (relu at 0 with zero-"
                                            "initialised weights), finite differences straddle it: check away "
                                            "from it with --perturb 0.01 (Run.gradcheck: perturb=0.01)")
            return (f"gradient check failed for {len(self.failed)} of {n} parameter(s): {', '.join(self.failed)}"
                    + hint)
        zero = [p.name for p in self.result.rows if p.zero]
        if zero:  # e.g. a U-Net whose output convolution starts at zero: nothing upstream has a gradient yet
            return (f"ok: {n} parameter(s) within tolerance, but {len(zero)} of them have a gradient of exactly 0 on "
                    "both sides at these parameters (result \"zero\"), which verifies nothing about them"
                    + ("" if self.perturb else "; if a zero-initialised layer blocks them (a U-Net's output "
                       "convolution does), check away from the initial values: --perturb 0.01 (Run.gradcheck: "
                       "perturb=0.01)"))
        return f"ok: {n} parameter(s) within tolerance"

    def passed_by(self, row) -> str:
        """Which part of the criterion a parameter passed by: "atol+roundoff" next to a large
        relative error means its entries are near zero and passed the absolute part."""
        if not row.ok or row.zero:
            return "-"
        return "rtol" if row.max_rel_err <= self.rtol else "atol+roundoff"

    def table_rows(self):
        """(header, rows, right-aligned columns): the engine's table with a "passed by" column."""
        header, rows, right = self.result.table_rows()
        header = header[:-1] + ("passed by",) + header[-1:]
        rows = [row[:-1] + (self.passed_by(r),) + row[-1:] for row, r in zip(rows, self.result.rows)]
        return header, rows, right

    def table(self) -> list[str]:
        header, rows, right = self.table_rows()
        lines = render_rows(header, rows, right)
        if any(self.passed_by(r) == "atol+roundoff" for r in self.result.rows):
            lines.append("atol+roundoff: the relative error is large because the entries are near 0; the absolute "
                         "error is within atol + the roundoff floor, so the gradient is right")
        return lines

    def lines(self) -> list[str]:
        return self.header() + self.table() + [self.verdict()]

    def as_dict(self) -> dict:
        """The report as `gengraph gradcheck --json` gives it: the settings, the loss, one entry per
        checked parameter (its table row's numbers) and the verdict line."""
        r = self.result
        params = [{"name": row.name, "shape": [None if d is None else int(d) for d in row.shape],
                   "checked": int(row.checked), "total": int(row.total), "max_abs_err": float(row.max_abs_err),
                   "max_rel_err": float(row.max_rel_err), "ok": bool(row.ok), "zero": bool(row.zero),
                   "result": "FAIL" if not row.ok else "zero" if row.zero else "ok", "passed_by": self.passed_by(row)}
                  for row in r.rows]
        return {"spec": self.spec, "kind": self.kind, "ok": bool(self.ok), "loss": float(r.loss),
                "rows": int(self.rows),
                "eps": self.eps, "rtol": self.rtol, "atol": self.atol, "seed": self.seed,
                "max_entries": self.max_entries, "perturb": self.perturb, "roundoff_floor": float(r.roundoff_floor),
                "frozen_random": int(r.frozen_random), "frozen_stop_gradient": int(r.frozen_stop_gradient),
                "params": params, "verdict": self.verdict()}

    def __str__(self) -> str:
        return "\n".join(self.lines())

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return gradcheck_html(self)


# float64 central differences: below EPS_MIN the differences' rounding error (8 * 2.2e-16 * S / eps)
# swamps any wrong gradient, above EPS_MAX their truncation error (O(eps^2)) fails right ones
EPS_MIN, EPS_MAX = 1e-12, 1e-1


def _real(v):
    """v as a float, or None when it is not a real number (a bool, a string, None, ...)."""
    import numbers

    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    return float(v)


def _shown(v) -> str:
    """A value as the user wrote it (NumPy scalars as plain numbers)."""
    if is_integer(v):
        return str(int(v))
    if (f := _real(v)) is not None:
        return repr(f)
    return repr(v)


def check_gradcheck_options(*, eps=1e-6, rtol=1e-5, atol=1e-8, seed=0, batch=8, max_entries=50, perturb=0.0) -> None:
    """InspectError, one line naming the option and its bad value, for settings `gradcheck` cannot
    use (the CLI's --eps/--rtol/--atol/--seed/--batch/--max-entries/--perturb and Run.gradcheck's
    keywords)."""
    import math

    e = _real(eps)
    if e is None or not math.isfinite(e) or not EPS_MIN <= e <= EPS_MAX:
        raise InspectError(f"eps must be a finite number from {EPS_MIN:g} to {EPS_MAX:g} (the step of float64 "
                           f"central differences), found {_shown(eps)}")
    for name, value in (("rtol", rtol), ("atol", atol), ("perturb", perturb)):
        v = _real(value)
        if v is None or not math.isfinite(v) or v < 0:
            raise InspectError(f"{name} must be a finite number >= 0, found {_shown(value)}")
    if not is_integer(seed) or seed < 0:
        raise InspectError(f"seed must be a non-negative integer, found {_shown(seed)}")
    for name, value in (("batch", batch), ("max_entries", max_entries)):
        if not is_integer(value) or value < 1:
            raise InspectError(f"{name} must be a positive integer, found {_shown(value)}")


def check_graph_options(*, batch=128, collapse=None) -> None:
    """InspectError for what `gengraph graph --batch/--collapse` refuses (Run.graph's keywords)."""
    if not is_integer(batch) or batch < 1:
        raise InspectError(f"batch must be a positive integer (the rows a step's FLOPs are counted for), "
                           f"found {_shown(batch)}")
    if collapse is not None and (not is_integer(collapse) or collapse < 0):
        raise InspectError(f"collapse must be None or an integer >= 0, found {_shown(collapse)}")


def gradcheck(loaded, data, model, *, label=None, param_names=(), eps=1e-6, rtol=1e-5, atol=1e-8, seed=0, batch=8,
              max_entries=50, perturb=0.0) -> GradcheckReport | None:
    """Check the engine's gradient of the model's loss (built in float64 on the CPU) against
    central differences on `batch` random training rows, at the model's initial parameters, or
    with `perturb` > 0 at those plus N(0, perturb^2) noise on every entry of every parameter
    (a zero-initialised layer, such as a U-Net's output convolution, makes every gradient
    upstream exactly 0 at the initial values). None: no trainable parameters.
    InspectError for an unknown parameter or an option outside its range (check_gradcheck_options)."""
    import numpy as np

    check_gradcheck_options(eps=eps, rtol=rtol, atol=atol, seed=seed, batch=batch, max_entries=max_entries,
                            perturb=perturb)
    eps, rtol, atol, seed, batch, max_entries = float(eps), float(rtol), float(atol), int(seed), int(batch), \
        int(max_entries)
    perturb = float(perturb)

    params = list(model.params)
    param_names = list(dict.fromkeys(param_names))  # a name given twice is checked once
    if param_names:
        by_name = {p.label: p for p in params}
        missing = [n for n in param_names if n not in by_name]
        if missing:

            hint = suggest(missing[0], list(by_name))
            raise InspectError(f'unknown parameter "{missing[0]}"' + (f'; did you mean "{hint}"?' if hint else "")
                               + f" (parameters: {', '.join(by_name) or 'none'})")
        params = [by_name[n] for n in param_names]
    if not params:
        return None
    label = label or loaded.file
    x, y = data.x_train, data.y_train
    if x is None or len(x) == 0:
        raise InspectError(f"{label}: the data has no training rows to check the loss on")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(x), min(batch, len(x)), replace=False))
    if perturb:  # every parameter, checked or not: the point the loss is evaluated at
        graph = params[0].graph
        for p in model.params:
            value = graph.value(p)
            graph.set_value(p, value + rng.normal(0.0, perturb, value.shape))
    feeds = model.feed(x[rows], None if y is None else y[rows])
    result = check_loss_grads(model.loss, params, feeds, eps=eps, rtol=rtol, atol=atol, seed=seed,
                              max_entries=max_entries)
    return GradcheckReport(str(label), loaded.data["model"]["kind"], result, len(rows), eps, rtol, atol, seed,
                           max_entries, perturb=perturb)
