"""Flat buffers: many arrays as one vector, so that an update rule runs once over all of them.

``pack(x1, ..., xn)`` is the concatenation of the raveled inputs; ``unpack(f, i, shapes)``
is the i-th piece of such a vector, reshaped. When the inputs already lie one after the
other in one contiguous buffer (parameters and optimizer state that the optimizer laid
out as views of a flat array, gradients that the compiler wrote into such views), ``pack``
returns that buffer without copying; otherwise it concatenates. ``unpack`` is always a
view. Both are ordinary ops with VJPs, so an optimizer step stays differentiable.
"""

from __future__ import annotations

import functools

import numpy as np

from .registry import ShapeError, defop, float_dtype


class Shapes(tuple):
    """The shapes of a pack's pieces (a tuple of shape tuples) with their offsets worked out once:
    every unpack view of a pack carries them, and recounting them per view made building and
    differentiating a model quadratic in its number of parameters."""

    def offsets(self) -> tuple:
        cached = self.__dict__.get("_offsets")
        if cached is None:
            cached = self.__dict__["_offsets"] = _count_offsets(self)
        return cached


def _count_offsets(shapes) -> tuple:
    out, off = [], 0
    for s in shapes:
        n = 1
        for d in s:
            n *= d
        out.append((off, off + n))
        off += n
    return tuple(out)


def _offsets(shapes) -> tuple:
    """(start, stop) of each piece in the packed vector (shapes: shape tuples, best a Shapes)."""
    if isinstance(shapes, Shapes):
        return shapes.offsets()
    return _offsets_of_tuple(tuple(tuple(s) for s in shapes))


@functools.lru_cache(maxsize=4096)
def _offsets_of_tuple(shapes) -> tuple:
    return _count_offsets(shapes)


def sizes_of(shapes) -> list[int]:
    return [b - a for a, b in _offsets(shapes)]


def _total(shapes) -> int:
    offsets = _offsets(shapes)
    return offsets[-1][1] if offsets else 0


def _ptr(a) -> int:
    return a.__array_interface__["data"][0] if isinstance(a, np.ndarray) else a.data.ptr  # CuPy: .data.ptr


def contiguous_base(arrays):
    """The 1-D array that holds `arrays` one after the other (each C-contiguous, in order,
    no gaps), as a view of their common base; None when they are not laid out that way."""
    if not arrays:
        return None
    first = arrays[0]
    base = getattr(first, "base", None)
    if base is None or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    item = first.dtype.itemsize
    start = pos = _ptr(first)
    for a in arrays:
        if getattr(a, "base", None) is not base or not a.flags.c_contiguous or a.dtype != first.dtype \
                or _ptr(a) != pos:
            return None
        pos += a.size * item
    off = (start - _ptr(base)) // item
    return base[off:off + (pos - start) // item]


def _pack_forward(xp, *xs, shapes):
    flat = contiguous_base(xs)
    if flat is not None:
        return flat
    return xp.concatenate([x.reshape(-1) for x in xs]) if xs else xp.zeros(0)


def _pack_shape(*xs, shapes):
    if len(xs) != len(shapes) or any(x.shape != tuple(s) for x, s in zip(xs, shapes)):
        raise ShapeError("pack: the shapes attribute does not match the inputs")
    if any(None in x.shape for x in xs):
        raise ShapeError("pack needs known shapes")
    dtypes = {x.dtype for x in xs}
    if len(dtypes) != 1:
        raise ShapeError(f"pack needs one dtype, found {sorted(str(d) for d in dtypes)}")
    return (_total(shapes),), xs[0].dtype


def _pack_vjp(i):
    return lambda g, y, *xs, shapes: unpack(g, index=i, shapes=shapes)


_pack = defop("pack", _pack_forward, _pack_shape, _pack_vjp, returns_view_of_input=True,
              doc="the inputs raveled and concatenated into one vector (no copy when they already lie "
                  "one after the other in one buffer)")


def pack(*xs):
    """One vector of the raveled inputs (all of one dtype, known shapes), in order."""
    return _pack(*xs, shapes=Shapes(tuple(x.shape) for x in xs))


def _unpack_forward(xp, f, index, shapes):
    start, stop = _offsets(shapes)[index]
    return f[start:stop].reshape(shapes[index])


def _unpack_shape(f, index, shapes):
    if f.shape != (_total(shapes),):
        raise ShapeError(f"unpack: a vector of {_total(shapes)} elements expected, not {f.shape}")
    return tuple(shapes[index]), float_dtype(f)


def _unpack_vjp(g, y, f, index, shapes):
    graph = g.graph
    parts = [g if j == index else graph.constant(np.zeros(s), dtype=g.dtype) for j, s in enumerate(shapes)]
    return pack(*parts)


unpack = defop("unpack", _unpack_forward, _unpack_shape, (_unpack_vjp,), returns_view_of_input=True,
               doc="piece `index` of a packed vector, reshaped to shapes[index] (a view)")
