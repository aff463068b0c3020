"""Fused optimizer kernels: one op where the plain graph would take many.

Adam's update is 13 elementwise nodes per parameter as plain graph; as `ema` (twice) and
`adam_step` it is three kernels: on the CPU one compiled loop each where Numba is
installed (numba_loops.py, the same bits as the NumPy form), else a few in-place NumPy
calls; one launch each on CuPy, through an ElementwiseKernel. They are ordinary ops: forward, shape rule and
VJPs side by side, so updates can still be differentiated (e.g. for meta-learning).
"""

from __future__ import annotations

import math

import numpy as np

from .cpu_loops import call_site, cpu_loop
from .elementwise import sqrt
from .registry import defop, elementwise, float_dtype
from .special import cast

_CUDA_KERNELS: dict[str, object] = {}


def _cuda_launch(xp, name, params, body, args, out):
    """Run a cached CuPy ElementwiseKernel: one launch for the whole update."""
    kernel = _CUDA_KERNELS.get(name)
    if kernel is None:
        kernel = _CUDA_KERNELS[name] = xp.ElementwiseKernel(params, "T out", body, f"gengraph_{name}")
    return kernel(*args) if out is None else kernel(*args, out)


def _ema_forward(xp, m, x, decay, square=False, out=None):
    if xp is np and m.ndim and x.ndim:  # the usual case first: one loop, or three in-place passes
        r = cpu_loop("ema_square" if square else "ema", (m, x), (decay, 1.0 - decay), out)
        if r is not None:
            return r
        if square:
            t = np.multiply(x, x)
            t *= 1.0 - decay  # Python floats keep m's dtype
        else:
            t = np.multiply(x, 1.0 - decay)
        out = np.multiply(m, decay, out=out)
        out += t
        return out
    if xp is not np:
        body = "out = d * m + (1 - d) * x * x" if square else "out = d * m + (1 - d) * x"
        return _cuda_launch(xp, f"ema{int(square)}", "T m, T x, T d", body, (m, x, m.dtype.type(decay)), out)
    return decay * m + (1.0 - decay) * (x * x if square else x)  # NumPy scalars cannot be written into


def _ema_vjp_x(g, y, m, x, decay, square=False):
    return g * ((1.0 - decay) * 2.0 * x if square else 1.0 - decay)


ema = defop("ema", _ema_forward, lambda m, x, decay, square=False: elementwise(m, x),
            (lambda g, y, m, x, decay, square=False: g * decay, _ema_vjp_x), writes_into_out=True,
            doc="decay * m + (1 - decay) * x (x * x with square=True): a moving average in one kernel")


def _adam_step_forward(xp, p, m, v, step, scale, eps, out=None):
    if xp is np and v.ndim:  # the usual case first: one loop, or one temporary and six passes
        r = cpu_loop("adam_step", (p, m, v), (step, scale, eps), out)
        if r is not None:
            return r
        d = np.sqrt(v)
        d /= scale
        d += eps
        np.divide(m, d, out=d)
        d *= step
        return np.subtract(p, d, out=out)
    if xp is not np:
        return _cuda_launch(xp, "adam_step", "T p, T m, T v, T s, T c, T e", "out = p - m / (sqrt(v) / c + e) * s",
                            (p, m, v, step, scale, p.dtype.type(eps)), out)
    return p - m / (np.sqrt(v) / scale + eps) * step  # NumPy scalars cannot be written into; same order as above


def adam_update(xp, p, m, v, g, step, scale, beta1, beta2, eps, out=None, out_m=None, out_v=None):
    """ema(m, g, beta1) into out_m, ema(v, g, beta2, square=True) into out_v, then adam_step of p
    with them into out, in one call: the compiler (codegen._adam_fusions) calls this for the
    three kernels of an Adam update whose moments are written in place. With Numba and m, v
    updated in place, one loop (numba_loops.adam_update, the same bits); else the three kernels.
    Returns the new parameters."""
    if xp is np and out_m is m and out_v is v and m.ndim:
        r = cpu_loop("adam_update", (p, m, v, g), (beta1, 1.0 - beta1, beta2, 1.0 - beta2, step, scale, eps), out)
        if r is not None:
            return r
    return _adam_kernels(xp, p, m, v, g, step, scale, beta1, beta2, eps, out, out_m, out_v)


def adam_update_site():
    """adam_update for one call site of a program (the compiler binds one per fused update): its
    loop checks the program's flat buffers once (cpu_loops.call_site), and the constants beta1,
    1 - beta1, beta2, 1 - beta2 and eps are rounded to the dtype once, not every step (~4 us of
    ~7 a call at 3.5 k parameters, float32, the same bits)."""
    loop = call_site("adam_update")
    rounded = [None, None]  # (dtype, beta1, beta2, eps) and the five constants in that dtype

    def adam_update_at_site(xp, p, m, v, g, step, scale, beta1, beta2, eps, out=None, out_m=None, out_v=None):
        if xp is np and out_m is m and out_v is v and m.ndim:
            key = (p.dtype, beta1, beta2, eps)
            c = rounded[1] if key == rounded[0] else None
            if c is None and p.dtype.char in "fd":  # as run_loop rounds Python numbers
                t = p.dtype.type
                c = (t(beta1), t(1.0 - beta1), t(beta2), t(1.0 - beta2), t(eps))
                rounded[:] = key, c
            if c is not None:
                r = loop((p, m, v, g), (c[0], c[1], c[2], c[3], step, scale, c[4]), out)
                if r is not None:
                    return r
        return _adam_kernels(xp, p, m, v, g, step, scale, beta1, beta2, eps, out, out_m, out_v)
    return adam_update_at_site


def _adam_kernels(xp, p, m, v, g, step, scale, beta1, beta2, eps, out, out_m, out_v):
    """Adam's update as its three kernels (no loop for these arrays, or no Numba)."""
    m = _ema_forward(xp, m, g, beta1, out=out_m)
    v = _ema_forward(xp, v, g, beta2, square=True, out=out_v)
    return _adam_step_forward(xp, p, m, v, step, scale, eps, out=out)


def _adam_parts(m, v, step, scale, eps):
    root = sqrt(v)
    denom = root / scale + eps
    return root, denom


def _adam_vjps():
    def dp(g, y, p, m, v, step, scale, eps):
        return g

    def dm(g, y, p, m, v, step, scale, eps):
        _, denom = _adam_parts(m, v, step, scale, eps)
        return -g * step / denom

    def dv(g, y, p, m, v, step, scale, eps):
        root, denom = _adam_parts(m, v, step, scale, eps)
        return g * step * m / (denom * denom) / (2.0 * scale * root)

    def dstep(g, y, p, m, v, step, scale, eps):
        _, denom = _adam_parts(m, v, step, scale, eps)
        return -g * m / denom

    def dscale(g, y, p, m, v, step, scale, eps):
        root, denom = _adam_parts(m, v, step, scale, eps)
        return -g * step * m * root / (denom * denom * scale * scale)

    return dp, dm, dv, dstep, dscale


adam_step = defop("adam_step", _adam_step_forward,
                  lambda p, m, v, step, scale, eps: (elementwise(p, m, v)[0], float_dtype(p)),
                  _adam_vjps(), writes_into_out=True,
                  doc="p - step * m / (sqrt(v) / scale + eps): Adam's parameter update in one kernel")


# --- Adam's bias corrections: two float64 scalars per step, from the step counter --------
# On NumPy in Python floats (about 1 µs) instead of five 0-d array ops each; the same
# formulas as PyTorch's (and the hand-written NumPy's): lr / (1 - b1^t), sqrt(1 - b2^t).
_SCALAR_TYPES = {name: np.dtype(name).type for name in ("float16", "float32", "float64")}


def _scalar_type(dtype):
    """NumPy's scalar type of a dtype name (cached: np.dtype(name) costs 0.2 us a call)."""
    t = _SCALAR_TYPES.get(dtype)
    return t if t is not None else np.dtype(dtype).type


def _adam_step_size_forward(xp, lr, step, beta, dtype="float64"):
    if xp is np:
        return _scalar_type(dtype)(float(lr) / (1.0 - beta ** (float(step) + 1.0)))
    return (lr / (1.0 - beta ** (step + 1.0))).astype(dtype)


def _adam_step_size_vjp(g, y, lr, step, beta, dtype="float64"):
    return cast(g, dtype=lr.dtype.name) * adam_step_size(1.0, step, beta=beta)


adam_step_size = defop(
    "adam_step_size", _adam_step_size_forward,
    lambda lr, step, beta, dtype="float64": ((), np.dtype(dtype)), (_adam_step_size_vjp, None),
    doc="lr / (1 - beta^(step + 1)), computed in float64 and rounded once to `dtype`: Adam's step size "
        "after the first-moment bias correction")


def _adam_bc_sqrt_forward(xp, step, beta, dtype="float64"):
    if xp is np:
        return _scalar_type(dtype)(math.sqrt(1.0 - beta ** (float(step) + 1.0)))
    return xp.sqrt(1.0 - beta ** (step + 1.0)).astype(dtype)


adam_bc_sqrt = defop("adam_bc_sqrt", _adam_bc_sqrt_forward,
                     lambda step, beta, dtype="float64": ((), np.dtype(dtype)), (None,),
                     doc="sqrt(1 - beta^(step + 1)), computed in float64 and rounded once to `dtype`: Adam's "
                         "second-moment bias correction")
