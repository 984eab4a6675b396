"""Prometheus metrics of one gateway app, in its own registry (no process-global state).

    metrics = GatewayMetrics()
    metrics.count_request(model="r1-tiny", route="/v1/chat/completions", status=200)   # once per HTTP request
    m = metrics.model("r1-tiny")          # per-model children, looked up once
    m.engine_request("/v1/compare", 200)  # once per request sent to an engine (data plane, compare, mirror)
    m.count_usage({"prompt_tokens": 5, "completion_tokens": 3})
    arm = metrics.arm("assistant", "r1-tiny", "candidate")   # per arm of a public traffic name, bound once
    arm.ttft.observe(0.12)
    body, content_type = metrics.render()

Two request counters: `gateway_requests` counts what clients asked of the gateway (every known
route, errors included, counted once by the request-log middleware); `gateway_engine_requests`
counts what the gateway asked of the engines, per model, whichever route it came from (a
comparison of two models is one of the former and two of the latter).
"""

from __future__ import annotations

import contextlib
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
        self.engine_failed = Gauge(
            "gateway_engine_failed",
            "1 once a local engine hit its restart cap and is no longer restarted",
            ["model"],
            registry=r,
        )
        self.retries = Counter("gateway_upstream_retries", "Requests retried on another replica", ["model"], registry=r)
        self.resent = Counter(
            "gateway_upstream_resent",
            "Requests sent once more on a new connection after a pooled one closed unanswered (gateway/upstream.py)",
            ["model"],
            registry=r,
        )
        self.routing_decisions = Counter(
            "gateway_routing_decisions",
            "Replica choices by the model's routing policy, by reason (gateway/policies.py)",
            ["model", "reason"],
            registry=r,
        )
        self.replicas = Gauge(
            "gateway_replicas", "Replicas taking new requests (discovered ones included)", ["model"], registry=r
        )
        self.discovery_failures = Counter(
            "gateway_discovery_failures",
            "DNS lookups of a model's endpoints that failed or found nothing (the last addresses are kept)",
            ["model"],
            registry=r,
        )
        self.engine_requests = Counter(
            "gateway_engine_requests",
            "Requests sent to an engine, by model, the gateway route they came from and their outcome",
            ["model", "route", "status"],
            registry=r,
        )
        # Public traffic names (gateway/traffic.py): per arm of the canary, and the mirror.
        arm_labels = ["name", "model", "arm"]
        self.traffic_requests = Counter(
            "gateway_traffic_requests",
            "Requests to a public traffic name, by the model and arm that answered",
            arm_labels,
            registry=r,
        )
        self.traffic_errors = Counter(
            "gateway_traffic_errors",
            "Of those, the ones that ended in an error (status != 200)",
            arm_labels,
            registry=r,
        )
        self.traffic_ttft = Histogram(
            "gateway_traffic_time_to_first_token_seconds",
            "Time to first token (streaming), per arm",
            arm_labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.traffic_itl = Histogram(
            "gateway_traffic_inter_token_latency_seconds",
            "Time between streamed chunks, per arm",
            arm_labels,
            buckets=_ITL_BUCKETS,
            registry=r,
        )
        self.traffic_tokens = Counter(
            "gateway_traffic_tokens",
            "Tokens (engine usage) per arm; kind is prompt or completion",
            [*arm_labels, "kind"],
            registry=r,
        )
        self.mirror_copies = Counter(
            "gateway_mirror_copies",
            "Mirror copies by outcome: sent, saved (a pair recorded), failed, cancelled (the client left),"
            " dropped_candidate_full, dropped_mirror_limit",
            ["name", "model", "outcome"],
            registry=r,
        )
        self._request_children: dict[tuple[str, str, int], Counter] = {}

        self.model = cache(self._model)  # one set of labelled children per model, looked up once
        self.arm = cache(self._arm)  # and per (public name, model, arm)

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
            _engine_requests=self.engine_requests,
            _routing_decisions=self.routing_decisions,
            _name=name,
        )

    def _arm(self, name: str, model: str, arm: str) -> ArmMetrics:
        labels = (name, model, arm)
        return ArmMetrics(
            requests=self.traffic_requests.labels(*labels),
            errors=self.traffic_errors.labels(*labels),
            ttft=self.traffic_ttft.labels(*labels),
            itl=self.traffic_itl.labels(*labels),
            prompt_tokens=self.traffic_tokens.labels(*labels, "prompt"),
            completion_tokens=self.traffic_tokens.labels(*labels, "completion"),
        )

    def forget_replica(self, model: str, url: str) -> None:
        """Drop the series of a replica that left (discovery), so /metrics shows the current set."""
        with contextlib.suppress(KeyError):
            self.engine_up.remove(model, url)

    def count_request(self, *, model: str, route: str, status: int) -> None:
        key = (model, route, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(model, route, str(status))
        counter.inc()

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
    _engine_requests: Counter
    _routing_decisions: Counter
    _name: str

    def __post_init__(self) -> None:
        self._by_route_status: dict[tuple[str, int], Counter] = {}
        self._by_reason: dict[str, Counter] = {}

    def routed(self, reason: str) -> None:
        """The routing policy chose a replica for this reason (gateway/policies.py)."""
        counter = self._by_reason.get(reason)
        if counter is None:
            counter = self._by_reason[reason] = self._routing_decisions.labels(self._name, reason)
        counter.inc()

    def engine_request(self, route: str, status: int) -> None:
        """One request to an engine ended with `status` (499: the client left; 5xx: it failed)."""
        counter = self._by_route_status.get((route, status))
        if counter is None:
            counter = self._by_route_status[(route, status)] = self._engine_requests.labels(
                self._name, route, str(status)
            )
        counter.inc()

    def count_usage(self, usage: object) -> tuple[int, int] | None:
        """Record an engine's `usage` object (OpenAI's prompt/completion_tokens or the Responses
        and Anthropic APIs' input/output_tokens); returns (prompt, completion) when there was one."""
        if not isinstance(usage, dict):
            return None
        prompt = usage.get("prompt_tokens", usage.get("input_tokens")) or 0
        completion = usage.get("completion_tokens", usage.get("output_tokens")) or 0
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return None
        self.prompt_tokens.inc(prompt)
        self.completion_tokens.inc(completion)
        return prompt, completion


@dataclass(frozen=True)
class ArmMetrics:
    """The children of one arm of a public traffic name, bound once (see ModelMetrics)."""

    requests: Counter
    errors: Counter
    ttft: Histogram
    itl: Histogram
    prompt_tokens: Counter
    completion_tokens: Counter
