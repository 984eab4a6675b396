"""Assemble and write a report: inputs -> sections -> report.md, report.html, report.json, PNGs.

    ctx = make_context(ReportInputs(rules=Path("decision/rules.yaml"), gpu="H100"))
    report, decision = build_report(ctx)
    paths = write_report(report, ctx, Path("results/report/20261130T120000Z"))

Sections follow the write-up this project grew from: deployment, resources, speed, quality,
preference, a summary table across dimensions, and the recommendation.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from decision.context import Context, ReportError, alias_table, measured_models, resolve_pair
from decision.deployment import deployment_section, standin_notice
from decision.document import Image, Missing, Paragraph, Report, Section
from decision.inputs import ROOT, BenchRun, EvalRun, deployment_config, latest_bench, latest_eval, load_bench, load_eval
from decision.preference_section import preference_section
from decision.quality import quality_section
from decision.recommend import Decision, decide, recommendation_section, summary_section
from decision.render_html import render_html
from decision.render_md import render_markdown
from decision.resources import resources_section
from decision.rules import DEFAULT_RULES, load_rules
from decision.sources import SourceStore
from decision.speed import speed_section
from decision.votes_source import read_judgements
from gateway.votes import resolve_db_target
from planner.gpus import find_gpu

TITLE = "Replace Qwen with R1? The measurements, side by side"


@dataclass(frozen=True)
class ReportInputs:
    """What `make report` was asked for; None means "the default" (latest run, config's votes)."""

    rules: Path = DEFAULT_RULES
    bench: Path | None = None
    eval: Path | None = None
    votes: str | Path | None = None  # a SQLite file or a database URL
    config: Path | None = None
    gpu: str | None = None
    gpu_config: Path = ROOT / "engine_config" / "gpu.yaml"
    gpu_hour_usd: float | None = None
    results_dir: Path = ROOT / "results"
    root: Path = ROOT


def make_context(inputs: ReportInputs) -> Context:
    rules = load_rules(inputs.rules)
    bench: BenchRun | None = load_bench(inputs.bench) if inputs.bench else latest_bench(inputs.results_dir / "bench")
    quality: EvalRun | None = load_eval(inputs.eval) if inputs.eval else latest_eval(inputs.results_dir / "eval")
    deployment = deployment_config(bench, quality, explicit=inputs.config)
    measured = measured_models(bench, quality)
    if not measured and deployment is not None:
        measured = [m.name for m in deployment[0].models]
    if not measured:
        raise ReportError(
            "nothing measured and no deployment to name the models: run `make bench` and `make eval`, or pass --config"
        )
    candidate, incumbent = resolve_pair(rules, measured, alias_table(deployment[0] if deployment else None, quality))
    votes_target: str | Path | None = inputs.votes
    if votes_target is None:  # as the gateway finds its store: the config's votes_db, or its environment variable
        compare = deployment[0].gateway.compare if deployment else None
        configured = (os.environ.get(compare.votes_db_env) or compare.votes_db) if compare else ".cache/votes.sqlite3"
        votes_target = resolve_db_target(configured, inputs.root)
    sources = SourceStore(inputs.root, inputs.results_dir)
    ctx = Context(
        rules=rules,
        candidate=candidate,
        incumbent=incumbent,
        sources=sources,
        bench=bench,
        quality=quality,
        votes=read_judgements(votes_target, "compare"),
        live=read_judgements(votes_target, "live"),
        votes_target=votes_target,
        deployment=deployment,
        gpu=find_gpu(inputs.gpu) if inputs.gpu else None,
        gpu_config=inputs.gpu_config,
        gpu_hour_usd=inputs.gpu_hour_usd,
    )
    ctx.facts["rules_source"] = sources.file(inputs.rules, note="the decision rules")
    return ctx


def build_report(ctx: Context) -> tuple[Report, Decision]:
    sections: list[Section] = []
    notice = standin_notice(ctx)
    if notice is not None:
        sections.append(Section("notice", "Stand-in models", [notice]))
    body = [
        deployment_section(ctx),
        resources_section(ctx),
        speed_section(ctx),
        quality_section(ctx),
        preference_section(ctx),
        summary_section(ctx),
    ]
    decision = decide(ctx)
    body.append(recommendation_section(ctx, decision))
    answer = (
        f"replace {ctx.incumbent} with {ctx.candidate}" if decision.action == "replace" else f"keep {ctx.incumbent}"
    )
    sections.append(
        Section(
            "answer",
            "The answer under the rules",
            [Paragraph(f"**{answer[0].upper() + answer[1:]}**, decided by the rule “{decision.rule}” (section 7).")],
        )
    )
    sections += body
    created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    data: dict[str, Any] = {
        "title": TITLE,
        "created": created,
        "candidate": ctx.candidate,
        "incumbent": ctx.incumbent,
        "stand_in_models": notice is not None,
        "inputs": {
            "bench": ctx.sources.origin(ctx.bench.directory) if ctx.bench else None,
            "eval": ctx.sources.origin(ctx.quality.directory) if ctx.quality else None,
            "votes": ctx.votes_where(),
            "votes_count": None if ctx.votes is None else len(ctx.votes),
            "live_pairs_count": None if ctx.live is None else len(ctx.live),
            "deployment": ctx.sources.origin(ctx.deployment[1]) if ctx.deployment else None,
            "rules": ctx.rules.model_dump(mode="json"),
            "gpu": ctx.gpu.name if ctx.gpu else None,
            "gpu_hour_usd": ctx.gpu_hour_usd,
        },
        "summary": [_row_json(row) for row in ctx.summary],
        "decision": decision.to_json(),
        "missing": [
            {"section": s.key, "what": b.what, "command": b.command}
            for s in sections
            for b in s.blocks
            if isinstance(b, Missing)
        ],
        "sections": [{"key": s.key, "title": s.title} for s in sections],
    }
    return Report(TITLE, created, sections, data), decision


def _row_json(row: Any) -> dict[str, Any]:
    data = dataclasses.asdict(row)
    data["sources"] = [s.href for s in row.sources]
    return data


def write_report(report: Report, ctx: Context, out_dir: Path) -> dict[str, Path]:
    """Write report.md, report.html, report.json, the PNGs and sources/ into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for section in report.sections:
        for block in section.blocks:
            if isinstance(block, Image):
                (out_dir / block.name).write_bytes(block.png)
    ctx.sources.write(out_dir)
    report.data["sources"] = ctx.sources.listing()
    paths = {"markdown": out_dir / "report.md", "html": out_dir / "report.html", "json": out_dir / "report.json"}
    paths["markdown"].write_text(render_markdown(report))
    paths["html"].write_text(render_html(report))
    paths["json"].write_text(json.dumps(report.data, indent=2, ensure_ascii=False, default=str) + "\n")
    return paths


def default_out_dir(results_dir: Path) -> Path:
    return results_dir / "report" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


__all__ = ["ReportError", "ReportInputs", "build_report", "default_out_dir", "make_context", "write_report"]
