"""Name -> object registries shared by plugins, with lazily loaded entry points.

A registry maps a kind name ("adam", "dense", "linear", "rbm", ...) to an object.
Objects register in code (``@REG.register("name")``) or, for the model-plugin
registry, through the ``gengraph.plugins`` entry-point group; entry points are read
from metadata at start-up but imported only when their kind is asked for, and an
import failure is recorded as "broken" without affecting any other kind.
"""

from __future__ import annotations

import difflib
import re
import threading
from contextlib import ExitStack, contextmanager
from importlib import metadata


class UnknownKind(KeyError):
    """Raised by Registry.get for a name nobody registered."""

    def __init__(self, what: str, name: str, known: list[str], broken: dict[str, str], conflicts=None):
        self.what, self.name, self.known, self.broken = what, name, known, broken
        self.conflicts = conflicts or {}
        self.suggestion = suggest(name, known)
        super().__init__(self.message())

    def message(self) -> str:
        if self.name in self.conflicts:
            return f'{self.what} "{self.name}" cannot be used: {self.conflicts[self.name]}'
        if self.name in self.broken:
            return f'{self.what} "{self.name}" is installed but failed to import: {self.broken[self.name]}'
        msg = f'unknown {self.what} "{self.name}"'
        if self.suggestion:  # a typo
            msg += f'; did you mean "{self.suggestion}"?'
        else:  # something not installed
            msg += " is not installed; install a package that provides it or pass --plugin FILE"
        msg += f" (installed: {', '.join(self.known) or 'none'})"
        if self.broken:
            msg += "; failed to import: " + "; ".join(f"{k} ({v})" for k, v in sorted(self.broken.items()))
        return msg

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message()


# names users give for a candidate that difflib does not find close: --device gpu suggested "cpu"
SYNONYMS = {"gpu": "cuda", "nvidia": "cuda"}


def suggest(name: str, candidates) -> str | None:
    """The closest candidate to a probably misspelt name, or None; case counts for nothing
    ("RELU" is "relu", which plain difflib ranked below the cutoff)."""
    folded = {}
    for c in map(str, candidates):
        folded.setdefault(c.lower(), c)
    if SYNONYMS.get(str(name).lower()) in folded:
        return folded[SYNONYMS[str(name).lower()]]
    hits = difflib.get_close_matches(str(name).lower(), list(folded), n=1, cutoff=0.6)
    return folded[hits[0]] if hits else None


PLUGIN_GROUP = "gengraph.plugins"  # the one entry-point group: model kinds and (PART.NAME) smaller parts
_ABSENT = object()  # a name not registered


def part_prefix(what: str) -> str:
    """The entry-point name prefix of a part registry: "data source" -> "data_source."."""
    return re.sub(r"\W+", "_", what.strip().lower()) + "."


_EVERY: list = []  # every registry made (scoped_all)
# the part registries' entry-point prefixes, also before their modules are imported
PART_PREFIXES = ("data_source.", "layer.", "activation.", "initializer.", "noise_schedule.", "sampler.",
                 "loss.", "likelihood.", "elbo_term.", "denoiser_network.", "optimizer.", "schedule.")


def _part_prefixes() -> tuple:
    return tuple(set(PART_PREFIXES) | {r._prefix for r in _EVERY if r._prefix})


def registered_names() -> set:
    """(registry, name) of everything registered in code so far (for this thread), in every registry."""
    return {(r.what, n) for r in _EVERY for n in [*r._objects, *(k for o in r._overlays() for k in o)]}


@contextmanager
def scoped_all():
    """Every registry's `scoped` at once: a local plugin file may register a model kind and also
    data sources, activations, optimizers ... (all undone at the block's end)."""
    with ExitStack() as stack:
        for registry in list(_EVERY):
            stack.enter_context(registry.scoped())
        yield


def _source(ep) -> str:
    """An entry point as "package (module:object)"."""
    dist = getattr(getattr(ep, "dist", None), "name", None)
    return f"{dist} ({ep.value})" if dist else ep.value


class Registry:
    def __init__(self, what: str, entry_point_group: str | None = None, part: bool = False):
        """`part`: a registry of smaller parts (layers, data sources, ...), whose entry points in
        the group are named "PART.NAME" (`part_prefix`: "activation.softsign"); the model kinds'
        registry takes the names without a dot."""
        self.what = what
        self._objects: dict[str, object] = {}
        self._entry_points: dict[str, metadata.EntryPoint] = {}
        self._broken: dict[str, str] = {}
        # names that two installed plugins claim, or whose entry point gives another kind: which one a
        # spec meant cannot be told, so neither is used
        self._conflicts: dict[str, str] = {}
        self._group = entry_point_group
        self._prefix = part_prefix(what) if part else None
        self._scanned = False  # set only once the entries are filled in: other threads read them then
        self._scan_lock = threading.Lock()
        self._scopes = threading.local()  # per thread: the open `scoped` blocks' undo records
        self.check = None  # obj -> what it declares wrongly, or None: an entry point's plugin that fails it is not used
        _EVERY.append(self)

    def register(self, name: str, obj=None, *, replace: bool = False):
        """Register obj under name; usable as a decorator when obj is omitted."""

        def add(o):
            current = self._registered(name)
            if current is not _ABSENT and not replace and current is not o:
                raise ValueError(f'{self.what} "{name}" is already registered')
            overlays = self._overlays()
            if overlays:  # inside `scoped`: this thread's, until its block ends
                overlays[-1][name] = o
            else:
                self._objects[name] = o
                self._broken.pop(name, None)
            return o

        return add if obj is None else add(obj)

    def _scan(self) -> None:
        """Read the entry points once; a thread arriving mid-scan waits for it rather than
        seeing half of them (gengraph.run from two threads)."""
        if self._scanned or self._group is None:
            return
        with self._scan_lock:
            if self._scanned:  # another thread finished it while this one waited
                return
            self._read_entry_points()
            self._scanned = True

    def _read_entry_points(self) -> None:
        for ep in metadata.entry_points(group=self._group):
            name = self._own_name(ep.name)
            if name is None:  # another registry's
                continue
            first = self._entry_points.setdefault(name, ep)
            if first.value != ep.value:  # which one wins would depend on the order packages are found
                self._conflicts[name] = (f"two installed packages provide it, {_source(first)} and "
                                         f"{_source(ep)}; uninstall one")

    def _own_name(self, entry_name: str) -> str | None:
        """This registry's name for an entry point of its group, or None (another registry's)."""
        if self._prefix is None:  # a model kind may hold dots ("acme.mlp"): only a part's PART. prefix is not one
            return None if entry_name.startswith(_part_prefixes()) else entry_name
        return entry_name[len(self._prefix):] if entry_name.startswith(self._prefix) else None

    def _overlays(self) -> list:
        """This thread's open `scoped` blocks, outermost first: what each registered."""
        return getattr(self._scopes, "open", None) or []

    def _registered(self, name: str):
        """What is registered under name for this thread (its blocks first), else _ABSENT."""
        for overlay in reversed(self._overlays()):
            if name in overlay:
                return overlay[name]
        return self._objects.get(name, _ABSENT)

    def names(self) -> list[str]:
        """All kinds: registered (for this thread) and installed (not yet imported), broken excluded."""
        self._scan()
        scoped = {n for overlay in self._overlays() for n in overlay}
        names = set(self._objects) | set(self._entry_points) | scoped
        return sorted(n for n in names if (n not in self._broken and n not in self._conflicts)
                      or n in self._objects or n in scoped)

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def load_all(self) -> None:
        """Import every entry point (for listings); failures are recorded, not raised."""
        for name in list(self.names()):
            try:
                self.get(name)
            except UnknownKind:
                pass

    def broken(self) -> dict[str, str]:
        return {**self._broken, **self._conflicts}

    @contextmanager
    def scoped(self):
        """Registrations made inside the block are this thread's, and end with it (what was
        registered before is back): a notebook kernel outlives one call that loads a local plugin
        file. Kept apart per thread, not undone in a shared table: a snapshot restored at the end
        removed the plugin another thread's call had registered meanwhile, and two threads loading
        the same file undid each other's kind (or refused the second's part as registered)."""
        if not hasattr(self._scopes, "open"):
            self._scopes.open = []
        self._scopes.open.append({})
        try:
            yield self
        finally:
            self._scopes.open.pop()

    def get(self, name: str):
        obj = self._registered(name)
        if obj is not _ABSENT:
            return obj
        self._scan()
        ep = self._entry_points.get(name)
        if ep is not None and name not in self._broken and name not in self._conflicts:
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not break the others
                self._broken[name] = f"{type(exc).__name__}: {exc}"
            else:
                kind = getattr(obj, "kind", None)
                why = self.check(obj) if self.check is not None else None
                if isinstance(kind, str) and kind and kind != name:
                    self._conflicts[name] = (f'its entry point ({_source(ep)}) is named "{name}" but gives a plugin '
                                             f'of kind "{kind}"')
                elif why is not None:
                    self._conflicts[name] = f"its plugin ({_source(ep)}): {why}"
                else:
                    self._objects.setdefault(name, obj)
                    return self._objects[name]
        raise UnknownKind(self.what, name, self.names(), self._broken, self._conflicts)
