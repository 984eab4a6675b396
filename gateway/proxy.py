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
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive

from gateway.access_log import request_state
from gateway.admission import AdmissionGate, Slot
from gateway.config import GatewaySpec
from gateway.errors import (
    EngineUnavailable,
    GatewayError,
    PayloadTooLarge,
    UpstreamTimeout,
    error_body,
    map_upstream_errors,
)
from gateway.metrics import GatewayMetrics
from gateway.request_policy import apply_model_policy, parse_body
from gateway.routing import ModelRoute, Replica, Router

T = TypeVar("T")

_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}
# A streamed event that carries generated text (chat content, reasoning, or completion text).
_TOKEN_EVENT = re.compile(rb'"(?:content|reasoning|reasoning_content|text)":\s*"[^"]')
_USAGE_EVENT = re.compile(rb'"usage":\s*\{')


class ClientDisconnected(Exception):
    """The client went away before the answer was ready."""


class Proxy:
    def __init__(
        self,
        client: httpx.AsyncClient,
        router: Router,
        gates: dict[str, AdmissionGate],
        metrics: GatewayMetrics,
        spec: GatewaySpec,
    ) -> None:
        self.client = client
        self.router = router
        self.gates = gates
        self.metrics = metrics
        self.spec = spec

    async def forward(self, request: Request, *, path: str, chat: bool) -> Response:
        started = time.perf_counter()
        body = parse_body(await read_body(request, self.spec.max_body_bytes))
        route = self.router.resolve(body["model"])
        state = request_state(request.scope)
        state["model"] = route.name
        upstream_body, _ = apply_model_policy(body, route.spec, chat=chat)
        stream = bool(body.get("stream"))
        client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if stream:  # always ask for usage so token counters stay right; dropped again below
            upstream_body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        headers = {"X-Request-Id": state["request_id"]} if "request_id" in state else {}

        admitted = await self._admit(route)
        slot: Slot | None = admitted  # released here unless a stream takes it over
        try:
            self.metrics.overhead.labels(route.name).observe(time.perf_counter() - started)
            if stream:
                upstream, replica = await self._send(route, path, upstream_body, headers, stream=True)
                if upstream.status_code != 200:
                    response = await _buffered(upstream)
                else:
                    relay = _Relay(
                        proxy=self,
                        route=route,
                        upstream=upstream,
                        replica=replica,
                        slot=admitted,
                        started=started,
                        client_wants_usage=client_wants_usage,
                        state=state,
                    )
                    slot = None  # the relay owns it now and releases it when the stream ends
                    return StreamingResponse(
                        relay.events(),
                        media_type="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                    )
            else:
                work = self._send(route, path, upstream_body, headers, stream=False)
                try:
                    upstream, _ = await unless_disconnected(request.receive, work)
                except ClientDisconnected:
                    self._finish(route.name, path, 499, started)
                    raise
                response = Response(upstream.content, upstream.status_code, headers=_passthrough(upstream.headers))
                if upstream.status_code == 200:
                    self._count_usage(route.name, _usage_of(upstream.content), state)
            self._finish(route.name, path, response.status_code, started)
            return response
        finally:
            if slot is not None:
                slot.release()

    async def _admit(self, route: ModelRoute) -> Slot:
        gate = self.gates[route.name]
        try:
            slot = await gate.acquire()
        except GatewayError:
            self.metrics.rejected.labels(route.name).inc()
            raise
        self.metrics.queue_wait.labels(route.name).observe(slot.waited_s)
        return slot

    async def _send(
        self, route: ModelRoute, path: str, body: dict[str, Any], headers: dict[str, str], *, stream: bool
    ) -> tuple[httpx.Response, Replica]:
        """Send to a healthy replica; if it cannot be reached, once more to another one."""
        tried: set[str] = set()
        while True:
            replica = route.choose(exclude=tried)
            if replica is None or (tried and not replica.healthy):
                raise EngineUnavailable(
                    f"No replica of '{route.name}' is available right now; it is restarting or down.",
                    retry_after=5,
                )
            tried.add(replica.url)
            request = self.client.build_request("POST", f"{replica.url}{path}", json=body, headers=headers)
            try:
                with replica.busy(), map_upstream_errors(route.name):
                    if stream:
                        timeout = self.spec.first_byte_timeout_s
                        return await asyncio.wait_for(self.client.send(request, stream=True), timeout), replica
                    return await asyncio.wait_for(self.client.send(request), self.spec.request_timeout_s), replica
            except TimeoutError as exc:
                raise UpstreamTimeout(f"Engine '{route.name}' did not answer in time.") from exc
            except EngineUnavailable:
                replica.healthy = False  # the health checker will notice when it is back
                if len(tried) >= 2 or route.choose(exclude=tried) is None:
                    raise
                self.metrics.retries.labels(route.name).inc()

    def _count_usage(self, model: str, usage: dict[str, Any] | None, state: dict[str, Any]) -> None:
        if not usage:
            return
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        self.metrics.prompt_tokens.labels(model).inc(prompt)
        self.metrics.completion_tokens.labels(model).inc(completion)
        state["usage_prompt_tokens"], state["usage_completion_tokens"] = prompt, completion

    def _finish(self, model: str, path: str, status: int, started: float) -> None:
        self.metrics.requests.labels(model, path, str(status)).inc()
        self.metrics.latency.labels(model).observe(time.perf_counter() - started)


class _Relay:
    """Relays one upstream SSE stream event by event, recording TTFT, ITL and usage."""

    def __init__(
        self,
        *,
        proxy: Proxy,
        route: ModelRoute,
        upstream: httpx.Response,
        replica: Replica,
        slot: Slot,
        started: float,
        client_wants_usage: bool,
        state: dict[str, Any],
    ) -> None:
        self.proxy, self.route, self.upstream, self.replica, self.slot = proxy, route, upstream, replica, slot
        self.started, self.client_wants_usage, self.state = started, client_wants_usage, state
        self.deadline = started + proxy.spec.request_timeout_s

    async def events(self) -> AsyncIterator[bytes]:
        metrics, name = self.proxy.metrics, self.route.name
        status, last_token = 200, None
        buffer = b""
        try:
            with self.replica.busy():
                with map_upstream_errors(name):
                    async for chunk in self.upstream.aiter_raw():
                        buffer += chunk
                        while b"\n\n" in buffer:
                            event, buffer = buffer.split(b"\n\n", 1)
                            if _TOKEN_EVENT.search(event):
                                now = time.perf_counter()
                                if last_token is None:
                                    metrics.ttft.labels(name).observe(now - self.started)
                                else:
                                    metrics.itl.labels(name).observe(now - last_token)
                                last_token = now
                            elif _USAGE_EVENT.search(event) and self._is_usage_only(event):
                                continue
                            yield event + b"\n\n"
                        if time.perf_counter() > self.deadline:
                            raise UpstreamTimeout(
                                f"Request to '{name}' exceeded {self.proxy.spec.request_timeout_s} s."
                            )
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
            await self.upstream.aclose()  # closing the connection makes vLLM abort the request
            self.slot.release()
            self.proxy._finish(name, str(self.upstream.request.url.path), status, self.started)

    def _is_usage_only(self, event: bytes) -> bool:
        """Record usage from the final usage chunk; True if the client did not ask for it."""
        try:
            data = json.loads(event.removeprefix(b"data: "))
        except ValueError:
            return False
        if not isinstance(data, dict) or data.get("choices"):
            return False
        self.proxy._count_usage(self.route.name, data.get("usage"), self.state)
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


async def _buffered(upstream: httpx.Response) -> Response:
    try:
        content = await upstream.aread()
    finally:
        await upstream.aclose()
    return Response(content, upstream.status_code, headers=_passthrough(upstream.headers))


def _usage_of(content: bytes) -> dict[str, Any] | None:
    try:
        usage = json.loads(content).get("usage")
    except (ValueError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Run `work`, cancelling it if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise ClientDisconnected
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _passthrough(headers: httpx.Headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
