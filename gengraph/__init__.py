"""gengraph: declarative, graph-based reverse-mode autodiff with plugin models.

The public API, re-exported lazily (so ``gengraph --help`` imports nothing heavy):

>>> import gengraph
>>> value, grads = gengraph.value_and_grad("sum(x ** 2)", {"x": [1.0, 2.0]}, ["x"])
>>> run = gengraph.run("mlp_digits", overrides={"train.epochs": 3})   # as `gengraph run`
>>> run.summary["test_accuracy"], run.metrics[-1], run.params["output/dense0/W"].shape
"""

__version__ = "0.1.0"

import os as _os

_ROOT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_ROOT, "pyproject.toml")) and _os.path.isfile(_os.path.join(_ROOT, "engine", "__init__.py")):
    # imported from a source checkout (Python started in its root after `pip install .`, whose
    # gengraph/ folder then shadows the installed package): gengraph.engine, .plugins, .cli and
    # .specs live beside this folder, as pyproject's package-dir maps them
    __path__.append(_ROOT)

from gengraph.blas_setup import tune_blas

tune_blas()  # before anything imports NumPy: OpenBLAS reads its kernel choice at load

_API = {
    # the engine
    "Graph": "gengraph.engine", "Node": "gengraph.engine", "grad": "gengraph.engine",
    "compile": "gengraph.engine", "Program": "gengraph.engine", "ops": "gengraph.engine",
    "value_and_grad": "gengraph.engine", "check_grads": "gengraph.engine",
    "make_optimizer": "gengraph.engine", "make_schedule": "gengraph.engine",
    # specs and runs
    "load_spec": "gengraph.plugins.run.loading:load", "run_spec": "gengraph.plugins.run.runner:execute",
    "ModelPlugin": "gengraph.plugins.model", "Model": "gengraph.plugins.model",
    # from Python and notebooks: the CLI's run / validate / sample as functions
    "run": "gengraph.plugins.run.api", "load": "gengraph.plugins.run.api", "validate": "gengraph.plugins.run.api",
    "Run": "gengraph.plugins.run.api", "shipped_specs": "gengraph.plugins.run.loading",
    "SpecError": "gengraph.plugins.spec.errors", "SampleError": "gengraph.plugins.run.sampling",
    "draw": "gengraph.plugins.run.sampling", "show_samples": "gengraph.plugins.run.display",
    # what the functions above raise, to catch by name (`except gengraph.RunDirError`)
    "UserError": "gengraph.engine.errors", "DataError": "gengraph.plugins.datasets",
    "RunDirError": "gengraph.plugins.run.rundir", "CheckpointError": "gengraph.plugins.run.checkpoint",
    "RunInterrupted": "gengraph.plugins.run.runner", "DivergenceError": "gengraph.plugins.run.trainer",
    "PluginError": "gengraph.plugins.run.contract", "PluginCrash": "gengraph.plugins.run.contract",
    "InspectError": "gengraph.plugins.run.inspection",
}

__all__ = ["__version__", *_API]


def __dir__():
    """The lazily loaded names too: tab completion of `gengraph.ru` found nothing."""
    return sorted(set(globals()) | set(_API))


def __getattr__(name):
    import importlib

    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'gengraph' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr or name)
