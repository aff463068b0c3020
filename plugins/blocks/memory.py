"""How much memory this machine can give a run, and a check against it before allocating."""

from __future__ import annotations

import os

from gengraph.engine.graph import topo_order
from gengraph.engine.metrics import node_bytes, peak_live_bytes
from gengraph.engine.ops import OPS
from gengraph.engine.views import GraphView, output_dict
from gengraph.plugins.model import ModelConfigError


def available_bytes() -> int:
    """The memory this process can still allocate: the least of the system's MemAvailable, what its
    address-space limit (ulimit -v) leaves and what its cgroup's limit leaves. MemAvailable alone
    ignored those limits: under ulimit -v a 60-byte .gz file was "more than half the memory
    available" (its read asked for a buffer of half of MemAvailable)."""
    return min(_system_available(), _address_space_left(), _cgroup_left())


def _system_available() -> int:
    """MemAvailable from /proc/meminfo, else physical memory (SC_PHYS_PAGES x SC_PAGE_SIZE)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return UNKNOWN


UNKNOWN = 1 << 62  # a limit that cannot be read does not refuse anything

STATM = "/proc/self/statm"  # its first number: the process's virtual size, in pages

CGROUP_FILES = (  # (limit, usage, stat, its reclaimable page-cache line) of cgroup v2, then of v1; v2 writes "max"
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat", "inactive_file"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
     "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file"),
)


def _address_space_left() -> int:
    """RLIMIT_AS (ulimit -v) less the process's virtual size."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit == resource.RLIM_INFINITY or limit < 0:
            return UNKNOWN
        with open(STATM) as fh:
            used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, OSError, ValueError, IndexError, AttributeError):
        return UNKNOWN
    return max(limit - used, 0)


def _cgroup_left() -> int:
    """The memory limit of the process's cgroup less its usage, where a limit is set. The usage
    counts the page cache, whose inactive part the kernel frees on demand: it is not subtracted
    (after reading a few GB of files a cgroup looks nearly full and is not)."""
    for limit_file, usage_file, stat_file, cache_key in CGROUP_FILES:
        limit, usage = _read_number(limit_file), _read_number(usage_file)
        if limit is not None and usage is not None:
            return max(limit - max(usage - _stat_value(stat_file, cache_key), 0), 0)
    return UNKNOWN


def _stat_value(path: str, key: str) -> int:
    """A `key value` line's value in a cgroup's memory.stat (0 where there is none)."""
    try:
        with open(path) as fh:
            for line in fh:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _read_number(path: str) -> int | None:
    """The integer a one-line kernel file holds; None where the file is missing or says "max"."""
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def human(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} PiB"


def too_big(nbytes: float, what: str) -> str | None:
    """A message when nbytes cannot fit in the memory available now, else None."""
    free = available_bytes()
    if nbytes > free:
        return f"{what} needs {human(nbytes)}, more than the {human(free)} of memory available"
    return None


def check_param(shape, path: str, source: str = "", itemsize: int = 8) -> None:
    """ModelConfigError naming `path` when a parameter of `shape` (with its gradient and two
    optimizer moments) cannot fit in memory; checked before it is allocated. `source` (e.g. "its
    input has 2000000 channels") says where a size that is not `path`'s own comes from."""
    import math

    n = math.prod(int(d) for d in shape)
    if (why := too_big(4 * n * itemsize, f"a parameter of shape {tuple(int(d) for d in shape)} (with its "
                                           f"gradient and optimizer state{'; ' + source if source else ''})")) is not None:
        raise ModelConfigError(path, why)


def model_estimate(model, train_batch: int, eval_batch: int, samples: int) -> dict:
    """Bytes a run of `model` needs, from its graph's shapes alone (before anything is compiled):
    {"params": values x 4 (value, gradient, two optimizer moments), "train": activations of a
    training step of `train_batch` rows, "evaluate": of the loss and metrics on `eval_batch` rows,
    "samples": of the largest other program (sampling, reports) on `samples` rows, "programs": of the
    largest program that runs at rows of its own (`model.program_rows`, e.g. the importance-weighted
    bound's batches) and "programs_rows": those rows}.

    A forward pass needs the most values alive at once in its topological order (views are free,
    a value dies after its last use), counted twice for what kernels allocate inside (im2col
    matrices, Winograd tiles). A training step keeps every batch-shaped forward value for the
    backward pass and then needs about a forward pass's worth more for the gradients in flight.
    Against the peaks tracemalloc measures for the shipped image specs at 512 rows this is
    0.9-2x (tests/test_input_limits.py).
    Each program is estimated on its own: summing the whole graph (every program's nodes) made a
    U-Net's estimate ~20x what it uses."""
    graph = model.graph

    def view(outputs, updates=None):
        outs, ups = output_dict(outputs), list((updates or {}).items())
        return GraphView(topo_order(list(outs.values()) + [v for _, v in ups]), outs, ups)

    def kept(v, batch):  # every batch-shaped value a forward pass computes (not views)
        return sum(node_bytes(n, batch) for n in v.nodes
                   if not n.is_leaf and n.shape and n.shape[0] is None
                   and not (n.op in OPS and OPS[n.op].returns_view_of_input))

    forward = view([model.loss, *model.metrics.values()])
    rows_of = getattr(model, "program_rows", {})
    others = [view(outs, ups) for name, (outs, ups) in model.programs.items() if name not in rows_of]
    own = [(2 * peak_live_bytes(view(*model.programs[name]), rows), rows) for name, rows in rows_of.items()]
    largest, largest_rows = max(own or [(0, 0)])
    return {"params": 4 * sum(int(graph.value(p).nbytes) for p in graph.params()),
            "train": kept(forward, train_batch) + peak_live_bytes(forward, train_batch),
            "evaluate": 2 * peak_live_bytes(forward, eval_batch),
            "samples": 2 * max([peak_live_bytes(v, samples) for v in others if samples] or [0]),
            "programs": largest, "programs_rows": largest_rows}
