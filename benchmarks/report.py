"""Turn a benchmark record (results.json) into Markdown tables and PNG plots.

    write_report(results, Path("results/bench/2026-11-28-quick"))
    # -> report.md, throughput_vs_concurrency.png, latency_vs_concurrency.png, comparison.png

    python -m benchmarks.report results/bench/<run>/results.json     # re-render an old run

Nothing here measures; it only formats what `benchmarks.suite` recorded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # not pyplot: no global figure state, no display backend

MiB = 2**20
_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")  # one per model
_STYLES = ("-", "--", ":")  # one per length pair or percentile


def _num(value: float | None, fmt: str = ".1f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{suffix}"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MiB:,.0f} MiB"


def _load(value: list[float] | None) -> str:
    return "n/a" if not value else "/".join(f"{x:.1f}" for x in value)


def _pair(item: dict[str, Any]) -> str:
    return f"{item['prompt_len']}->{item['output_len']}"


def comparison_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The comparison-style table: each metric, per model, vLLM beside transformers one-at-a-time."""
    models = list(results["models"])
    header = ["metric"] + [f"{m} {side}" for m in models for side in ("vLLM", "transformers")]
    rows: list[list[str]] = []

    def add(label: str, cells: list[tuple[str, str]]) -> None:
        rows.append([label] + [c for pair in cells for c in pair])

    data = [results["models"][m] for m in models]
    add(
        "cold start (vLLM: process start -> ready; transformers: from_pretrained)",
        [(_num(d.get("cold_start_s"), ".1f", " s"), _num(d["hf"].get("load_s"), ".1f", " s")) for d in data],
    )
    add(
        "memory at idle / after load (RSS)",
        [(_mib(d.get("rss_idle_bytes")), _mib(d["hf"].get("rss_loaded_bytes"))) for d in data],
    )
    add(
        "peak memory under load (RSS)",
        [(_mib(d.get("rss_peak_bytes")), _mib(d["hf"].get("rss_peak_bytes"))) for d in data],
    )
    if any(d.get("gpu_peak_bytes") for d in data):
        add("peak GPU memory (NVML)", [(_mib(d.get("gpu_peak_bytes")), "n/a") for d in data])
    add("idle CPU (% of one core)", [(_num(d.get("idle_cpu_percent"), ".1f", "%"), "n/a") for d in data])
    pairs = [(s["prompt_len"], s["output_len"]) for s in data[0]["single_stream"]]
    for p, o in pairs:
        cells = []
        for d in data:
            ours = next((s for s in d["single_stream"] if (s["prompt_len"], s["output_len"]) == (p, o)), None)
            hf = next((h for h in d["hf"]["pairs"] if (h["prompt_tokens"], h["output_tokens"]) == (p, o)), None)
            cells.append(
                (_num(ours and ours["output_tokens_per_s"], ".1f"), _num(hf and hf["output_tokens_per_s"], ".1f"))
            )
        add(f"output tok/s, one request at a time, {p}->{o}", cells)
    add(
        f"output tok/s at {results['plan']['ratio_concurrency']} concurrent streams",
        [(_num((d.get("vllm_vs_hf") or {}).get("vllm_output_tokens_per_s"), ".0f"), "(one at a time)") for d in data],
    )
    add(
        "vLLM at that concurrency / transformers one at a time",
        [(_num((d.get("vllm_vs_hf") or {}).get("ratio"), ".1f", "x"), "1x") for d in data],
    )
    return header, rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def sweep_table(row: dict[str, Any]) -> str:
    header = ["pair", "streams", "req/s", "output tok/s", "TTFT p50/p90/p99 ms", "ITL p50/p90/p99 ms", "failed"]
    rows = []
    for s in row["sweep"]:
        t, i = s["ttft_ms"], s["itl_ms"]
        rows.append(
            [
                _pair(s),
                str(s["concurrency"]),
                _num(s["requests_per_s"], ".2f"),
                _num(s["output_tokens_per_s"], ".0f"),
                " / ".join(_num(t[k], ".0f") for k in ("p50", "p90", "p99")),
                " / ".join(_num(i[k], ".1f") for k in ("p50", "p90", "p99")),
                str(s["failures"]),
            ]
        )
    return _table(header, rows)


def gateway_table(results: dict[str, Any]) -> str:
    header = [
        "model",
        "streams",
        "direct tok/s",
        "gateway tok/s",
        "gateway/direct",
        "TTFT p50 direct",
        "TTFT p50 gateway",
        "added",
    ]
    rows = []
    for name, row in results["models"].items():
        g = row["gateway_vs_direct"]
        rows.append(
            [
                name,
                str(g["concurrency"]),
                _num(g["direct_output_tokens_per_s"], ".0f"),
                _num(g["gateway_output_tokens_per_s"], ".0f"),
                _num(g["output_tps_ratio"] and 100 * g["output_tps_ratio"], ".1f", "%"),
                _num(g["direct_ttft_p50_ms"], ".1f", " ms"),
                _num(g["gateway_ttft_p50_ms"], ".1f", " ms"),
                _num(g["added_ttft_p50_ms"], "+.1f", " ms"),
            ]
        )
    return _table(header, rows)


def token_check_table(results: dict[str, Any]) -> str:
    header = ["model", "runs", "prompt tokens (ours / engine)", "output tokens (ours / engine)", "result"]
    rows = []
    for name, row in results["models"].items():
        runs = row["token_check"]["runs"]
        ours_p = sum(r["ours"]["prompt"] for r in runs)
        ours_g = sum(r["ours"]["generation"] for r in runs)
        eng_p = sum(r["engine"]["prompt"] for r in runs)
        eng_g = sum(r["engine"]["generation"] for r in runs)
        verdict = (
            "agree" if not row["token_check"]["problems"] else f"{len(row['token_check']['problems'])} disagreements"
        )
        rows.append([name, str(len(runs)), f"{ours_p:.0f} / {eng_p:.0f}", f"{ours_g:.0f} / {eng_g:.0f}", verdict])
    return _table(header, rows)


def _sampling_label(sampling: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sampling.items()) or "the engine's generation_config.json"


def sampling_table(results: dict[str, Any]) -> str | None:
    """Sampled beside greedy per model and stream count, cpu_sampler plugin on and (where measured) off."""
    rows = []
    for name, row in results["models"].items():
        s = row.get("sampling_vs_greedy")
        for level in s["levels"] if s else []:
            cells = [name, _sampling_label(s["sampling"]), str(level["concurrency"])]
            for plugin in ("on", "off"):
                p = level.get(f"plugin_{plugin}") or {}
                ratio = p.get("sampled_vs_greedy")
                cells += [
                    _num(p.get("greedy_tps"), ".0f"),
                    _num(p.get("sampled_tps"), ".0f"),
                    _num(ratio and 100 * ratio, ".1f", "%"),
                ]
            rows.append([*cells, _num(level.get("sampled_speedup"), ".1f", "x")])
    if not rows:
        return None
    header = ["model", "sampling (model defaults)", "streams", "greedy tok/s", "sampled tok/s", "**sampled / greedy**"]
    header += ["plugin off: greedy", "sampled", "sampled / greedy", "sampled, on / off"]
    return _table(header, rows)


def plot_sampling(results: dict[str, Any], path: Path) -> None:
    """Bars: greedy and sampled output tok/s per model at the most streams, plugin on and off."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    labels, greedy, sampled = [], [], []
    streams = 0
    for name, row in results["models"].items():
        s = row.get("sampling_vs_greedy")
        if not s:
            continue
        level = s["levels"][-1]
        streams = level["concurrency"]
        for plugin in ("on", "off"):
            p = level.get(f"plugin_{plugin}")
            if p:
                labels.append(f"{name}\nplugin {plugin}")
                greedy.append(p["greedy_tps"] or 0)
                sampled.append(p["sampled_tps"] or 0)
    x = list(range(len(labels)))
    ax.bar([i - 0.2 for i in x], greedy, width=0.4, label="greedy", color="tab:gray")
    ax.bar([i + 0.2 for i in x], sampled, width=0.4, label="sampled (model defaults)", color="tab:blue")
    for i, (g, v) in enumerate(zip(greedy, sampled, strict=True)):
        if g:
            ax.annotate(f"{100 * v / g:.0f}%", (i + 0.2, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("output tokens/s")
    ax.set_title(f"Sampled vs greedy decoding at {streams} streams, interleaved rounds")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def render_markdown(results: dict[str, Any], command: str = "") -> str:
    plan = results["plan"]
    parts = [
        f"# Benchmark ({plan['mode']} mode), {results['started']}",
        "",
        f"Config `{results['config']}`, platform {results['platform']}, {results['machine']['cpus']} CPUs "
        f"(load average {_load(results['machine'].get('load_average'))} before, "
        f"{_load(results['machine'].get('load_average_after'))} after)"
        + (", engines reused (no cold start measured)" if results["reused_engines"] else "")
        + f"; took {results.get('duration_s', 0):.0f} s.",
    ]
    command = command or results.get("command", "")
    if plan.get("only_sampling"):
        parts += ["", "Only the sampled vs greedy section (`--sampling-only`)."]
        if command:
            parts += ["", f"Command: `{command}`"]
        return "\n".join([*parts, "", *_sampling_section(results), *_checks_section(results)])
    decoding = (
        "plain greedy on both sides (vLLM: temperature 0, repetition_penalty 1.0; transformers: "
        "do_sample=False, repetition_penalty=1.0), whatever the models' generation_config.json says"
    )
    if plan.get("sampling") == "model-defaults":
        decoding = "each model's own sampling defaults (generation_config.json), in vLLM and in transformers"
    parts += ["", f"Decoding: {decoding}; output length fixed with `ignore_eos`; fresh prompts for every request."]
    parts += [
        "",
        f"Plan: {plan['single_stream_requests']} requests per length pair one at a time; sweep at "
        f"{', '.join(map(str, plan['concurrency']))} streams with {plan['requests_per_stream']} request(s) per "
        f"stream (at least {plan['min_requests']}) for {', '.join(f'{p}->{o}' for p, o in plan['sweep_pairs'])}; "
        f"transformers {plan['hf_requests']} requests per pair; gateway vs direct {plan['gateway_rounds']} "
        f"interleaved rounds at {plan['ratio_concurrency']} streams.",
    ]
    if command:
        parts += ["", f"Command: `{command}`"]
    header, rows = comparison_rows(results)
    parts += [
        "",
        "## Side by side (the comparison's metrics, vLLM beside transformers `generate`)",
        "",
        "transformers runs one request at a time on the same cores as the engine; vLLM's single-stream row",
        "is also one request at a time, its concurrent row is continuous batching.",
        "",
        _table(header, rows),
        "",
        "![comparison](comparison.png)",
        "",
        "## Concurrency sweep (direct to the engine)",
    ]
    for name, row in results["models"].items():
        parts += ["", f"### {name}", "", sweep_table(row)]
    parts += [
        "",
        "![throughput](throughput_vs_concurrency.png)",
        "",
        "![latency](latency_vs_concurrency.png)",
        "",
        "## Gateway vs direct engine (interleaved rounds, fresh prompts)",
        "",
        gateway_table(results),
        "",
    ]
    return "\n".join([*parts, *_sampling_section(results), *_checks_section(results)])


def _sampling_section(results: dict[str, Any]) -> list[str]:
    sampled = sampling_table(results)
    if not sampled:
        return []
    first = next(r["sampling_vs_greedy"] for r in results["models"].values() if r.get("sampling_vs_greedy"))
    parts = [
        "## Sampled vs greedy decoding (cpu_sampler plugin on and off)",
        "",
        f"1 and {first['concurrency']} streams of {first['prompt_len']}->{first['output_len']} tokens straight "
        f"to the engine, {results['plan']['sampling_rounds']} round(s) rotating the order of the variants; "
        "sampled = the model's sampling_defaults from the config (else its generation_config.json); "
        "plugin off = a second engine with `fast_cpu_sampler: false` on the same cores.",
        "",
        sampled,
        "",
    ]
    for name, row in results["models"].items():
        state = (row.get("sampling_vs_greedy") or {}).get("plugin_off_engine")
        if state not in (None, "started"):
            parts += [f"Plugin off not measured for {name}: the second engine {state}", ""]
    return [*parts, "![sampled vs greedy](sampling_vs_greedy.png)", ""]


def _checks_section(results: dict[str, Any]) -> list[str]:
    parts = ["## Token counts vs the engines' Prometheus counters", "", token_check_table(results), ""]
    if results["problems"]:
        parts += ["## Problems", ""] + [f"- {p}" for p in results["problems"]] + [""]
    return parts


def _concurrency_axis(ax: Any, results: dict[str, Any]) -> None:
    levels = sorted({s["concurrency"] for row in results["models"].values() for s in row["sweep"]})
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.minorticks_off()


def plot_throughput(results: dict[str, Any], path: Path) -> None:
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for color, (name, row) in zip(_COLORS, results["models"].items(), strict=False):
        for style, pair in zip(_STYLES, sorted({_pair(s) for s in row["sweep"]}), strict=False):
            points = [s for s in row["sweep"] if _pair(s) == pair]
            ax.plot(
                [s["concurrency"] for s in points],
                [s["output_tokens_per_s"] for s in points],
                style,
                color=color,
                marker="o",
                label=f"{name} {pair}",
            )
        hf = (row.get("vllm_vs_hf") or {}).get("hf_output_tokens_per_s")
        if hf:
            ax.axhline(hf, linestyle=":", color=color, alpha=0.6, label=f"{name} transformers, one at a time")
    _concurrency_axis(ax, results)
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("output tokens/s")
    ax.set_title("Throughput vs concurrency")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_latency(results: dict[str, Any], path: Path) -> None:
    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    for metric, ax, title in (("ttft_ms", axes[0], "Time to first token"), ("itl_ms", axes[1], "Inter-token latency")):
        for color, (name, row) in zip(_COLORS, results["models"].items(), strict=False):
            pair = _pair(row["sweep"][0])
            points = [s for s in row["sweep"] if _pair(s) == pair]
            for pct, style in zip(("p50", "p90", "p99"), _STYLES, strict=False):
                ax.plot(
                    [s["concurrency"] for s in points],
                    [s[metric][pct] for s in points],
                    style,
                    color=color,
                    marker="o",
                    label=f"{name} {pair} {pct}",
                )
        _concurrency_axis(ax, results)
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel("ms")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_comparison(results: dict[str, Any], path: Path) -> None:
    header, rows = comparison_rows(results)
    fig = Figure(figsize=(3 + 2.2 * (len(header) - 1), 0.3 * (len(rows) + 2)))
    ax = fig.subplots()
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(header))))
    ax.set_title(f"Side by side ({results['plan']['mode']} mode, {results['platform']})", fontsize=10)
    fig.savefig(path, dpi=130, bbox_inches="tight")


def write_report(results: dict[str, Any], out_dir: Path, *, command: str = "") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "report.md").write_text(render_markdown(results, command))
    if not results["plan"].get("only_sampling"):
        plot_throughput(results, out_dir / "throughput_vs_concurrency.png")
        plot_latency(results, out_dir / "latency_vs_concurrency.png")
        plot_comparison(results, out_dir / "comparison.png")
    if sampling_table(results):
        plot_sampling(results, out_dir / "sampling_vs_greedy.png")


if __name__ == "__main__":
    source = Path(sys.argv[1])
    write_report(json.loads(source.read_text()), source.parent)
    print(f"wrote {source.parent / 'report.md'}")
