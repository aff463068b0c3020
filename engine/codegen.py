"""Code generation: a Program's schedule -> straight-line Python source, compiled once.

One line per kernel call, e.g. ``v12 = k12(f0, c3)``, plus ``del`` lines at each value's
last use, optional ``out=`` arguments that reuse a dead input's buffer or write an
update straight into its leaf, and in-place writes for the remaining updates at the end.
"""

from __future__ import annotations

import numpy as np

from .ops import OPS
from .program import NonFiniteError


def generate(program, *, debug=False, count=False, reuse_buffers=True, direct_updates=True) -> None:
    """Write `program`'s source and attach it (program.source, program._fn, program.n_kernels).

    debug: check every kernel's result for NaN/inf (NonFiniteError names the node) and
    compute updates out of place. count: count kernel calls in program.kernel_calls.
    reuse_buffers: a kernel that can write into a dead input's buffer does so.
    direct_updates: an update's last kernel writes straight into its leaf when safe.
    Both are on by default; switching them off gives the plain schedule (same values).
    """
    names: dict[int, str] = {}
    env: dict[str, object] = {}
    lines, kernels = [], 0
    for i, n in enumerate(program.feed_nodes):
        names[n.id] = f"f{i}"
    bound = 0
    for n in program.nodes:
        if n.id in names:
            continue
        if n.op == "input":
            raise ValueError(f"input {n.label} is needed but not fed")
        if n.is_leaf:
            names[n.id] = f"c{bound}"
            env[f"c{bound}"] = program.graph.values[n.id] if n.op != "constant" else \
                program.xp.asarray(program.graph.values[n.id])
            bound += 1
    last_use = {}
    ops = [n for n in program.nodes if not n.is_leaf]
    keep = {o.id for o in program.output_nodes} | {v.id for _, v in program.updates}
    for step, n in enumerate(ops):
        for i in n.inputs:
            last_use[i.id] = step
    reusable = _reusable_buffers(ops, keep) if reuse_buffers else set()
    direct = _direct_updates(program, ops, last_use) if direct_updates and not debug else {}
    for step, n in enumerate(ops):
        k = f"k{kernels}"
        kernels += 1
        kernel = OPS[n.op].kernel(program.xp, n.attrs, program.ctx)
        env[k] = _counted(kernel, program) if count else kernel
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
    aliased = {t.id for t, _ in program.updates}
    for n in ops:
        if OPS[n.op].returns_view_of_input and n.inputs and n.inputs[0].id in aliased:
            aliased.add(n.id)
    # outputs must not be the store's own arrays (or views of them): a later run of
    # any program that updates them would change what the caller holds
    stored = {n.id for n in program.nodes if n.op in ("param", "state")}
    for n in ops:
        if OPS[n.op].returns_view_of_input and n.inputs and n.inputs[0].id in stored:
            stored.add(n.id)
    outs = []
    for o in program.output_nodes:
        outs.append(f"{names[o.id]}.copy()" if o.id in aliased or o.id in stored else names[o.id])
    result_line = f"_out = ({', '.join(outs)}{',' if len(outs) == 1 else ''})"
    lines.append(result_line)
    sources = []
    for i, (t, v) in enumerate(program.updates):
        if v.id in aliased:
            lines.append(f"_u{i} = {names[v.id]}.copy()")
            sources.append(f"_u{i}")
        else:
            sources.append(names[v.id])
    for (t, v), src in zip(program.updates, sources):
        if direct.get(v.id) is not t:
            lines.append(f"{names[t.id]}[...] = {src}")
    lines.append("return _out")
    args = ", ".join(names[n.id] for n in program.feed_nodes)
    src = f"def run({args}):\n" + "\n".join("    " + ln for ln in lines) + "\n"
    env["_check"] = _make_check(program.xp)
    exec(compile(src, f"<gengraph program {id(program):x}>", "exec"), env)  # our own generated code only
    program.source, program._fn, program.n_kernels = src, env["run"], kernels

def _direct_updates(program, ops, last_use) -> dict:
    """{value id: target leaf} for updates whose value can be computed into the leaf's own
    memory: nothing reads the leaf's old value after that kernel, the value is used by
    nothing else, and neither is an output or shares memory through a view."""
    pos = {n.id: step for step, n in enumerate(ops)}
    outputs = {o.id for o in program.output_nodes}
    viewed = {n.inputs[0].id for n in ops if OPS[n.op].returns_view_of_input and n.inputs}
    values = [v.id for _, v in program.updates]
    direct = {}
    for t, v in program.updates:
        step = pos.get(v.id)
        if (step is None or values.count(v.id) > 1 or not _writes_out(v) or v.shape != t.shape
                or None in v.shape or v.dtype != t.dtype or v.id in outputs or t.id in outputs
                or t.id in viewed or t.id in values  # another update copies the old value at the end
                or last_use.get(t.id, -1) > step or last_use.get(v.id, -1) > step):
            continue
        direct[v.id] = t
    return direct


def _writes_out(n) -> bool:
    op = OPS[n.op]
    return op.writes_into_out or (op.ufunc is not None and not n.attrs)  # a ufunc bound to no attrs takes out=


def _reusable_buffers(ops, keep) -> set:
    """Values whose buffers a later kernel may overwrite once they are dead: arrays owned
    by one op node (no leaves, no views, no value that a view still refers to), not
    returned and not written to a leaf."""
    shared = {n.inputs[0].id for n in ops if OPS[n.op].returns_view_of_input and n.inputs}
    return {n.id for n in ops if not OPS[n.op].returns_view_of_input and n.id not in keep and n.id not in shared
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
