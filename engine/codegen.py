"""Code generation: a Program's schedule -> straight-line Python source, compiled once.

One line per kernel call, e.g. ``v12 = k12(f0, c3)``, plus ``del`` lines at each value's
last use, optional ``out=`` arguments that reuse a dead input's buffer or write an
update straight into its leaf, and in-place writes for the remaining updates at the end.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

from .ops import OPS
from .ops.fused import adam_update_site
from .ops.registry import FUSIONS
from .program import NonFiniteError
from .ops.flat import contiguous_base
from .ops.flat import _offsets


def generate(program, *, debug=False, count=False, reuse_buffers=True, direct_updates=True, fuse=True) -> None:
    """Write `program`'s source and attach it (program.source, program._fn, program.n_kernels).

    debug: check every kernel's result for NaN/inf (NonFiniteError names the node) and
    compute updates out of place. count: count kernel calls in program.kernel_calls.
    reuse_buffers: a kernel that can write into a dead input's buffer does so.
    direct_updates: an update's last kernel writes straight into its leaf when safe.
    fuse: a declared group of nodes (ops.registry.FUSIONS) is one call, where safe.
    All are on by default; switching them off gives the plain schedule (same values).
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
    # flat buffers: packs of leaves that already lie in order in one buffer are that buffer
    # (no kernel); a group of updates {leaf_i: unpack(F, i)} over such a buffer is one update
    # of the buffer by F; the gradients a pack gathers are written into views of one buffer
    flat_leaves = _flat_leaf_packs(program, ops)
    for node_id, buf in flat_leaves.items():
        names[node_id] = f"b{node_id}"
        env[f"b{node_id}"] = buf
    groups = _update_groups(program, ops, flat_leaves)  # F id -> (buffer name, [(leaf, unpack node)])
    grouped = {u.id for _, members in groups.values() for _, u in members}
    direct = _direct_updates(program, ops, last_use, names, groups) if direct_updates and not debug else {}
    pos = {n.id: step for step, n in enumerate(ops)}
    fusions = _adam_fusions(program, ops, pos, direct, groups, grouped)  # {adam_step id: (ema, ema of squares)}
    fused_away = {e.id for pair in fusions.values() for e in pair}
    for c_id, (a, b) in fusions.items():  # the emas' inputs are read at the adam_step now
        for i in (a.inputs[0], b.inputs[0], a.inputs[1]):
            last_use[i.id] = max(last_use[i.id], pos[c_id])
    placed, gathers = _gradient_buffers(program, ops, keep, env) if reuse_buffers else ({}, {})
    # views of leaves (a weight's transpose, ...): leaves are updated in place, so a view made
    # once stays a view of the current value; bound at compile time instead of a kernel per run
    leaf_views = _leaf_views(program, ops, flat_leaves) if reuse_buffers else {}
    for node_id, view in leaf_views.items():
        names[node_id] = f"w{node_id}"
        env[f"w{node_id}"] = view
    taken = set(flat_leaves) | grouped | set(leaf_views) | fused_away | set(fusions) | set(direct) | set(placed)
    pure = _pure_fusions(program, ops, pos, taken) if fuse and not debug else {}  # anchor id -> Fused
    in_call = {m.id for anchor, f in pure.items() for m in f.members if m.id != anchor}
    inlined = set()  # nodes written as their op's source (OpDef.source), not a kernel call

    def bind(kernel) -> str:
        """A new kernel slot k<i> in the program's namespace (counted when count=True)."""
        nonlocal kernels
        k = f"k{kernels}"
        kernels += 1
        env[k] = _counted(kernel, program) if count else kernel
        return k
    for anchor, f in pure.items():  # what the call reads or makes lives at least until the call
        for i in (*f.inputs, *f.members):
            last_use[i.id] = max(last_use.get(i.id, -1), pos[anchor])
    for step, n in enumerate(ops):
        names[n.id] = names.get(n.id, f"v{n.id}")
        if n.id in flat_leaves or n.id in grouped or n.id in leaf_views or n.id in fused_away:
            continue  # no kernel: bound at compile time, or computed by a fused call below
        read = list(n.inputs)
        if n.id in in_call:  # computed by its group's call at the anchor: only the dels
            pass
        elif n.id in pure:  # a declared fusion (ops.registry.FUSIONS): the group's values from one call
            f = pure[n.id]
            for m in f.members:
                names.setdefault(m.id, f"v{m.id}")
            k = bind(f.kernel)
            args = ", ".join(["_xp"] + [names[i.id] for i in f.inputs] + [f"{a}={_literal(v)}" for a, v in f.attrs.items()])
            lines.append(f"{', '.join(names[m.id] for m in f.members)}, = {k}({args})")
            read = [*f.inputs, *f.members]
        elif n.id in fusions:  # Adam's three kernels as one call (fused.adam_update)
            a, b = fusions[n.id]
            p, _, _, step_size, scale = n.inputs
            k = bind(adam_update_site())  # its own memory of the buffers it checked
            lines.append(f"{names[n.id]} = {k}(_xp, {names[p.id]}, {names[a.inputs[0].id]}, {names[b.inputs[0].id]}, "
                         f"{names[a.inputs[1].id]}, {names[step_size.id]}, {names[scale.id]}, "
                         f"beta1={_literal(a.attrs['decay'])}, beta2={_literal(b.attrs['decay'])}, "
                         f"eps={_literal(n.attrs['eps'])}, "
                         f"out={direct[n.id]}, out_m={direct[a.id]}, out_v={direct[b.id]})")
            lines.append(f"{names[a.id]}, {names[b.id]} = {direct[a.id]}, {direct[b.id]}")
            read += [a.inputs[0], b.inputs[0], a.inputs[1]]
        elif n.id in gathers:  # the pack of gradients: copy in what was not computed in place
            buf, copies = gathers[n.id]
            lines += [f"{view}[...] = {names[i.id]}" for view, i in copies]
            lines.append(f"{names[n.id]} = {buf}")
        elif n.id not in direct and n.id not in placed and (expr := _inline(n, names)):  # a method call
            lines.append(f"{names[n.id]} = {expr}")
            inlined.add(n.id)
        else:
            kernel, literal_attrs = _kernel_call(OPS[n.op], program.xp, n.attrs, program.ctx)
            k = bind(kernel)
            args = ", ".join(names[i.id] for i in n.inputs)
            if literal_attrs is not None:  # the forward itself, attrs spelled out in the call
                args = ", ".join(a for a in ["_xp", args, *literal_attrs] if a)
            # write into a dead input's buffer when the op can (liveness-based buffer reuse)
            donor = next((i for i in n.inputs if i.id in reusable and last_use[i.id] == step and
                          i.shape == n.shape and i.dtype == n.dtype), None) if _writes_out(n) else None
            if n.id in direct:  # the update's last kernel writes straight into its leaf (or flat buffer)
                args += f", out={direct[n.id]}"
            elif n.id in placed:  # a gradient computed straight into its view of the flat gradient
                args += f", out={placed[n.id]}"
            elif donor is not None:
                args += f", out={_donor_arg(n, donor, names)}"
            lines.append(f"{names[n.id]} = {k}({args})")
        if debug:
            env[f"n{n.id}"] = n
            lines.append(f"_check({names[n.id]}, n{n.id})")
        dead = sorted({names[i.id] for i in read if last_use.get(i.id) == step and i.id not in keep
                       and not i.is_leaf and i.id not in flat_leaves and i.id not in leaf_views})
        if dead:
            lines.append(f"del {', '.join(dead)}")
    # values that may share memory with an updated leaf: the leaf and views of it
    # (transpose, reshape, getitem, pack, ...); they are copied before the in-place writes,
    # so outputs and other updates see the values from before the run
    aliased = _alias_closure(ops, {t.id for t, _ in program.updates})
    # outputs must not be the store's own arrays (or views of them): a later run of any
    # program that updates them would change what the caller holds, and a caller writing into a
    # constant (folded, shared between programs) would change every later run. Nor the arrays the
    # caller fed (d/dx sum(x * y) is y itself): writing into a result would change the data. A value computed
    # straight into its leaf (direct update) is that leaf's memory too, and so are views of it.
    # An output given twice is copied the second time, so that the caller gets arrays that do not
    # share memory.
    stored = _alias_closure(ops, {n.id for n in program.nodes if n.op in ("param", "state", "constant", "input")}
                            | set(direct))
    outs, given = [], set()
    for o in program.output_nodes:
        copy = o.id in aliased or o.id in stored or o.id in given
        outs.append(f"{names[o.id]}.copy()" if copy else names[o.id])
        given.add(o.id)
    result_line = f"_out = ({', '.join(outs)}{',' if len(outs) == 1 else ''})"
    lines.append(result_line)
    writes = []  # (destination, value node) of the in-place writes left for the end
    for f_id, (buf, members) in groups.items():
        if f_id not in direct:
            writes.append((buf, members[0][1].inputs[0]))
    for t, v in program.updates:
        if v.id not in grouped and direct.get(v.id) != names[t.id]:
            writes.append((names[t.id], v))
    sources = []
    for i, (dest, v) in enumerate(writes):
        if v.id in aliased:
            lines.append(f"_u{i} = {names[v.id]}.copy()")
            sources.append(f"_u{i}")
        else:
            sources.append(names[v.id])
    for (dest, v), src in zip(writes, sources):
        lines.append(f"{dest}[...] = {src}")
    lines.append("return _out")
    args = ", ".join(names[n.id] for n in program.feed_nodes)
    src = f"def run({args}):\n" + "\n".join("    " + ln for ln in lines) + "\n"
    env["_check"] = _make_check(program.xp)
    env["_xp"] = program.xp
    exec(compile(src, f"<gengraph program {id(program):x}>", "exec"), env)  # our own generated code only
    program.source, program._fn, program.n_kernels = src, env["run"], kernels
    # scheduled nodes that call no kernel: packs of laid-out leaves and views of leaves (bound at
    # compile time), update views elided into a flat update, packs of gradients placed in a buffer
    program.no_kernel = set(flat_leaves) | grouped | set(leaf_views) | set(gathers) | fused_away | in_call | inlined


def _pure_fusions(program, ops, pos, taken) -> dict:
    """{anchor id: Fused} for the declared fusions (ops.registry.FUSIONS) that are safe here: no
    member is an update's value or otherwise handled (`taken`: direct or grouped updates,
    flat-buffer packs, placed gradients, leaf views, Adam's fused kernels), every input exists at
    the anchor's place (the call reads them there), nothing but the group reads a member's value
    before it, and no member but the anchor reads an input that may share memory with an updated
    leaf (a direct update in between would change what that member reads; a layer's bias, which
    only the anchor's sum reads, is fine)."""
    found = [f for match in FUSIONS.values() for f in match(ops, program.xp)]
    if not found:  # most programs: none of the bookkeeping below
        return {}
    updated = _alias_closure(ops, {t.id for t, _ in program.updates}) | {v.id for _, v in program.updates}
    readers: dict[int, list] = {}  # value id -> [(position, reader id)]
    for n in ops:
        for i in n.inputs:
            readers.setdefault(i.id, []).append((pos[n.id], n.id))
    out, used = {}, set()
    for f in found:
        ids = {m.id for m in f.members}
        if any(i in taken or i in used or i not in pos for i in ids):
            continue
        anchor = f.anchor.id if f.anchor is not None else min(ids, key=pos.__getitem__)
        at = pos[anchor]
        if any(pos.get(i.id, -1) >= at for i in f.inputs):
            continue
        # an updated leaf read by a member other than the anchor: an update between the two would
        # change what that member reads (the anchor reads at its own place either way)
        if any(i.id in updated and any(j is i for m in f.members if m.id != anchor for j in m.inputs)
               for i in f.inputs):
            continue
        if any(p < at and r not in ids for m in ids for p, r in readers.get(m, ())):
            continue
        if not all(_literal(v) for v in f.attrs.values()):
            continue
        out[anchor] = f  # its values in the declared order, at the anchor's place
        used.update(ids)
    return out


def _adam_fusions(program, ops, pos, direct, groups, grouped) -> dict:
    """{adam_step id: (ema, ema of squares)} for Adam updates whose three kernels can be one call:
    the step reads an ema and an ema of squares of one gradient, all three are written straight
    into their state (direct updates: nothing reads the old values after them), the step is the
    emas' only reader (besides the elided views of a flat update), nothing between the emas and
    the step writes into the memory they read (another update's kernel writing into the
    gradient's leaf, say: the fused call reads at the step's place), and their attributes have
    literals. Deferring the emas to the step's place is then safe."""
    steps = [c for c in ops if c.op == "adam_step" and c.id in direct and c.shape]
    if not steps:  # most programs (evaluation, sampling, other optimizers): none of the bookkeeping below
        return {}
    readers: dict[int, int] = {}
    for n in ops:
        if n.id in grouped:
            continue
        for i in n.inputs:
            readers[i.id] = readers.get(i.id, 0) + 1
    aliases = _aliases_of(ops)
    writes: dict[int, list] = {}  # a direct kernel's value id -> the leaves it writes into
    for t, v in program.updates:
        writes.setdefault(v.id, []).append(t)
    for f_id, (_, members) in groups.items():
        writes[f_id] = [t for t, _ in members]
    fusions = {}
    for c in steps:
        _, a, b, _, _ = c.inputs
        if not (a.op == "ema" and b.op == "ema" and not a.attrs.get("square") and b.attrs.get("square")
                and a.inputs[1] is b.inputs[1] and a.id in direct and b.id in direct
                and readers.get(a.id) == 1 and readers.get(b.id) == 1 and a.shape == b.shape == c.shape
                and all(_literal(x) for x in (a.attrs["decay"], b.attrs["decay"], c.attrs["eps"]))):
            continue
        read = {a.inputs[0].id, b.inputs[0].id, a.inputs[1].id}
        lo, hi = min(pos[a.id], pos[b.id]), pos[c.id]
        if any(lo < pos.get(d, -1) < hi and d not in (a.id, b.id) and
               any(read & ({t.id} | aliases(t.id)) for t in writes.get(d, ())) for d in direct):
            continue
        fusions[c.id] = (a, b)
    return fusions


def _kernel_call(op, xp, attrs, ctx):
    """(callable, literal attrs): a ufunc or the op's forward called as forward(_xp, *arrays,
    name=literal, ...) when every attr has an exact Python literal -- a partial would merge
    its bound keywords into every call (about 0.25 us a kernel, a tenth of a step's time at
    batch 1); otherwise (random ops, other attr values) the op's bound kernel and None."""
    if (op.ufunc is not None and not attrs) or op.random:
        return op.kernel(xp, attrs, ctx), None
    spelled = [f"{name}={_literal(value)}" for name, value in attrs.items()]
    if any(a.endswith("=") for a in spelled):
        return op.kernel(xp, attrs, ctx), None
    return op.forward, spelled


def _inline(n, names) -> str:
    """The op's own source for node n (OpDef.source: a method call such as ``v3.T``, 0.2 us less
    than a kernel call), or '' where it has none or an attr has no exact literal."""
    source = OPS[n.op].source
    if source is None or not all(_literal(v) for v in n.attrs.values()):
        return ""
    ranks = {"ndims": tuple(len(i.shape) for i in n.inputs)} if _takes_ndims(source) else {}
    return source(*(names[i.id] for i in n.inputs), **ranks, **n.attrs)


@functools.lru_cache(maxsize=None)
def _takes_ndims(source) -> bool:
    """Whether an OpDef.source takes the inputs' ranks (ndims=): one written before it did not."""
    params = inspect.signature(source).parameters.values()
    return any(p.name == "ndims" or p.kind is p.VAR_KEYWORD for p in params)


def _literal(value) -> str:
    """The source of an int, finite float, bool, None, str or tuple of them that evaluates to
    an equal value of the same type; '' for anything else."""
    if value is None or type(value) in (bool, int, str):
        return repr(value)
    if type(value) is float:
        return repr(value) if np.isfinite(value) else ""
    if type(value) is tuple:
        items = [_literal(v) for v in value]
        return "" if "" in items else "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    return ""


def _aliased_inputs(n):
    """The inputs whose memory node n's value may share: all of a pack's, the first of a view."""
    if n.op == "pack":
        return n.inputs
    return n.inputs[:1] if OPS[n.op].returns_view_of_input else ()


def _donor_arg(n, donor, names) -> str:
    """The out= argument that hands `donor`'s buffer to n. Equal declared shapes with an unknown
    (None) axis may still differ at run time when another input is larger along that axis (inputs
    fed different batch sizes, or a slice of the batch): NumPy would broadcast the donor up, and
    its buffer is too small. Such a donor is used only when it is no smaller there at run time (a
    compare or two per call)."""
    d = names[donor.id]
    checks = []
    for k in (k - len(donor.shape) for k, size in enumerate(donor.shape) if size is None):
        for i in n.inputs:
            if i is donor or len(i.shape) < -k or i.shape[k] == 1:
                continue
            other = f"{names[i.id]}.shape[{k}]" if i.shape[k] is None else str(i.shape[k])
            checks.append(f"{d}.shape[{k}] >= {other}")
    return f"({d} if {' and '.join(checks)} else None)" if checks else d


def _alias_closure(ops, ids) -> set:
    """`ids` and every value that may share memory with one of them (views, packs, ...)."""
    out = set(ids)
    for n in ops:  # in schedule order: a view's input comes before it
        if any(i.id in out for i in _aliased_inputs(n)):
            out.add(n.id)
    return out


def _aliases_of(ops) -> dict:
    """{node id: ids of the later values that may share its memory}, for every node."""
    alias: dict[int, set] = {}
    for n in ops:
        for i in _aliased_inputs(n):
            alias.setdefault(i.id, set()).add(n.id)
    closed: dict[int, set] = {}

    def close(i):
        if i not in closed:
            closed[i] = set()
            todo = list(alias.get(i, ()))
            while todo:
                j = todo.pop()
                if j not in closed[i]:
                    closed[i].add(j)
                    todo.extend(alias.get(j, ()))
        return closed[i]

    return close


def _flat_leaf_packs(program, ops) -> dict:
    """{pack node id: the buffer} for packs of leaves whose values lie in order in one buffer."""
    out = {}
    for n in ops:
        if n.op == "pack" and n.inputs and all(i.is_leaf and i.op in ("param", "state") for i in n.inputs):
            buf = contiguous_base([program.graph.values[i.id] for i in n.inputs])
            if buf is not None and buf.dtype == n.dtype:
                out[n.id] = buf
    return out


def _leaf_views(program, ops, flat_leaves) -> dict:
    """{node id: array} for shape-only views (transpose, reshape, expand_dims, ...) of param or
    state leaves with static shapes, made once. Only ops that return a view of their input
    whatever the input (no copy fallback), so the bound array shares the leaf's memory."""
    out = {}
    for n in ops:
        if n.op not in _PURE_VIEWS or not n.inputs or None in n.shape:
            continue
        src = n.inputs[0]
        if src.is_leaf and src.op in ("param", "state"):
            value = program.graph.values[src.id]
        elif src.id in out:
            value = out[src.id]
        else:
            continue
        if any(not (i.is_leaf and i.op == "constant") for i in n.inputs[1:]):
            continue
        res = OPS[n.op].kernel(program.xp, n.attrs, program.ctx)(
            value, *(program.graph.values[i.id] for i in n.inputs[1:]))
        if getattr(res, "base", None) is None or not _shares(program.xp, res, value):
            continue  # not a view after all: leave it to run time
        out[n.id] = res
    return out


_PURE_VIEWS = ("transpose", "expand_dims")


def _shares(xp, a, b) -> bool:
    try:
        return bool(xp.shares_memory(a, b))
    except Exception:  # noqa: BLE001 - a backend without shares_memory: do not bind
        return False


def _update_groups(program, ops, flat_leaves) -> dict:
    """{F id: (buffer name, [(leaf, unpack node), ...])} for update groups {leaf_i: unpack(F, i)}
    that cover every piece of F, where the leaves are exactly a flat pack's buffer, in order,
    and the unpack nodes are used by nothing but their update."""
    from collections import Counter

    values = Counter(v.id for _, v in program.updates)
    used = {i.id for n in ops for i in n.inputs} | {o.id for o in program.output_nodes}
    by_leaves = {tuple(i.id for i in n.inputs): n.id for n in ops if n.id in flat_leaves}
    cand: dict[int, list] = {}
    for t, v in program.updates:
        if v.op == "unpack" and values[v.id] == 1 and v.id not in used:
            cand.setdefault(v.inputs[0].id, []).append((t, v))
    groups = {}
    for f_id, members in cand.items():
        members.sort(key=lambda tv: tv[1].attrs["index"])
        shapes = members[0][1].attrs["shapes"]
        if [v.attrs["index"] for _, v in members] != list(range(len(shapes))) or \
                any(v.attrs["shapes"] != shapes for _, v in members):
            continue
        pack_id = by_leaves.get(tuple(t.id for t, _ in members))
        if pack_id is None or len({t.id for t, _ in members}) != len(members):
            continue
        groups[f_id] = (f"b{pack_id}", members)
    return groups


def _direct_updates(program, ops, last_use, names, groups=None) -> dict:
    """{value id: where its kernel writes (a leaf's or flat buffer's name)} for updates whose
    value can be computed straight into the target's memory: nothing reads the target's old
    value (through the target or anything sharing its memory) after that kernel, the value
    is the update of this target only, and nothing sharing the target's memory is an output
    or another update's value. The value itself may be read later: it then lives in the
    target (where it belongs after the run)."""
    from collections import Counter

    pos = {n.id: step for step, n in enumerate(ops)}
    outputs = {o.id for o in program.output_nodes}
    values = Counter(v.id for _, v in program.updates)
    aliases = _aliases_of(ops)
    direct = {}

    def ok(targets, v, shape, dtype):
        step = pos.get(v.id)
        if (step is None or values[v.id] > 1 or not _writes_out(v, direct=True) or v.shape != shape
                or None in v.shape or v.dtype != dtype or v.id in outputs):
            return False
        for t in targets:
            shared = {t.id} | aliases(t.id)
            if shared & outputs or any(values[a] for a in shared):  # read at the end, or returned
                return False
            if max(last_use.get(a, -1) for a in shared) > step or any(pos.get(a, -1) > step for a in shared):
                return False
        return True

    grouped = set()
    for f_id, (buf, members) in (groups or {}).items():
        f = members[0][1].inputs[0]
        grouped.update(v.id for _, v in members)
        targets = [t for t, _ in members]
        if ok(targets, f, f.shape, targets[0].dtype) and not any(values[v.id] > 1 for _, v in members):
            direct[f_id] = buf
    for t, v in program.updates:
        if v.id not in grouped and ok([t], v, t.shape, t.dtype):
            direct[v.id] = names[t.id]
    return direct


def _gradient_buffers(program, ops, keep, env):
    """Place the inputs of packs of computed values (the optimizer's pack of gradients) in views
    of one program-owned buffer: {node id: view name} for kernels that write there, and
    {pack id: (buffer name, [(view name, node) to copy in])} for the packs themselves."""
    from collections import Counter

    outputs = {o.id for o in program.output_nodes}
    aliases = _aliases_of(ops)
    in_packs = Counter(i.id for n in ops if n.op == "pack" for i in n.inputs)
    placed, gathers = {}, {}
    for n in ops:
        if n.op != "pack" or not n.inputs or any(i.is_leaf for i in n.inputs) or n.id in keep \
                or ({n.id} | aliases(n.id)) & (outputs | keep - {n.id}):
            continue
        buf = f"_g{n.id}"
        env[buf] = program.xp.empty(n.shape, dtype=n.dtype)
        copies = []
        for k, (i, (a, b)) in enumerate(zip(n.inputs, _offsets(n.attrs["shapes"]))):
            view = f"_g{n.id}_{k}"
            env[view] = env[buf][a:b].reshape(i.shape)
            if (_writes_out(i, direct=True) and not OPS[i.op].returns_view_of_input and i.id not in keep and in_packs[i.id] == 1
                    and i.id not in placed and None not in i.shape and i.dtype == n.dtype
                    and not aliases(i.id) & outputs):
                placed[i.id] = view
            else:
                copies.append((view, i))
        gathers[n.id] = (buf, copies)
    return placed, gathers


def _writes_out(n, direct=False) -> bool:
    """Whether n's kernel takes out=; with `direct`, also whether it surely writes there when the
    result must land in that memory (a leaf, a flat buffer's view): on 0-d values NumPy kernels
    other than ufuncs return a new scalar instead, and the update was lost."""
    op = OPS[n.op]
    if direct and not n.shape and op.ufunc is None:
        return False
    return op.writes_into_out or (op.ufunc is not None and not n.attrs)  # a ufunc bound to no attrs takes out=


def _reusable_buffers(ops, keep) -> set:
    """Values whose buffers a later kernel may overwrite once they are dead: arrays owned
    by one op node (no leaves, no views, no value that a view or pack still refers to), not
    returned and not written to a leaf."""
    shared = {i.id for n in ops for i in _aliased_inputs(n)}
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
