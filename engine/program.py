"""A compiled Program: straight-line Python over preassigned slots, built once.

The compiler emits source code with one line per kernel call, e.g.
``v12 = k12(f0, c3)``, plus ``del`` lines at each value's last use and in-place writes
for updates at the end. Running it is one Python call: no graph walk, no name look-up
per node, no shape inference (NumPy/CuPy handle a changed batch size themselves).
"""

from __future__ import annotations

import numpy as np

from .backend import to_numpy
from .graph import Node
from .ops import OPS


class NonFiniteError(FloatingPointError):
    """A debug-mode run met a NaN or inf; names the first node that produced one."""

    def __init__(self, node: Node):
        self.node = node
        where = f" ({node.origin})" if node.origin else ""
        super().__init__(f"non-finite value first produced by {node.label} [{node.op}]{where}")


class Program:
    def __init__(self, graph, order, feeds, outputs, out_keys, updates, xp, ctx, *, debug=False, count=False,
                 pass_stats=(), built_nodes=0):
        self.graph, self.nodes, self.xp, self.ctx = graph, order, xp, ctx
        self.feed_nodes = feeds
        self.feed_names = [n.name for n in feeds]
        self.output_nodes, self._out_keys = outputs, out_keys
        self.updates = updates  # [(target leaf, value node)]
        self.pass_stats, self.built_nodes = list(pass_stats), built_nodes
        self.kernel_calls = 0
        self.source, self._fn = self._generate(debug, count)

    # --- code generation -----------------------------------------------------------
    def _generate(self, debug, count):
        names: dict[int, str] = {}
        env: dict[str, object] = {}
        lines, kernels = [], 0
        for i, n in enumerate(self.feed_nodes):
            names[n.id] = f"f{i}"
        bound = 0
        for n in self.nodes:
            if n.id in names:
                continue
            if n.op == "input":
                raise ValueError(f"input {n.label} is needed but not fed")
            if n.is_leaf:
                names[n.id] = f"c{bound}"
                env[f"c{bound}"] = self.graph.values[n.id] if n.op != "constant" else \
                    self.xp.asarray(self.graph.values[n.id])
                bound += 1
        last_use = {}
        ops = [n for n in self.nodes if not n.is_leaf]
        keep = {o.id for o in self.output_nodes} | {v.id for _, v in self.updates}
        for step, n in enumerate(ops):
            for i in n.inputs:
                last_use[i.id] = step
        reusable = _reusable_buffers(ops, keep)
        direct = {} if debug else self._direct_updates(ops, last_use)
        for step, n in enumerate(ops):
            k = f"k{kernels}"
            kernels += 1
            kernel = OPS[n.op].kernel(self.xp, n.attrs, self.ctx)
            env[k] = _counted(kernel, self) if count else kernel
            names[n.id] = f"v{n.id}"
            args = ", ".join(names[i.id] for i in n.inputs)
            # write into a dead input's buffer when the op can (liveness-based buffer reuse)
            donor = next((i for i in n.inputs if i.id in reusable and last_use[i.id] == step and
                          i.shape == n.shape and i.dtype == n.dtype), None) if _writes_out(n) else None
            if n.id in direct:  # the update's last kernel writes straight into its leaf
                args += f", out={names[direct[n.id].id]}"
            elif donor is not None:
                args += f", out={names[donor.id]}"
            lines.append(f"{names[n.id]} = {k}({args})")
            if debug:
                env[f"n{n.id}"] = n
                lines.append(f"_check({names[n.id]}, n{n.id})")
            dead = sorted({names[i.id] for i in n.inputs if last_use.get(i.id) == step and i.id not in keep
                           and not i.is_leaf})
            if dead:
                lines.append(f"del {', '.join(dead)}")
        # values that may share memory with an updated leaf: the leaf and views of it
        # (transpose, reshape, getitem, ...); they are copied before the in-place writes,
        # so outputs and other updates see the values from before the run
        aliased = {t.id for t, _ in self.updates}
        for n in ops:
            if OPS[n.op].view and n.inputs and n.inputs[0].id in aliased:
                aliased.add(n.id)
        # outputs must not be the store's own arrays (or views of them): a later run of
        # any program that updates them would change what the caller holds
        stored = {n.id for n in self.nodes if n.op in ("param", "state")}
        for n in ops:
            if OPS[n.op].view and n.inputs and n.inputs[0].id in stored:
                stored.add(n.id)
        outs = []
        for o in self.output_nodes:
            outs.append(f"{names[o.id]}.copy()" if o.id in aliased or o.id in stored else names[o.id])
        result_line = f"_out = ({', '.join(outs)}{',' if len(outs) == 1 else ''})"
        lines.append(result_line)
        sources = []
        for i, (t, v) in enumerate(self.updates):
            if v.id in aliased:
                lines.append(f"_u{i} = {names[v.id]}.copy()")
                sources.append(f"_u{i}")
            else:
                sources.append(names[v.id])
        for (t, v), src in zip(self.updates, sources):
            if direct.get(v.id) is not t:
                lines.append(f"{names[t.id]}[...] = {src}")
        lines.append("return _out")
        args = ", ".join(names[n.id] for n in self.feed_nodes)
        src = f"def run({args}):\n" + "\n".join("    " + ln for ln in lines) + "\n"
        env["_check"] = _make_check(self.xp)
        exec(compile(src, f"<gengraph program {id(self):x}>", "exec"), env)  # our own generated code only
        self.n_kernels = kernels
        return src, env["run"]

    def _direct_updates(self, ops, last_use) -> dict:
        """{value id: target leaf} for updates whose value can be computed into the leaf's own
        memory: nothing reads the leaf's old value after that kernel, the value is used by
        nothing else, and neither is an output or shares memory through a view."""
        pos = {n.id: step for step, n in enumerate(ops)}
        outputs = {o.id for o in self.output_nodes}
        viewed = {n.inputs[0].id for n in ops if OPS[n.op].view and n.inputs}
        values = [v.id for _, v in self.updates]
        direct = {}
        for t, v in self.updates:
            step = pos.get(v.id)
            if (step is None or values.count(v.id) > 1 or not _writes_out(v) or v.shape != t.shape
                    or None in v.shape or v.dtype != t.dtype or v.id in outputs or t.id in outputs
                    or t.id in viewed or t.id in values  # another update copies the old value at the end
                    or last_use.get(t.id, -1) > step or last_use.get(v.id, -1) > step):
                continue
            direct[v.id] = t
        return direct

    # --- running -------------------------------------------------------------------------
    def run(self, feeds: dict | None = None, **kw):
        """Run once with inputs by name; returns outputs in the form they were given to compile."""
        feeds = {**(feeds or {}), **kw}
        try:
            args = [self._as_input(feeds[name], n) for name, n in zip(self.feed_names, self.feed_nodes)]
        except KeyError as exc:
            raise KeyError(f"missing input {exc.args[0]!r}; this program needs {self.feed_names}") from None
        return self._shape_result(self._fn(*args))

    def run_positional(self, *arrays):
        """Fast path: inputs in `feed_names` order, already of the right dtype and device."""
        return self._shape_result(self._fn(*arrays))

    def _as_input(self, value, node):
        arr = self.xp.asarray(value)
        return arr if arr.dtype == node.dtype else arr.astype(node.dtype)

    def _shape_result(self, values):
        if self._out_keys is None:
            return list(values)
        if isinstance(self._out_keys, str):
            return values[0]
        return dict(zip(self._out_keys, values))

    def numpy(self, feeds=None, **kw):
        """Like run, with NumPy arrays in the result (copies back from the GPU)."""
        out = self.run(feeds, **kw)
        if isinstance(out, dict):
            return {k: to_numpy(v) for k, v in out.items()}
        if isinstance(out, list):
            return [to_numpy(v) for v in out]
        return to_numpy(out)

    def summary(self, batch: int = 128, collapse: int | None = None) -> str:
        """A text table of the scheduled nodes (op, inputs, shape, scope, params, FLOPs, origin)
        and totals: nodes by op, parameters, FLOPs and activation memory at `batch`, and what
        each compiler pass removed. See gengraph.engine.inspect."""
        from .inspect import program_summary

        return program_summary(self, batch=batch, collapse=collapse)

    def __repr__(self):
        return f"<Program {self.n_kernels} kernels, inputs {self.feed_names}, {len(self.updates)} updates>"


def _writes_out(n) -> bool:
    op = OPS[n.op]
    return (op.ufunc is not None and not n.attrs) or bool(op.extra.get("out"))


def _reusable_buffers(ops, keep) -> set:
    """Values whose buffers a later kernel may overwrite once they are dead: arrays owned
    by one op node (no leaves, no views, no value that a view still refers to), not
    returned and not written to a leaf."""
    shared = {n.inputs[0].id for n in ops if OPS[n.op].view and n.inputs}
    return {n.id for n in ops if not OPS[n.op].view and n.id not in keep and n.id not in shared
            and n.ndim >= 1 and not OPS[n.op].random}


def _counted(kernel, program):
    def call(*args, **kw):
        program.kernel_calls += 1
        return kernel(*args, **kw)

    return call


def _make_check(xp):
    def check(value, node):
        if getattr(value, "dtype", np.dtype("O")).kind == "f" and not bool(xp.all(xp.isfinite(value))):
            raise NonFiniteError(node)

    return check
