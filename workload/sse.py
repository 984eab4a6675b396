"""Server-sent events of OpenAI streams, timed per token: the pure part, fed lines and clock readings.

    t = StreamTimings(started=time.perf_counter())
    for line in lines: t.feed(line, time.perf_counter())
    t.ttft_s, t.itl_s, t.tpot_s, t.completion_tokens, t.error

R1's reasoning arrives in `reasoning` (vLLM >= 0.10) or `reasoning_content` (older vLLM and
many clients); both count as tokens. `CompareTimings` does the same for the gateway's
`POST /v1/compare` stream. Used by the Locust users (loadtest/streams.py) and the benchmark's
load generator (benchmarks/load.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

_DELTA_FIELDS = ("content", "reasoning", "reasoning_content")


@dataclass
class StreamTimings:
    """What one SSE stream of chat-completion chunks looked like, timed by the caller's clock.

    t = StreamTimings(started=time.perf_counter())
    for line in lines: t.feed(line, time.perf_counter())
    t.ttft_s, t.itl_s, t.completion_tokens
    """

    started: float
    first_token: float | None = None
    last_token: float | None = None
    token_chunks: int = 0
    events: int = 0
    usage: dict[str, Any] | None = None
    error: str | None = None
    done: bool = False
    finished: float | None = None
    gaps: list[float] | None = None  # pass a list to keep every inter-chunk gap (for percentiles)
    text: list[str] | None = None  # pass a list to keep the answer's content (a conversation's next turn)

    def feed(self, line: str, now: float) -> None:
        if not line.startswith("data:"):
            return  # blank separators, comments (": ping"), "event:" lines
        data = line[5:].strip()
        self.finished = now
        if data == "[DONE]":
            self.done = True
            return
        self.events += 1
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            self.error = f"not JSON: {data[:120]}"
            return
        if not isinstance(chunk, dict):
            return
        if chunk.get("error"):
            self.error = error_text(chunk["error"])
            return
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if self.text is not None and isinstance(delta.get("content"), str):
                self.text.append(delta["content"])
            if any(delta.get(key) for key in _DELTA_FIELDS):
                if self.gaps is not None and self.last_token is not None:
                    self.gaps.append(now - self.last_token)
                self.first_token = self.first_token or now
                self.last_token = now
                self.token_chunks += 1
                break

    @property
    def completion_tokens(self) -> int:
        return int((self.usage or {}).get("completion_tokens") or 0)

    @property
    def prompt_tokens(self) -> int:
        return int((self.usage or {}).get("prompt_tokens") or 0)

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started

    @property
    def itl_s(self) -> float | None:
        """Mean gap between token-bearing chunks (vLLM sends one chunk per decoded piece of text)."""
        if self.first_token is None or self.last_token is None or self.token_chunks < 2:
            return None
        return (self.last_token - self.first_token) / (self.token_chunks - 1)

    @property
    def tpot_s(self) -> float | None:
        """Decode time per output token, using the server's token count (chunks can hold several)."""
        if self.first_token is None or self.last_token is None or self.completion_tokens < 2:
            return None
        return (self.last_token - self.first_token) / (self.completion_tokens - 1)

    def problem(self, *, expect_prompt_tokens: int | None = None, expect_completion_tokens: int | None = None) -> str:
        """Why this stream counts as a failure ('' if it does not)."""
        if self.error:
            return f"error event in stream: {self.error}"
        if not self.done:
            return "stream ended without [DONE]"
        if self.usage is None:
            return "no usage in stream (stream_options.include_usage ignored?)"
        if self.first_token is None:
            return "no token in stream"
        if expect_prompt_tokens is not None and self.prompt_tokens != expect_prompt_tokens:
            return f"prompt tokens: sent {expect_prompt_tokens}, server counted {self.prompt_tokens}"
        if expect_completion_tokens is not None and self.completion_tokens != expect_completion_tokens:
            return f"output tokens: asked for exactly {expect_completion_tokens}, got {self.completion_tokens}"
        return ""


@dataclass
class CompareTimings:
    """One `POST /v1/compare` stream (format in gateway/compare.py), timed per model.

    Token events are {"model", "type": "reasoning" | "content", "delta"}; each model ends with
    "done" or "error"; the final {"type": "summary"} carries every model's `usage`."""

    started: float
    models: dict[str, StreamTimings] = field(default_factory=dict)
    error: str | None = None
    done: bool = False
    summary: bool = False

    def feed(self, line: str, now: float) -> None:
        if not line.startswith("data:"):
            return
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            self.error = f"not JSON: {data[:120]}"
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "error" or (kind is None and event.get("error")):
            self.error = self.error or f"{event.get('model', '')}: {error_text(event.get('error'))}"
        elif kind in ("reasoning", "content") and event.get("delta"):
            timings = self.models.setdefault(str(event.get("model")), StreamTimings(started=self.started))
            timings.first_token = timings.first_token or now
            timings.last_token = now
            timings.token_chunks += 1
        elif kind == "summary":
            self.summary = True
            for model, row in (event.get("models") or {}).items():
                timings = self.models.setdefault(model, StreamTimings(started=self.started))
                timings.usage = (row or {}).get("usage")

    @property
    def completion_tokens(self) -> int:
        return sum(t.completion_tokens for t in self.models.values())

    def problem(self, models: list[str]) -> str:
        if self.error:
            return f"error event in stream: {self.error}"
        if not self.done or not self.summary:
            return "stream ended without its summary and [DONE]"
        for model in models:
            timings = self.models.get(model)
            if timings is None or timings.first_token is None:
                return f"no token from {model}"
            if timings.usage is None:
                return f"no usage for {model} in the summary"
        return ""


def error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    return str(error)[:300]
