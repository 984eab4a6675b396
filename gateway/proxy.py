"""Forward OpenAI requests to an engine replica; streams pass through event by event.

    proxy = Proxy(client, router, gates, metrics, gateway_spec)
    response = await proxy.forward(request, path="/v1/chat/completions", chat=True)

What happens to a request, in order: body read with a size limit (413) and checked (400);
model resolved (404); per-model defaults applied; admission (429 when full); a healthy
replica chosen (503 when none) with one retry on another replica if the connection could not
be made; the engine's answer passed through (its own 4xx included) with timing and usage
recorded. A client that disconnects cancels the upstream request, which makes vLLM abort the
generation. A stream that breaks or times out ends with a final SSE error event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.access_log import request_state
from gateway.admission import AdmissionGate, Slot
from gateway.config import GatewaySpec
from gateway.errors import (
    EngineUnavailable,
    GatewayError,
    PayloadTooLarge,
    UpstreamTimeout,
    error_body,
)
from gateway.metrics import GatewayMetrics, ModelMetrics
from gateway.request_policy import apply_model_policy, parse_body
from gateway.routing import ModelRoute, Replica, Router
from gateway.upstream import Upstream, UpstreamResponse

T = TypeVar("T")

# A streamed event that carries generated text (chat content, reasoning, or completion text).
_TOKEN_EVENT = re.compile(rb'"(?:content|reasoning|reasoning_content|text)":\s*"[^"]')
_USAGE_EVENT = re.compile(rb'"usage":\s*\{')


class ClientDisconnected(Exception):
    """The client went away before the answer was ready."""


@dataclass
class _Call:
    """One request on its way upstream: where it goes and what is sent."""

    route: ModelRoute
    metrics: ModelMetrics
    path: str
    payload: bytes
    headers: dict[str, str]


class Proxy:
    def __init__(
        self,
        upstream: Upstream,
        router: Router,
        gates: dict[str, AdmissionGate],
        metrics: GatewayMetrics,
        spec: GatewaySpec,
    ) -> None:
        self.upstream = upstream
        self.router = router
        self.gates = gates
        self.metrics = metrics
        self.spec = spec

    async def forward(self, request: Request, *, path: str, chat: bool) -> Response:
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self.spec.request_timeout_s
        body = parse_body(await read_body(request, self.spec.max_body_bytes))
        route = self.router.resolve(body["model"])
        metrics = self.metrics.model(route.name)
        state = request_state(request.scope)
        state["model"] = route.name
        upstream_body, _ = apply_model_policy(body, route.spec, chat=chat)
        stream = bool(body.get("stream"))
        client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if stream:  # always ask for usage so token counters stay right; dropped again below
            upstream_body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        headers = {"X-Request-Id": state["request_id"]} if "request_id" in state else {}
        call = _Call(route, metrics, path, json.dumps(upstream_body).encode(), headers)

        admitted = await self._admit(route, metrics)
        slot: Slot | None = admitted  # released here unless a stream takes it over
        try:
            metrics.overhead.observe(time.perf_counter() - started)
            if stream:
                try:
                    async with asyncio.timeout(self.spec.first_byte_timeout_s):
                        upstream, replica, _ = await self._send(call, read=False)
                except TimeoutError as exc:
                    raise UpstreamTimeout(f"Engine '{route.name}' did not start answering in time.") from exc
                if upstream.status != 200:
                    response = Response(await upstream.read(), upstream.status, headers=upstream.headers)
                else:
                    relay = _Relay(
                        proxy=self,
                        route=route,
                        metrics=metrics,
                        path=path,
                        upstream=upstream,
                        replica=replica,
                        slot=admitted,
                        started=started,
                        deadline=deadline,
                        client_wants_usage=client_wants_usage,
                        state=state,
                    )
                    slot = None  # the relay owns it now and releases it when the stream ends
                    return EventStreamResponse(relay.events())
            else:
                try:
                    upstream, _, content = await unless_disconnected(request.receive, self._complete(call, deadline))
                except ClientDisconnected:
                    self._finish(metrics, path, 499, started)
                    raise
                response = Response(content, upstream.status, headers=upstream.headers)
                if upstream.status == 200:
                    self._count_usage(metrics, _usage_of(content), state)
            self._finish(metrics, path, response.status_code, started)
            return response
        finally:
            if slot is not None:
                slot.release()

    async def _admit(self, route: ModelRoute, metrics: ModelMetrics) -> Slot:
        gate = self.gates[route.name]
        try:
            slot = await gate.acquire()
        except GatewayError:
            metrics.rejected.inc()
            raise
        metrics.queue_wait.observe(slot.waited_s)
        return slot

    async def _complete(self, call: _Call, deadline: float) -> tuple[UpstreamResponse, Replica, bytes]:
        try:
            async with asyncio.timeout_at(deadline):
                upstream, replica, content = await self._send(call, read=True)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"Engine '{call.route.name}' did not answer in time.") from exc
        assert content is not None
        return upstream, replica, content

    async def _send(self, call: _Call, *, read: bool) -> tuple[UpstreamResponse, Replica, bytes | None]:
        """Send to a healthy replica; if it cannot be reached, once more to another one.
        With `read`, the body too (the replica counts the request in flight until then)."""
        route, metrics = call.route, call.metrics
        tried: set[str] = set()
        while True:
            replica = route.choose(exclude=tried)
            if replica is None or (tried and not replica.healthy):
                raise EngineUnavailable(
                    f"No replica of '{route.name}' is available right now; it is restarting or down.",
                    retry_after=5,
                )
            tried.add(replica.url)
            try:
                with replica.busy():
                    upstream = await self.upstream.post(
                        f"{replica.url}{call.path}", call.payload, call.headers, engine=route.name
                    )
                    return upstream, replica, (await upstream.read() if read else None)
            except EngineUnavailable:
                replica.healthy = False  # the health checker will notice when it is back
                if len(tried) >= 2 or route.choose(exclude=tried) is None:
                    raise
                metrics.retries.inc()

    def _count_usage(self, metrics: ModelMetrics, usage: dict[str, Any] | None, state: dict[str, Any]) -> None:
        if not usage:
            return
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        metrics.prompt_tokens.inc(prompt)
        metrics.completion_tokens.inc(completion)
        state["usage_prompt_tokens"], state["usage_completion_tokens"] = prompt, completion

    def _finish(self, metrics: ModelMetrics, path: str, status: int, started: float) -> None:
        metrics.request(path, status)
        metrics.latency.observe(time.perf_counter() - started)


class EventStreamResponse(Response):
    """Sends a relayed SSE stream. A client that disconnects cancels the stream, which closes
    the upstream connection (and so vLLM aborts the request). Starlette's StreamingResponse
    would do the same with an anyio task group per stream; this costs one watcher task."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # On a disconnect the relay has recorded it (499) and closed the upstream connection.
        with contextlib.suppress(ClientDisconnected):
            await unless_disconnected(receive, self._send_all(send))

    async def _send_all(self, send: Send) -> None:
        events = self.events
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for event in events:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await events.aclose()  # type: ignore[attr-defined]  # runs the relay's cleanup if cut short


class _Relay:
    """Relays one upstream SSE stream event by event, recording TTFT, ITL and usage."""

    def __init__(
        self,
        *,
        proxy: Proxy,
        route: ModelRoute,
        metrics: ModelMetrics,
        path: str,
        upstream: UpstreamResponse,
        replica: Replica,
        slot: Slot,
        started: float,
        deadline: float,
        client_wants_usage: bool,
        state: dict[str, Any],
    ) -> None:
        self.proxy, self.route, self.metrics, self.path = proxy, route, metrics, path
        self.upstream, self.replica, self.slot = upstream, replica, slot
        self.started, self.deadline = started, deadline
        self.client_wants_usage, self.state = client_wants_usage, state

    async def events(self) -> AsyncIterator[bytes]:
        metrics, name = self.metrics, self.route.name
        status, last_token = 200, None
        buffer = b""
        chunks = self.upstream.chunks().__aiter__()
        try:
            with self.replica.busy():
                while True:
                    try:
                        async with asyncio.timeout_at(self.deadline):
                            chunk = await chunks.__anext__()
                    except StopAsyncIteration:
                        break
                    except TimeoutError as exc:
                        raise UpstreamTimeout(
                            f"Request to '{name}' exceeded {self.proxy.spec.request_timeout_s} s."
                        ) from exc
                    *events, buffer = (buffer + chunk).split(b"\n\n")
                    out = []  # the complete events of this chunk go to the client in one write
                    for event in events:
                        if _TOKEN_EVENT.search(event):
                            now = time.perf_counter()
                            if last_token is None:
                                metrics.ttft.observe(now - self.started)
                            else:
                                metrics.itl.observe(now - last_token)
                            last_token = now
                        elif _USAGE_EVENT.search(event) and self._is_usage_only(event):
                            continue
                        out.append(event + b"\n\n")
                    if out:
                        yield b"".join(out)
                if buffer.strip():
                    yield buffer
        except GatewayError as exc:
            # Headers are gone already: tell the client in-band, then end the stream.
            status = exc.status_code
            self.state["error"] = exc.error_type
            yield f"data: {json.dumps(error_body(exc.message, exc.error_type, code=exc.status_code))}\n\n".encode()
        except BaseException:
            status = 499  # the client went away (generator closed or cancelled)
            raise
        finally:
            await self.upstream.close()  # unless read to the end, this drops the connection: vLLM aborts
            self.slot.release()
            self.proxy._finish(metrics, self.path, status, self.started)

    def _is_usage_only(self, event: bytes) -> bool:
        """Record usage from the final usage chunk; True if the client did not ask for it."""
        try:
            data = json.loads(event.removeprefix(b"data: "))
        except ValueError:
            return False
        if not isinstance(data, dict) or data.get("choices"):
            return False
        self.proxy._count_usage(self.metrics, data.get("usage"), self.state)
        return not self.client_wants_usage


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")
    return bytes(body)


def _usage_of(content: bytes) -> dict[str, Any] | None:
    try:
        usage = json.loads(content).get("usage")
    except (ValueError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None


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
