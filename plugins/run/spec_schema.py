"""The top-level spec schema: [run], [data], [model], [train], [output].

[data], [model], [train.optimizer] and [train.schedule] are dispatched on their
`source`/`kind` key to the installed sources, model plugins, optimizers and
schedules, so a spec is validated against exactly the pieces it names.
"""

from __future__ import annotations

from gengraph.engine import optimizers as engine_optimizers
from gengraph.engine import schedules as engine_schedules

from gengraph.plugins.datasets import data_schema
from gengraph.plugins.model import MODELS
from gengraph.plugins.registry import PLUGIN_GROUP, Registry
from gengraph.plugins.spec.schema import REQUIRED, Dispatch, Field, Table


class _HyperSpec:
    """A registry entry whose schema is built from an engine class's hyper-parameter table, each
    row's bounds and choices included (engine.schedules.Hyper), so that a value out of range is
    reported with the spec's other mistakes, at its key, and not only once the optimizer is built."""

    def __init__(self, cls, drop=()):
        self.cls = cls
        self.help = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        fields = {}
        for key, (typ, default, help_) in cls.schema.items():
            if key in drop:
                continue
            if default is engine_schedules.REQUIRED:
                default = REQUIRED
            typ = (int, float) if typ is float else typ
            fields[key] = Field(typ, default, help_, **engine_schedules.row_limits(cls.schema[key]))
        self.schema = Table(fields, help=self.help)


class _LBFGS:
    help = "L-BFGS quasi-Newton with a strong-Wolfe line search (full batch, deterministic losses)"
    schema = Table({
        "max_iter": Field(int, 200, "maximum iterations", min=1),
        "tol": Field(float, 1e-10, "stop when the gradient's max-norm, or a step's loss change relative "
                                      "to max(|loss|, 1), is at most this", min=0.0),
    })


OPTIMIZER_SPECS = Registry("optimizer", PLUGIN_GROUP, part=True)
for _name, _cls in engine_optimizers.OPTIMIZERS.items():
    OPTIMIZER_SPECS.register(_name, _HyperSpec(_cls))
OPTIMIZER_SPECS.register("lbfgs", _LBFGS())

SCHEDULE_SPECS = Registry("schedule", PLUGIN_GROUP, part=True)
for _name, _cls in engine_schedules.SCHEDULES.items():
    SCHEDULE_SPECS.register(_name, _HyperSpec(_cls, drop=("lr",)))


def run_schema() -> Table:
    return Table({
        "name": Field(str, "", "run name (default: the spec file's name)"),
        "seed": Field(int, 0, "seed for data, initialisation and noise streams", min=0),
        "device": Field(str, "cpu", "cpu (NumPy) or cuda (CuPy)", choices=["cpu", "cuda"]),
        "dtype": Field(str, "float32", "floating-point type of the computation", choices=["float32", "float64"]),
        "threads": Field(int, 1, "BLAS/OpenMP threads (0: the libraries' default); one is fastest for "
                                 "the lecture's model sizes", min=0),
    }, help="how to run")


def train_schema() -> Table:
    return Table({
        "optimizer": Dispatch("kind", OPTIMIZER_SPECS, default={"kind": "adam"}, help="optimizer and its settings"),
        "schedule": Dispatch("kind", SCHEDULE_SPECS, default={"kind": "constant"}, help="learning-rate schedule"),
        "epochs": Field(int, 10, "passes over the training data", min=0),
        "batch_size": Field(int, 64, "mini-batch size (0: full batch)", min=0),
        "shuffle": Field(bool, True, "reshuffle the training data every epoch"),
        "early_stopping": Table({
            "patience": Field(int, 0, "epochs without improvement before stopping (0: off)", min=0),
            "min_delta": Field(float, 0.0, "smallest change that counts as improvement", min=0.0),
            "metric": Field(str, "test_loss", "logged metric to watch"),
            "mode": Field(str, "auto", 'min (lower is better), max, or auto: max for accuracy, r2, '
                          "log-likelihoods and elbo, else min (as sweep.mode)", choices=("auto", "min", "max")),
        }),
    }, help="how to train")


def output_schema() -> Table:
    return Table({
        "dir": Field(str, "runs", "parent folder of run directories"),
        "checkpoint_every": Field(int, 0, "also checkpoint every N epochs (0: only at the end)", min=0),
        "plots": Field(bool, True, "write PNG plots"),
        "samples": Field(int, 64, "samples to draw for generative models (samples.npy; ebm and score "
                          "matching draw at least half the held-out rows, for their two-sample tests)", min=0),
    }, help="what to write")


def sweep_schema() -> Table:
    """[sweep]: read by `gengraph sweep` only (see gengraph.plugins.sweep.sweep); `gengraph run` ignores it."""
    return _OptionalTable({
        "method": Field(str, "grid", "grid (every combination) or random (`trials` draws)", choices=["grid", "random"]),
        "axes": Field(dict, {}, 'dotted key as for --set -> list of values, or a range { low, high, log, num }, '
                                'e.g. "model.lam" = [1e-4, 1e-3]'),
        "trials": Field(int, 10, "random: number of trials", min=1),
        "seed": Field(int, 0, "random: seed for drawing axis values (every trial still uses run.seed)", min=0),
        "metric": Field(str, "", "summary metric that ranks the trials (default: test_accuracy for "
                                 "classification, test_mse for regression, else test_loss, which is also "
                                 "taken when the model does not report the task's)"),
        "mode": Field(str, "auto", "min or max: which end of the metric is best (auto: max for accuracy, r2, "
                                   "log-likelihoods and elbo, min for mse, loss, bpd, nll, ...)",
                      choices=["auto", "min", "max"]),
        "name": Field(str, "", "sweep name: trials go to output.dir/NAME/TRIAL (default: the spec file's "
                               "name + \"-sweep\", apart from its `gengraph run` directory)"),
    }, help="hyper-parameter sweep for `gengraph sweep` (optional; `gengraph run` ignores it)")


class _OptionalTable(Table):
    """A table that stays unset (no defaults filled) when the spec leaves it out."""

    def _missing(self, path, ctx):
        return None


class _TopTable(Table):
    """The top level: optional tables left out of a spec stay out of the resolved spec."""

    def _validate(self, value, path, ctx, passthrough=()):
        out = super()._validate(value, path, ctx, passthrough)
        if isinstance(out, dict):
            for name, sub in self.fields.items():
                if isinstance(sub, _OptionalTable) and out.get(name, 0) is None:
                    del out[name]
        return out


def top_schema() -> Table:
    return _TopTable({
        "run": run_schema(),
        "data": data_schema(),
        "model": Dispatch("kind", MODELS, help="the model plugin and its keys"),
        "train": train_schema(),
        "output": output_schema(),
        "sweep": sweep_schema(),
    })
