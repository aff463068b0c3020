"""Numerically stable composites of deep learning: softmax family, losses, densities.

softmax, log_softmax, logsumexp and the cross-entropies are primitives with their own VJPs
(fewer nodes, exact stability); the densities and KL are short compositions.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import LabelError
from .cpu_loops import cpu_loop, load_loops
from .elementwise import exp, expm1, sigmoid, softplus, softplus_forward, square
from .fastpaths import arange_of, ones_vector, row_offsets, sum_trailing
from .reduce import broadcast_like, expand_dims, keep_axes, mean, sum, unreduce, wrap_reduction
from .registry import (ZERO, Fused, ShapeError, deffusion, defop, expression_function, elementwise, float_dtype, normalize_axes,
                       reduced_shape, same_shape)
from .shape import one_hot


def _row_max(xp, x, keepdims=False):
    """x.max(axis=-1) of a 2-D array; on NumPy via argmax and a pick, several times faster for
    short rows (NumPy's max reduction along a short contiguous axis is slow; argmax is not)."""
    if xp is np and x.ndim == 2 and x.shape[0] and x.shape[1]:
        m = x[arange_of(xp, x.shape[0]), x.argmax(axis=1)]
        return m[:, None] if keepdims else m
    return x.max(axis=-1, keepdims=keepdims)


_LOOPS = None  # numba_loops, once _takes_rows found it loaded


def _takes_rows(z, labels=None) -> bool:
    """Whether the row loops take float32 z (and integer labels): Numba is on, z is a native
    C-contiguous NumPy array, labels a NumPy array of native integers. The softmax, its
    cross-entropy and the head ask the same, so fused and unfused programs get the same bits."""
    global _LOOPS
    loops = load_loops()
    if not loops:
        return False
    _LOOPS = loops
    return (z.__class__ is np.ndarray and z.dtype.isnative and z.flags.c_contiguous
            and (labels is None or (labels.__class__ is np.ndarray and labels.dtype.kind in "iu"
                                    and labels.dtype.isnative)))


def _softmax_rows(x, row_max):
    """softmax over the rows of a 2-D float32/64 NumPy x from its row maxima: exp in place, row
    sums as one BLAS product (the classifier head's path, shared with softmax_head)."""
    e = np.subtract(x, row_max[:, None])
    np.exp(e, out=e)
    e /= np.dot(e, ones_vector(x.shape[1], e.dtype))[:, None]
    return e


def _softmax_forward(xp, x, axis):
    if xp is np and x.ndim == 2 and axis == (1,) and x.size and x.dtype.char in "fd":
        if x.dtype.char == "f" and _takes_rows(x):  # float32 with Numba: one row loop (numba_math.py)
            p = np.empty(x.shape, x.dtype)
            _LOOPS.softmax_rows32(x, p)
            return p
        # the classifier head, inlined (a few calls fewer matter at small batches): row max by
        # argmax and a pick
        return _softmax_rows(x, x[arange_of(np, x.shape[0]), x.argmax(axis=1)])
    if x.ndim == 2 and axis == (1,):
        e = xp.subtract(x, _row_max(xp, x, keepdims=True))
    else:
        e = xp.subtract(x, x.max(axis=axis, keepdims=True))
    if e.ndim == 0:  # NumPy scalars cannot be written into
        return xp.exp(e) / xp.exp(e)
    xp.exp(e, out=e)
    e /= sum_trailing(xp, e, 1, keepdims=True) if axis == (e.ndim - 1,) else e.sum(axis=axis, keepdims=True)
    return e


def _log_softmax_forward(xp, x, axis):
    z = x - x.max(axis=axis, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))


def _softmax_vjp(g, y, x, axis):
    return y * (g - sum(g * y, axis=axis, keepdims=True))


_softmax = defop("softmax", _softmax_forward, same_shape, (_softmax_vjp,))
_log_softmax = defop("log_softmax", _log_softmax_forward, same_shape,
                     (lambda g, y, x, axis: g - exp(y) * sum(g, axis=axis, keepdims=True),))


@expression_function
def softmax(x, axis=-1):
    return _softmax(x, axis=normalize_axes(axis, x.ndim))


@expression_function
def log_softmax(x, axis=-1):
    return _log_softmax(x, axis=normalize_axes(axis, x.ndim))


def _lse_forward(xp, x, axis, keepdims=False):
    m = x.max(axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)  # all -inf rows stay -inf instead of nan
    out = xp.log(xp.exp(x - m).sum(axis=axis, keepdims=True)) + m
    return out if keepdims else xp.squeeze(out, axis=axis)


def _lse_vjp(g, y, x, axis, keepdims=False):
    # softmax(x), not exp(x - y): y is rounded at |y| ~ 1e4 and exp would amplify that (2e-4 in float32)
    return broadcast_like(keep_axes(g, x, axis, keepdims), x) * _softmax(x, axis=axis)


_logsumexp = defop("logsumexp", _lse_forward, lambda x, axis, keepdims=False: (reduced_shape(x.shape, axis, keepdims),
                                                                                float_dtype(x)),
                   (_lse_vjp,), doc="log(sum(exp(x))) over axes, without overflow (a reduction)")
logsumexp = wrap_reduction(_logsumexp, "logsumexp")


# --- cross-entropies from logits (per example; take the mean yourself) --------------
def _bce_forward(xp, z, y):
    # softplus(z) - z*y, with the overflow-free softplus: finite for |z| up to 1e4 and beyond
    if xp is np and getattr(z, "ndim", 0) and z.dtype.char == "f":  # float32 with Numba: one loop
        r = cpu_loop("bce32", (z, y), (), None)
        if r is not None:
            return r
    r, zy = softplus_forward(xp, z), z * y
    if getattr(r, "ndim", 0) and r.shape == zy.shape:  # y no bigger than z: in place
        r -= zy
        return r
    return r - zy


bce_with_logits = defop("bce_with_logits", _bce_forward, elementwise,
                        (lambda g, out, z, y: g * (sigmoid(z) - y), lambda g, out, z, y: -g * z), in_expressions=True,
                        doc="binary cross-entropy of targets y in [0,1] given logits z, elementwise")


# native signed ints -> (the same bits unsigned, where negatives start there): for the label check
_UNSIGNED = {np.dtype(f"i{k}"): (np.dtype(f"u{k}"), 2 ** (8 * k - 1)) for k in (1, 2, 4, 8)}


def _check_labels(labels, classes, op) -> None:
    """A LabelError (of `op`) when a NumPy array of class labels leaves 0..classes-1, naming a
    negative label first (NumPy's indexing would read it from the row's end, silently; PyTorch
    refuses it), else the largest. One argmax of the labels' bits read unsigned (a negative label
    is a huge unsigned one) where that covers both ends (native signed ints, classes up to half
    their range), else an argmin and an argmax: NumPy's fastest reductions on short int arrays.
    NumPy only: on CuPy the check would wait for the device every step."""
    flat = labels.reshape(-1)
    if not flat.size:
        return
    unsigned, negatives = _UNSIGNED.get(flat.dtype, (None, 0))
    if classes <= negatives:
        u = flat.view(unsigned)
        bad = u[u.argmax()] >= classes
    else:  # unsigned already, or another byte order: the two ends in turn
        bad = flat[flat.argmin()] < 0 or flat[flat.argmax()] >= classes
    if bad:
        low = flat.min()
        raise _label_error(classes, op, int(low) if low < 0 else int(flat.max()))


def check_host_labels(labels: np.ndarray, classes: int, name: str) -> None:
    """A LabelError when a NumPy array of class labels leaves 0..classes-1 (fed to a CuPy program,
    checked on the host before the upload: on the device the check would wait for it)."""
    _check_labels(labels, classes, f"input {name!r}")


def _smallest(a):
    flat = a if a.ndim == 1 else a.reshape(-1)
    return flat[flat.argmin()]


def _label_error(classes, op, found):
    return LabelError(f"{op}: class labels must lie in 0..{classes - 1} ({classes} classes), found {found}")


def _pick_error(z, labels, op):
    """Why a pick of z's label entries failed: labels for another number of rows than the logits
    have (it said a label in range was out of range), else a label out of range."""
    rows = z.size // max(z.shape[-1], 1)
    if labels.size not in (1, rows):
        return LabelError(f"{op}: {labels.size} labels for {rows} rows of logits: the batch sizes differ")
    return _label_error(z.shape[-1], op, int(labels.max()))


def _label_offsets(labels, classes, op):
    """row_offsets + labels: the flat index of each row's label entry in a C-contiguous
    (labels.size, classes) array, after checking the labels lie in 0..classes-1 (a flat pick
    would read a wrong label from the next row, silently): the LabelError of a 2-D pick."""
    _check_labels(labels, classes, op)
    labels = labels.reshape(-1)
    if labels.dtype == np.uint64:  # int64 + uint64 is float64 in NumPy: no index (checked < classes above)
        labels = labels.astype(np.intp)
    return row_offsets(labels.size, classes) + labels


def _picked(xp, z, labels, op):
    """_pick, with a LabelError for a label out of range (_check_labels on NumPy; on CuPy one >= the
    class count fails the pick itself)."""
    if xp is np:
        _check_labels(labels, z.shape[-1], op)
    try:
        return _pick(xp, z, labels)
    except IndexError:
        raise _pick_error(z, labels, op) from None


def _pick(xp, z, labels):
    """z[..., label] per row, by fancy indexing (several times faster than take_along_axis)."""
    if z.ndim == 2:
        return z[arange_of(xp, z.shape[0]), labels]
    flat = z.reshape(-1, z.shape[-1])
    return flat[arange_of(xp, flat.shape[0]), labels.reshape(-1)].reshape(labels.shape)


def _softmax_ce_forward(xp, z, p, labels):
    # p = softmax(z) (computed once, shared with the backward pass). With m = max(z) and
    # s = sum(exp(z - m)): loss = log(s) - (z[label] - m), and log(s) = -log(max(p)) since
    # max(p) = exp(0) / s = 1 / s is never below 1/C. lse itself is never formed, whose
    # rounding at |z| ~ 1e4 would swamp a small loss (float32 ulp(1e4) ~ 1e-3).
    if (xp is np and z.dtype.char == "f" and z.ndim == 2 and labels.shape == z.shape[:1] and p.shape == z.shape
            and p.dtype == z.dtype and _takes_rows(z, labels) and _takes_rows(p)):  # float32 with Numba: one row loop
        loss = np.empty(z.shape[:1], z.dtype)
        if _LOOPS.cross_entropy_rows32(z, p, labels, loss) >= 0:
            _check_labels(labels, z.shape[-1], "softmax_cross_entropy")  # raises the NumPy form's LabelError
        return loss
    picked = _picked(xp, p, labels, "softmax_cross_entropy") if xp is np else None  # CuPy: no host sync below
    # the smallest pick by argmin (~0.2 us; min ~0.8 at small batches); a NaN is argmin's pick, and fails the test
    if picked is not None and picked.ndim and picked.size and bool(_smallest(picked) > _SAFE[p.dtype.char]):
        # p[label] far from underflow (the usual case): -log p[label], as accurate (p[label] is
        # exp(z[label] - m) / s, a few ulp) and a third of the work
        return xp.negative(xp.log(picked, out=picked), out=picked)
    return -xp.log(_row_max(xp, p)) - (_pick(xp, z, labels) - _row_max(xp, z))


_SAFE = {"f": 1e-30, "d": 1e-300, "e": 1e-4}  # p[label] above this: no underflow, -log p is exact enough


def _softmax_ce_shape(z, p, labels):
    if labels.dtype.kind not in "iu":
        raise ShapeError(f"labels must be integers, found {labels.dtype}")
    if p.shape != z.shape:
        raise ShapeError(f"softmax {p.shape} does not match the logits {z.shape}")
    return z.shape[:-1], float_dtype(z)


# d loss / dz = softmax(z) - one_hot(labels), from the forward's softmax; p is a function of z
# alone, so the whole (total) derivative is given for z and ZERO for p (summing both paths
# would count it twice); the labels are integers
_softmax_ce = defop("softmax_cross_entropy", _softmax_ce_forward, _softmax_ce_shape,
                    (lambda g, out, z, p, labels: softmax_ce_backward(g, p, labels), ZERO, ZERO),
                    doc="-log softmax(z)[label] per example, given p = softmax(z) and integer labels")


def softmax_cross_entropy(z, labels):
    """-log softmax(z)[label] per example, integer labels (softmax over the last axis).

    Two nodes: p = softmax(z), then the loss from z and p; the gradient is
    g * (p - one_hot(labels)) in one kernel, so the softmax is computed once per step."""
    _labels_of(z, labels)
    return _softmax_ce(z, softmax(z, axis=-1), labels)


def _labels_of(z, labels) -> None:
    """Record a fed label input's class count: a program on the GPU checks its feeds on the host
    (CuPy's indexing wraps an out-of-range label instead of raising)."""
    if getattr(labels, "op", None) == "input" and z.shape[-1] is not None:
        labels.graph.class_labels[labels.id] = int(z.shape[-1])


def _softmax_ce_backward_forward(xp, g, p, labels, broadcast=None, out=None):
    if broadcast:  # g is one scalar for every row (/ the row count for "mean"): a scalar multiply
        if xp is np:
            g = float(g)  # a Python float: NumPy rounds it once to p's dtype, no 0-d array arithmetic
        if broadcast == "mean":
            g = g / (labels.size or 1)
        if xp is np and p.ndim == 2 and labels.shape == p.shape[:1]:  # with Numba: one loop, the same bits
            d = _ce_backward_loop(p, labels, g, out)
            if d is not None:
                return d
        d = xp.multiply(p, g, out=out)
    else:
        g = xp.asarray(g)
        d = xp.multiply(p, g[..., None], out=out)
    if not d.flags.c_contiguous:
        d = xp.ascontiguousarray(d)
    if xp is np and labels.shape == d.shape[:-1]:  # 1-D picks at each row's label
        d.reshape(-1)[_label_offsets(labels, d.shape[-1], "softmax_cross_entropy")] -= g if broadcast else g.reshape(-1)
        return d
    flat = d.reshape(-1, d.shape[-1])
    try:  # the forward refused negative labels; one >= the class count fails here
        flat[arange_of(xp, flat.shape[0]), labels.reshape(-1)] -= g if broadcast else g.reshape(-1)
    except IndexError:
        raise _label_error(p.shape[-1], "softmax_cross_entropy", int(labels.max())) from None
    return d


def _ce_backward_loop(p, labels, g, out):
    """p * g minus g at each row's label by numba_loops.softmax_ce_backward (the NumPy form's bits), into out (None: a
    new array; out may be p), or None where Numba is off or the arrays are others."""
    if not (p.dtype.char in "fd" and _takes_rows(p, labels)):
        return None
    if out is None:
        out = np.empty(p.shape, p.dtype)
    elif not (out.__class__ is np.ndarray and out.flags.writeable and (out is p or (
            out.dtype == p.dtype and out.shape == p.shape and out.flags.c_contiguous and not np.shares_memory(out, p)))):
        return None
    if _LOOPS.softmax_ce_backward(p, labels, p.dtype.type(g), out) >= 0:
        _label_offsets(labels, p.shape[-1], "softmax_cross_entropy")  # raises the NumPy form's LabelError
    return out


def _per_row_g(g, labels, broadcast):
    """The per-row gradient a broadcast form stands for (its VJPs are the plain form's)."""
    if not broadcast:
        return g
    return unreduce(g, labels, axis=tuple(range(labels.ndim)), mean=broadcast == "mean")


def _softmax_ce_backward_vjp_g(gd, out, g, p, labels, broadcast=None):
    rows = sum(gd * (p - one_hot(labels, depth=p.shape[-1], dtype=p.dtype.name)), axis=-1)
    if not broadcast:
        return rows
    return (mean if broadcast == "mean" else sum)(rows, axis=tuple(range(labels.ndim)))


softmax_ce_backward = defop(
    "softmax_ce_backward", _softmax_ce_backward_forward, lambda g, p, labels, broadcast=None: (p.shape, float_dtype(p)),
    (_softmax_ce_backward_vjp_g,
     lambda gd, out, g, p, labels, broadcast=None: gd * expand_dims_last(_per_row_g(g, labels, broadcast)), ZERO),
    writes_into_out=True,
    doc="g[..., None] * (p - one_hot(labels)) in one kernel: softmax cross-entropy's VJP from p = softmax(z); "
        "broadcast='mean' or 'sum': g is one scalar for all rows (the seed of a mean or sum loss, / the row "
        "count for 'mean'), folded in by the compiler's simplify pass")


def expand_dims_last(x):
    return expand_dims(x, axis=(x.ndim,))


def _softmax_minus_one_hot_forward(xp, z, labels):
    e = _softmax_forward(xp, z, (z.ndim - 1,))
    flat = e.reshape(-1, e.shape[-1])
    flat[xp.arange(flat.shape[0]), labels.reshape(-1)] -= 1
    return e


softmax_minus_one_hot = defop(
    "softmax_minus_one_hot", _softmax_minus_one_hot_forward, lambda z, labels: (z.shape, float_dtype(z)),
    # the one-hot part is constant in z, so the VJP is softmax's
    (lambda g, y, z, labels: _softmax_vjp(g, softmax(z), z, axis=(z.ndim - 1,)), ZERO),
    doc="softmax(z) - one_hot(labels) in one kernel: the gradient of softmax cross-entropy")


def _correct_forward(xp, z, labels):
    if xp is np and z.ndim == 2 and z.size:
        # _picked and _row_max inlined, one row index for both picks: 0.4 us less a step at batch 16
        rows = arange_of(np, z.shape[0])
        _check_labels(labels, z.shape[-1], "correct")
        try:
            hit = z[rows, labels]
        except IndexError:
            raise _pick_error(z, labels, "correct") from None
        return (hit >= z[rows, z.argmax(axis=1)]).astype(z.dtype)
    return (_picked(xp, z, labels, "correct") >= _row_max(xp, z)).astype(z.dtype)


_correct = defop("correct", _correct_forward, lambda z, labels: (z.shape[:-1], float_dtype(z)), (ZERO, ZERO),
                 doc="1 where the label's logit is the row's largest (classification accuracy per example)")


def correct(z, labels):
    """1 where the label's logit is the row's largest (classification accuracy per example)."""
    _labels_of(z, labels)
    return _correct(z, labels)


# --- the classifier head as one kernel ---------------------------------------------------
def softmax_head(xp, z, labels, loss=True, correct=True, first=None):
    """(p, loss rows, correct rows) of logits z (rows x classes) and integer labels: the values
    of softmax(z), softmax_cross_entropy(z, p, labels) and correct(z, labels), bit for bit, with
    one row max, one row index and one label check for all three (~3.5 us less a step at batch
    16, ~17 at 1024). loss / correct False leave that value out of the tuple; a bad label is
    the error of `first`, the op of the two that the plain schedule runs first (default: the
    loss if computed, else correct)."""
    first = first or ("softmax_cross_entropy" if loss else "correct")
    # one label per row of 2-D float logits on NumPy; else the kernels (their broadcasting and errors)
    if not (xp is np and z.ndim == 2 and z.size and z.dtype.char in "fd" and labels.shape == z.shape[:1]):
        return _head_by_kernels(xp, z, labels, loss, correct, first)
    if z.dtype.char == "f":  # float32 with Numba: one row loop (numba_math.softmax_head32)
        done = _head_loop(z, labels, first)
        if done is not None:
            return done[:1] + done[1:2] * loss + done[2:] * correct
    n, c = z.shape
    at = _label_offsets(labels, c, first)  # flat picks: each row's label entry, its max
    zf = z.reshape(-1)  # a C-order copy of a non-contiguous z, for the picks only: the softmax reads z
    zmax = zf[z.argmax(axis=1) + row_offsets(n, c)]
    hit = zf[at]
    p = _softmax_rows(z, zmax)  # _softmax_forward's classifier path
    out = (p,)
    if loss:  # _softmax_ce_forward
        picked = p.reshape(-1)[at]
        if picked.size and bool(_smallest(picked) > _SAFE[p.dtype.char]):
            out += (np.negative(np.log(picked, out=picked), out=picked),)
        else:
            out += (-np.log(_row_max(np, p)) - (hit - zmax),)
    if correct:  # _correct_forward
        out += ((hit >= zmax).astype(z.dtype),)
    return out


def _head_loop(z, labels, first):
    """(p, loss rows, correct rows) of float32 logits by numba_math.softmax_head32 (the values
    of the kernels' own loops, to the bit), or None where _takes_rows says no. Within a few ulps
    of the NumPy forms' values (their own exp and log, the row sums in order), not their bits
    (tests/test_numba_math.py)."""
    if not _takes_rows(z, labels):
        return None
    n, c = z.shape
    p, loss, hit = np.empty((n, c), z.dtype), np.empty(n, z.dtype), np.empty(n, z.dtype)
    if _LOOPS.softmax_head32(z, labels, p, loss, hit) >= 0:
        _check_labels(labels, c, first)  # raises the LabelError the NumPy form would
    return p, loss, hit


def _head_by_kernels(xp, z, labels, loss, correct, first):
    """softmax_head's values from the three kernels, `first`'s label check first."""
    p = _softmax_forward(xp, z, (1,))
    kernels = {"softmax_cross_entropy": lambda: _softmax_ce_forward(xp, z, p, labels),
               "correct": lambda: _correct_forward(xp, z, labels)}
    wanted = [op for op, on in (("softmax_cross_entropy", loss), ("correct", correct)) if on]
    done = {op: kernels[op]() for op in sorted(wanted, key=lambda op: op != first)}
    return (p, *(done[op] for op in wanted))


def _softmax_head_groups(nodes, xp):
    """softmax(z) over the last axis of 2-D logits with the softmax_cross_entropy that reads it
    and/or a correct(z, labels) with the same labels: one softmax_head call (NumPy programs),
    at the place of whichever of the two runs first (its label errors first, as unfused). A
    correct goes with a softmax that has a loss over the same labels before any other."""
    if xp is not np:
        return []
    order = {n.id: i for i, n in enumerate(nodes)}
    ce, acc = {}, {}
    for n in nodes:
        if n.op == "softmax_cross_entropy":
            ce.setdefault(n.inputs[1].id, n)
        elif n.op == "correct":
            acc.setdefault((n.inputs[0].id, n.inputs[1].id), n)
    heads = [s for s in nodes if s.op == "softmax" and len(s.shape) == 2 and s.attrs.get("axis") == (1,)]
    pairs, paired = [], set()
    for s in heads:  # softmaxes with their loss first (and a correct over the loss's labels)
        loss = ce.get(s.id)
        if loss is not None and loss.inputs[0] is s.inputs[0]:
            pairs.append((s, loss, acc.pop((s.inputs[0].id, loss.inputs[2].id), None)))
            paired.add(s.id)
    for s in heads:  # then a softmax without one takes a correct over the same logits
        key = next((k for k in acc if k[0] == s.inputs[0].id), None) if s.id not in paired else None
        if key is not None:
            pairs.append((s, None, acc.pop(key)))
    groups = []
    for s, loss, hit in pairs:
        checkers = sorted((m for m in (loss, hit) if m is not None), key=lambda m: order[m.id])
        labels = (loss if loss is not None else hit).inputs[-1]
        groups.append(Fused([s] + [m for m in (loss, hit) if m is not None], softmax_head, [s.inputs[0], labels],
                            {"loss": loss is not None, "correct": hit is not None, "first": checkers[0].op},
                            anchor=checkers[0]))
    return groups


deffusion("softmax_head", _softmax_head_groups)


@expression_function
def mse(pred, target):
    """Mean squared error over all elements."""
    return mean(square(pred - target))


_LOG_2PI = math.log(2.0 * math.pi)


@expression_function
def gaussian_logpdf(x, mean, logvar):
    """log N(x; mean, exp(logvar)), elementwise."""
    return -0.5 * (_LOG_2PI + logvar + square(x - mean) * exp(-logvar))


def _kl_std_forward(xp, mu, logvar):
    # 0.5 (exp(lv) + mu^2 - 1 - lv) in the composite's order, two buffers, passes in place
    r = xp.exp(logvar)
    m2 = xp.multiply(mu, mu)
    if not (getattr(r, "ndim", 0) and r.shape == m2.shape):  # broadcasting or NumPy scalars
        return 0.5 * (r + m2 - 1.0 - logvar)
    r += m2
    r -= 1.0
    r -= logvar
    r *= 0.5
    return r


# one kernel forward instead of six; the VJPs are short graphs (d/dmu = mu, d/dlv = (e^lv - 1) / 2)
kl_normal_std = defop("kl_normal_std", _kl_std_forward, elementwise,
                      (lambda g, y, mu, logvar: g * mu, lambda g, y, mu, logvar: g * (0.5 * expm1(logvar))),
                      in_expressions=True,
                      doc="KL(N(mu, exp(logvar)) || N(0, 1)), elementwise (sum over latent dims yourself)")


@expression_function
def kl_normal(mu_q, logvar_q, mu_p, logvar_p):
    """KL(N(mu_q, var_q) || N(mu_p, var_p)), elementwise."""
    return 0.5 * (logvar_p - logvar_q + (exp(logvar_q) + square(mu_q - mu_p)) * exp(-logvar_p) - 1.0)


@expression_function
def bernoulli_logpmf(x, logits):
    """log Bernoulli(x; sigmoid(logits)), elementwise = -bce_with_logits."""
    return -bce_with_logits(logits, x)


@expression_function
def log_sigmoid(x):
    return -softplus(-x)


__all__ = ["softmax", "log_softmax", "bce_with_logits", "softmax_cross_entropy", "softmax_minus_one_hot", "softmax_ce_backward", "correct", "mse", "gaussian_logpdf",
           "kl_normal_std", "kl_normal", "bernoulli_logpmf", "log_sigmoid", "logsumexp"]
