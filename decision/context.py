"""What every section of a report needs: the inputs, the rules, which model is which, and the
rows the sections add to the summary table.

    ctx = Context(rules, candidate, incumbent, sources, bench=bench, quality=quality, votes=votes, ...)
    ctx.candidate, ctx.incumbent          # served names, resolved from the rules' names or aliases
    ctx.summary.append(SummaryRow(...))   # a section's line in the summary table
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decision.document import Source
from decision.inputs import BenchRun, EvalRun
from decision.rules import Rules
from decision.sources import SourceStore
from decision.votes_source import describe_target
from gateway.config import DeploymentConfig
from gateway.preference import Judgement
from planner.gpus import Gpu


class ReportError(Exception):
    """An input the report cannot be built from (named in the message); the CLI exits 2."""


@dataclass
class SummaryRow:
    """One line of the summary table: a dimension, both values, and who is ahead."""

    dimension: str
    candidate: str
    incumbent: str
    difference: str
    verdict: str
    sample: str
    to_resolve: str
    sources: list[Source]
    # The numbers behind the verdict (report.json): estimate and 95% interval, in `unit`.
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    rules: Rules
    candidate: str
    incumbent: str
    sources: SourceStore
    bench: BenchRun | None = None
    quality: EvalRun | None = None
    votes: list[Judgement] | None = None  # side-by-side votes on the comparison page
    live: list[Judgement] | None = None  # votes on live-traffic pairs (the gateway's mirror)
    votes_target: str | Path | None = None  # the vote store: a SQLite path or a database URL
    deployment: tuple[DeploymentConfig, Path, str] | None = None
    gpu: Gpu | None = None
    gpu_config: Path | None = None
    gpu_hour_usd: float | None = None
    summary: list[SummaryRow] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # what the recommendation reads

    @property
    def models(self) -> tuple[str, str]:
        return self.candidate, self.incumbent

    def label(self, name: str) -> str:
        role = "candidate" if name == self.candidate else "incumbent" if name == self.incumbent else ""
        return f"{name} ({role})" if role else name

    def votes_where(self) -> str:
        """The vote store as the report prints it (repo-relative path, or a URL without password)."""
        if self.votes_target is None:
            return "no vote store"
        if isinstance(self.votes_target, Path):
            return self.sources.origin(self.votes_target)
        return describe_target(self.votes_target)


def resolve_pair(rules: Rules, measured: list[str], aliases: dict[str, list[str]]) -> tuple[str, str]:
    """(candidate, incumbent) served names among the measured models, by name or alias."""

    def find(wanted: str, role: str) -> str:
        for name in measured:
            if wanted == name or wanted in aliases.get(name, []):
                return name
        known = ", ".join(f"{n} ({', '.join(aliases.get(n, [])) or 'no aliases'})" for n in measured)
        raise ReportError(f"rules: {role} {wanted!r} is none of the measured models: {known}")

    candidate, incumbent = find(rules.candidate, "candidate"), find(rules.incumbent, "incumbent")
    if candidate == incumbent:
        raise ReportError(f"rules: candidate and incumbent are the same model, {candidate}")
    return candidate, incumbent


def measured_models(bench: BenchRun | None, quality: EvalRun | None) -> list[str]:
    names: list[str] = list(bench.results["models"]) if bench else []
    for name in (quality.summary.get("models") or []) if quality else []:
        if name not in names:
            names.append(name)
    return names


def alias_table(deployment: DeploymentConfig | None, quality: EvalRun | None) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    if deployment is not None:
        for model in deployment.models:
            table[model.name] = list(model.aliases)
    for name, info in ((quality.run.get("model_info") or {}) if quality else {}).items():
        table.setdefault(name, list(info.get("aliases") or []))
    return table
