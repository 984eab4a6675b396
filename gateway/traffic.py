"""Public traffic names: one name over two models, a sticky canary split, and a shadow mirror.

    director = TrafficDirector(config.traffic, router, metrics, mirror=mirror)
    assignment = director.assign(body, scope["headers"])   # None unless body["model"] is a traffic name
    tap = assignment.tap(state, started)     # per-arm metrics for this request; observes its answer
    tap.admitted(api, body)                  # after the primary's admission: maybe start a mirror copy
    ...                                      # then exactly one of: tap.completed(status, content),
                                             # tap.on_chunk/on_close (streamed, via SseRelay), tap.failed(exc)
    settings = director.prepare("assistant", {"mirror_fraction": 0.2, "split": {"qwen": 80, "r1": 20}})
    director.apply("assistant", settings)     # after storing them (the API does both)

Clients send `model: assistant`. The canary (gateway/canary.py) picks the arm that answers:
the primary, or the candidate for its share of the users, sticky per OpenAI `user` field or
`X-Session-Id` header. A `mirror_fraction` of chat requests is also sent, in the background, to
the model that did not answer (gateway/mirror.py), and both answers become a live pair for
review. The request itself is the client's, unchanged, whatever the mirror does.

Settings changed at runtime are stored in the database (gateway/traffic_store.py); every
gateway replica reads them back every `poll_s` (`run()`), so a split moved through one replica
applies on all of them, and survives a restart, until reset to the config file's values.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.canary import Arm, CanarySplit, sticky_key
from gateway.config import TrafficSpec, resolve_split
from gateway.errors import (
    CLIENT_CLOSED_REQUEST,
    ClientDisconnected,
    ConfigError,
    GatewayError,
    InvalidRequest,
    NotFound,
)
from gateway.metrics import ArmMetrics, GatewayMetrics
from gateway.periodic import every
from gateway.request_policy import EngineApi
from gateway.routing import ModelRoute, Router

if TYPE_CHECKING:
    from gateway.mirror import Mirror
    from gateway.traffic_store import TrafficStore

logger = logging.getLogger("gateway.traffic")
ARMS: tuple[Arm, Arm] = ("primary", "candidate")
# sent: copies that went to the other model; saved: pairs recorded; failed: the copy got an
# error; cancelled: the client left, so the copy was stopped; skipped: not mirrorable (n > 1, or
# a request the other model's limits refuse); dropped_*: no room, never queued.
MIRROR_OUTCOMES = ("sent", "saved", "failed", "cancelled", "skipped", "dropped_candidate_full", "dropped_mirror_limit")


@dataclass(frozen=True)
class TrafficSettings:
    """What operators move at runtime. `split` is keyed by served name; None sends all to the primary."""

    mirror_fraction: float
    split: dict[str, float] | None
    updated_at: float | None = None  # None: the config file's values

    def to_json(self) -> dict[str, Any]:
        return {"mirror_fraction": self.mirror_fraction, "split": self.split}


class TrafficRoute:
    """One public name: its two models, current settings, counters and per-arm metrics."""

    def __init__(self, spec: TrafficSpec, router: Router, metrics: GatewayMetrics) -> None:
        self.spec = spec
        self.name = spec.name
        try:
            self.models: dict[Arm, ModelRoute] = {"primary": router.resolve(spec.primary)}
            self.models["candidate"] = router.resolve(spec.candidate)
        except GatewayError as exc:  # --gateway-only with engines whose names the config does not know
            raise ConfigError(f"traffic '{spec.name}': {exc.message}") from exc
        self.router = router
        self.defaults = TrafficSettings(spec.mirror_fraction, self.resolve_split(spec.split))
        self.settings = self.defaults
        self.canary = self._canary(self.defaults)
        self.counters: collections.Counter[str] = collections.Counter()
        self.mirror_in_flight = 0
        self.arm_metrics: dict[Arm, ArmMetrics] = {
            arm: metrics.arm(spec.name, route.name, arm) for arm, route in self.models.items()
        }
        self.mirror_metrics = {
            outcome: metrics.mirror_copies.labels(spec.name, self.models["candidate"].name, outcome)
            for outcome in MIRROR_OUTCOMES
        }

    def resolve_split(self, split: Mapping[str, float] | None) -> dict[str, float] | None:
        if split is None:
            return None
        primary, candidate = self.models["primary"].name, self.models["candidate"].name

        def find(name: str) -> Any:
            try:
                return self.router.resolve(name).spec
            except GatewayError:
                return None

        return resolve_split(dict(split), primary, candidate, find)

    def apply(self, settings: TrafficSettings) -> None:
        self.settings = settings
        self.canary = self._canary(settings)

    def _canary(self, settings: TrafficSettings) -> CanarySplit:
        split = settings.split or {}
        primary = split.get(self.models["primary"].name, 0.0) if split else 1.0
        return CanarySplit.from_weights(self.name, primary, split.get(self.models["candidate"].name, 0.0))

    def count(self, outcome: str) -> None:
        self.counters[outcome] += 1
        child = self.mirror_metrics.get(outcome)
        if child is not None:
            child.inc()

    def describe(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "name": self.name,
            "primary": self.models["primary"].name,
            "candidate": self.models["candidate"].name,
            "mirror_fraction": settings.mirror_fraction,
            "split": settings.split,
            "candidate_share": self.canary.candidate_share,
            "store_prompts": self.spec.store_prompts,
            "mirror_max_in_flight": self.spec.mirror_max_in_flight,
            "retention": self.spec.retention.model_dump(),
            "settings_from": "config" if settings.updated_at is None else "runtime",
            "updated_at": settings.updated_at,
            "counters": {
                "requests": {arm: self.counters[f"requests_{arm}"] for arm in ARMS},
                "mirror": {outcome: self.counters[outcome] for outcome in MIRROR_OUTCOMES},
                "mirror_in_flight": self.mirror_in_flight,
            },
        }


@dataclass(frozen=True)
class Assignment:
    """Where one request to a public name goes."""

    director: TrafficDirector
    traffic: TrafficRoute
    arm: Arm

    @property
    def route(self) -> ModelRoute:
        return self.traffic.models[self.arm]

    @property
    def other(self) -> ModelRoute:
        return self.traffic.models["candidate" if self.arm == "primary" else "primary"]

    def tap(self, state: dict[str, Any], started: float) -> TrafficTap:
        self.traffic.counters[f"requests_{self.arm}"] += 1
        return TrafficTap(self, state, started)


@dataclass
class PrimaryOutcome:
    """What the client got, as the mirror needs it to make a pair."""

    status: int
    streamed: bool
    content: bytes = b""  # the JSON answer, or the SSE events that were sent
    chunks: list[bytes] = field(default_factory=list)
    ttft_s: float | None = None
    total_s: float | None = None


class TrafficTap:
    """Observes one request to a public name: per-arm metrics always; when the request is
    mirrored, it also keeps what the client was sent until the pair is made. Every method is
    cheap and synchronous (it runs on the relay's path and on cancellation paths)."""

    def __init__(self, assignment: Assignment, state: dict[str, Any], started: float) -> None:
        self.assignment = assignment
        self.metrics = assignment.traffic.arm_metrics[assignment.arm]
        self.state = state
        self.started = started
        self.capture = False  # set when a mirror copy was started
        self.chunks: list[bytes] = []
        self.first_token: float | None = None
        self.last_token: float | None = None
        self.outcome: asyncio.Future[PrimaryOutcome] | None = None
        self.mirror_task: asyncio.Task[None] | None = None
        self.finished = False
        self._pending: tuple[EngineApi, dict[str, Any]] | None = None  # a copy due at the first token
        self._final: PrimaryOutcome | None = None

    def admitted(self, api: EngineApi, body: dict[str, Any], *, stream: bool) -> None:
        """The primary holds its admission slot: from now on a mirror copy may start. For a
        streamed answer it starts once the client has its first token, so that the copy's own
        work in the gateway (and at a candidate sharing the machine) cannot delay that token."""
        director = self.assignment.director
        fraction = self.assignment.traffic.settings.mirror_fraction
        if director.mirror is None or fraction <= 0 or api.kind != "chat":
            return
        if fraction < 1 and random.random() >= fraction:
            return
        self.capture = True  # from the first byte: the pair needs the whole answer
        self._pending = (api, body)
        if not stream:
            self._start_copy()

    def _start_copy(self) -> None:
        if self._pending is None:
            return
        api, body = self._pending
        self._pending = None
        final = self._final
        if final is not None and final.status == CLIENT_CLOSED_REQUEST:
            return  # the client left before the copy was due
        director = self.assignment.director
        assert director.mirror is not None
        self.outcome = asyncio.get_running_loop().create_future()
        if final is not None:  # the whole stream went by in one go: the answer is complete already
            self.outcome.set_result(final)
        self.mirror_task = director.mirror.start(self.assignment, api, body, self)
        if self.mirror_task is None:
            self.outcome, self.capture = None, False
            self.chunks.clear()

    # --- streamed answers (called by SseRelay) ---

    def on_chunk(self, chunk: bytes, token_at: float | None) -> None:
        if token_at is not None:
            if self.first_token is None:
                self.first_token = token_at
                self.metrics.ttft.observe(token_at - self.started)
            else:
                assert self.last_token is not None
                self.metrics.itl.observe(token_at - self.last_token)
            self.last_token = token_at
        if self.capture:
            self.chunks.append(chunk)
            if self._pending is not None and token_at is not None:
                # After this token is sent, not before: the relay sends it when this returns.
                asyncio.get_running_loop().call_soon(self._start_copy)

    def on_close(self, status: int) -> None:
        self._finish(PrimaryOutcome(status, streamed=True, chunks=self.chunks))

    # --- whole answers, and failures (called by the proxy) ---

    def completed(self, status: int, content: bytes) -> None:
        self._finish(PrimaryOutcome(status, streamed=False, content=content))

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, ClientDisconnected | asyncio.CancelledError):
            status = CLIENT_CLOSED_REQUEST
        else:
            status = exc.status_code if isinstance(exc, GatewayError) else 500
        body = exc.to_body() if isinstance(exc, GatewayError) else {}
        self._finish(PrimaryOutcome(status, streamed=False, content=json.dumps(body).encode()))

    def _finish(self, outcome: PrimaryOutcome) -> None:
        if self.finished:
            return  # the first outcome counts (an error raised after `completed`, say)
        self.finished = True
        now = time.perf_counter()
        metrics = self.metrics
        metrics.requests.inc()
        if outcome.status != 200:
            metrics.errors.inc()
        prompt, completion = self.state.get("usage_prompt_tokens"), self.state.get("usage_completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            metrics.prompt_tokens.inc(prompt)
            metrics.completion_tokens.inc(completion)
        outcome.total_s = now - self.started
        outcome.ttft_s = None if self.first_token is None else self.first_token - self.started
        self._final = outcome
        if self.outcome is None or self.outcome.done():
            return
        self.outcome.set_result(outcome)
        if outcome.status == CLIENT_CLOSED_REQUEST and self.mirror_task is not None:
            self.mirror_task.cancel()  # nobody is there to compare answers for: stop the copy


class TrafficDirector:
    def __init__(
        self,
        specs: list[TrafficSpec],
        router: Router,
        metrics: GatewayMetrics,
        *,
        mirror: Mirror | None = None,
        store: TrafficStore | None = None,
        poll_s: float = 2.0,
        prune_every_s: float = 600.0,
    ) -> None:
        self.routes = {spec.name: TrafficRoute(spec, router, metrics) for spec in specs}
        self.router = router
        self.mirror = mirror
        self.store = store
        self.poll_s = poll_s
        self.prune_every_s = prune_every_s

    def assign(self, body: Mapping[str, Any], headers: list[tuple[bytes, bytes]]) -> Assignment | None:
        traffic = self.routes.get(body["model"]) if self.routes else None
        if traffic is None:
            return None
        return Assignment(self, traffic, traffic.canary.choose(sticky_key(body, headers)))

    def find(self, name: str) -> TrafficRoute:
        traffic = self.routes.get(name)
        if traffic is None:
            known = ", ".join(self.routes) or "none configured"
            raise NotFound(f"No traffic name '{name}' (known: {known}).", param="name")
        return traffic

    def prepare(self, name: str, changes: Mapping[str, Any]) -> TrafficSettings:
        """New settings for `name` from `changes` (`mirror_fraction` and/or `split`, where a None
        split sends all to the primary); InvalidRequest when the split is wrong. Nothing changes
        until `apply`: the API stores them first, so that the other replicas follow."""
        traffic = self.find(name)
        current = traffic.settings
        split = current.split
        if "split" in changes:
            try:
                split = traffic.resolve_split(changes["split"])
            except ValueError as exc:
                raise InvalidRequest(str(exc), param="split") from None
        fraction = changes.get("mirror_fraction")
        return TrafficSettings(current.mirror_fraction if fraction is None else float(fraction), split, time.time())

    def apply(self, name: str, settings: TrafficSettings) -> None:
        self.find(name).apply(settings)

    def reset(self, name: str) -> TrafficSettings:
        traffic = self.find(name)
        traffic.apply(traffic.defaults)
        return traffic.defaults

    def apply_stored(self, stored: Mapping[str, tuple[dict[str, Any], float]]) -> None:
        """Follow the settings in the database: other replicas' changes, resets, our own."""
        for name, traffic in self.routes.items():
            row = stored.get(name)
            if row is None:
                if traffic.settings.updated_at is not None:
                    traffic.apply(traffic.defaults)
                continue
            values, stamp = row
            if stamp == traffic.settings.updated_at:
                continue
            try:
                split = traffic.resolve_split(values.get("split"))
                fraction = float(values.get("mirror_fraction", traffic.defaults.mirror_fraction))
                if not 0 <= fraction <= 1:
                    raise ValueError(f"mirror_fraction {fraction} is not within 0..1")
            except (ValueError, TypeError) as exc:  # a row written for another config: keep ours
                logger.warning("ignoring stored settings of traffic '%s': %s", name, exc)
                continue
            traffic.apply(TrafficSettings(fraction, split, stamp))

    async def sync_once(self) -> None:
        """Apply the stored settings now (at startup); a database that is away is logged, not fatal."""
        if self.store is None:
            return
        try:
            self.apply_stored(await asyncio.to_thread(self.store.settings))
        except Exception:
            logger.exception("could not read the stored traffic settings; using the config file's for now")

    async def run(self) -> None:
        """Poll the stored settings; apply retention to the live pairs now and then."""
        if self.store is None or not self.routes:
            return
        store = self.store
        last_prune = 0.0

        async def poll() -> None:  # a failed round (the database away for a while) is logged; the next one comes
            nonlocal last_prune
            self.apply_stored(await asyncio.to_thread(store.settings))
            if time.monotonic() - last_prune >= self.prune_every_s:
                last_prune = time.monotonic()
                for traffic in self.routes.values():
                    retention = traffic.spec.retention
                    await asyncio.to_thread(
                        store.prune,
                        traffic.name,
                        max_pairs=retention.max_pairs,
                        max_age_s=retention.max_age_days * 86_400,
                    )

        # sync_once applied the stored settings before serving, hence wait_first.
        await every(self.poll_s, poll, what="traffic settings poll", wait_first=True, log=logger)
