"""Exports of a views.GraphView: networkx, node-link JSON, GraphML, Graphviz DOT.

``to_networkx`` keeps scalar attributes only (GraphML-safe; shapes as "128x64"),
``to_json`` is networkx node-link data with ``edges="edges"``, ``to_dot`` is Graphviz text
written directly (no pydot): clusters per name scope, forward and backward styled apart.
``collapse=DEPTH`` draws one vertex per scope group.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict

import networkx as nx

from .backend import to_numpy
from .graph import Node
from .ops import OPS
from .metrics import DEFAULT_BATCH, classify, collapse_groups, fmt_shape, group_kind, node_bytes, node_flops, \
    param_count, totals_of
from .views import GraphView
from .views import roles as roles_of


def to_networkx(view: GraphView, batch: int = DEFAULT_BATCH, collapse: int | None = None):
    """A networkx.DiGraph of the view with scalar attributes only (GraphML-safe).

    Node attributes: op, label, name, scope, shape ("128x64", "?" unknown, "" scalar),
    dtype, kind (forward/backward/update/leaf kind), origin, params, flops, bytes,
    role (out:NAME / updates LEAF). With `collapse` one vertex stands for each scope group.
    """
    graph = view.graph
    if graph is None:
        return nx.DiGraph()
    g = graph.to_networkx(view.nodes)
    kinds, roles = classify(view.nodes), roles_of(view)
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
    return json.dumps(nx.node_link_data(to_networkx(view, batch, collapse), edges="edges"), indent=1)


def to_graphml(view: GraphView, batch: int = DEFAULT_BATCH, collapse: int | None = None) -> str:
    return "\n".join(nx.generate_graphml(to_networkx(view, batch, collapse))) + "\n"


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
            parts.append(f"{float(to_numpy(n.graph.values[n.id]).reshape(-1)[0]):.4g}")
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
    kinds, roles = classify(view.nodes), roles_of(view)
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
