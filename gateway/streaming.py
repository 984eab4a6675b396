"""Server-sent event streams: relaying an engine's stream, sending one, noticing a client leave.

    relay = SseRelay(exchange, metrics=m, deadline=t, started=t0, client_wants_usage=False, state=state)
    return EventStreamResponse(relay)             # a relay, or any StreamSource

    async for data in sse_data(exchange.response.chunks()):   # parse: each event's data field
        ...

    result = await unless_disconnected(receive, work)          # ClientDisconnected if the client leaves

`EventStreamResponse` owns its source's cleanup: `source.close()` runs when the response ends,
however it ends (finished, failed, the client gone, or cancelled before its first byte), so the
admission slot, the replica count and the engine connection are always given back; closing the
engine connection is what makes vLLM abort the generation.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.dispatch import Exchange
from gateway.errors import CLIENT_CLOSED_REQUEST, ClientDisconnected, GatewayError, UpstreamTimeout, sse_error_event
from gateway.metrics import ModelMetrics

T = TypeVar("T")

DONE = b"data: [DONE]\n\n"
# A streamed event that carries generated text (chat content, reasoning, completion text, or a
# Responses/Anthropic text delta).
_TOKEN_EVENT = re.compile(rb'"(?:content|reasoning|reasoning_content|text|delta)":\s*"[^"]')
_USAGE_EVENT = re.compile(rb'"usage":\s*\{')


class StreamObserver(Protocol):
    """Sees what a relay sends (e.g. gateway/traffic.py's TrafficTap, for live pairs and
    per-arm metrics). Called synchronously: it must be cheap."""

    def on_chunk(self, chunk: bytes, token_at: float | None) -> None:
        """Whole events as relayed (usage included, even when the client does not get it);
        `token_at` is the perf_counter time when they carried generated text."""
        ...

    def on_close(self, status: int) -> None:
        """The stream ended with `status` (200, 499, the error it ended with)."""
        ...


class StreamSource(Protocol):
    def events(self) -> AsyncIterator[bytes]:
        """Encoded SSE events, one or more per item."""
        ...

    async def close(self, status: int) -> None:
        """Release everything; `status` is how the stream ended (200, 499, 5xx). Idempotent."""
        ...


class EventStreamResponse(Response):
    """Sends a stream of SSE events. A client that disconnects cancels the stream; the source is
    closed on every path. Starlette's StreamingResponse would cost an anyio task group per
    stream; this costs one watcher task."""

    media_type = "text/event-stream"

    def __init__(self, source: StreamSource) -> None:
        self.source = source
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = CLIENT_CLOSED_REQUEST  # unless the stream is sent to its end
        try:
            await unless_disconnected(receive, self._send_all(send))
            status = 200
        except ClientDisconnected:
            pass  # the source's close below drops the engine connection
        finally:
            await self.source.close(status)

    async def _send_all(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        finished = False
        async for event in self.source.events():
            # The final `[DONE]` event and the end of the body go out in one write.
            finished = event.endswith(DONE)
            await send({"type": "http.response.body", "body": event, "more_body": not finished})
            if finished:
                break
        if not finished:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class SseRelay:
    """Relays one engine stream to the client event by event, recording TTFT, inter-token
    latency and usage. A failure after the headers went out ends the stream with an in-band
    error event. Usage is always requested from the engine (so token counters stay right) and
    dropped again unless the client asked for it."""

    def __init__(
        self,
        exchange: Exchange,
        *,
        metrics: ModelMetrics,
        deadline: float,
        started: float,
        client_wants_usage: bool,
        state: dict[str, Any],
        done_marker: bool = True,
        on_first_chunk: Callable[[bytes], None] | None = None,
        observer: StreamObserver | None = None,
    ) -> None:
        self.exchange = exchange
        self.observer = observer
        self.done_marker = done_marker
        self.on_first_chunk = on_first_chunk
        self.metrics = metrics
        self.deadline = deadline
        self.started = started
        self.client_wants_usage = client_wants_usage
        self.state = state
        self.error_status: int | None = None
        self._closed = False

    async def events(self) -> AsyncIterator[bytes]:
        metrics, last_token = self.metrics, None
        buffer = b""
        chunks = self.exchange.response.chunks().__aiter__()
        try:
            while True:
                try:
                    async with asyncio.timeout_at(self.deadline):
                        chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    raise UpstreamTimeout(f"Request to '{self.exchange.route.name}' exceeded its time limit.") from exc
                if self.on_first_chunk is not None:
                    self.on_first_chunk(chunk)
                    self.on_first_chunk = None
                if buffer:
                    chunk = buffer + chunk
                if chunk.endswith(b"\n\n"):  # the usual case: whole events only
                    buffer = b""
                else:
                    cut = chunk.rfind(b"\n\n") + 2
                    chunk, buffer = chunk[:cut], chunk[cut:]
                    if not chunk:
                        continue
                token_at = None
                if _TOKEN_EVENT.search(chunk):
                    token_at = time.perf_counter()
                    if last_token is None:
                        metrics.ttft.observe(token_at - self.started)
                    else:
                        metrics.itl.observe(token_at - last_token)
                    last_token = token_at
                if self.observer is not None:
                    self.observer.on_chunk(chunk, token_at)
                if _USAGE_EVENT.search(chunk):
                    chunk = self._take_usage(chunk)
                    if not chunk:
                        continue
                yield chunk
            if buffer.strip():
                yield buffer
        except GatewayError as exc:
            # Headers are gone already: tell the client in-band, then end the stream.
            self.error_status = exc.status_code
            self.state["error"] = exc.error_type
            event = sse_error_event(exc)
            if self.observer is not None:
                self.observer.on_chunk(event, None)
            yield event + (DONE if self.done_marker else b"")

    def _take_usage(self, chunk: bytes) -> bytes:
        """Record usage from the usage event(s) of `chunk` (an OpenAI chunk with `choices: []`
        and `usage`, or a Responses API `response.completed` event); drop the OpenAI usage-only
        chunk unless the client asked for usage. Returns what to send."""
        kept = []
        for event in chunk.split(b"\n\n"):
            if not event:
                continue
            if _USAGE_EVENT.search(event):
                data = _event_json(event)
                usage = data.get("usage")
                if not isinstance(usage, dict) and isinstance(data.get("response"), dict):
                    usage = data["response"].get("usage")
                counted = self.metrics.count_usage(usage)
                if counted is not None:
                    self.state["usage_prompt_tokens"], self.state["usage_completion_tokens"] = counted
                if data.get("choices") == [] and not self.client_wants_usage:
                    continue
            kept.append(event + b"\n\n")
        return b"".join(kept)

    async def close(self, status: int) -> None:
        # No await inside: it runs to the end even on a cancellation path.
        if self._closed:
            return
        self._closed = True
        final = self.error_status or status
        self.exchange.close(final)
        self.metrics.latency.observe(time.perf_counter() - self.started)
        if final != 200:
            self.state["status"] = final
        if self.observer is not None:
            self.observer.on_close(final)


def _event_json(event: bytes) -> dict[str, Any]:
    """The JSON object in an event's `data:` line, or {} (other fields, such as Anthropic's
    `event:` line, come before it)."""
    start = event.find(b"data:")
    try:
        data = json.loads(event[start + 5 :]) if start >= 0 else None
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The `data:` field of each event of an SSE byte stream, `[DONE]` included."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip().decode("utf-8", errors="replace")
    if buffer.startswith(b"data:"):
        yield buffer[5:].strip().decode("utf-8", errors="replace")


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work` in this task; if the client disconnects first, cancel it and raise
    ClientDisconnected. One watcher task per request, nothing else."""
    task = asyncio.current_task()
    assert task is not None
    gone = False
    finished = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        if not finished:
            gone = True
            task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        result = await work
        finished = True
        return result
    except asyncio.CancelledError:
        if gone:
            task.uncancel()
            raise ClientDisconnected from None
        raise
    finally:
        finished = True
        watcher.cancel()
