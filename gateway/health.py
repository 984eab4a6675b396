"""Background health checks of every replica, and restarts of local engines that died.

    monitor = HealthMonitor(client, router, metrics, supervisor, spec)
    task = asyncio.create_task(monitor.run())      # in the app's lifespan

A replica that fails its check stops receiving requests until it passes again; a local
engine that exited is restarted by the supervisor with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from gateway.config import GatewaySpec
from gateway.metrics import GatewayMetrics
from gateway.routing import Replica, Router
from gateway.supervisor import EngineSupervisor

PROBE_TIMEOUT_S = 2.0


async def probe(client: httpx.AsyncClient, replica: Replica) -> bool:
    """One health check; updates the replica's flag and returns it."""
    try:
        response = await client.get(f"{replica.url}/health", timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError:
        replica.healthy = False
    else:
        replica.healthy = response.status_code == 200
    return replica.healthy


class HealthMonitor:
    def __init__(
        self,
        client: httpx.AsyncClient,
        router: Router,
        metrics: GatewayMetrics,
        supervisor: EngineSupervisor | None,
        spec: GatewaySpec,
    ) -> None:
        self.client = client
        self.router = router
        self.metrics = metrics
        self.supervisor = supervisor
        self.spec = spec

    async def check_once(self) -> None:
        pairs = [(route, replica) for route in self.router.routes for replica in route.replicas]
        results = await asyncio.gather(*(probe(self.client, replica) for _, replica in pairs))
        for (route, replica), healthy in zip(pairs, results, strict=True):
            self.metrics.engine_up.labels(route.name, replica.url).set(1 if healthy else 0)
            if healthy and self.supervisor is not None:
                self.supervisor.mark_healthy(route.name, replica.url)
        if self.supervisor is not None:
            self.supervisor.poll()
            if self.spec.restart_engines:
                self.supervisor.tend(max_backoff_s=self.spec.max_restart_backoff_s)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a monitoring hiccup must never stop monitoring
                await self.check_once()
            await asyncio.sleep(self.spec.health_interval_s)
