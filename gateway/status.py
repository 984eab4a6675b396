"""What the gateway knows about its engines: `/engines` and `/v1/models` bodies.

reporter = StatusReporter(client, router, supervisor)
rows = await reporter.engines()      # one row per replica, health probed live
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from gateway.health import probe
from gateway.routing import ModelRoute, Replica, Router
from gateway.supervisor import EngineSupervisor


class StatusReporter:
    def __init__(self, client: httpx.AsyncClient, router: Router, supervisor: EngineSupervisor | None) -> None:
        self.client = client
        self.router = router
        self.supervisor = supervisor

    async def engines(self) -> list[dict[str, Any]]:
        pairs = [(route, replica) for route in self.router.routes for replica in route.replicas]
        health = await asyncio.gather(*(probe(self.client, replica) for _, replica in pairs))
        return [self._row(route, replica, ok) for (route, replica), ok in zip(pairs, health, strict=True)]

    def _row(self, route: ModelRoute, replica: Replica, healthy: bool) -> dict[str, Any]:
        spec = route.spec
        local = self.supervisor.find(spec.name) if self.supervisor else None
        is_local = local is not None and local.spec.url == replica.url
        return {
            "name": spec.name,
            "aliases": list(spec.aliases),
            "model": spec.engine.model if spec.engine and is_local else None,
            "url": replica.url,
            "endpoint": replica.endpoint or replica.url,  # the configured URL it was discovered from
            "draining": replica.draining,
            "state": _state(replica, healthy, local.state.value if is_local and local else None),
            "healthy": healthy,
            "local": is_local,
            "pid": local.pid if is_local and local else None,
            "restarts": local.restarts if is_local and local else 0,
            "reason": local.reason if is_local and local else None,
            "kv_cache_tokens": local.kv.logged_tokens if is_local and local and local.kv else None,
            "kv_cache_tokens_planned": local.kv.predicted_tokens if is_local and local and local.kv else None,
            "in_flight": replica.in_flight,
            # The engine's own gauges as the `prefix` policy last read them (None: not read).
            "engine_waiting": replica.waiting,
            "engine_kv_usage": replica.kv_usage,
        }

    def models(self) -> list[dict[str, Any]]:
        return [
            {
                "id": route.name,
                "object": "model",
                "created": 0,
                "owned_by": "gateway",
                "aliases": list(route.spec.aliases),
                "root": route.spec.engine.model if route.spec.engine else route.name,
                "max_model_len": route.spec.engine.max_model_len if route.spec.engine else None,
                "reasoning_parser": route.spec.engine.reasoning_parser if route.spec.engine else None,
                "sampling_defaults": route.spec.sampling_defaults.as_request_fields(),
            }
            for route in self.router.routes
        ]


def _state(replica: Replica, healthy: bool, local_state: str | None) -> str:
    if replica.draining:
        return "draining"  # gone from discovery: finishing its requests
    if healthy:
        return "ready"
    return local_state or "unreachable"
