"""Section 2, Resources: memory at load and peak, idle CPU, cold start per model (from `make bench`),
and the memory plan for a chosen GPU (planner/, as `make plan`): KV bytes per token and how many
sequences fit at the configured gpu_memory_utilization.

    section = resources_section(ctx)     # also adds summary rows and ctx.facts["memory"]
"""

from __future__ import annotations

import dataclasses
from typing import Any

from decision.context import Context, SummaryRow
from decision.document import Missing, Paragraph, Section, Table
from gateway.config import load_config
from planner.gpus import GIB
from planner.memory import plan_deployment

MIB = 2**20
NOT_MEASURED_REUSED = "not measured: the bench reused running engines (`make bench` starts its own)"


def resources_section(ctx: Context) -> Section:
    section = Section("resources", "2. Resources")
    if ctx.bench is None:
        section.blocks.append(Missing("memory, idle CPU and cold start per model", "`make bench`"))
    else:
        _measured(ctx, section)
    _gpu_plan(ctx, section)
    return section


def _measured(ctx: Context, section: Section) -> None:
    assert ctx.bench is not None
    source = ctx.sources.file(ctx.bench.path)
    rows_of = {name: ctx.bench.results["models"].get(name) or {} for name in ctx.models}
    gpu = any(row.get("gpu_peak_bytes") for row in rows_of.values())

    def cells(key: str, fmt: Any) -> list[str]:
        return [fmt(rows_of[n][key]) if rows_of[n].get(key) is not None else NOT_MEASURED_REUSED for n in ctx.models]

    rows = [
        ["memory after load, idle (RSS of the engine's process tree)", *cells("rss_idle_bytes", _mib)],
        ["peak memory under load (RSS)", *cells("rss_peak_bytes", _mib)],
    ]
    if gpu:
        rows.append(["peak GPU memory (NVML)", *cells("gpu_peak_bytes", _mib)])
    rows += [
        ["idle CPU (% of one core)", *cells("idle_cpu_percent", lambda v: f"{v:.1f}%")],
        ["cold start (process start -> /health 200)", *cells("cold_start_s", lambda v: f"{v:.1f} s")],
    ]
    section.blocks.append(
        Table(
            ["metric", *(ctx.label(n) for n in ctx.models)],
            rows,
            sources=[source],
            caption="Measured by `make bench` (`models.<name>.rss_idle_bytes`, `rss_peak_bytes`, "
            "`idle_cpu_percent`, `cold_start_s`).",
        )
    )
    peak_key = "gpu_peak_bytes" if gpu else "rss_peak_bytes"
    peak = {n: rows_of[n].get(peak_key) for n in ctx.models}
    ctx.facts["memory"] = {"kind": "GPU" if gpu else "RSS", "peak_bytes": peak, "source": source}
    for label, key, fmt, unit in (
        ("peak memory under load" + (" (GPU)" if gpu else " (RSS)"), peak_key, _mib, "bytes"),
        ("cold start", "cold_start_s", lambda v: f"{v:.1f} s", "s"),
    ):
        values = [rows_of[n].get(key) for n in ctx.models]
        if None in values:
            ctx.summary.append(
                SummaryRow(
                    label, "n/a", "n/a", "—", "not measured", "—", "`make bench` (starting its own engines)", [source]
                )
            )
            continue
        cand, inc = float(values[0] or 0), float(values[1] or 0)
        ctx.summary.append(
            SummaryRow(
                label,
                fmt(cand),
                fmt(inc),
                f"{(cand / inc - 1) * 100:+.1f}%" if inc else "—",
                "no interval: one measurement each",
                "1 run",
                "repeat `make bench` for replicates",
                [source],
                {"candidate": cand, "incumbent": inc, "unit": unit},
            )
        )


def _gpu_plan(ctx: Context, section: Section) -> None:
    if ctx.gpu is None or ctx.gpu_config is None:
        section.blocks.append(
            Missing("memory plan for a GPU (KV bytes per token, concurrent sequences)", "`make report GPU=H100`")
        )
        return
    config = load_config(ctx.gpu_config, check_paths=False)
    plan = plan_deployment(config, ctx.gpu)
    data = dataclasses.asdict(plan)
    for engine in data["engines"]:
        engine["shape"].pop("source", None)
    source = ctx.sources.data(
        "gpu-plan.json",
        data,
        origin=f"planner: {ctx.sources.origin(ctx.gpu_config)} on {ctx.gpu.name}",
        note="computed by planner.memory.plan_deployment (make plan)",
    )
    config_source = ctx.sources.file(ctx.gpu_config, note="GPU deployment config for the memory plan")
    roles = {}
    for spec in config.models:
        names = {spec.name, *spec.aliases}
        roles[spec.name] = (
            "candidate" if ctx.rules.candidate in names else "incumbent" if ctx.rules.incumbent in names else ""
        )
    rows = [
        [
            f"{e.name} ({roles.get(e.name) or 'other'})",
            e.dtype,
            f"{e.utilization:.2f}",
            f"{e.budget_bytes / GIB:.2f}",
            f"{e.weight_bytes / GIB:.2f}",
            f"{e.kv_bytes / GIB:.2f}",
            f"{e.kv_bytes_per_token:,}",
            f"{e.kv_tokens:,}",
            f"{e.seqs_at_max_len:,.1f} x {e.max_model_len:,}",
            f"{e.seqs_at_typical:,.0f} x {e.typical_len:,}"
            + (f" (cap {e.max_num_seqs})" if e.seqs_at_typical > e.max_num_seqs else ""),
        ]
        for e in plan.engines
    ]
    section.blocks.append(
        Paragraph(
            f"Memory plan on **{ctx.gpu.name}** ({ctx.gpu.total_gib:.1f} GiB) for `{config_source.origin}`, "
            "computed by the planner as `make plan` does (vLLM's formulas; not measured on a GPU):"
        )
    )
    section.blocks.append(
        Table(
            [
                "engine",
                "dtype",
                "gpu_memory_utilization",
                "budget GiB",
                "weights GiB",
                "KV GiB",
                "KV bytes/token",
                "KV tokens",
                "sequences at max_model_len",
                "sequences at 1,024 tokens",
            ],
            rows,
            sources=[source, config_source],
        )
    )
    warnings = [f"{e.name}: {w}" for e in plan.engines for w in e.warnings] + list(plan.warnings)
    if warnings:
        section.blocks.append(Paragraph("Planner warnings: " + "; ".join(warnings)))
    by_role = {roles.get(e.name): e for e in plan.engines}
    cand, inc = by_role.get("candidate"), by_role.get("incumbent")
    if cand is not None and inc is not None:
        ctx.summary.append(
            SummaryRow(
                f"KV cache tokens on {ctx.gpu.name} (planned)",
                f"{cand.kv_tokens:,}",
                f"{inc.kv_tokens:,}",
                f"{(cand.kv_tokens / inc.kv_tokens - 1) * 100:+.1f}%" if inc.kv_tokens else "—",
                "computed, not measured: no sampling error",
                "—",
                "measure on the card: the engine logs `GPU KV cache size`",
                [source],
                {"candidate": cand.kv_tokens, "incumbent": inc.kv_tokens, "unit": "tokens"},
            )
        )


def _mib(value: float) -> str:
    return f"{value / MIB:,.0f} MiB"
