"""Text tables of graphs: one row per node (or per scope group), totals, summaries.

``table`` / ``totals`` / ``summary`` render a views.GraphView; ``program_summary`` is what
``Program.summary()`` prints. ``collapse=DEPTH`` groups nodes by the first DEPTH
components of their name scope, like TensorBoard. ``render_rows`` is the column layout
the gradient-check report shares.
"""

from __future__ import annotations

import textwrap
from collections import Counter, OrderedDict

from .metrics import DEFAULT_BATCH, collapse_groups, fmt_shape, node_bytes, node_flops, param_count, totals_of
from .views import GraphView, program_view
from .views import roles as roles_of


def _human_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} GiB"


def _wrap(prefix: str, text: str, width: int = 110) -> str:
    """`prefix` + text, wrapped at commas, continuation lines indented under the text."""
    return textwrap.fill(text, width, initial_indent=prefix, subsequent_indent=" " * len(prefix),
                         break_long_words=False, break_on_hyphens=False)


def _short(s: str, width: int) -> str:
    return s if len(s) <= width else s[:width - 3] + "..."


def render_rows(header, rows, right=()) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(r):
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        return "  ".join(cells).rstrip()

    return [line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]


def table(view: GraphView, batch: int = DEFAULT_BATCH, collapse: int | None = None) -> str:
    """One row per node (or per scope group with `collapse`)."""
    header, rows, right = table_rows(view, batch, collapse)
    return "\n".join(render_rows(header, rows, right))


def table_rows(view: GraphView, batch: int = DEFAULT_BATCH, collapse: int | None = None):
    """(header, rows, right-aligned column indices) of `table`, for other renderings (HTML)."""
    if collapse:
        return _group_rows(view, batch, collapse)
    roles = roles_of(view)
    header = ("id", "op", "inputs", "shape", "dtype", "scope", "name", "params", "flops", "origin")
    rows = []
    for n in view.nodes:
        name = n.name or ""
        if n.id in roles:
            name = f"{name} [{roles[n.id]}]" if name else f"[{roles[n.id]}]"
        p = param_count(n)
        rows.append((n.id, n.op, _short(",".join(str(i.id) for i in n.inputs), 24), fmt_shape(n.shape),
                     str(n.dtype), n.scope or "-", name or "-", f"{p:,}" if p else "", f"{node_flops(n, batch):,}",
                     n.origin if n.origin is not None else "-"))
    return header, rows, (0, 7, 8)


def _group_rows(view: GraphView, batch: int, depth: int):
    groups: "OrderedDict[str, list]" = OrderedDict()
    keys = collapse_groups(view.nodes, depth)
    for n in view.nodes:
        groups.setdefault(keys[n.id] or "(inputs)", []).append(n)
    header = ("scope", "nodes", "ops", "params", "flops", "activations")
    rows = []
    for key, members in groups.items():
        ops = Counter(n.op for n in members)
        top = ", ".join(f"{op} {c}" for op, c in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))[:6])
        if len(ops) > 6:
            top += ", ..."
        rows.append((key, len(members), top, f"{sum(param_count(n) for n in members):,}",
                     f"{sum(node_flops(n, batch) for n in members):,}",
                     _human_bytes(sum(node_bytes(n, batch) for n in members if not n.is_leaf))))
    return header, rows, (1, 3, 4, 5)


def totals(view: GraphView, batch: int = DEFAULT_BATCH) -> str:
    t = totals_of(view, batch)
    dtype = ", ".join(sorted({str(n.dtype) for n in view.nodes if not n.is_leaf})) or "-"
    lines = ["totals" + (f" ({view.program}, stage {view.stage})" if view.program else f" (stage {view.stage})") + ":",
             f"  nodes            {t.nodes} ({t.nodes - t.leaves} ops, {t.leaves} leaves; "
             f"{t.backward_nodes} backward)",
             _wrap("  nodes by op      ", ", ".join(f"{op} {c}" for op, c in t.by_op.items())),
             f"  parameters       {t.params:,} in {t.param_tensors} tensor{'s' if t.param_tensors != 1 else ''}"]
    if t.state:
        lines.append(f"  state            {t.state:,} values (optimizer moments, counters, chains)")
    lines += [f"  FLOPs per step   {t.flops:,} (estimated, batch {batch})",
              f"  activations      {_human_bytes(t.activation_bytes)} (all non-leaf outputs, batch {batch}, {dtype}); "
              f"peak live in this order {_human_bytes(t.peak_bytes)}"]
    if view.stage == "optimized" and view.pass_stats:
        start = view.built_nodes if view.built_nodes else view.pass_stats[0][1]
        lines.append(f"  passes           {start} nodes before the passes, {view.pass_stats[-1][2]} after "
                     "(not counting update targets)")
        for name, before, after in view.pass_stats:
            change = f"removed {before - after:4d}" if after <= before else f"added   {after - before:4d}"
            lines.append(f"    {name:16s} {change}  ({before} -> {after})")  # a pass may add nodes
    return "\n".join(lines)


def summary(view: GraphView, batch: int = DEFAULT_BATCH, collapse: int | None = None) -> str:
    head = view.title or (f"program {view.program}, stage {view.stage}" if view.program else f"stage {view.stage}")
    outs = ", ".join(f"{k}={o.label}" for k, o in view.outputs.items())
    ups = ", ".join(t.label for t, _ in view.updates)
    lines = [head, _wrap("outputs: ", outs or "-")]
    if view.left_out:
        lines.append(f"left out (computed from gradients; see --stage grad): {', '.join(view.left_out)}")
    if view.updates:
        lines.append(_wrap("updates: ", ups))
    return "\n".join(lines + ["", table(view, batch, collapse), "", totals(view, batch)]) + "\n"


def program_summary(program, batch: int = DEFAULT_BATCH, name: str = "", collapse: int | None = None) -> str:
    view = program_view(program, name)
    view.title = (f"program {name}: " if name else "program: ") + \
        f"{program.n_kernels} kernels, inputs {program.feed_names}, {len(program.updates)} updates"
    return summary(view, batch, collapse)
