"""Locust's output tokens against the engines' own counters (vLLM's Prometheus /metrics).

    check = TokenCheck.resolve("http://127.0.0.1:8000", "auto")  # the engines behind the gateway
    check.start()                           # at test start: every engine's vllm:generation_tokens_total
    result = check.finish(locust_tokens)    # at the end: {"status": "agree" | "disagree" | "skipped", ...}

Which engines (`--token-check`):

    auto      the host's `GET /engines` (our gateway lists its replicas' URLs), else the host
              itself when its /metrics has vLLM's counters (an engine reached directly);
              skipped, with the reason printed, when neither works (e.g. a hosted API)
    URL,URL   these engines' /metrics
    off       no check

Every chat request's output tokens come from the server's `usage`; they add up to what the
engines generated unless the counting is wrong or something else used the same engines
meanwhile (another client).
A disagreement beyond the tolerance makes `locust` exit 1.

Pure module: no User classes or event listeners (Locust imports every file in loadtest/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from workload.engine_metrics import GENERATION_TOKENS, read_token_counters, relative_difference


@dataclass
class TokenCheck:
    engines: list[str]
    tolerance: float = 0.02
    skipped: str = ""  # why there is no check ('' when there is one)
    before: dict[str, float] = field(default_factory=dict)

    @classmethod
    def resolve(cls, host: str, option: str, *, tolerance: float = 0.02) -> TokenCheck:
        option = option.strip()
        if option == "off":
            return cls([], tolerance, skipped="--token-check off")
        if option and option != "auto":
            return cls([u.strip().rstrip("/") for u in option.split(",") if u.strip()], tolerance)
        host = host.rstrip("/")
        try:
            rows = httpx.get(f"{host}/engines", timeout=10).json()
            urls = [row["url"].rstrip("/") for row in rows if isinstance(row, dict) and row.get("url")]
            if urls:
                return cls(list(dict.fromkeys(urls)), tolerance)
        except (httpx.HTTPError, ValueError, TypeError):
            pass  # not our gateway: maybe an engine
        try:
            if GENERATION_TOKENS in httpx.get(f"{host}/metrics", timeout=10).text:
                return cls([host], tolerance)
        except httpx.HTTPError:
            pass
        return cls([], tolerance, skipped=f"{host} lists no engines (GET /engines) and has no vLLM /metrics")

    def start(self) -> None:
        if self.skipped:
            return
        try:
            self.before = {url: read_token_counters(url).generation for url in self.engines}
        except (httpx.HTTPError, RuntimeError) as exc:
            self.skipped = f"cannot read the engines' counters: {exc}"

    def finish(self, locust_tokens: int) -> dict[str, Any]:
        """Compare with the counters now; the result also says what was compared."""
        if self.skipped or not self.before:
            return {"status": "skipped", "reason": self.skipped or "the check never started"}
        try:
            grown = {url: read_token_counters(url).generation - self.before[url] for url in self.engines}
        except (httpx.HTTPError, RuntimeError) as exc:
            return {"status": "skipped", "reason": f"cannot read the engines' counters: {exc}"}
        engine_tokens = sum(grown.values())
        difference = relative_difference(locust_tokens, engine_tokens)
        return {
            "status": "agree" if difference <= self.tolerance else "disagree",
            "locust_output_tokens": locust_tokens,
            "engine_generation_tokens": engine_tokens,
            "per_engine": grown,
            "relative_difference": difference,
            "tolerance": self.tolerance,
        }


def format_check(result: dict[str, Any]) -> str:
    if result["status"] == "skipped":
        return f"Token check skipped: {result['reason']}"
    verdict = "agree" if result["status"] == "agree" else "DISAGREE"
    return (
        f"Token check: Locust counted {result['locust_output_tokens']} output tokens, the engines' "
        f"vllm:generation_tokens_total grew by {result['engine_generation_tokens']:.0f} "
        f"({result['relative_difference']:.2%} apart, tolerance {result['tolerance']:.0%}): {verdict}"
    )
