"""What each engine itself reports about its load, for the `prefix` policy.

    monitor = EngineLoadMonitor(client, router)      # models with routing.policy: prefix only
    await monitor.check_once()                       # every replica's queue and KV cache use
    task = asyncio.create_task(monitor.run())        # then every routing.engine_load_interval_s

The gateway counts the requests it has in flight on each replica, but not what they hold: an
engine whose KV cache is full makes new requests wait to be scheduled however few it runs. In
the routing benchmark (64-block caches, README "Routing and discovery") the cache-aware policy
filled its busiest replica's cache to 92-95% and requests waited up to a minute there, while
in-flight counts looked balanced. So the `prefix` policy also reads each engine's own gauges,
as llm-d's endpoint picker does: `vllm:num_requests_waiting` (requests the scheduler could not
place) and `vllm:kv_cache_usage_perc` (the share of KV blocks in use, 0-1), from the engine's
`/metrics`, on the replica (`Replica.waiting`, `Replica.kv_usage`); None when unknown (not read
yet, or the last read failed), which the policy treats as "no signal".
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

import httpx

from gateway.periodic import every
from gateway.routing import ModelRoute, Replica, Router

SCRAPE_TIMEOUT_S = 2.0
_SAMPLE = re.compile(rb"^(vllm:num_requests_waiting|vllm:kv_cache_usage_perc)(?:\{[^}]*\})? (\S+)$", re.MULTILINE)
logger = logging.getLogger("gateway.engine_load")


@dataclass(frozen=True)
class EngineLoad:
    waiting: float  # requests queued in the engine's scheduler (summed over its engine cores)
    kv_usage: float  # share of KV cache blocks in use (the fullest engine core), 0-1


def parse_engine_load(text: bytes) -> EngineLoad | None:
    """The two gauges from a vLLM /metrics page; None if it has neither."""
    waiting: list[float] = []
    usage: list[float] = []
    for name, value in _SAMPLE.findall(text):
        try:
            number = float(value)
        except ValueError:
            continue
        (waiting if name == b"vllm:num_requests_waiting" else usage).append(number)
    if not waiting and not usage:
        return None
    return EngineLoad(waiting=sum(waiting), kv_usage=max(usage, default=0.0))


async def read_engine_load(client: httpx.AsyncClient, replica: Replica) -> EngineLoad | None:
    """One read of the replica's gauges, stored on it (None on any failure)."""
    try:
        response = await client.get(f"{replica.url}/metrics", timeout=SCRAPE_TIMEOUT_S)
        load = parse_engine_load(response.content) if response.status_code == 200 else None
    except httpx.HTTPError:
        load = None
    replica.waiting = load.waiting if load is not None else None
    replica.kv_usage = load.kv_usage if load is not None else None
    return load


class EngineLoadMonitor:
    def __init__(self, client: httpx.AsyncClient, router: Router) -> None:
        self.client = client
        self.routes: list[ModelRoute] = [
            r for r in router.routes if r.spec.routing.policy == "prefix" and r.spec.routing.engine_load
        ]
        intervals = [r.spec.routing.engine_load_interval_s for r in self.routes]
        self.interval_s = min(intervals, default=1.0)

    async def check_once(self) -> None:
        replicas = [replica for route in self.routes for replica in route.replicas if not replica.removed]
        await asyncio.gather(*(read_engine_load(self.client, replica) for replica in replicas))

    async def run(self) -> None:
        if not self.routes:
            return
        await every(self.interval_s, self.check_once, what="engine load round", log=logger)
