"""Linear algebra and shape ops: matmul, transpose, reshape, concat, indexing, gather."""

from __future__ import annotations

import numpy as np

from .reduce import broadcast_like, expand_dims, reshape_like, sum_to
from .registry import ZERO, ShapeError, _fmt, as_node, expression_function, broadcast_shapes, defop, float_dtype, size_of


# --- matmul (batched, NumPy semantics incl. 1-D operands) --------------------------------
def _matmul_shape(a, b):
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("matmul needs at least 1-D operands")
    sa = a.shape if a.ndim > 1 else (1,) + a.shape
    sb = b.shape if b.ndim > 1 else b.shape + (1,)
    if None not in (sa[-1], sb[-2]) and sa[-1] != sb[-2]:
        raise ShapeError(f"inner dimensions {sa[-1]} and {sb[-2]} differ")
    batch = broadcast_shapes(sa[:-2], sb[:-2])
    out = batch + (sa[-2], sb[-1])
    if a.ndim == 1:
        out = out[:-2] + out[-1:]
    if b.ndim == 1:
        out = out[:-1]
    return out, float_dtype(a, b)


def _matmul_flops(out, a, b, **attrs):
    return 2 * size_of(out) * (a[-1] or 1)


def mT(x):
    """Swap the last two axes."""
    perm = tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2)
    return transpose(x, axes=perm)


def _matmul_vjp_a(g, y, a, b):
    if a.ndim == 1 and b.ndim == 1:
        return g * b
    if a.ndim == 1:  # (k,) @ (..., k, m): g is (..., m)
        return sum_to(matmul(b, expand_dims(g, axis=(g.ndim,)))[..., 0], a)
    if b.ndim == 1:  # (..., n, k) @ (k,): g is (..., n)
        return expand_dims(g, axis=(g.ndim,)) * b
    return sum_to(matmul(g, mT(b)), a)


def _matmul_vjp_b(g, y, a, b):
    if a.ndim == 1 and b.ndim == 1:
        return g * a
    if a.ndim == 1:
        return expand_dims(a, axis=(1,)) * expand_dims(g, axis=(g.ndim - 1,))
    if b.ndim == 1:
        return sum_to(matmul(mT(a), expand_dims(g, axis=(g.ndim,)))[..., 0], b)
    return sum_to(matmul(mT(a), g), b)


matmul = defop("matmul", None, _matmul_shape, (_matmul_vjp_a, _matmul_vjp_b), ufunc="matmul", flops=_matmul_flops,
               float_inputs=True, in_expressions=True)


# --- transpose / reshape ---------------------------------------------------------
def _transpose_shape(x, axes):
    # an axis out of range, repeated or not an int would otherwise wrap or fail when run
    if not all(isinstance(a, (int, np.integer)) for a in axes) or sorted(axes) != list(range(x.ndim)):
        raise ShapeError(f"axes {tuple(axes)} must be a permutation of range({x.ndim})")
    return tuple(x.shape[a] for a in axes), x.dtype


_transpose = defop("transpose", lambda xp, x, axes: x.transpose(axes), _transpose_shape,
                   (lambda g, y, x, axes: _transpose(g, axes=tuple(int(i) for i in np.argsort(axes))),),
                   returns_view_of_input=True,
                   source=lambda x, axes, ndims: f"{x}.T" if tuple(axes) == (1, 0) else f"{x}.transpose({tuple(axes)!r})")


@expression_function
def transpose(x, axes=None):
    # negative axes count from the end; any other out-of-range axis is left for the shape rule to refuse
    axes = tuple(reversed(range(x.ndim))) if axes is None else tuple(
        a + x.ndim if isinstance(a, (int, np.integer)) and -x.ndim <= a < 0 else a for a in axes)
    return _transpose(x, axes=axes)


def _reshape_shape(x, shape):
    known = [d for d in shape if d not in (-1, None)]
    free = [i for i, d in enumerate(shape) if d in (-1, None)]
    if len(free) > 1:
        raise ShapeError(f"reshape to {shape}: at most one unknown (-1/None) dimension")
    if None not in x.shape:
        total = size_of(x.shape)
        if free:
            part = size_of(known)
            if part == 0 or total % part:
                raise ShapeError(f"cannot reshape {x.shape} to {shape}")
            shape = tuple(total // part if i in free else d for i, d in enumerate(shape))
        elif size_of(shape) != total:
            raise ShapeError(f"cannot reshape {x.shape} ({total} elements) to {shape}")
    return tuple(None if d == -1 else d for d in shape), x.dtype


_reshape = defop("reshape", lambda xp, x, shape: x.reshape(shape), _reshape_shape,
                 (lambda g, y, x, shape: reshape_like(g, x),), returns_view_of_input=True,
                 source=lambda x, shape, ndims: f"{x}.reshape({tuple(shape)!r})")  # the kernel's one call, inline


def reshape(x, shape):
    return _reshape(x, shape=tuple(-1 if d is None else int(d) for d in shape))


def flatten(x):
    """(batch, ...) -> (batch, prod(...))."""
    return reshape(x, (-1, size_of(x.shape[1:])))


def broadcast_to(x, shape):
    return broadcast_like(x, zeros(x.graph, shape, x.dtype))


def zeros(graph, shape, dtype=None):
    return as_node(graph, np.zeros(shape, dtype or graph.dtype))


# --- concat --------------------------------------------------------------------------
def _concat_shape(*xs, axis, sizes):
    base = list(xs[0].shape)
    for x in xs[1:]:
        if x.ndim != len(base):
            raise ShapeError("concat needs inputs of equal rank")
        for i, (d, e) in enumerate(zip(base, x.shape)):
            if i != axis and None not in (d, e) and d != e:  # None (unknown batch size) matches anything
                raise ShapeError(f"shapes {_fmt(xs[0].shape)} and {_fmt(x.shape)} differ in dimension {i}, "
                                 f"which is not the concatenation axis {axis}")
            if d is None:
                base[i] = e
    base[axis] = sum(sizes)
    return tuple(base), float_dtype(*xs)


def _concat_vjp(i):
    def vjp(g, y, *xs, axis, sizes):
        start = sum(sizes[:i])
        index = (slice(None),) * axis + (slice(start, start + sizes[i]),)
        return g[index]

    return vjp


_concat = defop("concat", lambda xp, *xs, axis, sizes: xp.concatenate(xs, axis=axis), _concat_shape, _concat_vjp)


def concat(xs, axis=-1):
    xs = list(xs)
    if not xs:
        raise ShapeError("concat needs at least one input")
    if not -xs[0].ndim <= axis < xs[0].ndim:
        raise ShapeError(f"concat: axis {axis} is out of range for {xs[0].ndim} dimensions")
    axis = axis % xs[0].ndim
    for x in xs[1:]:  # before the sizes are read: a shorter input has no such axis
        if x.ndim != xs[0].ndim:
            raise ShapeError(f"concat needs inputs of equal rank, got shapes {_fmt(xs[0].shape)} and {_fmt(x.shape)}")
    sizes = tuple(x.shape[axis] for x in xs)
    if None in sizes:
        raise ShapeError("concat along an axis of unknown size is not supported")
    return _concat(*xs, axis=axis, sizes=sizes)


# --- basic indexing (static ints, slices, None, Ellipsis) -------------------------------
def _index_shape(x, index):
    # probe with two batch sizes: dimensions that change with it stay unknown
    shapes = []
    for n in (2, 3):
        probe = np.empty(tuple(n if d is None else d for d in x.shape), dtype=np.bool_)
        try:
            shapes.append(probe[index].shape)
        except (IndexError, TypeError) as exc:
            raise ShapeError(f"bad index {index!r}: {exc}") from None
    return tuple(None if a != b else a for a, b in zip(*shapes)), x.dtype


def _getitem_forward(xp, x, index):
    v = x[index]
    # a small strided slice (a head's half: x[..., :k]) is copied: every later elementwise op on it
    # would take NumPy's strided loops, about twice the cost of a contiguous one (128x16: 1.7 vs 1.0 us)
    if getattr(v, "ndim", 0) and v.size <= _COPY_SLICES_UP_TO and not v.flags.c_contiguous:
        return xp.ascontiguousarray(v)
    return v


_COPY_SLICES_UP_TO = 1 << 16  # elements; larger slices stay views (memory)


getitem = defop("getitem", _getitem_forward, _index_shape,
                (lambda g, y, x, index: scatter_index(g, x, index=index),), returns_view_of_input=True)
scatter_index = defop("scatter_index", lambda xp, g, ref, index: _scatter_forward(xp, g, ref, index),
                      lambda g, ref, index: (ref.shape, g.dtype),
                      (lambda gg, y, g, ref, index: getitem(gg, index=index), ZERO),
                      doc="zeros shaped like ref with g written at index (the adjoint of getitem)")


def _scatter_forward(xp, g, ref, index):
    out = xp.zeros(ref.shape, dtype=g.dtype)
    if _is_basic(index):  # ints and slices never select an element twice: plain assignment is exact
        out[index] = g
    else:  # an integer array may repeat an element: its gradients add up
        _add_at(xp, out, index, g)
    return out


def _is_basic(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, slice, np.integer)) for p in parts)


def _add_at(xp, out, index, values):
    """out[index] += values with repeated indices accumulated (NumPy's add.at)."""
    if hasattr(xp, "add") and hasattr(xp.add, "at"):
        xp.add.at(out, index, values)
    else:  # CuPy before add.at spells it cupyx.scatter_add
        import cupyx

        cupyx.scatter_add(out, index, values)


# --- gather (integer-array indexing along an axis) and one-hot ---------------------------
def _take_shape(x, idx, axis):
    return x.shape[:axis] + idx.shape + x.shape[axis + 1:], x.dtype


def _take_vjp(g, y, x, idx, axis):
    return take_adjoint(g, x, idx, axis=axis)


_take = defop("take", lambda xp, x, idx, axis: xp.take(x, idx, axis=axis), _take_shape, (_take_vjp, ZERO),
              doc="x gathered at integer indices along an axis (embedding look-up)")


def take(x, idx, axis=0):
    """x gathered at integer indices `idx` along `axis` (negative axes count from the end)."""
    if not -x.ndim <= axis < x.ndim:
        raise ShapeError(f"axis {axis} is out of range for {x.ndim} dimensions")
    return _take(x, idx, axis=axis % x.ndim)


def _take_adjoint_forward(xp, g, ref, idx, axis):
    out = xp.zeros(ref.shape, dtype=g.dtype)
    moved = xp.moveaxis(out, axis, 0)
    gm = xp.moveaxis(g.reshape(ref.shape[:axis] + (-1,) + ref.shape[axis + 1:]), axis, 0)
    _add_at(xp, moved, idx.reshape(-1), gm)
    return out


take_adjoint = defop("take_adjoint", _take_adjoint_forward, lambda g, ref, idx, axis: (ref.shape, g.dtype),
                     (lambda gg, y, g, ref, idx, axis: take(gg, idx, axis=axis), ZERO, ZERO),
                     doc="scatter-add of g into zeros shaped like ref (the adjoint of take)")


def _one_hot_forward(xp, labels, depth, dtype):
    return (labels[..., None] == xp.arange(depth)).astype(dtype)


_one_hot = defop("one_hot", _one_hot_forward, lambda labels, depth, dtype: (labels.shape + (depth,), np.dtype(dtype)),
                 (ZERO,), doc="integer labels -> 0/1 rows of length depth")


def one_hot(labels, depth, dtype=None):
    """Integer labels -> 0/1 rows of length `depth` (a Python int), in `dtype` (default: the graph's
    float dtype). one_hot(y, k) made k a graph constant, and leaving out dtype was a TypeError."""
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise TypeError(f"one_hot: depth must be a positive int (the number of classes), not {depth!r}")
    return _one_hot(labels, depth=int(depth), dtype=dtype or labels.graph.dtype.name)
