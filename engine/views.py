"""One stage of one program as a node list: what the tables and exports show.

``GraphView`` is one stage: ``built`` (the outputs' forward graph), ``grad`` (with
gradient and update nodes, before the passes) or ``optimized`` (the Program's scheduled
nodes). ``view_stage`` makes one from a program's outputs/updates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .graph import Node, topo_order

STAGES = ("built", "grad", "optimized")


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


def output_dict(outputs) -> dict:
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
    outs = output_dict(outputs)
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


def roles(view: GraphView) -> dict[int, str]:
    roles: dict[int, list] = {}
    for k, o in view.outputs.items():
        roles.setdefault(o.id, []).append(f"out:{k}")
    for t, v in view.updates:
        roles.setdefault(v.id, []).append(f"updates {t.label}")
    return {k: ", ".join(v) for k, v in roles.items()}
