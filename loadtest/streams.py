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

The timing itself (`StreamTimings`, `CompareTimings`: feed them SSE lines and clock readings)
is traffic/sse.py, shared with the benchmarks; this module is the Locust glue.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from workload.sse import CompareTimings, StreamTimings

# Locust's FastHttpSession sends "Accept-Encoding: gzip" by default; a compressed SSE stream
# would be buffered by the decompressor and ruin the timings.
STREAM_HEADERS = {"Accept": "text/event-stream", "Accept-Encoding": "identity"}


def stream_chat(
    user: Any,
    body: dict[str, Any],
    *,
    name: str,
    expect_prompt_tokens: int | None = None,
    expect_completion_tokens: int | None = None,
    path: str = "/v1/chat/completions",
    keep_text: bool = False,
) -> StreamTimings | None:
    """POST a streaming chat request from a Locust FastHttpUser and report its timings
    (with the answer's content in `.text` if `keep_text`); None if it failed."""
    body = body | {"stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    timings = StreamTimings(started=started, text=[] if keep_text else None)
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
