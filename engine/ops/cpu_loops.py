"""Where Numba is installed, elementwise kernels on NumPy run as one compiled loop each.

`cpu_loop` is the one entry: a kernel's NumPy forward asks it first, and runs its NumPy form
when it answers None (no Numba, GENGRAPH_NUMBA=0, or arrays the loops do not take); `takes`
and `run_loop` are its two halves, for a forward that prepares an input of the loop only once
it knows the loop runs. The loops themselves are in numba_loops.py, imported on first use.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import warnings

import numpy as np

_LOOPS = None  # the numba_loops module, False where Numba is absent or GENGRAPH_NUMBA=0

# Values from which a loop beats its NumPy form: a call costs ~1 us here and ~1.5 us in Numba's
# dispatch, which a NumPy form of one or two passes only loses on larger arrays. Float32, one
# thread, NumPy / loop us (2026-11-30): relu_grad 2.86 / 3.39 at 4096, 3.87 / 3.80 at 8192;
# ema 3.20 / 3.41 at 4096, 4.01 / 3.85 at 8192; adam_step 4.98 / 5.09 at 1024, 5.94 / 5.56 at
# 2048; silu_grad_x 6.78 / 6.52 at 1024 (5.55 / 5.66 at 64); the image SiLU 13.2 / 14.1 at
# 16 k, 46.6 / 42.8 at 64 k; silu_grad and the fused Adam update win from the smallest sizes.
MIN_SIZE = {"relu_grad": 8192, "ema": 8192, "ema_square": 8192, "adam_step": 2048, "silu_grad_t": 1024,
            "silu_t": 65536}
# Loops for float32 arrays only, at every size (numba_math.py: their exp and log1p are float32
# code, and a dense SiLU and an image SiLU must take the same one to agree to the bit)
FLOAT32_ONLY = frozenset({"sigmoid32", "silu32", "silu_grad_x32", "softplus32", "bce32"})


def _switched_off() -> bool:
    """GENGRAPH_NUMBA=0: the loops are not used, and Numba is not imported."""
    return os.environ.get("GENGRAPH_NUMBA", "").strip() == "0"


def load_loops():
    """The numba_loops module (imported on the first call), or False where Numba is not installed
    or GENGRAPH_NUMBA=0. A process that wants Numba's fixed cost (~0.2 s, ~150 MB of LLVM) paid
    before its first training step, a benchmark say, calls this first."""
    global _LOOPS
    if _LOOPS is None:
        _LOOPS = False
        if not _switched_off():
            try:  # imported here, not at the top: Numba's import costs ~0.2 s
                _LOOPS = importlib.import_module(".numba_loops", __package__)
            except ImportError:  # not installed, or not for this NumPy: NumPy's passes, the same bits
                pass  # (but for large 3x3 convolutions: F(2x2, 3x3) instead of F(4x4, 3x3), winograd43.py)
            except Exception as exc:  # a broken install must not stop a run that can do without it
                warnings.warn(f"Numba could not be loaded ({type(exc).__name__}: {exc}); elementwise kernels "
                              "run as NumPy passes (the same results, up to rounding in large 3x3 convolutions; "
                              "GENGRAPH_NUMBA=0 skips the attempt)",
                              RuntimeWarning, stacklevel=2)
    return _LOOPS


def describe(device: str = "cpu") -> str:
    """What runs the elementwise loops of a run on `device`, for its env.json: "numba 0.68.1",
    or "off (...)" and why. On the CPU this loads Numba (load_loops), so that a Numba that
    is installed but does not load is said here, not only in a warning."""
    if device != "cpu":
        return f"off (device {device}: the loops run on NumPy arrays)"
    if _switched_off():
        return "off (GENGRAPH_NUMBA=0)"
    try:
        version = importlib.metadata.version("numba")
    except importlib.metadata.PackageNotFoundError:
        return "off (numba is not installed: the fast extra)"
    if not load_loops():
        return f"off (numba {version} is installed but did not load)"
    return f"numba {version}"


def warm(dtype="float32") -> bool:
    """Import Numba and compile (or load from its cache) every loop for `dtype` now, as a
    process's first training step would; True if the loops are in use. For a benchmark that
    counts Numba's fixed cost (~0.5 s, ~150 MB of LLVM, more at the first compile) apart."""
    loops = load_loops()
    if loops:
        loops.warm(dtype)
    return bool(loops)


def cpu_loop(name, arrays, scalars, out):
    """Run numba_loops.<name>(*arrays, *scalars, out) and return out, when `takes` says the loops
    apply and the scalars are Python numbers or of the arrays' dtype; None otherwise, and the
    caller runs its NumPy form."""
    if not takes(arrays, out, name):
        return None
    dt = arrays[0].dtype
    for s in scalars:  # Python numbers are rounded to the dtype (run_loop), as NumPy rounds them
        if s.__class__ not in (float, int) and getattr(s, "dtype", None) != dt:
            return None
    return run_loop(name, arrays, scalars, out)


def _loops_for(x):
    """The numba_loops module where Numba is on and x is a native C-contiguous NumPy array (whose
    flat view is free), else None: the check of the single-input entries below."""
    loops = _LOOPS if _LOOPS is not None else load_loops()
    if not loops or x.__class__ is not np.ndarray or not x.dtype.isnative or not x.flags.c_contiguous:
        return None
    return loops


def pair_loop(name, x):
    """numba_loops.<name>(x, a, b) into two new arrays of x's shape and dtype: (a, b), or None where
    Numba is off or x is not a native C-contiguous NumPy array. The caller checks the dtype."""
    loops = _loops_for(x)
    if loops is None:
        return None
    a, b = np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype)
    getattr(loops, name)(x.reshape(-1), a.reshape(-1), b.reshape(-1))
    return a, b


def bias_rows(x, b):
    """(the numba_loops module, x as (rows, units)) for a loop over a dense layer's pre-activations x
    and its bias b (numba_math's bias loops), or None: Numba off, or x and b not native
    C-contiguous float32 NumPy arrays with b 1-D of x's last axis length (and x not empty)."""
    loops = _loops_for(x)
    if loops is None or _loops_for(b) is None or x.dtype.char != "f" or b.dtype.char != "f" or b.ndim != 1 \
            or not x.ndim or x.shape[-1] != b.shape[0] or not x.size:
        return None
    return loops, x.reshape(-1, b.shape[0])


def unary_loop(name, x, out):
    """numba_loops.<name> over one array x into a new array (out None) or in place (out x), or
    None where Numba is off or x is not a native C-contiguous NumPy array (or, in place, not
    writable); another out goes through cpu_loop's checks. With one input there is no overlap to
    rule out, so this skips `takes` (~1.2 us a call: the float32 sigmoid, SiLU and softplus of
    numba_math.py, which run at every size). The caller checks the dtype."""
    loops = _LOOPS if _LOOPS is not None else load_loops()  # _loops_for's check, inline: ~0.03 us a call here
    if not loops or x.__class__ is not np.ndarray or not x.dtype.isnative or not x.flags.c_contiguous:
        return None
    if out is None:
        out = np.empty(x.shape, x.dtype)
        if x.ndim == 1:
            getattr(loops, name)(x, out)
        else:
            getattr(loops, name)(x.reshape(-1), out.reshape(-1))
        return out
    if out is x:
        if not x.flags.writeable:
            return None
        getattr(loops, name + "_inplace")(x if x.ndim == 1 else x.reshape(-1))
        return x
    return cpu_loop(name, (x,), (), out)


def call_site(name):
    """cpu_loop(name, ...) for one kernel slot of a compiled program. A slot whose arrays are the
    program's own buffers (a fused Adam update's flat parameter, moment and gradient buffers) gets
    the same arrays every step, so this remembers the last ones `takes` accepted with an out
    (holding them, which keeps their ids theirs), and the loop and flat views run_loop would pick,
    and checks again only when others come: ~2.5 us less a call, a third of Adam's whole call at
    3.5 k parameters. Scalars of the arrays' type pass as they are, Python numbers are rounded to
    it, others are left to the caller (None), as cpu_loop does. (Reassigning a held buffer's shape
    or dtype in place, which nothing in gengraph does, would go unseen.)"""
    held = [None]  # (arrays, out, loop, flat arrays, flat out (None: in place), the scalar type)

    def call(arrays, scalars, out):
        h = held[0]
        same = h is not None and out is h[1] and len(arrays) == len(h[0])
        if same:  # the same arrays, still writable (the held flat views would not see a flag set since)
            for a, b in zip(arrays, h[0]):
                if a is not b or not a.flags.writeable:
                    same = False
                    break
            same = same and (out is h[0][0] or out.flags.writeable)
        if not same:
            if out is None or not takes(arrays, out, name):
                return cpu_loop(name, arrays, scalars, out) if out is None else None
            if not all(a.flags.writeable for a in arrays):  # a loop may write any of them: not held
                held[0] = None
                return cpu_loop(name, arrays, scalars, out)
            first = arrays[0]
            flat = tuple(a.reshape(-1) for a in arrays)
            loop = getattr(_LOOPS, name + "_inplace") if out is first else getattr(_LOOPS, name)
            h = held[0] = (tuple(arrays), out, loop, flat, None if out is first else out.reshape(-1),
                           first.dtype.type)
        t = h[5]
        rounded = []
        for s in scalars:
            c = s.__class__
            if c is t:
                rounded.append(s)
            elif c is float or c is int:
                rounded.append(t(s))
            else:  # a NumPy scalar or 0-d array of another dtype: the caller's NumPy form
                return None
        if h[4] is None:  # in place: the loop of its own
            h[2](*h[3], *rounded)
        else:
            h[2](*h[3], *rounded, h[4])
        return out
    return call


def run_loop(name, arrays, scalars, out):
    """numba_loops.<name> over arrays `takes` accepted (an out that is the first array runs the
    loop <name>_inplace; None: a new array); returns out. For a forward that asked `takes`
    before making an input of the loop (the image SiLU's tanh), which then needs no second check."""
    first = arrays[0]
    t = first.dtype.type
    scalars = [s if s.__class__ is t else t(s) for s in scalars]
    flat = arrays if first.ndim == 1 else [a.reshape(-1) for a in arrays]
    if out is first:  # in place: a loop of its own (see numba_loops)
        getattr(_LOOPS, name + "_inplace")(*flat, *scalars)
        return out
    if out is None:
        out = np.empty(first.shape, first.dtype)
    getattr(_LOOPS, name)(*flat, *scalars, out if first.ndim == 1 else out.reshape(-1))
    return out


def takes(arrays, out=None, name=None) -> bool:
    """Whether cpu_loop runs the loop `name` over these arrays into out: Numba is there, the
    arrays hold at least MIN_SIZE[name] values and are alike (NumPy arrays of one native float
    dtype and one shape, C-contiguous, so flat views are free), no two of them are different
    views of one buffer (they could overlap in part, where NumPy buffers and a loop would not),
    and out is None, the first array (in place) or an array of its own; an out that is another
    input is left to NumPy (its loop would overlap an input: LLVM's scalar loop); so are arrays
    over memory another object owns (np.frombuffer, as_strided: their overlaps are not known
    from their bases) and a read-only out. Called before every loop: written for speed."""
    if not (_LOOPS if _LOOPS is not None else load_loops()):
        return False
    first = arrays[0]
    dt, shape = first.dtype, first.shape
    if dt.char not in "fd" or not dt.isnative or first.size < MIN_SIZE.get(name, 0):
        return False
    if dt.char != "f" and name in FLOAT32_ONLY:
        return False
    every = arrays if out is None or out is first else (*arrays, out)
    owners = []
    for a in every:
        if a.__class__ is not np.ndarray or a.shape != shape or a.dtype != dt or not a.flags.c_contiguous:
            return False
        b = a.base
        if b is None:
            owners.append(a)
        elif b.__class__ is np.ndarray and b.base is None:  # a view of an array that owns its memory
            owners.append(b)
        else:  # memory of another object (np.frombuffer, as_strided, a memory map): overlaps unknown
            return False
    written = first if out is None or out is first else out
    if out is not None and not written.flags.writeable:  # NumPy's form says so in its own words
        return False
    if len({id(o) for o in owners}) < len(every):  # two arrays over one buffer: the same one only
        for i, o in enumerate(owners):
            for j in range(i):
                if owners[j] is o and every[j] is not every[i]:
                    return False
    return out is None or out is first or not any(out is a for a in arrays)
