"""The decision rules, read once from YAML into typed objects (decision/rules.yaml documents them).

rules = load_rules(Path("decision/rules.yaml"))
rules.quality_weights["math"], rules.latency_slo.ttft_p90_ms, rules.memory_budget_gib
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import ConfigError

DEFAULT_RULES = Path(__file__).resolve().parent / "rules.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatencySlo(_Strict):
    concurrency: int = Field(default=32, gt=0)
    prompt_tokens: int = Field(default=128, gt=0)
    output_tokens: int = Field(default=256, gt=0)
    ttft_p90_ms: float | None = Field(default=2000, gt=0)
    itl_p90_ms: float | None = Field(default=250, gt=0)


class Rules(_Strict):
    candidate: str = "r1"
    incumbent: str = "qwen"
    memory_budget_gib: float | None = Field(default=None, gt=0)
    latency_slo: LatencySlo | None = None
    quality_weights: dict[str, float] = Field(default_factory=dict)
    preference_decides: bool = True
    preference_sources: tuple[Literal["live", "compare"], ...] = ("live", "compare")
    when_undecided: Literal["keep", "replace"] = "keep"
    examples_per_suite: int = Field(default=2, ge=0)
    example_chars: int = Field(default=1200, gt=0)


def load_rules(path: Path) -> Rules:
    """Read and validate a rules file; ConfigError names the file and the key."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read rules: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        rules = Rules.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: "
            f"{'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc
    negative = [suite for suite, weight in rules.quality_weights.items() if weight < 0]
    if negative:
        raise ConfigError(f"{path}: quality_weights: negative weight for {', '.join(negative)}")
    return rules
