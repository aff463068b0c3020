"""How much memory this machine can give a run, and a check against it before allocating."""

from __future__ import annotations

import os
from gengraph.plugins.model import ModelConfigError


def available_bytes() -> int:
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
        return 1 << 40  # unknown: do not refuse


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


def check_param(shape, path: str, itemsize: int = 8) -> None:
    """ModelConfigError naming `path` when a parameter of `shape` (with its gradient and two
    optimizer moments) cannot fit in memory; checked before it is allocated."""
    import math

    n = math.prod(int(d) for d in shape)
    if (why := too_big(4 * n * itemsize, f"a parameter of shape {tuple(int(d) for d in shape)} (with its "
                                           "gradient and optimizer state)")) is not None:
        raise ModelConfigError(path, why)


def graph_estimate(graph, batch: int) -> tuple[int, int]:
    """(parameter bytes, activation bytes for one batch of `batch` rows) of a built graph, from its
    shapes alone: params x 4 (value, gradient, two moments); every batch-shaped node x 3
    (forward value, its gradient, a temporary)."""
    import math

    import numpy as np

    params = sum(int(graph.value(p).nbytes) for p in graph.params())
    act = 0
    for node in graph.nodes:
        shape = getattr(node, "shape", None)
        if shape and shape[0] is None:
            rest = math.prod(int(d) for d in shape[1:] if d is not None)
            act += rest * np.dtype(node.dtype).itemsize
    return 4 * params, 3 * act * batch
