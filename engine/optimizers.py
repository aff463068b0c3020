"""Optimizers as graph update rules: parameters and their state are leaves of the graph.

``opt.updates(graph, params, grads)`` creates the optimizer's state leaves (zeros, named
``"<kind>/<param label>/<slot>"``, e.g. ``"adam/dense1/W/m"``) and one step counter
``"opt/step"`` (float64, the number of updates taken so far), and returns
``{param: new param, state: new state, ...}`` for ``compile(..., updates=...)``. Every
right-hand side reads the values from before the run, as the Program writes updates
after computing everything. The learning rate is a node named ``"lr"`` computed from the
step counter by a schedule (``engine.schedules``), so it can be inspected and fetched.

Conventions follow PyTorch's ``torch.optim`` (single-tensor code path). With ``g`` the
gradient, ``t`` the step counter before the update (``t = 0`` on the first step),
``lr = lr(t)`` and all state initialised to zero (adagrad: ``initial_accumulator``):

| kind               | update rule                                                                  |
| ------------------ | ---------------------------------------------------------------------------- |
| `gd` (`sgd`)       | p <- p - lr g                                                                |
| `momentum`         | v <- mu v + (1 - dampening) g   (v <- g on the first step, as PyTorch)       |
|                    | p <- p - lr v;  nesterov: p <- p - lr (g + mu v)                             |
| `nesterov`         | `momentum` with nesterov = true                                              |
| `adagrad`          | s <- s + g^2;  p <- p - lr / (1 + t lr_decay) * g / (sqrt(s) + eps)          |
| `rmsprop`          | s <- a s + (1 - a) g^2;  d = sqrt(s) + eps                                   |
|                    | centered: m <- a m + (1 - a) g;  d = sqrt(s - m^2) + eps                     |
|                    | p <- p - lr g / d;  momentum > 0: b <- momentum b + g / d;  p <- p - lr b    |
| `adam`             | m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  n = t + 1                |
|                    | p <- p - lr / (1 - b1^n) * m / (sqrt(v) / sqrt(1 - b2^n) + eps)              |
| `adamw`            | p <- p (1 - lr wd), then the `adam` step                                     |

Every optimizer also takes ``weight_decay`` (wd; L2: ``g <- g + wd p`` before the rule,
except `adamw`, whose decay is decoupled as above) and ``clip_norm`` (c > 0: all
gradients are scaled by ``min(1, c / (||g||_2 + 1e-6))`` with the global norm over every
parameter, as ``torch.nn.utils.clip_grad_norm_``, before weight decay; 0 = off) and ``ema``
(d > 0: a state slot ``ema`` per parameter, a <- d a + (1 - d) p_new after every update (over the flat
buffers too, one pass for all parameters), from
a = 0; ``averages(graph)`` returns a / (1 - d^n) after n updates, the debiased exponential
moving average that diffusion models evaluate with; the parameters themselves train as
without it).
``lr`` is a float, a ``Schedule``, or a table ``{"kind": "cosine", "lr": ..., ...}``.

Scalars that depend on the step (lr, bias corrections) are computed in float64 and cast
once to each parameter's dtype.

Flat buffers (``Optimizer.flat``, on by default): with two or more parameters of one dtype on
a graph not compiled yet, the parameter values and each state slot become views of one flat
buffer (the leaves keep their names), and the rule is applied once to ``pack(params)`` and
``pack(grads)``; the update values are ``unpack`` pieces, which the compiler turns into one
in-place update of each buffer, with the gradients computed straight into views of one
buffer. The results are bit-identical to the per-parameter ones, ``clip_norm`` included (its
global norm is one dot product over the gradients laid end to end on both paths; per-tensor
sums only for gradients of mixed dtypes or unknown shapes, which cannot be laid end to end).
``make_optimizer(kind, **hyper)`` checks names (with a did-you-mean), types and ranges; each
class's ``schema`` maps a hyper-parameter to a ``Hyper`` row (engine.schedules): ``(type,
default, help)`` and the values it takes (``bounds="[0, 1)"``, ``choices``). The engine checks a
value against its row; the spec layer builds its schema's fields from the same rows, so
`gengraph validate` reports a value out of range with the spec's other mistakes. Only checks that
relate two values (nesterov's) stay in a class's ``_check``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .graph import Node
from .ops import adam_bc_sqrt, adam_step, adam_step_size, cast, ema, gt, minimum, pack, sqrt, stop_gradient, sum_squares, unpack
from .ops import sum as total
from .schedules import REQUIRED, Hyper, Schedule, as_schedule, check, resolve_hyper, unknown_kind  # noqa: F401
from .ops.flat import contiguous_base

STEP_DTYPE = np.dtype("float64")  # the step counter: exact integers up to 2**53

_COMMON = {
    "weight_decay": Hyper(float, 0.0, "L2 penalty added to the gradient: g + weight_decay * p", bounds=">= 0"),
    "clip_norm": Hyper(float, 0.0, "clip the global gradient norm to this value (0 = off)", bounds=">= 0"),
    "ema": Hyper(float, 0.0, "decay d of an exponential moving average of the parameters (Polyak averaging; "
                             "0 = off): a <- d a + (1 - d) p after each update; `averages` gives it debiased",
                 bounds="[0, 1)"),
}


def _lr(default: float) -> Hyper:
    return Hyper(float, default, "learning rate (a float or a schedule)", bounds=">= 0")


def _label(graph, name: str) -> str:
    scope = graph.current_scope
    return f"{scope}/{name}" if scope and not name.startswith(scope + "/") else name


def free_name(graph, name: str) -> str:
    """`name`, or `name_2`, `name_3`, ... if a node with that label already exists."""
    candidate, k = name, 1
    while True:
        try:
            graph.find(_label(graph, candidate))
        except KeyError:
            return candidate
        k += 1
        candidate = f"{name}_{k}"


def named(node: Node, name: str) -> Node:
    """A copy of `node` carrying a user-facing name (unique in its graph)."""
    graph = node.graph
    name = free_name(graph, name)
    if node.op == "constant":
        return graph.constant(graph.value(node), dtype=node.dtype, name=name)
    if node.is_leaf:
        node = stop_gradient(node)  # an identity whose copy can carry the name
    return graph.add_node(node.op, node.inputs, dict(node.attrs), node.shape, node.dtype, name=name)


class _Step:
    """What one `updates` call shares between parameters: step counter, lr, casts."""
    def __init__(self, opt: "Optimizer", graph, step: Node, lr: Node):
        self.opt, self.graph, self.step, self.lr64 = opt, graph, step, lr
        self.t = step + 1.0  # the number of this update, 1 on the first (PyTorch's `step`)
        self._casts: dict = {}
        self.packs: dict[Node, list[Node]] = {}  # flat mode: pack node -> the leaves it holds

    def cast(self, node: Node, dtype) -> Node:
        """A float64 scalar node in a parameter's dtype (one cast node per dtype)."""
        dtype = np.dtype(dtype)
        if node.dtype == dtype:
            return node
        key = (id(node), dtype.str)
        if key not in self._casts:
            self._casts[key] = cast(node, dtype=dtype.name)
        return self._casts[key]

    def lr(self, like: Node) -> Node:
        return self.cast(self.lr64, like.dtype)

    def state(self, param: Node, slot: str, fill: float = 0.0) -> Node:
        leaves = self.packs.get(param)
        if leaves is not None:  # flat mode: one state leaf per parameter, views of one buffer
            nodes = [self._state_leaf(p, slot, fill) for p in leaves]
            flat_layout(self.graph, nodes, fill)
            packed = pack(*nodes)
            self.packs[packed] = nodes
            return packed
        return self._state_leaf(param, slot, fill)

    def _state_leaf(self, param: Node, slot: str, fill: float) -> Node:
        name = free_name(self.graph, f"{self.opt.kind}/{param.label}/{slot}")
        node = self.graph.state(name, np.full(param.shape, fill, dtype=param.dtype), dtype=param.dtype)
        self.opt._states.append(node)
        self.opt.slots.setdefault(param, {})[slot] = node
        return node


def flat_layout(graph, leaves, fill=None) -> None:
    """Make the values of `leaves` consecutive views of one flat buffer, in order (nothing to
    do when they already are). `fill`: the value every element starts with (new state)."""
    vals = [graph.values[n.id] for n in leaves]
    if contiguous_base(vals) is not None:
        return
    xp = np if isinstance(vals[0], np.ndarray) else __import__(type(vals[0]).__module__.split(".")[0])
    buf = xp.empty(sum(int(v.size) for v in vals), dtype=vals[0].dtype)
    if fill is not None:
        buf.fill(fill)
    off = 0
    for n, v in zip(leaves, vals):
        view = buf[off:off + v.size].reshape(v.shape)
        if fill is None:
            view[...] = v
        graph.values[n.id] = view
        off += v.size


class Optimizer:
    """Base class. Subclasses set `kind`, `schema` and `_rule` (one parameter's update)."""

    kind: ClassVar[str] = ""
    schema: ClassVar[dict[str, tuple]] = {}
    aliases: ClassVar[dict[str, str]] = {}  # alternative hyper-parameter names -> canonical
    decoupled_decay: ClassVar[bool] = False  # weight_decay applied to p, not added to g
    flat: bool = True  # one update over flat buffers (see `updates`); False: one per parameter

    def __init__(self, **hyper):
        owner = f'optimizer "{self.kind}"'
        lr = hyper.get("lr")
        if isinstance(lr, (Schedule, dict)):
            rest = {k: v for k, v in hyper.items() if k != "lr"}
            self.hyper = resolve_hyper(owner, self.schema, rest, self.aliases)
            self.hyper["lr"] = as_schedule(lr)
        else:
            self.hyper = resolve_hyper(owner, self.schema, hyper, self.aliases)
        self.hyper = {k: self.hyper[k] for k in self.schema}  # schema order
        self._check(owner, self.hyper)
        self._states: list[Node] = []
        self.slots: dict[Node, dict[str, Node]] = {}
        self.step_node: Node | None = None
        self.lr_node: Node | None = None
        self.flat_grad: Node | None = None  # flat mode: pack(gradients), e.g. for a gradient-norm monitor

    def _check(self, owner, h):
        """Checks that relate two hyper-parameters (each one's range is in its schema row)."""

    @property
    def schedule(self) -> Schedule:
        """The lr schedule (a constant one when lr is a float)."""
        return as_schedule(self.hyper["lr"])

    # --- the graph -------------------------------------------------------------------
    def updates(self, graph, params, grads) -> dict[Node, Node]:
        """Create state leaves and the step counter; return {param/state: new value node}."""
        if isinstance(params, Node) or isinstance(grads, Node):  # list(node) would index it row by row
            raise TypeError("updates(graph, params, grads) takes lists of params and of their gradients, "
                            "e.g. updates(g, [w], [grad(loss, w)])")
        params, grads = list(params), list(grads)
        if len(params) != len(grads):
            raise ValueError(f"{len(params)} params but {len(grads)} gradients")
        listed: set[int] = set()
        for p, g in zip(params, grads):
            if id(p) in listed:  # one update would overwrite the other, with two sets of state
                raise ValueError(f"{p.label} is listed twice in the params")
            listed.add(id(p))
            if not isinstance(p, Node) or p.op not in ("param", "state"):
                raise ValueError(f"an optimizer updates params (or state), not {p!r}")
            if not isinstance(g, Node):
                raise ValueError(f"the gradient of {p.label} is {g!r}, not a graph node")
            if p.graph is not graph or g.graph is not graph:
                raise ValueError(f"{p.label} or its gradient belongs to another graph")
            if g.shape != p.shape:
                raise ValueError(f"gradient of {p.label} has shape {g.shape}, the param {p.shape}")
        self._states, self.slots = [], {}
        step = graph.state(free_name(graph, "opt/step"), 0.0, dtype=STEP_DTYPE)
        self._states.append(step)
        self.step_node = step
        self.lr_node = named(self.schedule.node(step), "lr")
        s = _Step(self, graph, step, self.lr_node)
        out: dict[Node, Node] = {}
        wd = self.hyper["weight_decay"]
        self.flat_grad = None
        if self._can_flatten(graph, params):
            out.update(self._flat_updates(s, params, grads))
        else:
            grads = self._clip(s, grads)
            for p, g in zip(params, grads):
                if wd and not self.decoupled_decay:
                    g = g + wd * p
                out.update(self._rule(s, p, g))
            d = self.hyper["ema"]
            if d:  # after the rule: the average follows the new values
                for p in params:
                    a = s._state_leaf(p, "ema", 0.0)
                    out[a] = ema(a, out[p], decay=d)
        out[step] = s.t
        return out

    def averages(self, graph) -> dict[Node, np.ndarray]:
        """{param: its debiased moving average a / (1 - d^n)} after the n updates taken so far
        (the parameter's own value before the first update); empty when ``ema`` is off."""
        d = self.hyper["ema"]
        if not d or self.step_node is None:
            return {}
        n = float(graph.value(self.step_node))
        out = {}
        for p, slots in self.slots.items():
            if "ema" in slots:
                out[p] = graph.value(p).copy() if n == 0 else graph.value(slots["ema"]) / (1.0 - d ** n)
        return out

    # --- flat buffers ------------------------------------------------------------------
    def _can_flatten(self, graph, params) -> bool:
        """Flat mode needs two or more distinct, non-empty parameters of one dtype, and a graph
        not compiled yet (moving the values into a flat buffer would leave programs compiled
        before with the old arrays)."""
        return (self.flat and len(params) > 1 and len(set(params)) == len(params)
                and len({p.dtype for p in params}) == 1 and all(None not in p.shape for p in params)
                and all(int(np.prod(p.shape)) > 0 for p in params) and graph.streams is None)

    def _flat_updates(self, s: _Step, params, grads) -> dict[Node, Node]:
        """The rule applied once to P = pack(params) and G = pack(grads): the parameter values
        and each state slot become views of one flat buffer (the leaves keep their names), the
        compiler writes the gradients into views of one buffer, and every update is one
        elementwise pass over all parameters. Elementwise rules give bit-identical results to
        the per-parameter ones, clip_norm's global norm included (both are one dot product over the
        gradients laid end to end)."""
        graph = s.graph
        flat_layout(graph, params)
        P, G = pack(*params), pack(*grads)
        self.flat_grad = G
        s.packs[P] = list(params)
        c = self.hyper["clip_norm"]
        if c:
            coef = minimum(c / (sqrt(s.cast(sum_squares(G), G.dtype)) + 1e-6), 1.0)
            G = G * s.cast(coef, G.dtype)
        wd = self.hyper["weight_decay"]
        if wd and not self.decoupled_decay:
            G = G + wd * P
        out = {}
        shapes = P.attrs["shapes"]  # a Shapes: its offsets counted once for every unpack below
        rule = self._rule(s, P, G)
        d = self.hyper["ema"]
        if d:  # Polyak averaging of the new values: one pass over a flat buffer of the averages too
            A = s.state(P, "ema", 0.0)
            rule[A] = ema(A, rule[P], decay=d)
        for key, value in rule.items():
            leaves = s.packs.get(key)
            if leaves is None:
                out[key] = value
                continue
            for i, leaf in enumerate(leaves):
                out[leaf] = unpack(value, index=i, shapes=shapes)
        # state leaves in the per-parameter order (parameter by parameter, slots in rule order)
        self._states[1:] = [self.slots[p][slot] for p in params for slot in self.slots.get(p, {})]
        return out

    def state_nodes(self) -> list[Node]:
        """The state leaves made by the last `updates` call: the step counter first, then each slot."""
        return list(self._states)

    # slots that are running sums or means of squares: never negative (a checkpoint's may be checked)
    NONNEGATIVE_SLOTS: frozenset = frozenset()

    def nonnegative_states(self) -> list[Node]:
        """The state leaves of NONNEGATIVE_SLOTS (made by the last `updates` call)."""
        return [node for slots in self.slots.values() for name, node in slots.items()
                if name in self.NONNEGATIVE_SLOTS]

    def _clip(self, s: _Step, grads):
        c = self.hyper["clip_norm"]
        if not c or not grads:
            return grads
        if len({g.dtype for g in grads}) == 1 and all(None not in g.shape for g in grads):
            # the flat path's norm to the bit: one dot product over the gradients laid end to end
            sq = s.cast(sum_squares(pack(*grads)), grads[0].dtype)
        else:  # mixed dtypes or unknown shapes: no one vector to lay them in
            sq = None
            for g in grads:
                term = s.cast(total(g * g), grads[0].dtype)
                sq = term if sq is None else sq + term
        coef = minimum(c / (sqrt(sq) + 1e-6), 1.0)
        return [g * s.cast(coef, g.dtype) for g in grads]

    def _rule(self, s: _Step, p: Node, g: Node) -> dict[Node, Node]:
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyper.items())
        return f"{type(self).__name__}({args})"


class GD(Optimizer):
    """Plain gradient descent: p <- p - lr g."""
    kind = "gd"
    schema = {"lr": _lr(0.01), **_COMMON}

    def _rule(self, s, p, g):
        return {p: p - s.lr(p) * g}


class Momentum(Optimizer):
    """Heavy-ball momentum (PyTorch SGD): v <- mu v + (1 - dampening) g; p <- p - lr v."""

    kind = "momentum"
    schema = {"lr": _lr(0.01),
              "momentum": Hyper(float, 0.9, "momentum factor mu", bounds=">= 0"),
              "nesterov": Hyper(bool, False, "Nesterov momentum: p <- p - lr (g + mu v)"),
              "dampening": Hyper(float, 0.0, "dampening of the gradient added to v (after the first step)",
                                 bounds="[0, 1]"),
              **_COMMON}

    def _check(self, owner, h):
        super()._check(owner, h)
        if h["nesterov"]:
            check(owner, h["momentum"] > 0 and h["dampening"] == 0, "nesterov needs momentum > 0 and dampening 0")

    def _rule(self, s, p, g):
        h = self.hyper
        mu, damp = h["momentum"], h["dampening"]
        v = s.state(p, "v")
        if damp:  # PyTorch starts the buffer at g, undamped
            v_new = mu * v + s.cast(1.0 - damp * gt(s.step, 0.0), p.dtype) * g
        else:
            v_new = mu * v + g
        d = g + mu * v_new if h["nesterov"] else v_new
        return {p: p - s.lr(p) * d, v: v_new}


class Nesterov(Momentum):
    """`momentum` with nesterov = true: p <- p - lr (g + mu v)."""

    kind = "nesterov"
    schema = {**Momentum.schema, "nesterov": Hyper(bool, True, "Nesterov momentum: p <- p - lr (g + mu v)")}


class Adagrad(Optimizer):
    """Adagrad: s <- s + g^2; p <- p - lr / (1 + t lr_decay) * g / (sqrt(s) + eps)."""

    kind = "adagrad"
    NONNEGATIVE_SLOTS = frozenset({"sum"})
    schema = {"lr": _lr(0.01),
              "eps": Hyper(float, 1e-10, "added to sqrt(s) in the denominator", bounds=">= 0"),
              "initial_accumulator": Hyper(float, 0.0, "initial value of the sum of squared gradients", bounds=">= 0"),
              "lr_decay": Hyper(float, 0.0, "lr / (1 + t lr_decay)", bounds=">= 0"),
              **_COMMON}
    aliases = {"initial_accumulator_value": "initial_accumulator"}

    def _rule(self, s, p, g):
        h = self.hyper
        acc = s.state(p, "sum", h["initial_accumulator"])
        acc_new = acc + g * g
        lr = s.lr(p) if not h["lr_decay"] else s.cast(s.lr64 / (1.0 + h["lr_decay"] * s.step), p.dtype)
        return {p: p - lr * (g / (sqrt(acc_new) + h["eps"])), acc: acc_new}


class RMSprop(Optimizer):
    """RMSprop (PyTorch): s <- a s + (1 - a) g^2; p <- p - lr g / (sqrt(s) + eps)."""

    kind = "rmsprop"
    NONNEGATIVE_SLOTS = frozenset({"sq"})
    schema = {"lr": _lr(0.01),
              "alpha": Hyper(float, 0.99, "decay of the running mean of g^2 (rho)", bounds="[0, 1]"),
              "eps": Hyper(float, 1e-8, "added to the root in the denominator", bounds=">= 0"),
              "momentum": Hyper(float, 0.0, "momentum of the scaled step (0 = off)", bounds=">= 0"),
              "centered": Hyper(bool, False, "divide by the variance estimate sqrt(E[g^2] - E[g]^2)"),
              **_COMMON}
    aliases = {"rho": "alpha"}

    def _rule(self, s, p, g):
        h = self.hyper
        a = h["alpha"]
        sq = s.state(p, "sq")
        sq_new = a * sq + (1.0 - a) * (g * g)
        out = {sq: sq_new}
        if h["centered"]:
            ga = s.state(p, "g_avg")
            ga_new = a * ga + (1.0 - a) * g
            out[ga] = ga_new
            denom = sqrt(sq_new - ga_new * ga_new) + h["eps"]
        else:
            denom = sqrt(sq_new) + h["eps"]
        if h["momentum"]:
            buf = s.state(p, "buf")
            buf_new = h["momentum"] * buf + g / denom
            out[buf] = buf_new
            out[p] = p - s.lr(p) * buf_new
        else:
            out[p] = p - s.lr(p) * (g / denom)
        return {p: out.pop(p), **out}


class Adam(Optimizer):
    """Adam with PyTorch's bias correction: eps is added after sqrt(v_hat)."""

    kind = "adam"
    NONNEGATIVE_SLOTS = frozenset({"v"})
    schema = {"lr": _lr(1e-3),
              "beta1": Hyper(float, 0.9, "decay of the first moment m", bounds="[0, 1)"),
              "beta2": Hyper(float, 0.999, "decay of the second moment v", bounds="[0, 1)"),
              "eps": Hyper(float, 1e-8, "added to sqrt(v_hat) in the denominator", bounds=">= 0"),
              "fused": Hyper(str, "auto", "yes: 3 fused kernels over all parameters (one launch each on a GPU), "
                                          "fewer temporaries; no: 13 plain elementwise nodes (fully readable); "
                                          "auto: yes", choices=("auto", "yes", "no")),
              **_COMMON}

    def __init__(self, **hyper):
        if "betas" in hyper:  # PyTorch's spelling: betas=(beta1, beta2)
            betas = hyper.pop("betas")
            if not isinstance(betas, (list, tuple)) or len(betas) != 2:
                raise ValueError(f'optimizer "{self.kind}": betas must be a pair (beta1, beta2), not {betas!r}')
            if "beta1" in hyper or "beta2" in hyper:
                raise ValueError(f'optimizer "{self.kind}": give betas or beta1/beta2, not both')
            hyper.update(beta1=betas[0], beta2=betas[1])
        super().__init__(**hyper)

    def _rule(self, s, p, g):
        h = self.hyper
        b1, b2 = h["beta1"], h["beta2"]
        m, v = s.state(p, "m"), s.state(p, "v")
        # ops/fused.py: 3 kernels instead of 13 nodes per parameter (one launch each on a GPU, fewer
        # temporaries on NumPy); "auto" is "yes" for the engine's users as for spec runs
        fused = h["fused"] in ("yes", "auto")
        m_new = ema(m, g, decay=b1) if fused else b1 * m + (1.0 - b1) * g
        v_new = ema(v, g, decay=b2, square=True) if fused else b2 * v + (1.0 - b2) * (g * g)
        # float64 scalars, as PyTorch computes them in Python: lr / (1 - b1^t), sqrt(1 - b2^t)
        # (one node each, Python floats on NumPy)
        step_size = adam_step_size(s.lr64, s.step, beta=b1, dtype=p.dtype.name)
        bc2_sqrt = adam_bc_sqrt(s.step, beta=b2, dtype=p.dtype.name)
        base = p
        if self.decoupled_decay and h["weight_decay"]:
            base = p * s.cast(1.0 - s.lr64 * h["weight_decay"], p.dtype)
        if fused:
            new_p = adam_step(base, m_new, v_new, step_size, bc2_sqrt, eps=h["eps"])
        else:
            new_p = base - step_size * (m_new / (sqrt(v_new) / bc2_sqrt + h["eps"]))
        return {p: new_p, m: m_new, v: v_new}


class AdamW(Adam):
    """Adam with decoupled weight decay (PyTorch AdamW): p <- p (1 - lr wd) before the Adam step."""

    kind = "adamw"
    schema = {**Adam.schema,
              "weight_decay": Hyper(float, 0.01, "decoupled decay: p <- p (1 - lr weight_decay)", bounds=">= 0")}
    decoupled_decay = True


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "gd": GD,
    "sgd": GD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": Adagrad,
    "rmsprop": RMSprop,
    "adam": Adam,
    "adamw": AdamW,
}


def make_optimizer(kind: str, **hyper) -> Optimizer:
    """An optimizer by kind name; ValueError with a did-you-mean for unknown kinds or hyper names."""
    try:
        cls = OPTIMIZERS[kind]
    except (KeyError, TypeError):
        raise unknown_kind("optimizer", kind, OPTIMIZERS) from None
    return cls(**hyper)
