"""Looking at graphs and gradients: tables, DOT/JSON/GraphML exports, a model-gradient check.

Everything here works on plain node lists, so it serves any program of any plugin:

* ``GraphView`` is one stage of one program: ``built`` (the outputs' forward graph),
  ``grad`` (with gradient and update nodes, before the passes) or ``optimized`` (the
  Program's scheduled nodes). ``view_stage`` makes one from a program's outputs/updates.
* ``table`` / ``totals`` / ``summary`` render the text form (``Program.summary()`` uses it),
  ``to_dot`` the Graphviz text (written directly, no pydot), ``to_networkx`` /
  ``to_json`` / ``to_graphml`` the networkx exports. ``collapse=DEPTH`` groups nodes by the
  first DEPTH components of their name scope, like TensorBoard.
* ``check_loss_grads`` compares the engine's gradient of a scalar loss with central
  differences for every parameter; random draws and ``stop_gradient`` values are frozen
  first, so stochastic losses become deterministic functions of the parameters.

The engine never imports plugins: building models from specs is the caller's job.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .graph import Node, topo_order
from .ops import OPS

STAGES = ("built", "grad", "optimized")
DEFAULT_BATCH = 128


# --- per-node facts -------------------------------------------------------------------
def fmt_shape(shape, scalar="scalar") -> str:
    """(None, 64) -> "?x64"; () -> "scalar" (or the `scalar` argument)."""
    return "x".join("?" if d is None else str(d) for d in shape) if len(shape) else scalar


def concrete(shape, batch: int) -> tuple:
    return tuple(batch if d is None else d for d in shape)


def n_elements(shape, batch: int) -> int:
    return int(np.prod(concrete(shape, batch), dtype=np.int64))


def param_count(node: Node) -> int:
    return int(np.prod(node.shape, dtype=np.int64)) if node.op == "param" else 0


def node_flops(node: Node, batch: int = DEFAULT_BATCH) -> int:
    """Estimated floating-point operations: the op's `flops` rule, else one per output element.

    Leaves and views (reshape, transpose, stop_gradient, ...) cost nothing; unknown
    (batch) dimensions count as `batch`.
    """
    if node.is_leaf:
        return 0
    op = OPS.get(node.op)
    if op is not None and op.view:
        return 0
    out = concrete(node.shape, batch)
    if op is not None and op.flops is not None:
        try:
            return int(op.flops(out, *(concrete(i.shape, batch) for i in node.inputs), **node.attrs))
        except Exception:  # a rule that cannot handle these attrs: fall back to the estimate
            pass
    return int(np.prod(out, dtype=np.int64))


def node_bytes(node: Node, batch: int = DEFAULT_BATCH) -> int:
    return n_elements(node.shape, batch) * node.dtype.itemsize


def is_backward(node: Node) -> bool:
    return node.scope == "grad" or node.scope.startswith("grad/")


def classify(nodes) -> dict[int, str]:
    """node id -> "input" | "param" | "state" | "constant" | "forward" | "backward" | "update".

    backward: built by `grad` (scope grad/...); update: any other op computed from a
    gradient (optimizer steps, gradient-norm monitors); forward: everything else.
    """
    kinds: dict[int, str] = {}
    for n in nodes:
        if n.is_leaf:
            kinds[n.id] = n.op
        elif is_backward(n):
            kinds[n.id] = "backward"
        elif any(kinds.get(i.id) in ("backward", "update") for i in n.inputs):
            kinds[n.id] = "update"
        else:
            kinds[n.id] = "forward"
    return kinds


UNSCOPED_UPDATES, UNSCOPED = "(optimizer/updates)", "(no scope)"


def collapse_groups(nodes, depth: int | None) -> dict[int, str | None]:
    """node id -> its group with --collapse DEPTH (None: the node stays on its own).

    Scoped nodes group by the first `depth` components of their scope; unscoped inputs
    stay nodes; other unscoped nodes go to "(optimizer/updates)" when they are update ops
    or state, or feed only such nodes (learning rates, bias corrections), else "(no scope)".
    """
    if not depth:
        return {n.id: None for n in nodes}
    kinds = classify(nodes)
    users: dict[int, list] = {}
    for n in nodes:
        for i in n.inputs:
            users.setdefault(i.id, []).append(n.id)
    key: dict[int, str | None] = {}
    for n in reversed(nodes):
        if n.scope:
            key[n.id] = "/".join(n.scope.split("/")[:depth])
        elif n.op == "input":
            key[n.id] = None
        elif kinds[n.id] in ("update", "state") or (
                users.get(n.id) and all(key.get(u) == UNSCOPED_UPDATES for u in users[n.id])):
            key[n.id] = UNSCOPED_UPDATES
        else:
            key[n.id] = UNSCOPED
    return key


def group_kind(members, kinds) -> str:
    """A collapsed group's kind: the most common of its ops' kinds (forward on a tie)."""
    count = Counter(kinds[n.id] for n in members if kinds[n.id] in ("forward", "backward", "update"))
    if not count:
        return "forward"
    best = max(count.values())
    return next(k for k in ("forward", "backward", "update") if count.get(k) == best)


# --- one stage of one program ---------------------------------------------------------------
@dataclass
class GraphView:
    """The nodes of one stage of a program, in order, with what it outputs and updates."""

    nodes: list
    outputs: dict = field(default_factory=dict)  # name -> node
    updates: list = field(default_factory=list)  # [(target leaf, value node)]
    program: str = ""
    stage: str = "optimized"
    pass_stats: list = field(default_factory=list)  # [(pass, nodes before, nodes after)] (optimized only)
    built_nodes: int | None = None  # nodes the compiler started from (optimized only)
    title: str = ""
    left_out: list = field(default_factory=list)  # outputs not shown (built stage: they need gradients)

    @property
    def graph(self):
        return self.nodes[0].graph if self.nodes else None


def _output_dict(outputs) -> dict:
    if isinstance(outputs, Node):
        return {"output": outputs}
    if isinstance(outputs, dict):
        return dict(outputs)
    return {f"output{i}": o for i, o in enumerate(outputs)}


def view_stage(stage: str, outputs, updates=None, program=None, name: str = "",
               built_before: int | None = None) -> GraphView:
    """The `stage` of a program compiled from `outputs` and `updates` ({leaf: value}).

    built: nodes the outputs need, before gradients; with `built_before` (the first node
    id created after the model was built) outputs that need later nodes (gradient norms)
    are left out, so a train_step shows its loss and metrics only. grad: also what the
    updates need (gradients, optimizer), before the passes. optimized: the compiled
    `program`'s scheduled nodes.
    """
    outs = _output_dict(outputs)
    ups = list((updates or {}).items()) if isinstance(updates, dict) else list(updates or [])
    if stage == "built":
        left_out = []
        if built_before is not None:
            for k, o in list(outs.items()):
                if any(n.id >= built_before for n in topo_order([o])):
                    left_out.append(k)
                    del outs[k]
        view = GraphView(topo_order(list(outs.values())), outs, [], name, stage)
        view.left_out = left_out
        return view
    if stage == "grad":
        nodes = topo_order(list(outs.values()) + [v for _, v in ups] + [t for t, _ in ups])
        return GraphView(nodes, outs, ups, name, stage)
    if stage == "optimized":
        if program is None:
            raise ValueError("the optimized stage needs the compiled program")
        return program_view(program, name)
    raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")


def program_view(program, name: str = "") -> GraphView:
    keys = program._out_keys
    if isinstance(keys, list):
        outs = dict(zip(keys, program.output_nodes))
    elif keys == "single":
        outs = {"output": program.output_nodes[0]}
    else:
        outs = {f"output{i}": o for i, o in enumerate(program.output_nodes)}
    return GraphView(list(program.nodes), outs, list(program.updates), name, "optimized",
                     list(program.pass_stats), program.built_nodes)


# --- text -------------------------------------------------------------------------------
def _human_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} GiB"


def _wrap(prefix: str, text: str, width: int = 110) -> str:
    """`prefix` + text, wrapped at commas, continuation lines indented under the text."""
    import textwrap

    return textwrap.fill(text, width, initial_indent=prefix, subsequent_indent=" " * len(prefix),
                         break_long_words=False, break_on_hyphens=False)


def _short(s: str, width: int) -> str:
    return s if len(s) <= width else s[:width - 3] + "..."


def _render_rows(header, rows, right=()) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(r):
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        return "  ".join(cells).rstrip()

    return [line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]


def table(view: GraphView, batch: int = DEFAULT_BATCH, collapse: int | None = None) -> str:
    """One row per node (or per scope group with `collapse`)."""
    if collapse:
        return _group_table(view, batch, collapse)
    roles = _roles(view)
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
    return "\n".join(_render_rows(header, rows, right=(0, 7, 8)))


def _roles(view: GraphView) -> dict[int, str]:
    roles: dict[int, list] = {}
    for k, o in view.outputs.items():
        roles.setdefault(o.id, []).append(f"out:{k}")
    for t, v in view.updates:
        roles.setdefault(v.id, []).append(f"updates {t.label}")
    return {k: ", ".join(v) for k, v in roles.items()}


def _group_table(view: GraphView, batch: int, depth: int) -> str:
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
    return "\n".join(_render_rows(header, rows, right=(1, 3, 4, 5)))


@dataclass
class Totals:
    nodes: int
    leaves: int
    by_op: dict
    params: int
    param_tensors: int
    state: int
    flops: int
    activation_bytes: int
    peak_bytes: int
    backward_nodes: int


def totals_of(view: GraphView, batch: int = DEFAULT_BATCH) -> Totals:
    nodes = view.nodes
    kinds = classify(nodes)
    params = [n for n in nodes if n.op == "param"]
    return Totals(
        nodes=len(nodes), leaves=sum(n.is_leaf for n in nodes),
        by_op=dict(sorted(Counter(n.op for n in nodes).items(), key=lambda kv: (-kv[1], kv[0]))),
        params=sum(param_count(n) for n in params), param_tensors=len(params),
        state=sum(int(np.prod(n.shape, dtype=np.int64)) for n in nodes if n.op == "state"),
        flops=sum(node_flops(n, batch) for n in nodes),
        activation_bytes=sum(node_bytes(n, batch) for n in nodes if not n.is_leaf),
        peak_bytes=peak_live_bytes(view, batch),
        backward_nodes=sum(k == "backward" for k in kinds.values()))


def peak_live_bytes(view: GraphView, batch: int = DEFAULT_BATCH) -> int:
    """Most bytes of non-leaf values alive at once when the nodes run in this order.

    A value dies after its last use unless it is an output or an update; views are free.
    """
    keep = {o.id for o in view.outputs.values()} | {v.id for _, v in view.updates}
    ops_ = [n for n in view.nodes if not n.is_leaf]
    last = {}
    for step, n in enumerate(ops_):
        for i in n.inputs:
            last[i.id] = step
    live, peak, size = 0, 0, {}
    for step, n in enumerate(ops_):
        op = OPS.get(n.op)
        size[n.id] = 0 if op is not None and op.view else node_bytes(n, batch)
        live += size[n.id]
        peak = max(peak, live)
        for i in {i.id for i in n.inputs}:
            if last.get(i) == step and i in size and i not in keep:
                live -= size[i]
    return peak


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
            lines.append(f"    {name:16s} removed {before - after:4d}  ({before} -> {after})")
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


# --- networkx, JSON, GraphML --------------------------------------------------------------
def to_networkx(view: GraphView, batch: int = DEFAULT_BATCH, collapse: int | None = None):
    """A networkx.DiGraph of the view with scalar attributes only (GraphML-safe).

    Node attributes: op, label, name, scope, shape ("128x64", "?" unknown, "" scalar),
    dtype, kind (forward/backward/update/leaf kind), origin, params, flops, bytes,
    role (out:NAME / updates LEAF). With `collapse` one vertex stands for each scope group.
    """
    graph = view.graph
    if graph is None:
        import networkx as nx

        return nx.DiGraph()
    g = graph.to_networkx(view.nodes)
    kinds, roles = classify(view.nodes), _roles(view)
    for n in view.nodes:
        a = g.nodes[n.id]
        a.update(kind=kinds[n.id], origin=n.origin if n.origin is not None else "", params=param_count(n),
                 flops=node_flops(n, batch), bytes=0 if n.is_leaf else node_bytes(n, batch),
                 role=roles.get(n.id, ""))
    t = totals_of(view, batch)
    g.graph.update(program=view.program, stage=view.stage, batch=batch, nodes=t.nodes, parameters=t.params,
                   flops=t.flops, activation_bytes=t.activation_bytes)
    for name, before, after in view.pass_stats if view.stage == "optimized" else ():
        g.graph[f"pass_{name}_removed"] = before - after
    if collapse:
        g = _collapse_nx(g, view, collapse)
    return g


def _collapse_nx(g, view: GraphView, depth: int):
    import networkx as nx

    key = {i: (f"group:{k}" if k else i) for i, k in collapse_groups(view.nodes, depth).items()}
    kinds = classify(view.nodes)
    members: dict = {}
    for n in view.nodes:
        members.setdefault(key[n.id], []).append(n)
    c = nx.DiGraph()
    c.graph.update(g.graph, collapse=depth)
    for n in view.nodes:
        k = key[n.id]
        if isinstance(k, int):
            c.add_node(k, **g.nodes[n.id])
            continue
        if k not in c:
            scope = k[len("group:"):]
            c.add_node(k, op="group", label=scope, name="", scope=scope, shape="", dtype="", origin="",
                       kind=group_kind(members[k], kinds), params=0, flops=0, bytes=0, role="", members=0)
        a = c.nodes[k]
        a["members"] += 1
        a["params"] += g.nodes[n.id]["params"]
        a["flops"] += g.nodes[n.id]["flops"]
        a["bytes"] += g.nodes[n.id]["bytes"]
    for u, v in g.edges():
        ku, kv = key[u], key[v]
        if ku == kv:
            continue
        if c.has_edge(ku, kv):
            c.edges[ku, kv]["count"] += 1
        else:
            c.add_edge(ku, kv, count=1)
    return c


def to_json(view: GraphView, batch: int = DEFAULT_BATCH, collapse: int | None = None) -> str:
    """networkx node-link JSON (`networkx.node_link_graph(data, edges="edges")` reads it back)."""
    import networkx as nx

    return json.dumps(nx.node_link_data(to_networkx(view, batch, collapse), edges="edges"), indent=1)


def to_graphml(view: GraphView, batch: int = DEFAULT_BATCH, collapse: int | None = None) -> str:
    import networkx as nx

    return "\n".join(nx.generate_graphml(to_networkx(view, batch, collapse))) + "\n"


# --- DOT ----------------------------------------------------------------------------------
STYLE = {  # kind -> DOT node attributes
    "input": 'shape=invhouse, style=filled, fillcolor="#c7e9c0"',
    "param": 'shape=box, style="filled,bold", fillcolor="#fdd49e"',
    "state": 'shape=cylinder, style=filled, fillcolor="#e0e0e0"',
    "constant": 'shape=box, style="filled,dotted", fillcolor="#ffffff", fontsize=8',
    "forward": 'shape=ellipse, style=filled, fillcolor="#9ecae1"',
    "backward": 'shape=box, style="filled,rounded,dashed", fillcolor="#fcbba1"',
    "update": 'shape=hexagon, style=filled, fillcolor="#dadaeb"',
}
LEGEND = ("blue ellipses: forward ops; red dashed boxes: backward ops (grad/...); purple hexagons: "
          "optimizer/updates; green: inputs; orange: parameters; grey: state")


def _q(s) -> str:
    """A DOT double-quoted string."""
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _node_label(n: Node, role: str) -> str:
    if n.is_leaf:
        parts = [n.name or n.op]
    else:
        parts = [n.op] + ([n.name] if n.name else [])
    if n.op == "constant" and n.shape == () and n.id in n.graph.values:
        try:
            parts.append(f"{float(np.asarray(n.graph.values[n.id]).reshape(-1)[0]):.4g}")
        except (TypeError, ValueError):
            pass
    parts.append(f"{fmt_shape(n.shape)} #{n.id}")
    op = None if n.is_leaf else OPS.get(n.op)
    if op is not None and op.flops is not None:  # ops with their own FLOPs rule (matmul, conv, pools)
        parts.append(f"{node_flops(n):,} FLOPs")
    if role:
        parts.append(role)
    return "\n".join(parts)


def to_dot(view: GraphView, batch: int = DEFAULT_BATCH, collapse: int | None = None, name: str = "gengraph") -> str:
    """Graphviz DOT text: clusters per name scope, forward and backward nodes styled apart.

    With `collapse=DEPTH`, every scope group (first DEPTH components) is one box.
    """
    kinds, roles = classify(view.nodes), _roles(view)
    title = f"{view.program} ({view.stage})" if view.program else view.stage
    out = [f"digraph {_q(name)} {{",
           f"  graph [rankdir=TB, fontname=Helvetica, labelloc=t, label={_q(title + chr(10) + LEGEND)}];",
           "  node [fontname=Helvetica, fontsize=10];",
           '  edge [color="#555555", arrowsize=0.6];']
    if collapse:
        _dot_collapsed(view, collapse, kinds, roles, out, batch)
    else:
        _dot_clusters(view, kinds, roles, out)
        for n in view.nodes:
            for src in n.inputs:
                style = ' [color="#cb181d", style=dashed]' if kinds[n.id] == "backward" else ""
                out.append(f"  n{src.id} -> n{n.id}{style};")
        seen = {n.id for n in view.nodes}
        for t, v in view.updates:
            if t.id in seen and v.id in seen:
                out.append(f'  n{v.id} -> n{t.id} [style=dotted, color="#6a51a3", constraint=false, label="update"];')
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_node(n: Node, kinds, roles) -> str:
    extra = ", peripheries=2" if n.id in roles else ""
    tooltip = n.origin or n.label
    return f"n{n.id} [label={_q(_node_label(n, roles.get(n.id, '')))}, tooltip={_q(tooltip)}, {STYLE[kinds[n.id]]}{extra}];"


def _dot_clusters(view: GraphView, kinds, roles, out) -> None:
    tree: dict = {"nodes": [], "children": OrderedDict()}
    for n in view.nodes:
        t = tree
        for part in n.scope.split("/") if n.scope else ():
            t = t["children"].setdefault(part, {"nodes": [], "children": OrderedDict()})
        t["nodes"].append(n)
    counter = [0]

    def emit(t, indent, path):
        pad = "  " * indent
        for n in t["nodes"]:
            out.append(pad + _dot_node(n, kinds, roles))
        for part, child in t["children"].items():
            full = f"{path}/{part}" if path else part
            counter[0] += 1
            back = full == "grad" or full.startswith("grad/")
            out.append(f"{pad}subgraph cluster_{counter[0]} {{")
            out.append(f'{pad}  label={_q(full)}; style="rounded,dashed"; color={_q("#cb181d" if back else "#3182bd")};'
                       f" fontsize=10;")
            emit(child, indent + 1, full)
            out.append(pad + "}")

    emit(tree, 1, "")


def _dot_collapsed(view: GraphView, depth: int, kinds, roles, out, batch) -> None:
    groups: "OrderedDict[str, list]" = OrderedDict()
    ident: dict[int, str] = {}
    keys = collapse_groups(view.nodes, depth)
    for n in view.nodes:
        k = keys[n.id]
        if k is None:
            ident[n.id] = f"n{n.id}"
            out.append("  " + _dot_node(n, kinds, roles))
        else:
            groups.setdefault(k, []).append(n)
    for i, (k, members) in enumerate(groups.items()):
        gid = f"g{i}"
        for n in members:
            ident[n.id] = gid
        kind = group_kind(members, kinds)
        ops = Counter(n.op for n in members)
        opline = ", ".join(f"{c} {op}" for op, c in sorted(ops.items(), key=lambda kv: -kv[1])[:4])
        if len(ops) > 4:
            opline += ", ..."
        params = sum(param_count(n) for n in members)
        label = f"{k}\n{len(members)} nodes: {opline}" + (f"\n{params:,} params" if params else "")
        style = 'shape=box3d, style=filled, fillcolor="#9ecae1"' if kind == "forward" else STYLE[kind]
        out.append(f"  {gid} [label={_q(label)}, {style}];")
    edges: Counter = Counter()
    for n in view.nodes:
        for src in n.inputs:
            a, b = ident[src.id], ident[n.id]
            if a != b:
                edges[(a, b)] += 1
    for (a, b), c in edges.items():
        out.append(f"  {a} -> {b}" + (f" [label={_q(c)}];" if c > 1 else ";"))


# --- gradient check of a built loss -----------------------------------------------------------
@dataclass
class ParamCheck:
    name: str
    shape: tuple
    checked: int
    total: int
    max_abs_err: float
    max_rel_err: float
    ok: bool


@dataclass
class LossGradCheck:
    params: list
    loss: float
    frozen_random: int = 0
    frozen_stop_gradient: int = 0
    roundoff_floor: float = 0.0  # added to atol: the finite differences' own rounding error
    scale: float = 0.0  # the largest |scalar| the loss is computed from (sets the floor)

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.params)


def freeze_nondeterminism(loss: Node):
    """`loss` rebuilt with every random draw and stop_gradient value replaced by a fed input.

    Neither kind passes a gradient, so the engine's gradient is unchanged; but finite
    differences of the rebuilt loss see neither new noise nor the parameter dependence
    hidden behind stop_gradient (Langevin or Gibbs negatives). Returns
    (new loss, {input node: original node}).
    """
    from .passes import clone

    g = loss.graph
    new: dict[int, Node] = {}
    frozen: dict[int, tuple] = {}
    for n in topo_order([loss]):
        op = OPS.get(n.op)
        if not n.is_leaf and (n.op == "stop_gradient" or (op is not None and op.random)):
            inp = g.add_node("input", shape=n.shape, dtype=n.dtype, name=f"__frozen{len(g.nodes)}_{n.id}")
            new[id(n)] = inp
            frozen[inp.id] = (inp, n)
            continue
        ins = tuple(new[id(i)] for i in n.inputs)
        new[id(n)] = n if all(a is b for a, b in zip(ins, n.inputs)) else clone(n, ins)
    out = new[id(loss)]
    used = {n.id for n in topo_order([out]) if n.op == "input"}
    return out, {inp: orig for k, (inp, orig) in frozen.items() if k in used}


ROUNDOFF_FACTOR = 8


def check_loss_grads(loss: Node, params, feeds: dict, *, eps=1e-6, rtol=1e-5, atol=1e-8, seed=0,
                     max_entries=50, backend="numpy") -> LossGradCheck:
    """The engine's gradient of scalar `loss` w.r.t. each param vs central differences.

    Runs on the graph's own parameter values (perturbed in place and restored). Params
    with more than `max_entries` entries are checked on a seeded random subset. Noise is
    fixed: random draws and stop_gradient values are computed once, from the graph's
    random streams (whose state is saved and restored, so the check leaves them as it found
    them), and fed as constants. An entry passes when
    |engine - numeric| <= atol + floor + rtol * max(|engine|, |numeric|), where
    floor = 8 * finfo(dtype).eps * scale / eps is the rounding error the finite
    differences themselves carry, `scale` being the largest |scalar| the loss is computed
    from (the loss, its sums and means); it matters for losses made of large terms.
    """
    from .autodiff import grad
    from .backend import to_numpy
    from .compiler import compile
    from .gradcheck import compare

    graph = loss.graph
    if loss.shape != ():
        raise ValueError(f"the loss must be a scalar; it has shape {loss.shape}")
    det_loss, frozen = freeze_nondeterminism(loss)
    feeds = dict(feeds)
    streams_state = None
    if frozen:
        originals = list(frozen.values())
        sampler = compile(graph, originals, backend=backend)
        streams = graph.streams
        for n in sampler.nodes:  # streams are created lazily: make them exist so their state is saved
            if OPS.get(n.op) is not None and OPS[n.op].random:
                streams.rng(n.attrs.get("stream", 0))
        streams_state = streams.state()
        values = sampler.run(feeds)
        streams.set_state(streams_state)
        for (inp, _), v in zip(frozen.items(), values):
            feeds[inp.name] = to_numpy(v)
    grads = grad(det_loss, list(params))
    grad_prog = compile(graph, [det_loss] + list(grads), backend=backend)
    value_prog = compile(graph, det_loss, backend=backend)

    def f():
        if streams_state is not None:
            graph.streams.set_state(streams_state)
        return float(to_numpy(value_prog.run(feeds)))

    res = grad_prog.run(feeds)
    loss_value = float(to_numpy(res[0]))
    # central differences resolve no better than the rounding of the loss: a few units in
    # the last place of the largest scalar it is computed from (a loss that is a difference
    # of large terms, like free energies, rounds like those terms), divided by eps
    scalars = [n for n in topo_order([det_loss]) if n.shape == () and not n.is_leaf and n.dtype.kind == "f"]
    scale = max([abs(loss_value)] + [abs(float(to_numpy(v))) for v in compile(graph, scalars, backend=backend)
                                     .run(feeds)]) if scalars else abs(loss_value)
    floor = ROUNDOFF_FACTOR * float(np.finfo(det_loss.dtype).eps) * scale / eps \
        if det_loss.dtype.kind == "f" else 0.0
    rng = np.random.default_rng(seed)
    rows = []
    for p, g in zip(params, res[1:]):
        x = graph.values[p.id]
        analytic = np.asarray(to_numpy(g), np.float64).reshape(-1)
        if not x.flags.c_contiguous:
            raise ValueError(f"parameter {p.label} is not contiguous; cannot perturb it in place")
        flat = x.reshape(-1)  # a view: writes go to the value the programs read
        idx = np.arange(x.size) if x.size <= max_entries else np.sort(rng.choice(x.size, max_entries, replace=False))
        numeric = np.empty(len(idx))
        for j, i in enumerate(idx):
            old = flat[i]
            flat[i] = old + eps
            fp = f()
            flat[i] = old - eps
            fm = f()
            flat[i] = old
            numeric[j] = (fp - fm) / (2 * eps)
        row = compare(p.label, analytic[idx], numeric, rtol, atol + floor)
        rows.append(ParamCheck(p.label, tuple(x.shape), len(idx), int(x.size), row.max_abs_err, row.max_rel_err,
                               row.ok))
    n_random = sum(1 for o in frozen.values() if o.op != "stop_gradient")
    return LossGradCheck(rows, loss_value, n_random, len(frozen) - n_random, floor, scale)


def gradcheck_table(result: LossGradCheck) -> str:
    header = ("parameter", "shape", "checked", "max abs err", "max rel err", "result")
    rows = []
    for r in result.params:
        checked = f"{r.checked}/{r.total}" + (" (random subset)" if r.checked < r.total else "")
        rows.append((r.name, fmt_shape(r.shape), checked, f"{r.max_abs_err:.3e}", f"{r.max_rel_err:.3e}",
                     "ok" if r.ok else "FAIL"))
    return "\n".join(_render_rows(header, rows, right=(3, 4)))
