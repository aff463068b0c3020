"""Turn results.json into the short tables of bench/README.md (between the results markers)."""

from __future__ import annotations

import re
from pathlib import Path

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def markers(name="results"):
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
NAMES = {"gengraph": "gengraph", "numpy": "hand-NumPy", "torch": "PyTorch", "torch_fused": "PyTorch fused",
         "torch_compile": "PyTorch compile", "jax": "JAX jit"}
ORDER = ("gengraph", "numpy", "torch", "torch_fused", "torch_compile", "jax")


def _present(suites) -> list:
    """The frameworks that appear in any workload of any thread setting, in ORDER."""
    seen = set()
    for suite in suites:
        for r in suite["workloads"].values():
            seen.update((r.get("time_per_step") or r.get("time_per_call") or {}).keys())
    return [k for k in ORDER if k in seen]


def standing(res: dict) -> list[str]:
    """'Where gengraph stands': the ratios of the results tables, per peer, workloads side by side
    (wall-clock medians, and process-CPU-time medians in parentheses)."""
    out = ["| threads | peer | " + " | ".join(["mlp", "vae", "ddpm"]) + " |", "| --- | --- | ---: | ---: | ---: |"]
    for n, suite in res["threads"].items():
        for k in _present([suite])[1:]:
            cells = []
            for w in ("mlp", "vae", "ddpm"):
                r = suite["workloads"].get(w, {})
                v, c = r.get("ratios", {}).get(f"gengraph/{k}"), r.get("ratios_cpu", {}).get(f"gengraph/{k}")
                cells.append("–" if v is None else f"{v:.2f}" + (f" ({c:.2f})" if c is not None else ""))
            out.append(f"| {n} | gengraph / {NAMES[k]} | " + " | ".join(cells) + " |")
    return out


def _ms(stats, k):
    v = stats.get(k)
    return f"{v['median_us'] / 1e3:.3f}" if v else "–"


def _ratio(r, k):
    v = r.get(f"gengraph/{k}")
    return f"**{v:.2f}**" if v is not None else "–"


def tables(res: dict) -> str:
    m = res.get("machine", {})
    out = [f"Command: `{res['command']}` — {res['date']}, {res['seconds']:.0f} s.",
           f"Machine: {m.get('cpu', m.get('processor'))}, {m.get('cpus_usable') or m.get('cpu_count')} cores usable; "
           f"Python {m.get('python')}, NumPy {m.get('numpy')} ({m.get('blas', '?')}), "
           f"PyTorch {m.get('torch') or 'not installed'} (CPU), JAX {m.get('jax') or 'not installed'} (CPU), "
           f"gengraph {m.get('gengraph')}.",
           "",
           "Median time per training step (ms) over alternating rounds; ratios are gengraph's time divided "
           "by the peer's (< 1: gengraph faster). Loss reached = mean loss over the last round "
           "(same init, batches and noise for all). PyTorch: default = torch.optim.Adam as constructed by "
           "default (on the CPU the single-tensor loop) + a Python-sum gradient norm; fused = Adam(fused=True) + torch._foreach_norm; "
           "compile = fused + torch.compile of forward and loss. JAX jit = one jax.jit over the whole step.", ""]
    fw = _present(res["threads"].values())
    peers = fw[1:]
    for n, suite in res["threads"].items():
        load = suite.get("loadavg_start"), suite.get("loadavg_end")
        busy = f" (load average {load[0][0]:.1f} at start, {load[1][0]:.1f} at end)" if all(load) else ""
        out += [f"**{n} thread{'s' if n != '1' else ''}**{busy}", "",
                "| workload | " + " | ".join(f"{NAMES[k]} ms" for k in fw) + " | " +
                " | ".join(f"gengraph / {NAMES[k]}" for k in peers) + " | loss reached (" +
                " / ".join(NAMES[k] for k in fw) + ") |",
                "| --- | " + " | ".join("---:" for _ in fw + peers) + " | --- |"]
        for name, r in suite["workloads"].items():
            st = r.get("time_per_step") or r.get("time_per_call")
            if "loss_reached" in r:
                lr = r["loss_reached"]
                loss = " / ".join(f"{lr[k]:.4f}" if k in lr else "–" for k in fw)
            else:
                q = r.get("nn_dist_to_data", {})
                loss = "nearest-data distance " + " / ".join(f"{q[k]:.3f}" if k in q else "–" for k in fw)
            label = name if name != "sample" else "ddpm sampling (2000 pts, ms/run)"
            out.append(f"| {label} | " + " | ".join(_ms(st, k) for k in fw) + " | " +
                       " | ".join(_ratio(r["ratios"], k) for k in peers) + f" | {loss} |")
        for name, err in suite.get("errors", {}).items():
            out.append(f"| {name} | error: {err} |" + " |" * (len(fw) + len(peers)))
        out.append("")
    out += ["Where gengraph stands: the ratios above (training steps; < 1: gengraph faster), and in parentheses "
            "the same ratio of process CPU time per step (time.process_time over the same blocks: what each "
            "framework computed, without the time it waited for a core that other processes held):", ""]
    out += standing(res) + [""]
    if "grid" in res:
        g = res["grid"]
        cells = g["cells"]
        batches = sorted({c["batch"] for c in cells})
        out += [f"MLP grid, 1 thread: {g['desc']}; median step time ratio gengraph / hand-NumPy, wall clock "
                f"(worst {g['worst_ratio']:.2f}) and process CPU time in brackets (worst "
                f"{g.get('worst_ratio_cpu', float('nan')):.2f}), then the wall-clock times.", "",
                "| width \\ batch | " + " | ".join(str(b) for b in batches) + " |",
                "| --- | " + " | ".join("---:" for _ in batches) + " |"]
        for w in sorted({c["width"] for c in cells}):
            row = {c["batch"]: c for c in cells if c["width"] == w}
            out.append(f"| {w} | " + " | ".join(f"{row[b]['ratio']:.2f} [{row[b].get('ratio_cpu', float('nan')):.2f}] "
                                                f"({row[b]['gengraph_us'] / 1e3:.2f} / {row[b]['numpy_us'] / 1e3:.2f} ms)"
                                                if b in row else "–" for b in batches) + " |")
        out.append("")
    out += ["Dispatch: a chain of 1000 elementwise ops on shape-(4,) float32 arrays; µs per node "
            "(raw = program time / 1000; overhead = program minus the same NumPy calls in straight-line code).", "",
            "| threads | chain | raw µs/node (`run`) | bare NumPy µs/node | overhead µs/node (`run` / `run_positional`) |",
            "| --- | --- | ---: | ---: | ---: |"]
    for n, suite in res["threads"].items():
        d = suite["dispatch"]
        for kind in ("ufunc", "lambda"):
            k = d[kind]
            out.append(f"| {n} | {kind} ({k['ops']}) | {k['us_per_node_raw']['program.run']:.3f} | "
                       f"{k['us_per_node_bare_numpy']:.3f} | {k['us_per_node_overhead']['program.run']:.3f} / "
                       f"{k['us_per_node_overhead']['program.run_positional']:.3f} |")
    out.append("")
    if "compile_times" in res:
        out += compile_table(res["compile_times"])
    if "memory" in res:
        mem = res["memory"]
        out += [f"Memory (MiB, {mem['steps']} training steps, one fresh process per framework, 1 thread, the same "
                ".npz data and initial parameters for all): `import` = what importing the framework adds "
                "(gengraph: also what building a model from a spec imports), `setup` = model, optimizer state and "
                "batches (gengraph: also its compile and the spec's data set) and the first 2 steps (first-call "
                "work), `training` = peak RSS during the further steps minus the level before them (a step of these "
                "models needs under a MiB, about what RSS resolves), `step temporaries` = "
                "tracemalloc peak over 20 steps (NumPy-side only), `rss_peak` = the whole process (for reference).",
                "", "| workload | framework | import | setup | training | step temporaries | rss_peak |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for w in ("mlp", "vae", "ddpm"):
            for f, v in (mem.get(w) or {}).items():
                if not isinstance(v, dict):
                    continue
                if "error" in v:
                    out.append(f"| {w} | {NAMES[f]} | error: {v['error']} | | | | |")
                    continue
                tp = "–" if v.get("traced_step_peak") is None else f"{v['traced_step_peak']:.2f}"
                out.append(f"| {w} | {NAMES[f]} | {v['rss_import']:.1f} | {v.get('rss_setup', float('nan')):.1f} | "
                           f"{v['rss_training']:.1f} | {tp} | {v['rss_peak']:.1f} |")
        out.append("")
    checks = []
    for name, r in next(iter(res["threads"].values()))["workloads"].items():
        for dt in ("float64", "float32"):
            c = r.get(f"check_{dt}")
            if c:
                checks.append(f"{name} {dt}: " + ", ".join(f"{k.replace('_rel_diff', '')} {v:.1e}" for k, v in c.items()))
    if checks:
        out += ["Correctness checks (max |diff| / max |gengraph| over arrays; asserted < 1e-8 in float64, "
                "< 1e-4 in float32):", ""] + [f"- {c}" for c in checks] + [""]
    return "\n".join(out)


def compile_table(times: dict) -> list[str]:
    """The compile-time section: a row per spec (compile_times.compile_times' result)."""
    out = ["Compile time per spec (spec file -> compiled programs: load + runner.build + "
           "Trainer.compile_programs; median of fresh repetitions, 1 thread):", "",
           "| spec | kind | total ms | of which compile_programs ms | train_step kernels |",
           "| --- | --- | ---: | ---: | ---: |"]
    for spec, c in times.items():
        if "error" in c:
            out.append(f"| {spec} | error: {c['error']} | | | |")
        else:
            kind = c["kind"] + (f" ({c['data']})" if "data" in c else "")
            out.append(f"| {spec} | {kind} | {c['total_s'] * 1e3:.1f} | {c['compile_programs_s'] * 1e3:.1f} | "
                       f"{c['programs'].get('train_step', '–')} |")
    return out + [""]


def readme_problem(path: Path, name: str = "results") -> str | None:
    """Why the results section of the file at path cannot be rewritten (None: it can): only a
    file that has the section's two markers is touched (--readme README.md appended a section to
    the main README, and a path in a missing folder failed after the whole run)."""
    begin, end = markers(name)
    try:
        text = path.read_text()
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if begin not in text or end not in text:
        return f"it has no results section (the lines {begin} and {end} mark where the tables go)"
    return None


def update_readme(path: Path, res: dict, name: str = "results") -> None:
    if (why := readme_problem(path, name)) is not None:
        raise ValueError(f"{path}: {why}")
    begin, end = markers(name)
    block = f"{begin}\n{tables(res)}\n{end}"
    text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, path.read_text(), flags=re.S)
    path.write_text(text)


if __name__ == "__main__":  # python -m bench.report RESULTS.json README.md [marker name]
    import json
    import sys

    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python -m bench.report RESULTS.json README.md [marker name]: rewrite the README's "
                 "results section from a results.json of python -m bench")
    try:
        update_readme(Path(sys.argv[2]), json.loads(Path(sys.argv[1]).read_text()), *(sys.argv[3:4] or ["results"]))
    except (OSError, ValueError) as exc:
        sys.exit(f"python -m bench.report: {exc}")


def summary_lines(res: dict) -> list[str]:
    lines = []
    for n, suite in res["threads"].items():
        for name, r in suite["workloads"].items():
            st = r.get("time_per_step") or r.get("time_per_call")
            lines.append(f"[{n} thr] {name:6s} " + ", ".join(f"{k} {v['median_us'] / 1e3:.3f} ms" for k, v in st.items())
                         + " | " + ", ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items())
                         + ("" if "ratios_cpu" not in r else " | CPU time: " +
                            ", ".join(f"{k} {v:.2f}" for k, v in r["ratios_cpu"].items())))
        d = suite["dispatch"]
        lines.append(f"[{n} thr] dispatch: ufunc {d['ufunc']['us_per_node_raw']['program.run']:.3f} us/node raw "
                     f"({d['ufunc']['us_per_node_overhead']['program.run']:+.3f} over NumPy), lambda "
                     f"{d['lambda']['us_per_node_raw']['program.run']:.3f} raw "
                     f"({d['lambda']['us_per_node_overhead']['program.run']:+.3f})")
    return lines
