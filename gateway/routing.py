"""Map a request's `model` (served name or alias) to a replica of that model.

router = Router(config.models)
route = router.resolve("deepseek-r1")       # -> ModelRoute for the served name
with route.pick() as replica:                 # fewest requests in flight, healthy first
    ... send to replica.url ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from gateway.config import ModelSpec
from gateway.errors import UnknownModel


@dataclass
class Replica:
    url: str
    in_flight: int = 0
    healthy: bool = True

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
    _turn: int = field(default=0, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def choose(self, exclude: set[str] | None = None) -> Replica | None:
        """The healthy replica with the fewest requests in flight; an unhealthy one if no
        replica is healthy (its health may be stale); None if every replica is excluded."""
        pool = [r for r in self.replicas if not exclude or r.url not in exclude]
        candidates = [r for r in pool if r.healthy] or pool
        if not candidates:
            return None
        # Ties go round-robin, so sequential traffic is spread over idle replicas too.
        self._turn = (self._turn + 1) % len(candidates)
        rotated = candidates[self._turn :] + candidates[: self._turn]
        return min(rotated, key=lambda r: r.in_flight)

    def pick(self) -> contextlib.AbstractContextManager[Replica]:
        replica = self.choose()
        assert replica is not None, "a route always has at least one replica"
        return replica.busy()


class Router:
    def __init__(self, models: list[ModelSpec]) -> None:
        self.routes = [ModelRoute(m, [Replica(url) for url in m.urls]) for m in models]
        self._by_name = {name: route for route in self.routes for name in route.spec.names}

    def resolve(self, model: str) -> ModelRoute:
        route = self._by_name.get(model)
        if route is None:
            raise UnknownModel(model, self.available())
        return route

    def available(self) -> list[str]:
        return list(self._by_name)
