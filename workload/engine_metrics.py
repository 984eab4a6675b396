"""The engine's own token counters (vLLM's Prometheus /metrics), to cross-check ours.

    before = read_token_counters("http://127.0.0.1:8112")
    ... run load, summing the servers' usage into measured ...
    delta = read_token_counters("http://127.0.0.1:8112") - before
    problems = cross_check(measured, delta, tolerance=0.01)   # [] when they agree within 1%

Counters are summed over all label sets (one engine serves one model here).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"


@dataclass(frozen=True)
class TokenCounters:
    prompt: float
    generation: float

    def __sub__(self, other: TokenCounters) -> TokenCounters:
        return TokenCounters(self.prompt - other.prompt, self.generation - other.generation)

    def __add__(self, other: TokenCounters) -> TokenCounters:
        return TokenCounters(self.prompt + other.prompt, self.generation + other.generation)


def scrape(engine_url: str, *, timeout_s: float = 10) -> dict[str, float]:
    """Every sample of the engine's /metrics, summed over labels: {"vllm:prompt_tokens_total": 1234.0, ...}."""
    text = httpx.get(f"{engine_url}/metrics", timeout=timeout_s).raise_for_status().text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + float(sample.value)
    return totals


def read_token_counters(engine_url: str) -> TokenCounters:
    samples = scrape(engine_url)
    missing = [name for name in (PROMPT_TOKENS, GENERATION_TOKENS) if name not in samples]
    if missing:
        raise RuntimeError(f"{engine_url}/metrics has no {', '.join(missing)} (not a vLLM engine?)")
    return TokenCounters(samples[PROMPT_TOKENS], samples[GENERATION_TOKENS])


def relative_difference(measured: float, engine: float) -> float:
    if engine == 0:
        return 0.0 if measured == 0 else float("inf")
    return abs(measured - engine) / engine


def cross_check(measured: TokenCounters, engine: TokenCounters, *, tolerance: float) -> list[str]:
    """Disagreements larger than `tolerance` (a fraction), as sentences; [] when all agree."""
    problems = []
    for kind in ("prompt", "generation"):
        ours, theirs = getattr(measured, kind), getattr(engine, kind)
        diff = relative_difference(ours, theirs)
        if diff > tolerance:
            problems.append(
                f"{kind} tokens: we counted {ours:.0f}, the engine's counter grew by {theirs:.0f} "
                f"({diff:.2%} apart, more than {tolerance:.0%})"
            )
    return problems
