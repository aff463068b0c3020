"""How much memory this machine can give a run, and a check against it before allocating."""

from __future__ import annotations

import os


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
