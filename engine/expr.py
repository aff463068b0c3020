"""The expression language: Python syntax, parsed with `ast` under a whitelist, never eval'd.

Allowed: names, numbers, ``+ - * / ** @``, unary minus/plus, parentheses, calls of
registered ops with their static keyword arguments (``axis=``, ``keepdims=``,
``stride=``, ``eps=``, ``padding="same"``, ...: numbers, tuples of numbers, True/False/None,
strings; a pool's, a norm's and dropout's also positionally, as in PyTorch:
``avg_pool2d(x, 2, 2)``), and ``grad(expr, name)`` (the gradient of sum(expr) with respect to
the variable `name`). Everything else -- attributes, subscripts, lambdas, comprehensions,
strings anywhere but a static argument, dunder names -- is an ExprError that names the
expression and the column.
"""

from __future__ import annotations

import ast
import inspect
import math
from difflib import get_close_matches

from . import ops
from .ops.registry import EXPRESSION_FUNCTIONS, OPS
from .autodiff import grad as _grad
from .errors import UserError
from .graph import Node

# functions an expression may call: the graph builders registered with in_expressions=True
# or @expression_function (public ops and composites of the op library, image ops included)
FUNCTIONS = EXPRESSION_FUNCTIONS


def keywords(fname: str) -> tuple:
    """The static (non-graph) arguments function `fname` accepts as keywords: its `static_args`
    attribute when it has one (e.g. max_pool2d's kernel), an op builder's attributes (leaky_relu's
    slope), else its parameters with a default."""
    fn = FUNCTIONS[fname]
    if hasattr(fn, "static_args"):
        return tuple(fn.static_args)
    op_args = _op_arguments(fname)
    if op_args is not None:
        return tuple(op_args[1])
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in params if p.default is not p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                                                    p.KEYWORD_ONLY))


def _positional(fname: str) -> tuple:
    """The static arguments of `fname` that may also be given positionally, in this order after
    its graph inputs: those its `static_args` names (PyTorch's positional order: avg_pool2d(x, 2, 2),
    group_norm(x, 4, 1e-5), dropout(x, 0.1)). Other optional ones (axis=, keepdims=, a conv's
    stride=: torch's third positional argument of conv2d is the bias) go by keyword only."""
    return tuple(getattr(FUNCTIONS[fname], "static_args", ()))


def _static_positions(fname: str) -> dict:
    """{position: name} of the static arguments given positionally: the required ones (a pool's
    kernel, group_norm's groups) and those `_positional` allows."""
    _, _, names = _arity(fname)
    static = set(keywords(fname))
    return {i: name for i, name in enumerate(names) if name in static}


def _op_arguments(fname: str):
    """(input names, {attribute: default}) of a generic op builder ``f(*inputs, **attrs)`` (a
    `defop` with in_expressions=True), else None. The inputs are counted by the op's VJP tuple (one
    entry per input) and named by the first of its forward (after xp), shape rule and VJPs (after
    g, out) that lists them; the attributes are the forward's other parameters (out= and ctx= are
    the compiler's)."""
    op, fn = OPS.get(fname), FUNCTIONS[fname]
    if op is None or not isinstance(op.vjp, tuple) or not op.vjp or not _var_positional(fn):
        return None
    n = len(op.vjp)
    candidates = [(op.forward, 1), (op.shape, 0)] + [(v, 2) for v in op.vjp if callable(v)]
    names = [f"x{i + 1}" for i in range(n)]
    for f, skip in candidates:
        if not _var_positional(f):
            params = [p for p in list(_parameters(f))[skip:] if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            if len(params) >= n:
                names = [p.name for p in params[:n]]
                break
    attrs = {} if _var_positional(op.forward) else {
        p.name: p.default for p in list(_parameters(op.forward))[1 + n:]
        if p.name not in ("out", "ctx") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, attrs


def _parameters(f):
    try:
        return inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        return ()


def _var_positional(f) -> bool:
    return any(p.kind is p.VAR_POSITIONAL for p in _parameters(f))


def _bad_static(fname: str, key: str, value):
    """Why the static argument `key`=value of `fname` is refused, or None (the function's own
    checks follow when it is built)."""
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if key == "keepdims" and not isinstance(value, bool):
        return f"keepdims must be True or False, not {value!r}"
    if key == "axis" and not (value is None or is_int(value) or isinstance(value, tuple) and all(map(is_int, value))):
        return f"axis must be an int or a tuple of ints, not {value!r}"
    if key == "axes" and not (value is None or isinstance(value, tuple) and all(map(is_int, value))):
        return f"axes must be a tuple of ints, not {value!r}"
    op_args = _op_arguments(fname)
    default = op_args[1].get(key) if op_args else None
    numeric = is_int(default) or isinstance(default, float)  # an op's numeric attribute (leaky_relu's slope=)
    if numeric and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"{key} must be a number, not {value!r}"
    return None


KEYWORDS = ("axis", "keepdims")
MAX_CHARS = 10_000  # longer expressions are refused before parsing
MAX_DEPTH = 100  # deepest nesting of operations and calls
_MAX_INT_BITS = 63  # integer constants folded past this become floats (no huge bignums)
_BINOPS = {ast.Add: "__add__", ast.Sub: "__sub__", ast.Mult: "__mul__", ast.Div: "__truediv__",
           ast.Pow: "__pow__", ast.MatMult: "__matmul__"}


class ExprError(UserError, ValueError):
    """An expression outside the whitelist or malformed; names the expression and the column."""

    def __init__(self, expression: str, col: int | None, message: str):
        self.expression, self.col, self.message = expression, col, message
        shown = expression if len(expression) <= 80 else expression[:60] + f"... ({len(expression)} characters)"
        where = f", column {col + 1}" if col is not None else ""  # None: about the call, not a place in it
        super().__init__(f"in expression {shown!r}{where}: {message}")


class UnknownInput(ExprError, KeyError):
    """A name the caller asked about (value_and_grad's wrt) that is not an input (a KeyError too)."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return Exception.__str__(self)


def _error_at(expression: str, node, message: str) -> ExprError:
    """The ExprError of a mistake at an AST node (its column; 0 for a node without one)."""
    return ExprError(expression, getattr(node, "col_offset", 0), message)


def parse(expression: str) -> ast.Expression:
    """Parse and check against the whitelist (and the size and depth bounds); returns the AST."""
    if len(expression) > MAX_CHARS:
        raise ExprError(expression, 0, f"expression too long ({len(expression)} characters; at most {MAX_CHARS})")
    # the parser refuses leading blanks (an indent), so it sees the expression stripped; columns on its
    # first line are then shifted back by the blanks that preceded that line in the original
    lead = expression[:len(expression) - len(expression.lstrip())]
    shift = len(lead) - (lead.rfind("\n") + 1)
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        msg = exc.msg
        if "integer string conversion" in msg or "Exceeds the limit" in msg:
            msg = "number too long (more than 4300 digits)"
        elif "too many nested" in msg:
            msg = f"nested too deeply (at most {MAX_DEPTH} levels)"
        col = max((exc.offset or 1) - 1, 0) + (shift if exc.lineno in (None, 1) else 0)
        raise ExprError(expression, col, f"syntax error: {msg}") from None
    except (RecursionError, MemoryError):
        raise ExprError(expression, 0, f"nested too deeply (at most {MAX_DEPTH} levels)") from None
    if shift:
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) == 1:
                node.col_offset += shift
            if getattr(node, "end_lineno", None) == 1:
                node.end_col_offset += shift
    _check_depth(expression, tree)
    _Checker(expression).visit(tree)
    return tree


def _check_depth(expression: str, tree: ast.AST) -> None:
    """Refuse trees deeper than MAX_DEPTH (walked without recursion)."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExprError(expression, getattr(node, "col_offset", 0),
                            f"nested too deeply (more than {MAX_DEPTH} levels of operations or calls)")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def names(expression: str) -> set[str]:
    """Variable names an expression uses (function names excluded)."""
    tree = parse(expression)
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in called}


def build(expression: str, env: dict[str, Node]) -> Node:
    """Build the expression's graph from variables in `env` (name -> Node)."""
    tree = parse(expression)
    return _Builder(expression, env).visit(tree.body)


class _Checker(ast.NodeVisitor):
    def __init__(self, expression):
        self.expression = expression

    def fail(self, node, message):
        # from None: called while handling an op's own error, the internal traceback would be printed too
        raise _error_at(self.expression, node, message) from None

    def generic_visit(self, node):
        allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Call, ast.Load,
                   ast.keyword, ast.operator, ast.unaryop)
        if not isinstance(node, allowed):
            self.fail(node, f"{type(node).__name__.lower()} is not allowed in expressions")
        super().generic_visit(node)

    def visit_BinOp(self, node):
        if type(node.op) not in _BINOPS:
            self.fail(node, f"operator {type(node.op).__name__} is not allowed (use + - * / ** @)")
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            self.fail(node, "only unary minus and plus are allowed")
        self.generic_visit(node)

    def visit_Constant(self, node):
        if type(node.value) not in (int, float):
            self.fail(node, f"only numbers are allowed as constants, not {type(node.value).__name__}")
        if type(node.value) is int and node.value.bit_length() > 1024:  # past float64's largest: no op takes it
            self.fail(node, "constant is too large for a float")

    def visit_Name(self, node):
        if node.id.startswith("_"):
            self.fail(node, f'names starting with "_" are not allowed ({node.id})')

    def visit_Call(self, node):
        if not isinstance(node.func, ast.Name):
            self.fail(node, "only calls of plain function names are allowed")
        fname = node.func.id
        if fname.startswith("_"):
            self.fail(node.func, f'names starting with "_" are not allowed ({fname})')
        if fname == "grad":
            if len(node.args) != 2 or node.keywords or not isinstance(node.args[1], ast.Name):
                self.fail(node, "grad takes two arguments: grad(expression, variable_name)")
            self.visit(node.args[0])
            return
        if fname not in FUNCTIONS:
            self.fail(node.func, f'unknown function "{fname}"' + _suggest(fname, list(FUNCTIONS) + ["grad"]))
        allowed = keywords(fname)
        lo, hi, names = _arity(fname)
        by_keyword = sum(1 for kw in node.keywords if kw.arg in names)  # e.g. max_pool2d(x, kernel=3)
        lo, hi = lo - by_keyword, hi - by_keyword
        given = set()
        for kw in node.keywords:
            if kw.arg is None:  # f(**d): ast gives a keyword without a name
                self.fail(kw.value, f"** arguments are not allowed in expressions; give {fname}()'s keywords by name")
            if kw.arg in given:  # ast accepts f(a=1, a=2); Python's compiler would not
                self.fail(kw, f'keyword "{kw.arg}" is given twice in {fname}()')
            if kw.arg in names[:len(node.args)]:  # max_pool2d(x, 2, kernel=2)
                self.fail(kw, f'{kw.arg} of {fname}() is given twice, by position and by keyword')
            given.add(kw.arg)
            if kw.arg not in allowed:
                known = ", ".join(f"{k}=" for k in allowed)
                self.fail(kw.value, f'keyword "{kw.arg}" is not allowed in {fname}() ' +
                          (f"(it takes {known})" if known else "(it takes no keywords)") +
                          (_suggest(kw.arg, list(allowed)) if kw.arg else ""))
            if not _is_static(kw.value):
                self.fail(kw.value, f"{kw.arg}= needs a number, a tuple of numbers, True, False, None or a string")
            self._check_static(fname, kw.arg, kw.value)
        # the count after the keywords: an unknown keyword (kernel_size=) is the mistake, not the count
        if not lo <= len(node.args) <= hi:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}"
            aliases = getattr(FUNCTIONS[fname], "aliases", ())  # kernel_size= names the kernel already given
            by_name = [k for k in keywords(fname) if k not in names and k not in aliases]
            listed = [k + "=" for k in by_name]
            listed = ", ".join(listed[:-1]) + " and " + listed[-1] if len(listed) > 1 else "".join(listed)
            hint = f"; give {listed} by keyword" if len(node.args) > hi and by_name else ""
            self.fail(node, f"{fname}({', '.join(names)}) takes {want} argument{'s' if hi != 1 else ''}, "
                            f"found {len(node.args)}{hint}")
        static = _static_positions(fname)
        for i, a in enumerate(node.args):
            if i not in static:
                self.visit(a)
            elif not _is_static(a):
                self.fail(a, f"{static[i]} (argument {i + 1} of {fname}) needs a number or a tuple of numbers")
            else:
                self._check_static(fname, static[i], a)

    def _check_static(self, fname, key, node):
        problem = _bad_static(fname, key, ast.literal_eval(node))
        if problem:
            self.fail(node, f"{fname}: {problem}")


def _arity(fname: str) -> tuple[int, float, list[str]]:
    """(fewest, most, names) of the positional arguments of an expression function, read from its
    signature or, for a generic op builder, from its op's shape rule (so a wrong count is a clear
    error, not a TypeError from inside the library)."""
    fn = FUNCTIONS[fname]
    op_args = _op_arguments(fname)
    if op_args is not None:
        return len(op_args[0]), len(op_args[0]), op_args[0]
    try:
        params = list(inspect.signature(fn).parameters.values())
        if any(p.kind is p.VAR_POSITIONAL for p in params) and fname in OPS:
            params = list(inspect.signature(OPS[fname].shape).parameters.values())
    except (TypeError, ValueError):
        return 0, math.inf, []
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 0, math.inf, []
    optional_static = set(KEYWORDS) | {"axes"} | (set(keywords(fname)) - set(_positional(fname))
                                                    if fname in FUNCTIONS else set())
    hidden = set(getattr(fn, "hidden_args", ()))  # the library's own (dropout's stream), not an expression's
    pos = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
           and not (p.name in optional_static and p.default is not p.empty) and p.name != "axes"
           and p.name not in hidden]
    required = [p for p in pos if p.default is p.empty]
    return len(required), len(pos), [p.name for p in pos]


def _is_static(node):
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float, bool, str) or node.value is None  # str: padding="same"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float)
    if isinstance(node, ast.Tuple):
        return all(_is_static(e) for e in node.elts)
    return False


def _suggest(name, candidates):
    hit = get_close_matches(name, candidates, n=1)
    return f'; did you mean "{hit[0]}"?' if hit else ""


class _Builder(ast.NodeVisitor):
    def __init__(self, expression, env):
        self.expression, self.env = expression, env
        self.graph = next((v.graph for v in env.values() if isinstance(v, Node)), None)

    def fail(self, node, message):
        # from None: called while handling an op's own error, the internal traceback would be printed too
        raise _error_at(self.expression, node, message) from None

    def visit_BinOp(self, node):
        a, b = self.visit(node.left), self.visit(node.right)
        if not isinstance(a, Node) and not isinstance(b, Node):
            try:
                return _fold(node.op, a, b)
            except (ArithmeticError, ValueError) as exc:
                self.fail(node, f"constant {exc}")
        try:
            if isinstance(a, Node):
                return getattr(a, _BINOPS[type(node.op)])(b)
            return getattr(b, "__r" + _BINOPS[type(node.op)][2:])(a)
        except ValueError as exc:
            self.fail(node, str(exc))

    def visit_UnaryOp(self, node):
        v = self.visit(node.operand)
        return -v if isinstance(node.op, ast.USub) else v

    def visit_Constant(self, node):
        return node.value

    def visit_Name(self, node):
        if node.id not in self.env:
            self.fail(node, f'unknown variable "{node.id}"' + _suggest(node.id, list(self.env)) +
                      f" (known: {', '.join(sorted(self.env)) or 'none'})")
        return self.env[node.id]

    def visit_Call(self, node):
        fname = node.func.id
        if fname == "grad":
            f = self._node(node.args[0], self.visit(node.args[0]))
            var = self.visit(node.args[1])
            return _grad(f if f.shape == () else ops.sum(f), var)
        static = _static_positions(fname)
        args = [ast.literal_eval(a) if i in static and _is_static(a) else self._node(a, self.visit(a))
                for i, a in enumerate(node.args)]
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        try:
            return FUNCTIONS[fname](*args, **kwargs)
        except (ValueError, TypeError) as exc:
            text = str(exc)  # the op's own message may already start with its name
            error = _error_at(self.expression, node,
                              text if text.startswith((f"{fname}:", f"{fname}(")) else f"{fname}: {text}")
            if isinstance(exc, UserError) or exc.__traceback__.tb_next is None:
                raise error from None  # the op's own check, or arguments it cannot bind: the message says it all
            raise error from exc  # raised deep inside the engine: keep its traceback (a defect to report)

    def _node(self, ast_node, value):
        if isinstance(value, Node):
            return value
        if self.graph is None:
            self.fail(ast_node, "an expression needs at least one variable")
        return ops.as_node(self.graph, value)


def _bits(v) -> float:
    return math.log2(abs(v)) if v else 0.0


def _fold(op, a, b):
    """a OP b for two numbers, bounded: integers that would pass 64 bits are folded as floats
    (so ``10**10**10`` never builds a huge bignum); a result that is not a finite real number,
    or a division by zero, raises ValueError/ArithmeticError with the reason."""
    if isinstance(a, int) and isinstance(b, int):
        big = (type(op) is ast.Pow and b > 0 and b * _bits(a) > _MAX_INT_BITS) or (
            type(op) is ast.Mult and _bits(a) + _bits(b) > _MAX_INT_BITS)
        if big:
            a = float(a)
    try:
        out = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b, ast.Div: lambda: a / b,
               ast.Pow: lambda: a ** b}[type(op)]()
    except ZeroDivisionError:
        raise ZeroDivisionError("divides by zero") from None
    except OverflowError:
        raise OverflowError("is too large for a float") from None
    if isinstance(out, complex):
        raise ValueError("is not a real number (a negative number to a fractional power)")
    if isinstance(out, int) and out.bit_length() > _MAX_INT_BITS:
        out = float(out)
    if isinstance(out, float) and not math.isfinite(out):
        raise OverflowError("is too large for a float")
    return out
