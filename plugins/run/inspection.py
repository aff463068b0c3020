"""What `gengraph graph` and `gengraph gradcheck` compute, shared by the CLI and `Run.graph()` /
`Run.gradcheck()`: the compiled programs of a spec, a stage of one program, and the
finite-difference check of the model's loss gradient. No printing here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class InspectError(ValueError):
    """A bad request (unknown program or parameter, no data rows); one line for the user."""


def compiled_programs(loaded, data, plugin, model):
    """({name: (outputs, updates, Program)} for every program a run of this spec compiles,
    the first node id created after the model was built)."""
    from gengraph.plugins.run.runner import RunContext
    from gengraph.plugins.run.trainer import Trainer

    cfg = loaded.data
    ctx = RunContext(cfg, None, cfg["run"]["seed"], "numpy")
    trainer = Trainer(plugin, model, data, cfg["train"], ctx)
    # nodes with smaller ids are the plugin's; gradients, optimizer and monitors come after
    built_before = max((n.id for n in model.graph.nodes), default=-1) + 1
    with_optimizer = getattr(plugin, "trains_by_gradient", True)
    defs = trainer.program_defs(with_optimizer)
    progs = trainer.compile_programs(with_optimizer)
    out = {name: (outputs, dict(updates or {}), progs[name]) for name, (outputs, updates) in defs.items()}
    return out, built_before


def program_stage(loaded, data, plugin, model, program=None, stage="optimized", *, label=None):
    """(GraphView of `stage` of `program`, its name): what `gengraph graph` prints or exports.

    program None: train_step when the model trains by gradient, else evaluate."""
    from gengraph.engine import inspect as gi

    progs, built_before = compiled_programs(loaded, data, plugin, model)
    if program is None:
        program = "train_step" if "train_step" in progs else "evaluate"
    if program not in progs:
        from gengraph.plugins.registry import suggest

        hint = suggest(program, list(progs))
        raise InspectError(f'unknown program "{program}"' + (f'; did you mean "{hint}"?' if hint else "")
                           + f" (this spec compiles: {', '.join(progs)})")
    if stage not in gi.STAGES:
        raise InspectError(f'unknown stage "{stage}" (choose from {", ".join(gi.STAGES)})')
    outputs, updates, prog = progs[program]
    view = gi.view_stage(stage, outputs, updates, prog, name=program, built_before=built_before)
    view.title = f"{label or loaded.file}: program {program}, stage {stage} ({loaded.data['model']['kind']})"
    return view, program


@dataclass(repr=False)
class GradcheckReport:
    """The result of `gengraph gradcheck`: `lines()` is what the command prints."""

    spec: str
    kind: str
    result: object  # engine.inspect.LossGradCheck
    rows: int
    eps: float
    rtol: float
    atol: float
    seed: int
    max_entries: int
    notes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.result.params if not r.ok]

    def header(self) -> list[str]:
        r = self.result
        lines = [f"gradcheck {self.spec} ({self.kind}): loss {r.loss:.6g} on {self.rows} training rows, float64, "
                 f"eps {self.eps:g}, rtol {self.rtol:g}, atol {self.atol:g}, seed {self.seed}",
                 f"an entry passes when |engine - numeric| <= atol + rtol * max(|engine|, |numeric|) + "
                 f"{r.roundoff_floor:.1e}\n  (the differences' own roundoff: 8 * float64 eps * {r.scale:.3g} / eps, "
                 f"{r.scale:.3g} = largest |scalar| the loss is computed from)"]
        if r.frozen_random or r.frozen_stop_gradient:
            lines.append(f"noise fixed: {r.frozen_random} random draw(s) and {r.frozen_stop_gradient} "
                         "stop_gradient value(s) computed once and held constant")
        subset = [p for p in r.params if p.checked < p.total]
        if subset:
            lines.append(f"{len(subset)} parameter(s) larger than {self.max_entries} entries: a random subset of "
                         f"{self.max_entries} entries each is checked (--max-entries, --seed)")
        return lines

    def verdict(self) -> str:
        n = len(self.result.params)
        if self.failed:
            return f"gradient check failed for {len(self.failed)} of {n} parameter(s): {', '.join(self.failed)}"
        return f"ok: {n} parameter(s) within tolerance"

    def lines(self) -> list[str]:
        from gengraph.engine import inspect as gi

        return self.header() + [gi.gradcheck_table(self.result), self.verdict()]

    def __str__(self) -> str:
        return "\n".join(self.lines())

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from gengraph.plugins.run.display import gradcheck_html

        return gradcheck_html(self)


def gradcheck(loaded, data, model, *, label=None, param_names=(), eps=1e-6, rtol=1e-5, atol=1e-8, seed=0, batch=8,
              max_entries=50) -> GradcheckReport | None:
    """Check the engine's gradient of the model's loss (built in float64 on the CPU) against
    central differences on `batch` random training rows. None: no trainable parameters."""
    import numpy as np

    from gengraph.engine import inspect as gi

    params = list(model.params)
    if param_names:
        by_name = {p.label: p for p in params}
        missing = [n for n in param_names if n not in by_name]
        if missing:
            from gengraph.plugins.registry import suggest

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
    rows = np.sort(np.random.default_rng(seed).choice(len(x), min(batch, len(x)), replace=False))
    feeds = model.feed(x[rows], None if y is None else y[rows])
    result = gi.check_loss_grads(model.loss, params, feeds, eps=eps, rtol=rtol, atol=atol, seed=seed,
                                 max_entries=max_entries)
    return GradcheckReport(str(label), loaded.data["model"]["kind"], result, len(rows), eps, rtol, atol, seed,
                           max_entries)
