"""The one path from the gateway to an engine: admit, choose a replica, send, retry once.

    dispatcher = Dispatcher(upstream, gates, metrics)
    exchange = await dispatcher.open(route, Call(path="/v1/chat/completions", body=payload, route_label=...))
    try:
        content = await exchange.read()            # or: async for chunk in exchange.response.chunks()
    finally:
        exchange.close(status)                      # idempotent; releases everything it holds

Every request that reaches an engine goes through here, whichever gateway route it came from
(the OpenAI data plane, `/v1/compare`, a mirrored copy): the same admission gate per model
(a request for `n` sequences weighs `n`), the same replica choice, the same request id
forwarded, the same retry on another replica when the first could not be reached (a failed
connect, or a pooled connection the engine had closed: nothing was sent to a live engine, so
the retry cannot duplicate work), and the same per-model accounting in /metrics.

An `Exchange` owns what the request holds (the admission slot, the replica's in-flight count,
the upstream connection) and gives all of it back in `close()`, which may be called from any
path, any number of times: the response that relays it calls it when it is done or cancelled,
whether or not it ever started sending.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.admission import AdmissionGate, Slot
from gateway.errors import EngineUnavailable, GatewayError, UpstreamTimeout
from gateway.metrics import GatewayMetrics, ModelMetrics
from gateway.routing import ModelRoute, Replica
from gateway.routing_hints import NO_HINTS, RoutingHints
from gateway.upstream import Upstream, UpstreamResponse


@dataclass(frozen=True)
class Call:
    """What to send: method and engine path, the body, and how the request is accounted."""

    path: str
    body: bytes | None
    method: str = "POST"
    route_label: str = ""  # the gateway route it came from (for metrics); default: `path`
    request_id: str | None = None
    weight: int = 1  # sequences it asks for (n, best_of): what admission counts
    replica_url: str | None = None  # pinned to one replica (e.g. a stored response lives there)
    hints: RoutingHints = NO_HINTS  # what the model's routing policy keys on (session, prompt text)

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Request-Id": self.request_id} if self.request_id else {}


@dataclass
class Exchange:
    """One request in flight to one replica, and everything it holds until `close()`."""

    route: ModelRoute
    replica: Replica
    response: UpstreamResponse
    metrics: ModelMetrics
    route_label: str
    slot: Slot | None
    _closed: bool = field(default=False, repr=False)

    @property
    def status(self) -> int:
        return self.response.status

    async def read(self) -> bytes:
        return await self.response.read()

    def close(self, status: int | None = None) -> None:
        """Release the slot and the replica, drop the upstream connection unless it was read to
        the end (vLLM aborts a request whose connection closes), and count the outcome."""
        if self._closed:
            return
        self._closed = True
        self.replica.in_flight -= 1
        if self.slot is not None:
            self.slot.release()
        self.response.close_now()
        self.metrics.engine_request(self.route_label, self.status if status is None else status)


class Dispatcher:
    def __init__(self, upstream: Upstream, gates: dict[str, AdmissionGate], metrics: GatewayMetrics) -> None:
        self.upstream = upstream
        self.gates = gates
        self.metrics = metrics

    async def admit(self, route: ModelRoute, *, weight: int = 1) -> Slot:
        """A slot of the model's admission gate; Overloaded (429) when full or after the wait limit."""
        metrics = self.metrics.model(route.name)
        try:
            slot = await self.gates[route.name].acquire(weight=weight)
        except GatewayError:
            metrics.rejected.inc()
            raise
        metrics.queue_wait.observe(slot.waited_s)
        return slot

    async def open(
        self, route: ModelRoute, call: Call, *, slot: Slot | None = None, first_byte_timeout_s: float | None = None
    ) -> Exchange:
        """Admit (unless `slot` is given), send, and return once the engine's headers are in.
        On any failure everything taken is given back before the error propagates."""
        if slot is None:
            slot = await self.admit(route, weight=call.weight)
        try:
            async with asyncio.timeout(first_byte_timeout_s):
                return await self._send(route, call, slot)
        except TimeoutError as exc:
            slot.release()
            self.metrics.model(route.name).engine_request(call.route_label or call.path, 504)
            raise UpstreamTimeout(f"Engine '{route.name}' did not start answering in time.") from exc
        except BaseException:
            slot.release()
            raise

    async def _send(self, route: ModelRoute, call: Call, slot: Slot) -> Exchange:
        metrics = self.metrics.model(route.name)
        label = call.route_label or call.path
        tried: set[str] = set()
        while True:
            replica = self._choose(route, call, tried, metrics)
            tried.add(replica.url)
            replica.in_flight += 1
            try:
                response = await self.upstream.request(
                    call.method, f"{replica.url}{call.path}", call.body, call.headers, engine=route.name
                )
            except EngineUnavailable:
                replica.in_flight -= 1
                replica.healthy = False  # the health checker will notice when it is back
                if call.replica_url or len(tried) >= 2 or not route.has_candidate(exclude=tried):
                    metrics.engine_request(label, 503)
                    raise
                metrics.retries.inc()
                continue
            except BaseException:
                replica.in_flight -= 1
                raise
            return Exchange(route, replica, response, metrics, label, slot)

    @staticmethod
    def _choose(route: ModelRoute, call: Call, tried: set[str], metrics: ModelMetrics) -> Replica:
        if call.replica_url is not None:
            replica = next((r for r in route.replicas if r.url == call.replica_url), None)
            if replica is None:
                raise EngineUnavailable(f"The replica of '{route.name}' that holds this object is gone.", retry_after=5)
            return replica
        choice = route.decide(exclude=tried, hints=call.hints)
        if choice is None or (tried and not choice.replica.healthy):
            raise EngineUnavailable(
                f"No replica of '{route.name}' is available right now; it is restarting or down.", retry_after=5
            )
        metrics.routed(choice.reason)
        return choice.replica
