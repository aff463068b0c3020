"""The op registry: each op declared once with forward kernel, shape rule and VJPs.

An op is an `OpDef`, registered with `defop`. Its forward is written against the
backend namespace `xp` (NumPy or CuPy), or is the ufunc named by `ufunc`; its shape rule
maps input nodes (+ attrs) to the output shape and dtype; its VJPs are one
graph-building function per input, HIPS-autograd style: ``vjp[i](g, out, *inputs, **attrs)``
returns the gradient for input i as a Node, so gradients are graphs too and can be
differentiated again. An input whose derivative is zero (a mask, an index, a reference
shape, a random draw) says so with the sentinel `ZERO`; an input without either is an
error when `grad` needs it. docs/adding-an-op.md walks through adding an op.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import UserError
from ..graph import Node

OPS: dict[str, "OpDef"] = {}
EXPRESSION_FUNCTIONS: dict[str, Callable] = {}  # name -> graph builder the expression language may call
# name -> match(nodes, xp) -> [Fused, ...]: groups of side-effect-free nodes one kernel computes together
# (declared next to their ops with deffusion; codegen places each group's call at its anchor)
FUSIONS: dict[str, Callable] = {}


@dataclass
class Fused:
    """One fused call: `kernel(xp, *inputs, **attrs)` returns the values of `members` (graph nodes of
    pure ops, in this order) at once, bit for bit what their own kernels give. The call runs at
    the place of `anchor` (a member; default the first scheduled): the member whose errors the
    kernel raises, so that a failing run fails where the plain schedule would."""
    members: list
    kernel: Callable
    inputs: list
    attrs: dict
    anchor: object = None


def deffusion(name: str, match: Callable) -> Callable:
    """Declare a fusion: match(nodes, xp) returns the Fused groups found in a program's scheduled
    nodes (in schedule order; a node in at most one group); the compiler keeps only groups whose
    inputs exist at the anchor's place, whose values nothing else reads before it and whose
    inputs no update writes (codegen._pure_fusions)."""
    if name in FUSIONS:
        raise ValueError(f'fusion "{name}" is already declared')
    FUSIONS[name] = match
    return match


class _Zero:
    """The VJP of an input whose derivative is zero everywhere it is defined."""

    def __repr__(self):
        return "ZERO"


ZERO = _Zero()


@dataclass
class OpDef:
    name: str
    forward: Callable | None  # forward(xp, *arrays, **attrs) -> array; None: the ufunc below
    shape: Callable  # shape(*nodes, **attrs) -> (shape, dtype)
    # per input: vjp(g, out, *inputs, **attrs) -> Node, or ZERO; or one function i -> that (many inputs)
    vjp: tuple | Callable = ()
    ufunc: str | None = None  # name of the xp ufunc that is this op's forward (fastest kernel; takes out=)
    random: bool = False  # draws from the program's random streams: never folded or merged
    flops: Callable | None = None  # flops(out_shape, *input_shapes, **attrs) -> int
    returns_view_of_input: bool = False  # forward may return a view of (memory shared with) its first input
    writes_into_out: bool = False  # forward takes out=ARRAY and writes its result there (buffer reuse)
    train_only_identity: bool = False  # evaluation programs replace the node by its first input (dropout)
    # every input is float data (matmul): integer inputs are cast to the result's dtype; a tuple names
    # the inputs that are (where's a and b, not its condition)
    float_inputs: bool | tuple = False
    # source(*input names, **attrs) -> a Python expression the program runs instead of a kernel
    # call (a method such as "x.T": the same on NumPy and CuPy), or '' to call the kernel; given
    # ndims=(each input's rank) too when it takes that keyword
    source: Callable | None = None
    doc: str = ""

    def __post_init__(self):
        if self.forward is None:
            if self.ufunc is None:
                raise ValueError(f'op "{self.name}" needs a forward or a ufunc')
            self.forward = _ufunc_forward(self.ufunc)

    def vjp_for(self, i: int):
        """The VJP of input i: a function, ZERO, or None when the op declares none."""
        if callable(self.vjp) and not isinstance(self.vjp, tuple):
            return self.vjp(i)
        return self.vjp[i] if i < len(self.vjp) else None

    @property
    def differentiable(self) -> bool:
        """Whether some input has a nonzero VJP (such ops need a gradient test case)."""
        if callable(self.vjp) and not isinstance(self.vjp, tuple):
            return True
        return any(v is not None and v is not ZERO for v in self.vjp)

    def kernel(self, xp, attrs, ctx):
        """A callable over arrays only: attrs are bound once, at compile time."""
        if self.ufunc is not None and not attrs:
            return getattr(xp, self.ufunc)
        if self.random:
            return functools.partial(self.forward, xp, ctx=ctx, **attrs)
        return functools.partial(self.forward, xp, **attrs) if attrs else functools.partial(self.forward, xp)


def _ufunc_forward(name):
    def forward(xp, *arrays):
        return getattr(xp, name)(*arrays)

    forward.__name__ = name
    return forward


def defop(name, forward=None, shape=None, vjp=(), *, in_expressions=False, **kw) -> Callable:
    """Register an op and return its graph-building function ``f(*inputs, **attrs) -> Node``.

    `vjp` is a tuple (one entry per input: a function or ZERO) or, for ops with any number
    of inputs, one function ``i -> vjp``. ``in_expressions=True`` lets the expression
    language call the returned builder by the op's name (see `expression_function`).
    """
    if name in OPS:
        raise ValueError(f'op "{name}" is already registered')
    OPS[name] = OpDef(name, forward, shape, vjp if callable(vjp) and not isinstance(vjp, tuple) else tuple(vjp), **kw)

    def build(*args, **attrs):
        return apply(name, *args, **attrs)

    build.__name__ = name
    build.__doc__ = kw.get("doc", "")
    if in_expressions:
        expression_function(build)
    return build


def expression_function(fn: Callable = None, *, name: str | None = None):
    """Let the expression language call graph builder `fn` (a public op or composite) by name."""
    def register(f):
        key = name or f.__name__
        if key in EXPRESSION_FUNCTIONS and EXPRESSION_FUNCTIONS[key] is not f:
            raise ValueError(f'expression function "{key}" is already registered')
        EXPRESSION_FUNCTIONS[key] = f
        return f

    return register(fn) if fn is not None else register


def named_errors(fn: Callable) -> Callable:
    """A public builder whose argument checks (stride, padding, kernel, scale, groups, ...) raise
    ShapeError with the op's name and its inputs' shapes in front, as its shape rule's errors
    have (those already start with the name and pass unchanged)."""
    name = fn.__name__

    @functools.wraps(fn)
    def builder(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ShapeError as exc:
            text = str(exc)
            if text.startswith((f"{name}:", f"{name}(")):
                raise
            shapes = ", ".join(_fmt(a.shape) for a in args if isinstance(a, Node))
            raise ShapeError(f"{name}({shapes}): {text}") from None

    return builder


def _graph_of(args):
    for a in args:
        if isinstance(a, Node):
            return a.graph
        if isinstance(a, (list, tuple)):
            for b in a:
                if isinstance(b, Node):
                    return b.graph
    raise TypeError("an op needs at least one graph Node among its inputs")


def as_node(graph, value, like: Node | None = None) -> Node:
    """Wrap a Python number or array as a constant (scalars cached per graph and dtype)."""
    if isinstance(value, Node):
        return value
    arr = np.asarray(value)
    if arr.dtype.kind in "biuf" and arr.ndim == 0:
        dtype = like.dtype if like is not None and like.dtype.kind == "f" else graph.dtype
        key = (float(arr), str(dtype))
        cache = graph.__dict__.setdefault("_scalar_cache", {})
        if key not in cache:
            cache[key] = graph.constant(arr, dtype=dtype)
        return cache[key]
    return graph.constant(arr)


def apply(name, *args, **attrs) -> Node:
    op = OPS[name]
    graph = _graph_of(args)
    like = next((a for a in args if isinstance(a, Node)), None)
    for i, a in enumerate(args):  # cast(x, "float64") made a string constant the op's second input
        if not isinstance(a, Node) and np.asarray(a).dtype.kind not in "biuf":
            raise ShapeError(f"{name}: argument {i + 1} is {a!r}, not an array or a number (an op's attributes, "
                             f"such as dtype= or axis=, are given by keyword)")
    inputs = [as_node(graph, a, like) for a in args]
    attrs = {k: v for k, v in attrs.items() if v is not None or k in ("axis", "index")}  # x[None] is an index
    try:
        shape, dtype = op.shape(*inputs, **attrs)
    except ShapeError as exc:
        shapes = ", ".join(_fmt(i.shape) for i in inputs)
        scope = f" in {graph.current_scope}" if graph.current_scope else ""
        raise ShapeError(f"{name}({shapes}){scope}: {exc}") from None
    ints = [i.dtype.kind in "biu" for i in inputs]
    if dtype.kind == "f" and any(ints) and (op.shape in (elementwise, same_shape) or op.float_inputs
                                            or all(ints) and "dtype" not in attrs):
        # float arithmetic (or a float-valued reduction, matmul, ...) of integer inputs computes in the
        # recorded float dtype: NumPy would keep relu(int) or sum(int) an int, which buffers laid out
        # for the float result cannot hold, and compute matmul(int, float32) in float64. Not ops that
        # take integers beside floats (labels, indices) or that name their output dtype (one_hot, cast).
        data = op.float_inputs if isinstance(op.float_inputs, tuple) else range(len(inputs))
        inputs = [apply("cast", i, dtype=dtype.name) if k and n in data else i
                  for n, (i, k) in enumerate(zip(inputs, ints))]
    return graph.add_node(name, inputs, attrs, shape, dtype)


Node._apply = staticmethod(apply)  # operator sugar on nodes (x + y, x @ w, x[i], x.T) builds through here


class ShapeError(UserError, ValueError):
    """Inputs whose shapes an op cannot combine."""


def _fmt(shape):
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


# --- shape rules shared by many ops ---------------------------------------------
def check_image(name, x):
    """x must be 4-D (NCHW) with only its batch size unknown (check_known)."""
    if x.ndim != 4:
        raise ShapeError(f"{name} must be 4-D (NCHW), got shape {_fmt(x.shape)}")
    check_known(name, x)


def check_known(name, x):
    """Only x's batch size may be unknown: the image and normalisation ops' kernels, gradients and
    buffers are laid out from the other axes when the graph is built."""
    if None in x.shape[1:]:
        raise ShapeError(f"{name} {_fmt(x.shape)}: only the batch size may be unknown when the graph is built")


def broadcast_shapes(*shapes):
    """NumPy broadcasting where None (unknown batch size) matches anything."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(ndim):
        dims = [s[len(s) - ndim + i] for s in shapes if len(s) - ndim + i >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise ShapeError(f"shapes {', '.join(_fmt(s) for s in shapes)} do not broadcast")
        if known:
            out.append(known.pop())
        elif None in dims:
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def float_dtype(*nodes):
    """The float dtype NumPy computes for these inputs: float32 with float64 is float64, as at run
    time (recording float32 let a float64 result be written into a float32 buffer). Scalar
    constants reach kernels as Python floats, which keep the arrays' precision, so they count
    only when no array is a float."""
    arrays = [n.dtype for n in nodes if n.dtype.kind == "f" and (n.shape or n.op != "constant")]
    if arrays:
        return arrays[0] if len(arrays) == 1 else np.result_type(*arrays)
    for n in nodes:
        if n.dtype.kind == "f":
            return n.dtype
    return nodes[0].graph.dtype


def same_shape(x, **attrs):
    return x.shape, float_dtype(x)


def elementwise(*xs, **attrs):
    return broadcast_shapes(*(x.shape for x in xs)), float_dtype(*xs)


def normalize_axes(axis, ndim):
    """axis (None, int or tuple) -> sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ShapeError(f"axis {a} is out of range for {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) < len(out):  # as NumPy and PyTorch: sum(x, axis=(0, 0)) is a slip, not axis 0
        raise ShapeError(f"axis {axes} names an axis twice")
    return tuple(sorted(out))


def reduced_shape(shape, axes, keepdims):
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def size_of(shape) -> int:
    """Element count with unknown dims counted as 1 (for FLOP estimates)."""
    return int(np.prod([1 if d is None else d for d in shape], dtype=np.int64))


def ewise_flops(out_shape, *in_shapes, **attrs):
    return size_of(out_shape)


def either_keyword(value, alias, name, torch_name):
    """An argument given as `name` or by PyTorch's keyword `torch_name` (not both, not neither)."""
    if value is not None and alias is not None:
        raise ShapeError(f"give {name}= or {torch_name}=, not both")
    if value is None and alias is None:
        raise ShapeError(f"{name}= is missing (PyTorch's {torch_name}= is taken too)")
    return value if alias is None else alias
