"""Map a request's `model` (served name or alias) to a replica of that model.

    router = Router(config.models)
    route = router.resolve("deepseek-r1")       # -> ModelRoute for the served name
    choice = route.decide(hints=RoutingHints(session_key="user-42"))   # the model's policy decides
    choice.replica.url, choice.reason          # e.g. "http://10.0.0.7:8101", "sticky"
    with route.pick() as replica:               # the same, counted in flight for the block
        ... send to replica.url ...

A route's replicas are its configured URLs, or, with `routing.discovery: dns`, every address
its endpoints resolve to, kept current by gateway/discovery.py through `set_replicas`: new
addresses join, vanished ones drain (no new requests, in-flight ones finish) and leave once
idle. Which replica gets a request is the model's policy (gateway/policies.py); every policy
chooses among the same candidates: replicas that are not draining and not excluded (already
tried), the healthy ones if any is healthy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from gateway.config import ModelSpec
from gateway.errors import UnknownModel
from gateway.policies import Choice, Policy, make_policy
from gateway.routing_hints import NO_HINTS, RoutingHints


@dataclass(eq=False)  # identity: two replicas may share a URL only across routes
class Replica:
    url: str
    endpoint: str = ""  # the configured URL it was discovered from ("" when configured itself)
    in_flight: int = 0
    healthy: bool = True
    draining: bool = False  # gone from discovery: finishes its requests, gets no new ones
    removed: bool = False  # no longer part of its route (drained); late health results are dropped
    # The engine's own gauges (gateway/engine_load.py; `prefix` policy only), None when unknown.
    waiting: float | None = None  # requests queued in its scheduler
    kv_usage: float | None = None  # share of its KV cache blocks in use, 0-1

    @contextlib.contextmanager
    def busy(self) -> Iterator[Replica]:
        """Count a request in flight on this replica for the duration of the block."""
        self.in_flight += 1
        try:
            yield self
        finally:
            self.in_flight -= 1


@dataclass
class ModelRoute:
    spec: ModelSpec
    replicas: list[Replica] = field(default_factory=list)
    policy: Policy = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.policy = make_policy(self.spec)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def routable(self) -> list[Replica]:
        """Replicas that may get new requests (healthy or not): every one but the draining."""
        return [r for r in self.replicas if not r.draining]

    def decide(self, exclude: set[str] | None = None, hints: RoutingHints = NO_HINTS) -> Choice | None:
        """The policy's choice among the healthy routable replicas not in `exclude`; among the
        unhealthy ones if none is healthy (their health may be stale); None if none is left."""
        members = self.routable
        pool = [r for r in members if not exclude or r.url not in exclude]
        candidates = [r for r in pool if r.healthy] or pool
        if not candidates:
            return None
        return self.policy.choose(candidates, members, hints)

    def choose(self, exclude: set[str] | None = None, hints: RoutingHints = NO_HINTS) -> Replica | None:
        choice = self.decide(exclude, hints)
        return choice.replica if choice else None

    def has_candidate(self, exclude: set[str]) -> bool:
        """Whether a routable replica outside `exclude` exists (without asking the policy)."""
        return any(r.url not in exclude for r in self.routable)

    def pick(self, hints: RoutingHints = NO_HINTS) -> contextlib.AbstractContextManager[Replica]:
        replica = self.choose(hints=hints)
        assert replica is not None, "pick() needs at least one replica"
        return replica.busy()

    def set_replicas(self, found: list[tuple[str, str]]) -> tuple[list[Replica], list[Replica]]:
        """Make the (url, endpoint) pairs found by discovery the routable replicas: new ones
        join, missing ones drain, drained ones with nothing in flight leave (and are forgotten
        by the policy). Returns (joined, left)."""
        wanted = dict(found)
        known = {r.url: r for r in self.replicas}
        joined = [Replica(url, endpoint) for url, endpoint in wanted.items() if url not in known]
        for replica in self.replicas:
            replica.draining = replica.url not in wanted
        left = [r for r in self.replicas if r.draining and r.in_flight <= 0]
        for replica in left:
            replica.removed = True
            self.policy.forget(replica.url)
        self.replicas = [r for r in self.replicas if not r.removed] + joined
        return joined, left


class Router:
    def __init__(self, models: list[ModelSpec]) -> None:
        # With DNS discovery the replicas are unknown until the first lookup (gateway/discovery.py).
        self.routes = [
            ModelRoute(m, [] if m.routing.discovery == "dns" else [Replica(url) for url in m.urls]) for m in models
        ]
        self._by_name = {name: route for route in self.routes for name in route.spec.names}

    def resolve(self, model: str) -> ModelRoute:
        route = self._by_name.get(model)
        if route is None:
            raise UnknownModel(model, self.available())
        return route

    def available(self) -> list[str]:
        return list(self._by_name)
