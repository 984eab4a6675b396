"""Streaming OpenAI requests from a Locust user, timed per token and reported through Locust.

    timings = stream_chat(user, body, name="pair-128-256 qwen-tiny", expect_completion_tokens=256)

For each request this fires one `events.request.fire(...)` per metric, all under the same name:

    chat   <name>   end-to-end latency; response_length = output tokens (the server's `usage`)
    TTFT   <name>   request sent -> first non-empty content OR reasoning delta (not the headers)
    ITL    <name>   mean gap between consecutive token-bearing chunks of this request
    TPOT   <name>   (last token - first token) / (output tokens - 1), from the server's count

R1's reasoning arrives in `reasoning` (vLLM >= 0.10) or `reasoning_content` (older vLLM and
many clients); both count as tokens. A stream that carries an `error` object, lacks `usage`,
or has a token count other than the one the request fixed (`ignore_eos` + `max_tokens`) is a
failure, reported on the `chat` row.

`stream_compare` does the same for the gateway's `POST /v1/compare`: one `compare` row per
request (response_length = every model's output tokens, from the summary event) and TTFT /
ITL / TPOT rows named "compare <model>".

`StreamTimings` and `CompareTimings` are the pure parts (feed them SSE lines and clock
readings); the rest is Locust glue.
Pure module otherwise: no User classes or event listeners (Locust imports every file in loadtest/).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Locust's FastHttpSession sends "Accept-Encoding: gzip" by default; a compressed SSE stream
# would be buffered by the decompressor and ruin the timings.
STREAM_HEADERS = {"Accept": "text/event-stream", "Accept-Encoding": "identity"}
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
            self.error = _error_text(chunk["error"])
            return
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
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


def stream_chat(
    user: Any,
    body: dict[str, Any],
    *,
    name: str,
    expect_prompt_tokens: int | None = None,
    expect_completion_tokens: int | None = None,
    path: str = "/v1/chat/completions",
) -> StreamTimings | None:
    """POST a streaming chat request from a Locust FastHttpUser and report its timings."""
    body = body | {"stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    timings = StreamTimings(started=started)
    with user.client.post(
        path, json=body, name=name, stream=True, catch_response=True, headers=STREAM_HEADERS
    ) as response:
        response.request_meta["request_type"] = "chat"
        if not _read_stream(response, timings):
            return None
        ended = time.perf_counter()
        response.request_meta["response_time"] = (ended - started) * 1000
        response.request_meta["response_length"] = timings.completion_tokens
        problem = timings.problem(
            expect_prompt_tokens=expect_prompt_tokens, expect_completion_tokens=expect_completion_tokens
        )
        if problem:
            response.failure(problem)
            return None
        response.success()
    _report_timings(user, name, timings)
    return timings


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
            self.error = self.error or f"{event.get('model', '')}: {_error_text(event.get('error'))}"
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


def stream_compare(user: Any, body: dict[str, Any], *, models: list[str]) -> CompareTimings | None:
    """POST /v1/compare (streamed) and report a `compare` row for the whole request (its length:
    every model's output tokens) and TTFT / ITL / TPOT rows named "compare <model>" per model."""
    body = body | {"models": models, "stream": True}
    started = time.perf_counter()
    timings = CompareTimings(started=started)
    with user.client.post(
        "/v1/compare",
        json=body,
        name=f"compare {'+'.join(models)}",
        stream=True,
        catch_response=True,
        headers=STREAM_HEADERS,
    ) as response:
        response.request_meta["request_type"] = "compare"
        if not _read_stream(response, timings):
            return None
        response.request_meta["response_time"] = (time.perf_counter() - started) * 1000
        response.request_meta["response_length"] = timings.completion_tokens
        problem = timings.problem(models)
        if problem:
            response.failure(problem)
            return None
        response.success()
    for model, per_model in timings.models.items():
        _report_timings(user, f"compare {model}", per_model)
    return timings


def _read_stream(response: Any, timings: StreamTimings | CompareTimings) -> bool:
    """Feed every SSE line of a 200 response to `timings`; False (and a Locust failure) if the
    status is not 200 or the stream breaks."""
    try:
        if response.status_code != 200:
            response.failure(f"HTTP {response.status_code}: {(response.text or '')[:300]}")
            return False
        for line in _lines(response):
            timings.feed(line, time.perf_counter())
    except Exception as exc:  # a broken connection must count as a failure, not vanish
        response.failure(f"{type(exc).__name__}: {exc}")
        return False
    return True


def _report_timings(user: Any, name: str, timings: StreamTimings) -> None:
    """TTFT, ITL and TPOT as Locust rows named `name` (those the stream had)."""
    fire = user.environment.events.request.fire
    for kind, seconds in (("TTFT", timings.ttft_s), ("ITL", timings.itl_s), ("TPOT", timings.tpot_s)):
        if seconds is not None:
            fire(request_type=kind, name=name, response_time=seconds * 1000, response_length=0, exception=None)


def _lines(response: Any) -> Iterator[str]:
    """SSE lines as soon as each arrives.

    Locust's `iter_content` reads in 1 KiB blocks and would hold the first token back until
    a kilobyte had arrived; geventhttpclient's `readline` returns each complete line at once.
    """
    raw = response._response
    while True:
        line = raw.readline(b"\n")
        if not line:
            return
        yield line.decode("utf-8", errors="replace").rstrip("\r\n")


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    return str(error)[:300]
