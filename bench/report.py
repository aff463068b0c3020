"""Turn results.json into the short tables of bench/README.md (between the results markers)."""

from __future__ import annotations

import re
from pathlib import Path

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def markers(name="results"):
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
NAMES = {"gengraph": "gengraph", "numpy": "hand-NumPy", "torch": "PyTorch"}


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
           f"PyTorch {m.get('torch') or 'not installed'} (CPU), gengraph {m.get('gengraph')}.",
           "",
           "Median time per training step (ms) over alternating rounds; ratios are gengraph's time divided "
           "by the peer's (< 1: gengraph faster). Loss reached = mean loss over the last round "
           "(same init, batches and noise for all three).", ""]
    for n, suite in res["threads"].items():
        load = suite.get("loadavg_start"), suite.get("loadavg_end")
        busy = f" (load average {load[0][0]:.1f} at start, {load[1][0]:.1f} at end)" if all(load) else ""
        out += [f"**{n} thread{'s' if n != '1' else ''}**{busy}", "",
                "| workload | gengraph | hand-NumPy | PyTorch | gengraph / NumPy | gengraph / PyTorch | "
                "loss reached (gengraph / NumPy / PyTorch) |",
                "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for name, r in suite["workloads"].items():
            st = r.get("time_per_step") or r.get("time_per_call")
            if "loss_reached" in r:
                lr = r["loss_reached"]
                loss = " / ".join(f"{lr[k]:.4f}" for k in ("gengraph", "numpy", "torch") if k in lr)
            else:
                q = r.get("nn_dist_to_data", {})
                loss = "nearest-data distance " + " / ".join(f"{q[k]:.3f}" for k in ("gengraph", "numpy", "torch")
                                                               if k in q)
            label = name if name != "sample" else "ddpm sampling (2000 pts, ms/run)"
            out.append(f"| {label} | {_ms(st, 'gengraph')} | {_ms(st, 'numpy')} | {_ms(st, 'torch')} | "
                       f"{_ratio(r['ratios'], 'numpy')} | {_ratio(r['ratios'], 'torch')} | {loss} |")
        for name, err in suite.get("errors", {}).items():
            out.append(f"| {name} | error: {err} | | | | | |")
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
        out += ["Compile time per spec (spec file -> compiled programs: load + runner.build + "
                "Trainer.compile_programs; median of fresh repetitions, 1 thread):", "",
                "| spec | kind | total ms | of which compile_programs ms | train_step kernels |",
                "| --- | --- | ---: | ---: | ---: |"]
        for spec, c in res["compile_times"].items():
            if "error" in c:
                out.append(f"| {spec} | error: {c['error']} | | | |")
            else:
                out.append(f"| {spec} | {c['kind']} | {c['total_s'] * 1e3:.1f} | {c['compile_programs_s'] * 1e3:.1f} | "
                           f"{c['programs'].get('train_step', '–')} |")
        out.append("")
    if "memory" in res:
        mem = res["memory"]
        out += [f"Peak memory (MiB, {mem['steps']} training steps, one fresh process each, 1 thread): "
                "`rss_peak` = ru_maxrss of the whole process, `training` = rss_peak minus RSS after importing "
                "the framework, `step temporaries` = tracemalloc peak over 20 steps (NumPy-side only).", "",
                "| workload | framework | rss_peak | training | step temporaries |", "| --- | --- | ---: | ---: | ---: |"]
        for w in ("mlp", "vae", "ddpm"):
            for f, v in (mem.get(w) or {}).items():
                if not isinstance(v, dict):
                    continue
                if "error" in v:
                    out.append(f"| {w} | {NAMES[f]} | error: {v['error']} | | |")
                    continue
                tp = "–" if v.get("traced_step_peak") is None else f"{v['traced_step_peak']:.2f}"
                out.append(f"| {w} | {NAMES[f]} | {v['rss_peak']:.1f} | {v['rss_training']:.1f} | {tp} |")
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


def update_readme(path: Path, res: dict, name: str = "results") -> None:
    begin, end = markers(name)
    text = path.read_text() if path.exists() else f"# gengraph benchmarks\n\n{begin}\n{end}\n"
    block = f"{begin}\n{tables(res)}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## Results\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":  # python -m bench.report RESULTS.json README.md [marker name]
    import json
    import sys

    update_readme(Path(sys.argv[2]), json.loads(Path(sys.argv[1]).read_text()), *(sys.argv[3:4] or ["results"]))


def summary_lines(res: dict) -> list[str]:
    lines = []
    for n, suite in res["threads"].items():
        for name, r in suite["workloads"].items():
            st = r.get("time_per_step") or r.get("time_per_call")
            lines.append(f"[{n} thr] {name:6s} " + ", ".join(f"{k} {v['median_us'] / 1e3:.3f} ms" for k, v in st.items())
                         + " | " + ", ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items()))
        d = suite["dispatch"]
        lines.append(f"[{n} thr] dispatch: ufunc {d['ufunc']['us_per_node_raw']['program.run']:.3f} us/node raw "
                     f"({d['ufunc']['us_per_node_overhead']['program.run']:+.3f} over NumPy), lambda "
                     f"{d['lambda']['us_per_node_raw']['program.run']:.3f} raw "
                     f"({d['lambda']['us_per_node_overhead']['program.run']:+.3f})")
    return lines
