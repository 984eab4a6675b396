"""Background health checks of every replica, for routing and for `/ready`.

    monitor = HealthMonitor(client, router, metrics, spec)
    await monitor.check_once()                      # before serving
    task = asyncio.create_task(monitor.run())      # in the app's lifespan
    monitor.ready                                  # cached: every replica passed its last check

A replica that fails its check stops receiving requests until it passes again. Restarting
local engines that die or hang is the supervisor's job (its own thread: gateway/supervisor.py).
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from gateway.config import GatewaySpec
from gateway.metrics import GatewayMetrics
from gateway.periodic import every
from gateway.routing import Replica, Router

PROBE_TIMEOUT_S = 2.0
logger = logging.getLogger("gateway.health")


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
    def __init__(self, client: httpx.AsyncClient, router: Router, metrics: GatewayMetrics, spec: GatewaySpec) -> None:
        self.client = client
        self.router = router
        self.metrics = metrics
        self.spec = spec

    @property
    def ready(self) -> bool:
        """Every model has a replica taking requests and every such replica passed its last check
        (no probe: the cached result). Draining replicas (gone from discovery) do not count."""
        return all(route.routable and all(r.healthy for r in route.routable) for route in self.router.routes)

    async def check_once(self) -> None:
        pairs = [(route, replica) for route in self.router.routes for replica in route.replicas]
        results = await asyncio.gather(*(probe(self.client, replica) for _, replica in pairs))
        for (route, replica), healthy in zip(pairs, results, strict=True):
            if replica.removed:  # left the route (discovery) while it was probed: no series for it
                continue
            self.metrics.engine_up.labels(route.name, replica.url).set(1 if healthy else 0)

    async def run(self) -> None:
        await every(self.spec.health_interval_s, self.check_once, what="health check round", log=logger)
