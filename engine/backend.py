"""Array backends: NumPy (default) and CuPy, chosen when a program is compiled."""

from __future__ import annotations

import numpy as np

from .errors import UserError


class BackendError(UserError, RuntimeError):
    """An unknown backend, or one that is not usable here (CuPy missing, no CUDA device)."""


def get_backend(name: str = "numpy"):
    """The array namespace for a backend name ("numpy"/"cpu" or "cupy"/"cuda")."""
    if name in ("numpy", "cpu"):
        return np
    if name in ("cupy", "cuda", "gpu"):
        try:
            import cupy
        except ImportError as exc:
            raise BackendError("the cupy backend needs CuPy: pip install 'gengraph[cuda]'") from exc
        try:
            cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # no driver / no device
            raise BackendError(f"CuPy is installed but no CUDA device is usable: {exc}") from exc
        return cupy
    raise BackendError(f'unknown backend "{name}" (use numpy or cupy)')


def cupy_available() -> bool:
    try:
        get_backend("cupy")
    except BackendError:
        return False
    return True


def to_numpy(x):
    """A NumPy array from a NumPy or CuPy array (or scalar)."""
    if hasattr(x, "get") and not isinstance(x, np.ndarray):
        return x.get()
    return np.asarray(x)


def on_device_of(target, value):
    """value as an array on target's device: a host array (or list) uploaded when target is a CuPy
    array, whose `[...] = ` takes no NumPy array; numbers and arrays of target's kind as they are."""
    if isinstance(target, np.ndarray) or isinstance(value, (int, float)) or type(value) is type(target):
        return value
    import cupy  # only reached with a CuPy target in hand

    return cupy.asarray(value, dtype=target.dtype)


def to_floats(values) -> list[float]:
    """Python floats of scalars (0-d arrays, NumPy or CuPy, or numbers) with one transfer from the
    device for all of a step's CuPy scalars: each .get() waits for the device, and a training step
    logs several (loss, gradient norm, metrics)."""
    values = list(values)
    on_device = [i for i, v in enumerate(values) if hasattr(v, "get") and not isinstance(v, np.ndarray)]
    out = [None if i in on_device else float(np.asarray(v)) for i, v in enumerate(values)]
    if on_device:
        import cupy  # only reached with CuPy arrays in hand

        fetched = cupy.stack([values[i].reshape(()).astype(cupy.float64) for i in on_device]).get()
        for i, v in zip(on_device, fetched):
            out[i] = float(v)
    return out
