"""Prometheus metrics of one gateway app, in its own registry (no process-global state).

metrics = GatewayMetrics()
metrics.requests.labels(model="r1-tiny", route="/v1/chat/completions", status="200").inc()
body, content_type = metrics.render()
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests", "Requests by model, route and status", ["model", "route", "status"], registry=r
        )
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds",
            "Time to first token (streaming)",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "gateway_inter_token_latency_seconds",
            "Time between streamed chunks",
            ["model"],
            buckets=_ITL_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "gateway_request_latency_seconds", "End-to-end latency", ["model"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.prompt_tokens = Counter("gateway_prompt_tokens", "Prompt tokens (engine usage)", ["model"], registry=r)
        self.completion_tokens = Counter(
            "gateway_completion_tokens", "Completion tokens (engine usage)", ["model"], registry=r
        )
        self.in_flight = Gauge("gateway_requests_in_flight", "Requests being served", ["model"], registry=r)
        self.queued = Gauge("gateway_requests_queued", "Requests waiting for admission", ["model"], registry=r)
        self.queue_wait = Histogram(
            "gateway_queue_wait_seconds",
            "Time spent waiting for admission",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "gateway_rejected", "Requests refused by admission control (429)", ["model"], registry=r
        )
        self.overhead = Histogram(
            "gateway_added_latency_seconds",
            "Time the gateway spends before forwarding a request upstream",
            ["model"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.engine_up = Gauge(
            "gateway_engine_up", "1 if the replica passed its last health check", ["model", "url"], registry=r
        )
        self.engine_restarts = Gauge("gateway_engine_restarts", "Restarts of a local engine", ["model"], registry=r)
        self.retries = Counter("gateway_upstream_retries", "Requests retried on another replica", ["model"], registry=r)

        self.model = cache(self._model)  # one set of labelled children per model, looked up once

    def _model(self, name: str) -> ModelMetrics:
        return ModelMetrics(
            ttft=self.ttft.labels(name),
            itl=self.itl.labels(name),
            latency=self.latency.labels(name),
            prompt_tokens=self.prompt_tokens.labels(name),
            completion_tokens=self.completion_tokens.labels(name),
            queue_wait=self.queue_wait.labels(name),
            rejected=self.rejected.labels(name),
            overhead=self.overhead.labels(name),
            retries=self.retries.labels(name),
            _requests=self.requests,
            _name=name,
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@dataclass
class ModelMetrics:
    """The per-model children of the gateway's metrics: `.labels()` costs a lock and a
    dict lookup, which adds up on the data path (several calls per streamed token)."""

    ttft: Histogram
    itl: Histogram
    latency: Histogram
    prompt_tokens: Counter
    completion_tokens: Counter
    queue_wait: Histogram
    rejected: Counter
    overhead: Histogram
    retries: Counter
    _requests: Counter
    _name: str

    def __post_init__(self) -> None:
        self._by_route_status: dict[tuple[str, int], Counter] = {}

    def request(self, route: str, status: int) -> None:
        counter = self._by_route_status.get((route, status))
        if counter is None:
            counter = self._by_route_status[(route, status)] = self._requests.labels(self._name, route, str(status))
        counter.inc()
