"""Forward OpenAI requests to an engine: streaming bytes pass through unbuffered.

    proxy = Proxy(client, router)
    response = await proxy.forward(request, path="/v1/chat/completions", chat=True)

A client that disconnects cancels the upstream request (the connection to the engine is
closed, which makes vLLM abort the generation). A stream that breaks mid-way ends with a
final SSE error event instead of hanging. The engine's own 4xx answers are passed through.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive

from gateway.errors import GatewayError, error_body, map_upstream_errors
from gateway.request_policy import apply_model_policy, parse_body
from gateway.routing import ModelRoute, Replica, Router

T = TypeVar("T")

_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}


class ClientDisconnected(Exception):
    """The client went away before the answer was ready."""


class Proxy:
    def __init__(self, client: httpx.AsyncClient, router: Router) -> None:
        self.client = client
        self.router = router

    async def forward(self, request: Request, *, path: str, chat: bool) -> Response:
        body = parse_body(await request.body())
        route = self.router.resolve(body["model"])
        upstream_body, _ = apply_model_policy(body, route.spec, chat=chat)
        if body.get("stream"):
            return await self._stream(route, path, upstream_body)
        return await _unless_disconnected(request.receive, self._complete(route, path, upstream_body))

    async def _complete(self, route: ModelRoute, path: str, body: dict[str, Any]) -> Response:
        with route.pick() as replica, map_upstream_errors(route.name):
            upstream = await self.client.post(f"{replica.url}{path}", json=body)
        return Response(upstream.content, upstream.status_code, headers=_passthrough(upstream.headers))

    async def _stream(self, route: ModelRoute, path: str, body: dict[str, Any]) -> Response:
        replica = route.choose()
        request = self.client.build_request("POST", f"{replica.url}{path}", json=body)
        with replica.busy(), map_upstream_errors(route.name):
            upstream = await self.client.send(request, stream=True)
        if upstream.status_code != 200:
            try:
                content = await upstream.aread()
            finally:
                await upstream.aclose()
            return Response(content, upstream.status_code, headers=_passthrough(upstream.headers))
        return StreamingResponse(
            _relay(upstream, route.name, replica),
            status_code=200,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


async def _relay(upstream: httpx.Response, engine: str, replica: Replica) -> AsyncIterator[bytes]:
    """Yield upstream bytes as they arrive; closing this generator closes the upstream connection."""
    with replica.busy():
        try:
            with map_upstream_errors(engine):
                async for chunk in upstream.aiter_raw():
                    yield chunk
        except GatewayError as exc:
            # Headers are gone already: tell the client in-band, then end the stream.
            yield f"data: {json.dumps(error_body(exc.message, exc.error_type, code=exc.status_code))}\n\n".encode()
        finally:
            await upstream.aclose()


async def _unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Run `work`, cancelling it if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
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
