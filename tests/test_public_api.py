"""The top-level package re-exports the public API lazily; the CLI starts without heavy imports."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gengraph


def test_public_api_resolves_to_the_real_objects():
    from gengraph.engine import Graph, check_grads, value_and_grad
    from gengraph.plugins.run.loading import load

    assert gengraph.Graph is Graph and gengraph.value_and_grad is value_and_grad
    assert gengraph.check_grads is check_grads and gengraph.load_spec is load
    value, grads = gengraph.value_and_grad("sum(x ** 2)", {"x": np.array([1.0, 2.0])}, ["x"])
    assert value == 5.0 and grads["x"].tolist() == [2.0, 4.0]
    with pytest.raises(AttributeError):
        gengraph.not_an_api


def test_cli_help_imports_no_heavy_module():
    code = ("import sys; from gengraph.cli.main import main\n"
            "heavy = [m for m in ('cupy', 'matplotlib', 'numpy', 'networkx', 'dask') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_engine_compile_is_compile_graph_and_user_errors_share_a_base():
    import builtins

    from gengraph import engine
    from gengraph.engine import BackendError, ExprError, ShapeError, UserError, compile, compile_graph

    assert compile is compile_graph and engine.compile is compile_graph
    assert builtins.compile is not compile_graph  # the engine's modules never shadow the builtin
    for cls, old_base in [(ExprError, ValueError), (ShapeError, ValueError), (BackendError, RuntimeError)]:
        assert issubclass(cls, UserError) and issubclass(cls, old_base), cls
    with pytest.raises(UserError, match="unknown backend"):
        engine.get_backend("tpu")


def test_engine_modules_do_not_define_compile_or_an_inspect_module():
    import importlib
    import pkgutil

    from gengraph import engine

    names = [m.name for m in pkgutil.iter_modules(engine.__path__)]
    assert "inspect" not in names  # it shadowed the stdlib module
    for name in names:
        module = importlib.import_module(f"gengraph.engine.{name}")
        assert "compile" not in vars(module) or name == "__init__", name


def test_the_package_imports_from_the_source_root_without_its_install_mapping():
    # after `pip install .`, Python started in the repository's root found its gengraph/ folder
    # first, which has no engine/ or plugins/: "No module named 'gengraph.engine'". -S leaves out
    # site (and the editable install's mapping); the dependencies come through PYTHONPATH
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(Path(np.__file__).parents[1])}
    code = ("import gengraph; from gengraph.engine import Graph; import gengraph.plugins.run.api, gengraph.specs; "
            "v, g = gengraph.value_and_grad('sum(x ** 2)', {'x': [1.0, 2.0]}, ['x']); print(v, g['x'].tolist())")
    r = subprocess.run([sys.executable, "-S", "-c", code], cwd=root, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "5.0 [2.0, 4.0]", r.stderr
