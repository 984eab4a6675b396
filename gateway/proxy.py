"""Forward a client's request to an engine replica and relay the answer.

    proxy = Proxy(dispatcher, router, metrics, gateway_spec)
    response = await proxy.forward(scope, receive, API_BY_PATH["/v1/chat/completions"])
    response = await proxy.forward_object(scope, receive, "resp_123", "/cancel")   # /v1/responses/{id}/cancel

What happens to a request, in order: body read (the request guard has already refused one over
the size limit) and checked (400); model resolved (404); the model's limits checked and its
policy applied (gateway/request_policy.py); admission (429 when full); a healthy replica chosen
and the request sent, with one retry on another replica if it could not be reached
(gateway/dispatch.py); the engine's answer passed through (its own 4xx included) with timing and
usage recorded. A client that disconnects cancels the upstream request, which makes vLLM abort
the generation. A stream that breaks or times out ends with an in-band error event.

Responses created through `/v1/responses` live on the replica that made them, so the gateway
remembers which one (a bounded map) and sends `GET /v1/responses/{id}` and `.../cancel` there;
an id it does not know (made before a restart, or through another gateway replica) is asked of
each replica in turn.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import time
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope

from gateway.access_log import request_state
from gateway.config import GatewaySpec
from gateway.dispatch import Call, Dispatcher, Exchange
from gateway.errors import CLIENT_CLOSED_REQUEST, ClientDisconnected, GatewayError, NotFound, UpstreamTimeout
from gateway.metrics import GatewayMetrics
from gateway.request_policy import EngineApi, parse_body, shape_request
from gateway.routing import ModelRoute, Router
from gateway.routing_hints import routing_hints
from gateway.streaming import EventStreamResponse, SseRelay, unless_disconnected
from gateway.traffic import TrafficDirector, TrafficTap

_RESPONSE_ID = re.compile(rb'"id":\s*"(resp_[^"]+)"')
RESPONSES_PATH = "/v1/responses"


class ResponseDirectory:
    """Which replica holds each stored response (most recent `capacity` of them)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._where: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()

    def remember(self, response_id: str, model: str, replica_url: str) -> None:
        self._where[response_id] = (model, replica_url)
        self._where.move_to_end(response_id)
        while len(self._where) > self.capacity:
            self._where.popitem(last=False)

    def find(self, response_id: str) -> tuple[str, str] | None:
        return self._where.get(response_id)


class Proxy:
    def __init__(
        self,
        dispatcher: Dispatcher,
        router: Router,
        metrics: GatewayMetrics,
        spec: GatewaySpec,
        traffic: TrafficDirector | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.router = router
        self.metrics = metrics
        self.spec = spec
        self.traffic = traffic
        self.responses = ResponseDirectory()

    async def forward(self, scope: Scope, receive: Receive, api: EngineApi) -> Response:
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self.spec.request_timeout_s
        body = parse_body(await read_body(receive))
        # A public traffic name (gateway/traffic.py) picks its model by the canary split.
        assignment = self.traffic.assign(body, scope["headers"]) if self.traffic is not None else None
        if assignment is None:
            route = self.router.resolve(body["model"])
            return await self._forward(
                scope, receive, api, body=body, route=route, started=started, deadline=deadline, tap=None
            )
        tap = assignment.tap(request_state(scope), started)
        try:
            return await self._forward(
                scope, receive, api, body=body, route=assignment.route, started=started, deadline=deadline, tap=tap
            )
        except BaseException as exc:
            tap.failed(exc)
            raise

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        api: EngineApi,
        *,
        body: dict[str, Any],
        route: ModelRoute,
        started: float,
        deadline: float,
        tap: TrafficTap | None,
    ) -> Response:
        state = request_state(scope)
        state["model"] = route.name
        shaped = shape_request(api, body, route.spec)
        call = Call(
            api.path,
            json.dumps(shaped.body).encode(),
            route_label=api.path,
            request_id=state.get("request_id"),
            weight=shaped.weight,
            hints=routing_hints(route.spec.routing, api.kind, shaped.body, scope["headers"]),
        )
        metrics = self.metrics.model(route.name)
        slot = await unless_disconnected(receive, self.dispatcher.admit(route, weight=call.weight))
        if tap is not None:
            tap.admitted(api, body, stream=shaped.stream)  # a mirror copy may start, never before admission
        metrics.overhead.observe(time.perf_counter() - started)
        if not shaped.stream:
            exchange, content = await self._complete(route, call, slot, receive, deadline)
            if exchange.status == 200:
                counted = metrics.count_usage(_json_field(content, "usage"))
                if counted is not None:
                    state["usage_prompt_tokens"], state["usage_completion_tokens"] = counted
                if api.kind == "responses":
                    self._remember_response(content, route, exchange)
            metrics.latency.observe(time.perf_counter() - started)
            if tap is not None:
                tap.completed(exchange.status, content)
            return Response(content, exchange.status, headers=exchange.response.headers)
        exchange = await unless_disconnected(
            receive, self.dispatcher.open(route, call, slot=slot, first_byte_timeout_s=self.spec.first_byte_timeout_s)
        )
        if exchange.status != 200:
            response = await self._buffered(exchange)
            if tap is not None:
                tap.completed(exchange.status, bytes(response.body))
            return response
        relay = SseRelay(
            exchange,
            metrics=metrics,
            deadline=deadline,
            started=started,
            client_wants_usage=shaped.client_wants_usage,
            state=state,
            done_marker=api.done_marker,
            on_first_chunk=(lambda chunk: self._remember_response(chunk, route, exchange))
            if api.kind == "responses"
            else None,
            observer=tap,
        )
        return EventStreamResponse(relay)

    async def forward_object(self, scope: Scope, receive: Receive, response_id: str, suffix: str) -> Response:
        """`GET /v1/responses/{id}` (suffix "") or `POST /v1/responses/{id}/cancel` (suffix "/cancel")."""
        deadline = asyncio.get_running_loop().time() + self.spec.request_timeout_s
        state = request_state(scope)
        query = scope.get("query_string", b"").decode("latin-1")
        path = f"{RESPONSES_PATH}/{response_id}{suffix}" + (f"?{query}" if query else "")
        label = RESPONSES_PATH + "/{response_id}" + suffix
        method = scope["method"]
        known = self.responses.find(response_id)
        if known is not None:
            candidates = [(self.router.resolve(known[0]), known[1])]
        else:
            candidates = [(route, replica.url) for route in self.router.routes for replica in route.replicas]
        for route, url in candidates:
            state["model"] = route.name
            call = Call(
                path, None, method=method, route_label=label, request_id=state.get("request_id"), replica_url=url
            )
            slot = await unless_disconnected(receive, self.dispatcher.admit(route))
            exchange = await unless_disconnected(receive, self.dispatcher.open(route, call, slot=slot))
            if exchange.status == 404 and known is None:
                exchange.close()
                continue
            if exchange.response.headers.get("content-type", "").startswith("text/event-stream"):
                relay = SseRelay(
                    exchange,
                    metrics=self.metrics.model(route.name),
                    deadline=deadline,
                    started=time.perf_counter(),
                    client_wants_usage=True,
                    state=state,
                    done_marker=False,
                )
                return EventStreamResponse(relay)
            return await unless_disconnected(receive, self._buffered(exchange))
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")

    async def _complete(
        self, route: ModelRoute, call: Call, slot: Any, receive: Receive, deadline: float
    ) -> tuple[Exchange, bytes]:
        """Send and read the whole answer under the request's deadline, unless the client leaves."""
        exchange: Exchange | None = None
        status: int | None = None

        async def send_and_read() -> bytes:
            nonlocal exchange
            exchange = await self.dispatcher.open(route, call, slot=slot)
            return await exchange.read()

        try:
            async with asyncio.timeout_at(deadline):
                content = await unless_disconnected(receive, send_and_read())
        except TimeoutError as exc:
            status = 504
            raise UpstreamTimeout(f"Engine '{route.name}' did not answer in time.") from exc
        except ClientDisconnected:
            status = CLIENT_CLOSED_REQUEST
            raise
        except GatewayError as exc:
            status = exc.status_code
            raise
        finally:
            if exchange is not None:
                exchange.close(status)
            else:
                slot.release()  # never reached an engine (open releases it too; release is idempotent)
        assert exchange is not None
        return exchange, content

    @staticmethod
    async def _buffered(exchange: Exchange) -> Response:
        """An engine answer passed through whole (its errors, or a non-streamed object)."""
        try:
            content = await exchange.read()
        finally:
            exchange.close()
        return Response(content, exchange.status, headers=exchange.response.headers)

    def _remember_response(self, content: bytes, route: ModelRoute, exchange: Exchange) -> None:
        match = _RESPONSE_ID.search(content)
        if match:
            self.responses.remember(match.group(1).decode(), route.name, exchange.replica.url)


async def read_body(receive: Receive) -> bytes:
    """The whole request body (its size is bounded by the request guard in front)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _json_field(content: bytes, key: str) -> Any:
    try:
        value = json.loads(content)
    except ValueError:
        return None
    return value.get(key) if isinstance(value, dict) else None
