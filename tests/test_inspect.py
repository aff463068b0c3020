"""`gengraph graph` and Program.summary(): tables, DOT, JSON and GraphML of real programs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import networkx as nx
import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.engine import Graph, compile, grad, ops
from gengraph.engine import metrics, tables, views

ROOT = Path(__file__).resolve().parents[1]
PERCEPTRON = str(ROOT / "specs" / "linear_perceptron.toml")
QUADRATIC = str(ROOT / "specs" / "mlp_quadratic.toml")


def invoke(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def table_rows(text: str) -> list[dict]:
    """Parse the node table of `gengraph graph` text output into dicts."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("id "))
    header = lines[start].split()
    rows = []
    for ln in lines[start + 2:]:
        if not ln.strip():
            break
        # columns are separated by two or more spaces; empty cells (inputs of leaves) collapse
        m = re.match(r"\s*(\d+)\s+(\S+)\s+(.*)$", ln)
        rows.append({"id": int(m.group(1)), "op": m.group(2), "rest": m.group(3), "line": ln})
    assert header[:5] == ["id", "op", "inputs", "shape", "dtype"]
    return rows


def by_op(rows, op):
    return [r for r in rows if r["op"] == op]


# --- text -------------------------------------------------------------------------------
def test_text_built_stage_lists_forward_ops_with_shapes():
    res = invoke("graph", PERCEPTRON, "--stage", "built")
    assert res.exit_code == 0, res.output
    rows = table_rows(res.output)
    ops_seen = [r["op"] for r in rows]
    # y_hat = x @ W + b; loss = mean((y_hat - y)^2) (+ penalty constant 0)
    for op in ("input", "param", "matmul", "add", "sub", "square", "mean"):
        assert op in ops_seen, (op, ops_seen)
    matmul, = by_op(rows, "matmul")
    assert re.search(r"\b0,1\s+\?x1\s+float64\s+output/dense0\b", matmul["line"]), matmul["line"]
    assert len(by_op(rows, "param")) == 2
    w_line = next(r["line"] for r in by_op(rows, "param") if re.search(r"\bW\b", r["line"]))
    b_line = next(r["line"] for r in by_op(rows, "param") if re.search(r"\bb\b", r["line"]))
    assert re.search(r"\s1x1\s+float64\s+output/dense0\s+W\s+1\s+0\s", w_line), w_line
    assert re.search(r"\s1\s+float64\s+output/dense0\s+b\s+1\s+0\s", b_line), b_line
    sub, = by_op(rows, "sub")
    assert re.search(r"\s\?x1\s+float64\s+loss\s", sub["line"])
    square, = by_op(rows, "square")
    assert re.search(r"\s\?x1\s+float64\s+loss\s.*\s128\s", square["line"])  # batch 128 elementwise FLOPs
    mean, = by_op(rows, "mean")
    assert re.search(r"\sscalar\s+float64\s+loss\s", mean["line"])
    assert re.search(r"; 0 backward\)", res.output) and not any(" grad/" in r["line"] for r in rows)
    # totals: 2 parameters, matmul 2*128*1*1 FLOPs at batch 128, and left-out grad_norm noted
    assert re.search(r"parameters\s+2 in 2 tensors", res.output)
    assert "left out" in res.output and "grad_norm" in res.output


def test_text_optimized_stage_has_gradients_and_pass_report():
    res = invoke("graph", PERCEPTRON, "--stage", "optimized", "--batch", "10")
    assert res.exit_code == 0, res.output
    rows = table_rows(res.output)
    grad_rows = [r for r in rows if " grad/" in r["line"]]
    assert grad_rows, "the optimized train_step must contain backward nodes"
    # dL/dW = x^T @ g: a matmul of shape 1x1 in grad/output/dense0
    assert any(r["op"] == "matmul" and re.search(r"\s1x1\s+float64\s+grad/output/dense0\s", r["line"])
               for r in rows)
    for name in ("simplify", "constant_folding", "cse"):
        assert re.search(rf"{name}\s+removed\s+\d+\s+\(\d+ -> \d+\)", res.output), name
    assert "FLOPs per step" in res.output and "(estimated, batch 10)" in res.output
    assert re.search(r"activations\s+[\d.]+ (B|KiB)", res.output)


def test_program_summary_matches_schedule_and_flops():
    g = Graph(dtype="float64")
    x = g.input("x", (None, 3))
    with g.scope("layer", origin="model.layers[0] (line 12)"):
        w = g.param("W", [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
        h = ops.tanh(x @ w)
    loss = ops.mean(h)
    gw = grad(loss, w)
    prog = compile(g, {"loss": loss, "gw": gw})
    text = prog.summary(batch=4)
    assert text == tables.program_summary(prog, batch=4)
    rows = table_rows(text)
    assert [r["id"] for r in rows] == [n.id for n in prog.nodes]
    mm = [r for r in rows if r["op"] == "matmul" and " layer " in r["line"]][0]
    # forward matmul (4x3)@(3x2): 2*4*3*2 = 48 FLOPs; provenance printed
    assert re.search(r"\s\?x2\s+float64\s+layer\s", mm["line"])
    assert " 48 " in mm["line"] and "model.layers[0] (line 12)" in mm["line"]
    wrow = [r for r in rows if r["op"] == "param"][0]
    assert re.search(r"\sW\s+6\s+0\s", wrow["line"])
    assert re.search(r"parameters\s+6 in 1 tensor\b", text)
    t = metrics.totals_of(views.program_view(prog), batch=4)
    assert t.params == 6 and t.nodes == len(prog.nodes)
    assert t.flops == sum(metrics.node_flops(n, 4) for n in prog.nodes) and t.flops >= 48
    # activation bytes: every non-leaf output at batch 4, float64
    assert t.activation_bytes == sum(8 * metrics.n_elements(n.shape, 4) for n in prog.nodes if not n.is_leaf)


def test_collapse_groups_by_scope():
    res = invoke("graph", QUADRATIC, "--stage", "grad", "--collapse", "1")
    assert res.exit_code == 0, res.output
    head = res.output.splitlines()
    i = next(k for k, ln in enumerate(head) if ln.startswith("scope "))
    groups = {}
    for ln in head[i + 2:]:
        if not ln.strip():
            break
        groups[ln.split()[0]] = ln
    for g in ("hidden", "output", "loss", "grad"):
        assert g in groups, groups
    # 2x64 + 64 + 64x64 + 64 parameters in "hidden"
    assert re.search(r"\s4,352\s", groups["hidden"])


# --- exports ------------------------------------------------------------------------------
def _program_of(spec, name="train_step"):
    from gengraph.cli.inspect_cmds import _spec_models, compiled_programs

    loaded, data, plugin, graph, model = _spec_models(spec, [], [], ['run.device="cpu"'])
    progs, _ = compiled_programs(loaded, data, plugin, model)
    return progs[name][2]


@pytest.mark.parametrize("program", ["train_step", "evaluate"])
def test_json_round_trips_with_program_counts(tmp_path, program):
    out = tmp_path / "g.json"
    res = invoke("graph", QUADRATIC, "--program", program, "--format", "json", "--out", str(out))
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    g = nx.node_link_graph(data, edges="edges")
    prog = _program_of(QUADRATIC, program)
    edges = {(i.id, n.id) for n in prog.nodes for i in n.inputs}
    assert g.number_of_nodes() == len(prog.nodes)
    assert g.number_of_edges() == len(edges)
    assert set(g.nodes) == {n.id for n in prog.nodes}
    assert set(g.edges) == edges
    assert g.graph["program"] == program and g.graph["stage"] == "optimized"
    mm = [n for n in prog.nodes if n.op == "matmul"][0]
    assert g.nodes[mm.id]["op"] == "matmul" and g.nodes[mm.id]["shape"] == "?x64"
    assert sum(a["params"] for _, a in g.nodes(data=True)) == 2 * 64 + 64 + 64 * 64 + 64 + 64 + 1


def test_graphml_has_string_shapes(tmp_path):
    out = tmp_path / "g.graphml"
    res = invoke("graph", PERCEPTRON, "--stage", "grad", "--format", "graphml", "--out", str(out))
    assert res.exit_code == 0, res.output
    g = nx.read_graphml(out)
    shapes = {a["shape"] for _, a in g.nodes(data=True)}
    assert "?x1" in shapes and "1x1" in shapes
    assert {a["kind"] for _, a in g.nodes(data=True)} >= {"input", "param", "forward", "backward", "update"}


def test_optimized_stage_no_larger_than_grad_stage():
    from gengraph.cli.inspect_cmds import _spec_models, compiled_programs

    for spec in (PERCEPTRON, QUADRATIC):
        loaded, data, plugin, graph, model = _spec_models(spec, [], [], ['run.device="cpu"'])
        progs, built_before = compiled_programs(loaded, data, plugin, model)
        for name, (outputs, updates, prog) in progs.items():
            built = views.view_stage("built", outputs, updates, prog, name, built_before)
            grad_v = views.view_stage("grad", outputs, updates, prog, name, built_before)
            opt = views.view_stage("optimized", outputs, updates, prog, name, built_before)
            assert len(opt.nodes) <= len(grad_v.nodes), (spec, name)
            assert len(built.nodes) <= len(grad_v.nodes)
            if name == "train_step":
                assert len(built.nodes) < len(grad_v.nodes)
                assert not any(metrics.is_backward(n) for n in built.nodes)
                assert any(metrics.is_backward(n) for n in grad_v.nodes)


def dot_structure(text: str):
    """A small structural DOT check: balanced braces, declared endpoints, cluster names."""
    assert text.startswith("digraph ")
    depth = 0
    in_str = False
    prev = ""
    for ch in text:
        if ch == '"' and prev != "\\":
            in_str = not in_str
        elif not in_str:
            depth += ch == "{"
            depth -= ch == "}"
            assert depth >= 0
        prev = ch if not (prev == "\\" and ch == "\\") else ""
    assert depth == 0 and not in_str
    declared = set(re.findall(r"^\s*(\w+) \[label=", text, flags=re.M))
    edges = re.findall(r"^\s*(\w+) -> (\w+)", text, flags=re.M)
    assert edges
    for a, b in edges:
        assert a in declared and b in declared, (a, b)
    return declared, edges


def test_dot_parses_and_separates_backward(tmp_path):
    res = invoke("graph", QUADRATIC, "--format", "dot")
    assert res.exit_code == 0, res.output
    text = res.output
    declared, edges = dot_structure(text)
    prog = _program_of(QUADRATIC)
    assert declared == {f"n{n.id}" for n in prog.nodes}
    data_edges = [e for e in re.findall(r"^\s*(n\d+) -> (n\d+)(.*);$", text, flags=re.M) if "update" not in e[2]]
    assert len(data_edges) == sum(len(n.inputs) for n in prog.nodes)
    assert "subgraph cluster_" in text and 'label="grad/hidden' in text
    back = [n for n in prog.nodes if metrics.is_backward(n) and not n.is_leaf]
    fwd = [n for n in prog.nodes if n.op == "tanh"]
    assert back and fwd
    for n in back:
        assert re.search(rf'^\s*n{n.id} \[.*fillcolor="#fcbba1"', text, flags=re.M)
    for n in fwd:
        assert re.search(rf'^\s*n{n.id} \[.*shape=ellipse.*fillcolor="#9ecae1"', text, flags=re.M)
    pydot = pytest.importorskip("pydot", reason="pydot not installed; structural check only")
    parsed = pydot.graph_from_dot_data(text)
    assert parsed and len(parsed) == 1


def test_dot_collapse_makes_one_box_per_group():
    res = invoke("graph", QUADRATIC, "--format", "dot", "--collapse", "1")
    assert res.exit_code == 0, res.output
    declared, edges = dot_structure(res.output)
    labels = re.findall(r'^\s*g\d+ \[label="([^"\\]+)', res.output, flags=re.M)
    assert {"hidden", "output", "loss", "grad"} <= set(labels)
    assert len(declared) < 20  # the full graph has ~100 nodes


def test_render_without_graphviz_explains(tmp_path, monkeypatch):
    import gengraph.cli.inspect_cmds as ic

    monkeypatch.setattr(ic.shutil, "which", lambda name: None)
    out = tmp_path / "g.svg"
    res = CliRunner().invoke(main, ["graph", PERCEPTRON, "--render", "svg", "--out", str(out)])
    assert res.exit_code == 1
    assert "Graphviz" in res.output and "apt install graphviz" in res.output
    assert (tmp_path / "g.dot").read_text().startswith("digraph ")
    mine = tmp_path / "g.dot"
    mine.write_text("my own export")  # e.g. --format dot --collapse 2 --out g.dot, just before
    res = CliRunner().invoke(main, ["graph", PERCEPTRON, "--render", "svg", "--out", str(out)])
    assert res.exit_code == 1 and mine.read_text() == "my own export"
    fresh = tmp_path / "g-2.dot"  # the next free name, and the command to render it names it
    assert f"(the DOT text was written to {fresh})" in res.output and f"dot -Tsvg {fresh} -o {out}" in res.output
    assert fresh.read_text().startswith("digraph ")


def test_render_runs_graphviz_dot(tmp_path, monkeypatch):
    import sys

    import gengraph.cli.inspect_cmds as ic

    fake = tmp_path / "dot"  # stands in for Graphviz: records its arguments, copies stdin to -o
    fake.write_text(f"#!{sys.executable}\nimport sys\nargs = sys.argv[1:]\n"
                    "open(args[args.index('-o') + 1], 'w').write(' '.join(args) + '\\n' + sys.stdin.read())\n")
    fake.chmod(0o755)
    monkeypatch.setattr(ic.shutil, "which", lambda name: str(fake) if name == "dot" else None)
    out = tmp_path / "g.png"
    res = CliRunner().invoke(main, ["graph", PERCEPTRON, "--render", "png", "--out", str(out), "--collapse", "1"])
    assert res.exit_code == 0, res.output
    first, rest = out.read_text().split("\n", 1)
    assert first == f"-Tpng -o {out}"
    assert rest.startswith("digraph ") and 'label="output' in rest


def test_bad_program_and_render_format_are_usage_errors():
    res = CliRunner().invoke(main, ["graph", PERCEPTRON, "--program", "evaluat"])
    assert res.exit_code == 2 and 'did you mean "evaluate"' in res.output
    res = CliRunner().invoke(main, ["graph", PERCEPTRON, "--render", "png", "--format", "json"])
    assert res.exit_code == 2


def test_a_pass_that_adds_nodes_is_reported_as_adding():
    # "simplify removed -3 (17 -> 20)"
    from gengraph.engine import Graph, compile, grad, ops

    g = Graph(dtype="float64")
    x = g.input("x", (None, 3))
    with g.scope("layer"):
        W = g.param("W", [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
        h = ops.tanh(x @ W)
    loss = ops.mean(h * h)
    text = compile(g, {"loss": loss, "dW": grad(loss, W)}).summary(batch=32)
    rows = [line.split() for line in text.splitlines() if line.strip().startswith(("simplify ", "cse "))]
    assert rows and not any(r[1] == "removed" and r[2].startswith("-") for r in rows), text
    for r in rows:  # name, removed|added, count, (before, ->, after)
        before, after = int(r[3].strip("(")), int(r[5].strip(")"))
        assert int(r[2]) == abs(after - before) and r[1] == ("added" if after > before else "removed")


@pytest.mark.parametrize("method, program", [("ols", "evaluate"), ("ridge", "evaluate"), ("lasso", "evaluate"),
                                             ("gd", "train_step")])
def test_a_closed_form_fit_shows_its_evaluate_program(method, program):
    # `gengraph graph specs/ols_franke.toml` showed a train_step with Adam nodes that never runs
    from click.testing import CliRunner

    from gengraph.cli.main import main

    spec = str(Path(__file__).resolve().parents[1] / "specs" / "ols_franke.toml")
    args = ["graph", spec, "--set", f'model.method="{method}"']
    if method == "gd":
        args += ["--set", 'train.optimizer={kind="adam", lr=0.01}']
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].endswith(f"program {program}, stage optimized (regression)")
