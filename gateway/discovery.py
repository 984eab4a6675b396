"""DNS discovery: every address an endpoint's host name resolves to is a replica.

    discovery = Discovery(router, on_change=resize_admission, metrics=metrics)   # resolver: the system's
    await discovery.refresh()                        # before serving: the first addresses
    task = asyncio.create_task(discovery.run())      # then every `routing.resolve_interval_s`

For models with `routing: {discovery: dns}`. A Kubernetes headless Service's name resolves to
the address of every ready pod, so each pod becomes a replica, with its own health checks,
in-flight count and place in the routing policy. Each lookup makes the addresses found the
routable replicas (`ModelRoute.set_replicas`): a new address gets requests at once; one that
disappeared gets no new request, finishes those in flight, then leaves the route (and /engines,
and its `gateway_engine_up` series). The gateway connects to the addresses themselves, so
nothing depends on the HTTP client's own DNS cache (aiohttp keeps answers for 300 s).

A lookup that fails or finds nothing keeps that endpoint's last addresses (and counts in
`gateway_discovery_failures`): a resolver hiccup must not drain a model, and addresses that are
really gone fail their health checks. The resolver is injectable, e.g. for tests:

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.2", "127.0.0.3"]
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

from gateway.metrics import GatewayMetrics
from gateway.periodic import every
from gateway.routing import ModelRoute, Replica, Router

Resolver = Callable[[str, int], Awaitable[list[str]]]
ReplicasChanged = Callable[[ModelRoute, list[Replica], list[Replica]], None]  # (route, joined, left)

LOOKUP_TIMEOUT_S = 5.0
logger = logging.getLogger("gateway.discovery")


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver (getaddrinfo: /etc/hosts, then DNS) gives for `host`, in order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def address_url(endpoint: str, address: str) -> str:
    """The endpoint URL with its host replaced by one address: http://r1:8101 -> http://10.0.0.7:8101."""
    parts = urlsplit(endpoint)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Discovery:
    def __init__(
        self,
        router: Router,
        *,
        metrics: GatewayMetrics,
        on_change: ReplicasChanged | None = None,
        resolver: Resolver = system_resolver,
        lookup_timeout_s: float = LOOKUP_TIMEOUT_S,
    ) -> None:
        self.routes = [route for route in router.routes if route.spec.routing.discovery == "dns"]
        self.metrics = metrics
        self.on_change = on_change
        self.resolver = resolver
        self.lookup_timeout_s = lookup_timeout_s

    async def refresh(self) -> None:
        """Look every endpoint up once and update the routes."""
        await asyncio.gather(*(self.refresh_route(route) for route in self.routes))

    async def refresh_route(self, route: ModelRoute) -> None:
        lookups = await asyncio.gather(*(self._lookup(route, endpoint) for endpoint in route.spec.urls))
        found = [pair for pairs in lookups for pair in pairs]
        joined, left = route.set_replicas(found)
        for replica in joined:
            logger.info("%s: replica %s joined (from %s)", route.name, replica.url, replica.endpoint)
        for replica in left:
            self.metrics.forget_replica(route.name, replica.url)
            logger.info("%s: replica %s left", route.name, replica.url)
        if self.on_change is not None and (joined or left):
            self.on_change(route, joined, left)

    async def _lookup(self, route: ModelRoute, endpoint: str) -> list[tuple[str, str]]:
        host = urlsplit(endpoint).hostname or ""
        if _is_address(host):
            return [(endpoint, endpoint)]
        port = urlsplit(endpoint).port or 80
        try:
            async with asyncio.timeout(self.lookup_timeout_s):
                addresses = await self.resolver(host, port)
        except (OSError, TimeoutError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if addresses:
                return [(address_url(endpoint, address), endpoint) for address in addresses]
            problem = "no address"
        self.metrics.discovery_failures.labels(route.name).inc()
        kept = [(r.url, endpoint) for r in route.replicas if r.endpoint == endpoint and not r.draining]
        logger.warning(
            "%s: looking up %s failed (%s); keeping %d known address(es)", route.name, host, problem, len(kept)
        )
        return kept

    async def run(self) -> None:
        """Refresh each route at its own interval, for ever (cancel the task to stop)."""
        await asyncio.gather(*(self._watch(route) for route in self.routes))

    async def _watch(self, route: ModelRoute) -> None:
        # The first round ran before serving (refresh), hence wait_first.
        await every(
            route.spec.routing.resolve_interval_s,
            lambda: self.refresh_route(route),
            what=f"{route.name}: discovery round",
            wait_first=True,
            log=logger,
        )
