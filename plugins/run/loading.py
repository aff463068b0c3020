"""Loading specs and plugins: the only place that turns names into imported code.

A spec never imports anything by itself: model kinds come from installed entry points
(imported lazily, when a spec names the kind) or from files named explicitly with
``--plugin FILE``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import weakref
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from gengraph.plugins.spec.errors import SpecError, SpecIssue
from gengraph.plugins.model import MODELS, ModelPlugin, plugin_contract_issue
from gengraph.plugins.spec.document import load_spec
from gengraph.plugins.run.spec_schema import top_schema
from gengraph.plugins.run.rundir import RUN_MARKERS
from gengraph.plugins.datasets import DATASETS
from gengraph.plugins.blocks.layers import ACTIVATIONS, INITIALIZERS, LAYERS
from gengraph.plugins.blocks.losses import LOSSES
from gengraph.plugins.run.spec_schema import OPTIMIZER_SPECS, SCHEDULE_SPECS
from gengraph.plugins.registry import UnknownKind, registered_names, scoped_all, suggest

DEFAULT_SPEC = "mlp_digits.toml"


def load(path, overrides=()):
    """Parse, override and validate a spec file against the installed plugins."""
    if not Path(str(path)).exists() and (hint := _shipped_hint(str(path))):
        raise SpecError(SpecIssue(str(path), None, None, "", f"spec file not found{hint}"))
    return load_spec(path, list(overrides), schema=top_schema())


def _shipped_hint(text: str) -> str:
    names = shipped_specs()
    stem = Path(text).name.removesuffix(".toml")
    hit = suggest(stem, names) if names else None
    return f'; did you mean the shipped spec "{hit}"?' if hit else ""


def default_spec() -> Path:
    """The spec `gengraph run` uses without arguments (shipped inside the package)."""
    return Path(str(resources.files("gengraph.specs") / DEFAULT_SPEC))


def resolve_spec(spec) -> str:
    """The path of SPEC: the file when it exists, else a spec shipped in the package under that
    name (``mlp_digits`` or ``mlp_digits.toml``), else SPEC unchanged (loading then says "not found")."""
    text = str(spec)
    if Path(text).is_file() or "/" in text or "\\" in text:
        return text  # (a folder of the same name, e.g. a run's --out mlp_digits, does not hide the shipped spec)
    name = text if text.endswith(".toml") else text + ".toml"
    try:
        shipped = resources.files("gengraph.specs") / name
        if shipped.is_file():
            return str(shipped)
    except (ModuleNotFoundError, OSError, ValueError):
        pass
    return text  # (a folder: loading says it is one)


RUN_SPEC = "spec.toml"  # the resolved spec a run writes into its folder


def run_of_spec(path) -> Path | None:
    """The run folder whose own spec `path` is, else None: a file named spec.toml beside what only
    a run writes there (checkpoint.npz, metrics.jsonl, summary.json: rundir.RUN_MARKERS). Such a
    spec is read as reopening that run (datasets.base.reopening_a_run): the data checks of its time,
    as `gengraph sample RUN`, `run --resume RUN`, Run.graph and Run.gradcheck read it."""
    p = Path(os.fspath(path))
    try:
        if p.name != RUN_SPEC or not p.is_file():
            return None
        folder = p.parent
        return folder if any((folder / m).is_file() for m in RUN_MARKERS if m != RUN_SPEC) else None
    except (OSError, ValueError):  # a name the OS cannot take: loading says so
        return None


def spec_or_run(spec) -> tuple[str, Path | None]:
    """(the spec file to read, the run folder when that file is a run's own spec, else None) for
    SPEC given to `gengraph graph` or `gengraph gradcheck`: a spec file, a shipped spec's name
    (resolve_spec), a run folder (its spec.toml) or a run's spec.toml."""
    text = os.fspath(spec)
    try:
        folder = Path(text)
        if folder.is_dir() and (folder / RUN_SPEC).is_file():
            text = str(folder / RUN_SPEC)
    except (OSError, ValueError):
        pass
    text = resolve_spec(text)
    return text, run_of_spec(text)


def shipped_specs() -> list[str]:
    """Names of the specs shipped in the package (gengraph.specs)."""
    try:
        return sorted(p.name[:-5] for p in resources.files("gengraph.specs").iterdir() if p.name.endswith(".toml"))
    except (ModuleNotFoundError, OSError):
        return []


def load_plugin_file(path) -> list[str]:
    """Import a local plugin file and register the ModelPlugin objects it defines; returns their kinds.
    A file may instead (or also) register smaller parts as it is imported (a data source, a layer,
    an activation, an optimizer: `DATASETS.register(...)`, ...); one that does neither is refused."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(SpecIssue(str(path), None, None, "--plugin", "plugin file not found"))
    name = f"gengraph_local_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SpecError(SpecIssue(str(path), None, None, "--plugin", "not a Python file (expected a .py file)"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    before = registered_names()
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        line = deepest_line(exc, path)
        raise SpecError(SpecIssue(str(path), line, None, "--plugin",
                                  f"plugin file failed to import: {type(exc).__name__}: {exc}")) from None
    kinds = []
    for obj in vars(module).values():
        if isinstance(obj, ModelPlugin) and obj.kind:
            if (why := plugin_contract_issue(obj)) is not None:
                raise SpecError(SpecIssue(str(path), None, None, "--plugin", f'kind "{obj.kind}": {why}'))
            current = _registered(obj.kind)
            if current is obj:  # imported into the file from where it is registered already
                continue
            if current is not None and _FROM_FILE.get(current) != path.resolve():  # the same file again may
                raise SpecError(SpecIssue(str(path), None, None, "--plugin",    # replace its own kinds
                                          f'defines kind "{obj.kind}", which {_provider(current)} already '
                                          "provides; give the plugin a kind of its own (a subclass keeps its "
                                          'parent\'s kind unless it sets kind = "...")'))
            MODELS.register(obj.kind, obj, replace=True)
            _FROM_FILE[obj] = path.resolve()
            kinds.append(obj.kind)
    if not kinds and registered_names() <= before:
        raise SpecError(SpecIssue(str(path), None, None, "--plugin",
                                  "the file defines no ModelPlugin instance with a kind and registers nothing "
                                  "else (a data source, layer, activation, optimizer, ...)"))
    return kinds


def _provider(plugin) -> str:
    """Where a registered plugin comes from, for a message: its local file, else its module."""
    source = _FROM_FILE.get(plugin)
    return str(source) if source is not None else type(plugin).__module__


_FROM_FILE = weakref.WeakKeyDictionary()  # plugin object -> the local file that registered it


def deepest_line(exc: BaseException, path) -> int | None:
    """The line of `path` where exc was raised (the deepest frame in that file), else None."""
    line, tb, source = None, exc.__traceback__, os.path.abspath(path)
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == source:
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is None and isinstance(exc, SyntaxError) and exc.filename and os.path.abspath(exc.filename) == source:
        line = exc.lineno
    return line


def plugin_source(plugin) -> str:
    """Where a plugin comes from, for messages: its local file, else its module."""
    try:
        path = _FROM_FILE.get(plugin)
    except TypeError:  # not weak-referenceable
        path = None
    return str(path) if path is not None else type(plugin).__module__


def _registered(kind: str):
    """The plugin registered or installed under `kind`, or None."""
    if kind not in MODELS:
        return None
    try:
        return MODELS.get(kind)
    except UnknownKind:  # installed but unusable: a local file may stand in for it
        return None


def plugin_paths(paths) -> tuple:
    """The API's plugins= argument as paths: one path (a str or a Path) or several; TypeError
    naming the argument for anything else (plugins=[5] failed inside pathlib)."""
    paths = (paths,) if isinstance(paths, (str, os.PathLike)) else tuple(paths)
    bad = [p for p in paths if not isinstance(p, (str, os.PathLike))]
    if bad:
        raise TypeError(f"plugins must be paths of .py files (str or pathlib.Path), not {bad[0]!r}")
    return tuple(Path(p).expanduser() for p in paths)


@contextmanager
def plugin_files(paths):
    """The ModelPlugin kinds of these local files registered for the block only (the Python API:
    a plugin given to one call must not stand in for a built-in kind in every later call)."""
    with scoped_all():  # what else the files register (a data source, an activation) too
        for path in plugin_paths(paths):
            load_plugin_file(path)
        yield


def inventory() -> dict:
    """Everything installed, for `gengraph plugins`; broken plugins are listed, not raised."""
    MODELS.load_all()
    models = {}
    for name in MODELS.names():
        try:
            obj = MODELS.get(name)
        except KeyError:
            continue
        models[name] = {"help": getattr(obj, "help", ""), "module": type(obj).__module__}
    return {
        "models": models,
        "broken": MODELS.broken(),
        "data_sources": DATASETS.names(),
        "optimizers": OPTIMIZER_SPECS.names(),
        "schedules": SCHEDULE_SPECS.names(),
        "layers": LAYERS.names(),
        "losses": LOSSES.names(),
        "activations": ACTIVATIONS.names(),
        "initializers": INITIALIZERS.names(),
    }
