"""Closed-loop streaming load at a fixed concurrency, timed per token (asyncio + aiohttp).

    requests = [ChatRequest("qwen-tiny", prompt.messages, max_tokens=256, prompt_tokens=prompt.prompt_tokens), ...]
    result = asyncio.run(run_load("http://127.0.0.1:8112", requests, concurrency=32))
    result.summary()   # output tok/s, req/s, TTFT / ITL / TPOT / e2e percentiles, token totals

`concurrency` workers each take the next request from the list as soon as their previous one
ends, so exactly that many streams are in flight until the list runs dry. Timings use the
same SSE parser as the Locust users (traffic/sse.py): TTFT is the first non-empty content or
reasoning delta, ITL every gap between token-bearing chunks. Token counts are the server's
`usage`; the expected prompt length is checked per request.

aiohttp rather than httpx: against an instant fake upstream on this 2-core machine, httpx
streamed 95 requests/s (10 SSE events each) at 32 streams with a 200 ms median TTFT of its own
making, aiohttp 850 requests/s with 35 ms; a load generator must not be the bottleneck.

`run_raw_http` is a much leaner client (raw asyncio, keep-alive, no parsing beyond framing)
for measuring a proxy's requests/s against a fake upstream, where httpx itself would be the
bottleneck.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import aiohttp
import numpy as np

from workload.sse import StreamTimings

PERCENTILES = (50, 90, 99)
# Plain greedy decoding, as transformers `generate(do_sample=False, repetition_penalty=1.0)` does.
# vLLM otherwise applies the model's generation_config.json defaults: qwen's repetition_penalty
# 1.1 survives temperature 0 and costs a penalty pass over the 152k vocabulary per token.
GREEDY: Mapping[str, float] = MappingProxyType({"temperature": 0.0, "repetition_penalty": 1.0})


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, str]]
    max_tokens: int
    prompt_tokens: int | None = None  # the exact templated length, when the caller built it so
    fixed_output: bool = True  # ignore_eos: exactly max_tokens out
    sampling: Mapping[str, float] = field(default_factory=lambda: GREEDY)  # {}: the model's own defaults

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages,
            "max_tokens": self.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.fixed_output:
            body["ignore_eos"] = True
        body.update(self.sampling)
        return body


@dataclass
class RequestRecord:
    ok: bool
    error: str
    e2e_s: float
    ttft_s: float | None
    tpot_s: float | None
    prompt_tokens: int
    completion_tokens: int
    expected_prompt_tokens: int | None
    gaps: list[float] = field(repr=False, default_factory=list)


@dataclass
class LoadResult:
    concurrency: int
    wall_s: float
    records: list[RequestRecord]

    def summary(self) -> dict[str, Any]:
        ok = [r for r in self.records if r.ok]
        output = sum(r.completion_tokens for r in self.records)
        gaps = [g for r in ok for g in r.gaps]
        return {
            "concurrency": self.concurrency,
            "requests": len(self.records),
            "failures": len(self.records) - len(ok),
            "errors": sorted({r.error for r in self.records if r.error})[:5],
            "wall_s": self.wall_s,
            "prompt_tokens": sum(r.prompt_tokens for r in self.records),
            "output_tokens": output,
            "output_tokens_per_s": output / self.wall_s if self.wall_s else 0.0,
            "requests_per_s": len(ok) / self.wall_s if self.wall_s else 0.0,
            "prompt_token_mismatches": sum(
                1 for r in ok if r.expected_prompt_tokens is not None and r.expected_prompt_tokens != r.prompt_tokens
            ),
            "ttft_ms": percentiles([r.ttft_s for r in ok if r.ttft_s is not None]),
            "itl_ms": percentiles(gaps),
            "tpot_ms": percentiles([r.tpot_s for r in ok if r.tpot_s is not None]),
            "e2e_ms": percentiles([r.e2e_s for r in ok]),
        }


def percentiles(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99 (and mean) in milliseconds; None when there is no sample."""
    keys = [f"p{p}" for p in PERCENTILES]
    if not seconds:
        return dict.fromkeys([*keys, "mean"])
    values = np.asarray(seconds, dtype=float) * 1000
    result: dict[str, float | None] = {
        k: float(np.percentile(values, p)) for k, p in zip(keys, PERCENTILES, strict=True)
    }
    result["mean"] = float(values.mean())
    return result


async def run_load(
    base_url: str,
    requests: Sequence[ChatRequest],
    *,
    concurrency: int,
    timeout_s: float = 900,
    progress: Callable[[str], None] | None = None,
    label: str = "",
) -> LoadResult:
    """Send `requests` with `concurrency` streams in flight; return every request's record."""
    queue = list(reversed(requests))
    records: list[RequestRecord] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=30)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as client:

        async def worker() -> None:
            while queue:
                records.append(await _one(client, queue.pop()))

        started = time.perf_counter()
        reporter = asyncio.create_task(_report(progress, label, records, len(requests), started))
        try:
            await asyncio.gather(*(worker() for _ in range(min(concurrency, len(requests)))))
        finally:
            reporter.cancel()
        wall = time.perf_counter() - started
    return LoadResult(concurrency, wall, records)


async def _one(client: aiohttp.ClientSession, request: ChatRequest) -> RequestRecord:
    started = time.perf_counter()
    timings = StreamTimings(started=started, gaps=[])
    error = ""
    try:
        async with client.post("/v1/chat/completions", json=request.body()) as response:
            if response.status != 200:
                error = f"HTTP {response.status}: {(await response.read())[:200].decode(errors='replace')}"
            else:
                async for line in response.content:  # one SSE line as soon as it arrives
                    timings.feed(line.decode("utf-8", errors="replace").rstrip("\r\n"), time.perf_counter())
    except (aiohttp.ClientError, TimeoutError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    expected_out = request.max_tokens if request.fixed_output else None
    error = error or timings.problem(expect_completion_tokens=expected_out)
    return RequestRecord(
        ok=not error,
        error=error,
        e2e_s=time.perf_counter() - started,
        ttft_s=timings.ttft_s,
        tpot_s=timings.tpot_s,
        prompt_tokens=timings.prompt_tokens,
        completion_tokens=timings.completion_tokens,
        expected_prompt_tokens=request.prompt_tokens,
        gaps=timings.gaps or [],
    )


async def _report(
    progress: Callable[[str], None] | None, label: str, records: list[RequestRecord], total: int, started: float
) -> None:
    if progress is None:
        return
    while True:
        await asyncio.sleep(10)
        elapsed = time.perf_counter() - started
        tokens = sum(r.completion_tokens for r in records)
        progress(f"{label}: {len(records)}/{total} requests, {tokens / elapsed:.0f} output tok/s so far")


# --- a lean client for requests/s measurements -------------------------------------------


@dataclass
class RawResult:
    concurrency: int
    wall_s: float
    latencies_s: list[float]
    failures: int

    def summary(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "requests": len(self.latencies_s) + self.failures,
            "failures": self.failures,
            "wall_s": self.wall_s,
            "requests_per_s": len(self.latencies_s) / self.wall_s if self.wall_s else 0.0,
            "latency_ms": percentiles(self.latencies_s),
        }


def raw_post(host: str, port: int, path: str, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def run_raw_http(
    host: str, port: int, request: bytes, *, concurrency: int, duration_s: float, warmup_s: float = 1.0
) -> RawResult:
    """Closed loop of one pre-rendered HTTP/1.1 request over keep-alive connections.

    Reads each response to its end (Content-Length or chunked) and times it; anything but a
    200 counts as a failure. Measures for `duration_s` after `warmup_s`.
    """
    latencies: list[float] = []
    failures = 0
    begin = time.perf_counter() + warmup_s
    end = begin + duration_s

    async def worker() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (now := time.perf_counter()) < end:
                writer.write(request)
                try:
                    status = await _read_response(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    status = 0  # the server closed the connection: a failure, then a new connection
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                if now >= begin:
                    if status == 200:
                        latencies.append(time.perf_counter() - now)
                    else:
                        failures += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return RawResult(concurrency, duration_s, latencies, failures)


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status
