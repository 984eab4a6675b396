"""Side by side: one chat request sent to several models at once, timed at the gateway.

    comparer = Comparer(dispatcher, router)   # the data plane's dispatcher: same admission, retry, metrics
    plan = comparer.plan({"messages": [...], "max_tokens": 64}, models=["r1-tiny", "qwen-tiny"])
    async for event in comparer.stream(plan):  # events as below, then the summary
        ...
    result = await comparer.complete(plan)     # {"id": "cmp_...", "seed": 42, "models": {"r1-tiny": {...}, ...}}

Every model gets the same messages, parameters and seed (one is drawn when the request has
none), then its own policy from the config (`apply_model_policy`: per-model sampling
defaults for fields the request left out, R1's system prompt folded into the user message).
Each model's result says which parameters it actually got (`params`) and which of them came
from its defaults (`defaults_applied`).

The engines are always asked to stream, also when the caller is not, so that the time to
first token is measured here, at the gateway, the same way for both models.

Stream format (`POST /v1/compare` with `"stream": true`), one SSE event per `data:` line:

    data: {"model": "r1-tiny", "type": "reasoning", "delta": "Okay, so"}     R1's <think> text
    data: {"model": "qwen-tiny", "type": "content", "delta": "Paris"}         answer text
    data: {"model": "qwen-tiny", "type": "done", "finish_reason": "stop"}
    data: {"model": "nope", "type": "error", "status": 404, "error": {"message": ..., "type": ..., "code": ...}}
    data: {"type": "summary", "id": "cmp_9f2c...", "seed": 42, "models": {"r1-tiny": {...}, "qwen-tiny": {...}}}
    data: [DONE]

The `id` names the comparison: the server keeps what each model answered under it (see
gateway/votes.py), and a vote refers to it instead of carrying answers of its own.

Events of different models interleave as they arrive. Each model ends with exactly one
`done` or `error` event; a failing model (engine down, 429, a parameter it rejects, unknown
name, a bug) does not stop the others, and never ends as an empty success. The summary
holds, per model, everything but the text: `model`, `requested`, `finish_reason`, `usage`,
`timings`, `params`, `defaults_applied`, `system_prompt`, `status` and `error`.
`timings` (seconds unless named otherwise):

    ttft_s                  request sent -> first token of any kind (reasoning or answer)
    time_to_answer_s        request sent -> first answer token (after the reasoning)
    total_s                 request sent -> last byte
    output_tokens_per_s     completion tokens / total_s (what a user waits for)
    tpot_ms                 (total_s - ttft_s) / (completion tokens - 1): the decode pace

Each model's request goes through the gateway's dispatcher (gateway/dispatch.py), like any
proxied request: the model's admission gate, a healthy replica with one retry on another, the
request id forwarded, and a count in `gateway_engine_requests{route="/v1/compare"}`.
Closing the stream (or cancelling `complete`) cancels every upstream request: each one's
connection to its engine is closed, which makes vLLM abort the generation.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.dispatch import Call, Dispatcher
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    UnknownModel,
    UpstreamError,
    UpstreamTimeout,
    as_gateway_error,
    error_body,
)
from gateway.request_policy import apply_model_policy
from gateway.routing import ModelRoute, Router
from gateway.streaming import sse_data

ROUTE = "/v1/compare"

Event = dict[str, Any]

# Fields of the upstream body that are plumbing, not sampling parameters worth reporting.
_NOT_PARAMS = frozenset({"model", "messages", "stream", "stream_options"})


@dataclass
class ModelRun:
    """One model's side of a comparison: what was sent, and what came back so far."""

    requested: str  # the name the caller used (an alias, or unknown)
    route: ModelRoute | None
    body: dict[str, Any] = field(default_factory=dict)
    defaults_applied: dict[str, Any] = field(default_factory=dict)
    system_prompt: str = "none"  # none (no system message) | keep | merge_into_user
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    status: int = 200
    error: dict[str, Any] | None = None
    started: float = 0.0
    first_token: float | None = None
    first_answer: float | None = None
    finished: float | None = None

    @property
    def model(self) -> str:
        return self.route.name if self.route else self.requested

    @property
    def params(self) -> dict[str, Any]:
        return {k: v for k, v in self.body.items() if k not in _NOT_PARAMS}

    def fail(self, exc: GatewayError) -> Event:
        self.status, self.error = exc.status_code, exc.to_body()["error"]
        return {"model": self.model, "type": "error", "status": self.status, "error": self.error}

    def timings(self) -> dict[str, float | None]:
        def since_start(t: float | None) -> float | None:
            return round(t - self.started, 4) if t is not None else None

        total = since_start(self.finished)
        ttft = since_start(self.first_token)
        tokens = (self.usage or {}).get("completion_tokens")
        per_s = round(tokens / total, 2) if isinstance(tokens, int) and total else None
        tpot = None
        if isinstance(tokens, int) and tokens > 1 and total is not None and ttft is not None:
            tpot = round((total - ttft) / (tokens - 1) * 1000, 3)
        return {
            "ttft_s": ttft,
            "time_to_answer_s": since_start(self.first_answer),
            "total_s": total,
            "output_tokens_per_s": per_s,
            "tpot_ms": tpot,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "requested": self.requested,
            "finish_reason": self.finish_reason,
            "usage": self.usage,
            "timings": self.timings(),
            "params": self.params,
            "defaults_applied": self.defaults_applied,
            "system_prompt": self.system_prompt,
            "status": self.status,
            "error": self.error,
        }

    def result(self) -> dict[str, Any]:
        return {**self.summary(), "content": "".join(self.content), "reasoning": "".join(self.reasoning)}


@dataclass
class ComparePlan:
    id: str
    seed: int
    runs: list[ModelRun]
    messages: list[Any] = field(default_factory=list)
    request_id: str | None = None

    def summary(self) -> Event:
        models = {run.model: run.summary() for run in self.runs}
        return {"type": "summary", "id": self.id, "seed": self.seed, "models": models}

    def result(self) -> dict[str, Any]:
        return {"id": self.id, "seed": self.seed, "models": {run.model: run.result() for run in self.runs}}


def new_comparison_id() -> str:
    return "cmp_" + secrets.token_hex(12)


class Comparer:
    def __init__(
        self,
        dispatcher: Dispatcher,
        router: Router,
        *,
        timeout_s: float = 1800,
        on_finished: Callable[[ComparePlan], Awaitable[None]] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.router = router
        self.timeout_s = timeout_s  # per model, the whole answer
        self.on_finished = on_finished  # e.g. keep what each model answered, for votes

    def default_models(self) -> list[str]:
        return [route.name for route in self.router.routes]

    def plan(
        self, fields: dict[str, Any], *, models: list[str] | None = None, request_id: str | None = None
    ) -> ComparePlan:
        """Per-model upstream bodies for a chat request (`fields`: messages and sampling parameters)."""
        if not fields.get("messages"):
            raise InvalidRequest("A comparison needs 'messages' (or a 'prompt').", param="messages")
        fields = dict(fields)
        seed = fields.get("seed")
        if seed is None:
            seed = fields["seed"] = secrets.randbelow(2**31)  # one seed for every model
        had_system = any(isinstance(m, dict) and m.get("role") == "system" for m in fields["messages"])
        runs: list[ModelRun] = []
        seen: set[str] = set()
        for requested in models or self.default_models():
            try:
                route: ModelRoute | None = self.router.resolve(requested)
            except UnknownModel:
                route = None  # reported as this model's error; the others still run
            run = ModelRun(requested, route)
            if run.model in seen:
                raise InvalidRequest(f"Model '{run.model}' is listed twice.", param="models")
            seen.add(run.model)
            if route is not None:
                wanted = fields | {"model": route.name, "stream": True, "stream_options": {"include_usage": True}}
                run.body, run.defaults_applied = apply_model_policy(wanted, route.spec, chat=True)
                run.system_prompt = route.spec.system_prompt if had_system else "none"
            runs.append(run)
        return ComparePlan(new_comparison_id(), seed, runs, list(fields["messages"]), request_id)

    async def stream(self, plan: ComparePlan) -> AsyncGenerator[Event, None]:
        """Events of all models as they arrive, then the summary. Closing this generator
        cancels the upstream requests still running."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()  # None: one model finished

        async def pump(run: ModelRun) -> None:
            try:
                async for event in self._generate(run, plan.request_id):
                    queue.put_nowait(event)
            finally:
                queue.put_nowait(None)

        tasks = [asyncio.create_task(pump(run)) for run in plan.runs]
        try:
            running = len(tasks)
            while running:
                event = await queue.get()
                if event is None:
                    running -= 1
                else:
                    yield event
            if self.on_finished is not None:
                await self.on_finished(plan)
            yield plan.summary()
        finally:
            # The client left, or we are done; a task still running holds an engine busy.
            for task in tasks:
                task.cancel()

    async def complete(self, plan: ComparePlan) -> dict[str, Any]:
        """Run the comparison to the end: per model the answer, reasoning, usage and timings."""
        async for _ in self.stream(plan):
            pass
        return plan.result()

    async def _generate(self, run: ModelRun, request_id: str | None) -> AsyncIterator[Event]:
        run.started = time.perf_counter()
        try:
            if run.route is None:
                yield run.fail(UnknownModel(run.requested, self.router.available()))
                return
            async with asyncio.timeout(self.timeout_s):
                async for event in self._send(run, run.route, request_id):
                    yield event
        except TimeoutError:
            yield run.fail(UpstreamTimeout(f"Engine '{run.model}' did not finish within {self.timeout_s:g} s."))
        except Exception as exc:  # a GatewayError, or a bug: either way this model's error
            yield run.fail(as_gateway_error(exc, {"path": ROUTE, "state": {"request_id": request_id}}))
        finally:
            run.finished = time.perf_counter()

    async def _send(self, run: ModelRun, route: ModelRoute, request_id: str | None) -> AsyncIterator[Event]:
        call = Call("/v1/chat/completions", json.dumps(run.body).encode(), route_label=ROUTE, request_id=request_id)
        exchange = await self.dispatcher.open(route, call)  # Overloaded (429) etc. are this model's error
        status: int | None = 499  # unless it ends below: cancelled, the client left
        try:
            if exchange.status != 200:
                status = exchange.status
                yield _engine_refusal(run, await exchange.read(), exchange.status)
                return
            async for data in sse_data(exchange.response.chunks()):
                if data == "[DONE]":
                    break
                for event in _events(run, _parse_chunk(data, route.name)):
                    yield event
                if run.error is not None:
                    status = run.status
                    return
            status = 200
            self.dispatcher.metrics.model(route.name).count_usage(run.usage)
        except GatewayError as exc:
            status = exc.status_code
            raise
        finally:
            exchange.close(status)  # on cancel too: the closed connection aborts the generation
        yield {"model": run.model, "type": "done", "finish_reason": run.finish_reason}


def _parse_chunk(data: str, engine: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError as exc:
        raise UpstreamError(f"Engine '{engine}' sent a stream event that is not JSON: {data[:200]!r}") from exc
    if not isinstance(chunk, dict):
        raise UpstreamError(f"Engine '{engine}' sent a stream event that is not an object: {data[:200]!r}")
    return chunk


def _events(run: ModelRun, chunk: dict[str, Any]) -> list[Event]:
    """Turn one vLLM chat-completion chunk into compare events, recording text and timings."""
    now = time.perf_counter()
    if "error" in chunk:  # vLLM reports failures after the 200 as an in-band error event
        error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
        code = error.get("code")
        run.status = code if isinstance(code, int) and 400 <= code < 600 else 502
        run.error = error_body(
            str(error.get("message", "")), str(error.get("type", "upstream_error")), status=run.status
        )["error"]
        return [{"model": run.model, "type": "error", "status": run.status, "error": run.error}]
    if isinstance(chunk.get("usage"), dict):
        run.usage = chunk["usage"]
    events: list[Event] = []
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        # vLLM's reasoning parsers name the field `reasoning` (newer) or `reasoning_content` (older).
        reasoning = delta.get("reasoning") or delta.get("reasoning_content")
        content = delta.get("content")
        if reasoning:
            run.first_token = run.first_token or now
            run.reasoning.append(reasoning)
            events.append({"model": run.model, "type": "reasoning", "delta": reasoning})
        if content:
            run.first_token = run.first_token or now
            run.first_answer = run.first_answer or now
            run.content.append(content)
            events.append({"model": run.model, "type": "content", "delta": content})
        if choice.get("finish_reason"):
            run.finish_reason = choice["finish_reason"]
    return events


def _engine_refusal(run: ModelRun, content: bytes, status: int) -> Event:
    """An engine's non-200 answer (vLLM's 400 for a bad parameter, a 429, ...) as this model's error."""
    try:
        body = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message, kind = str(error.get("message", "")), str(error.get("type", "upstream_error"))
    elif isinstance(body, dict) and ("message" in body or "detail" in body):
        message, kind = str(body.get("message") or body.get("detail")), "upstream_error"
    else:
        message, kind = content.decode(errors="replace")[:500] or f"HTTP {status}", "upstream_error"
    run.status = status
    run.error = error_body(message, kind, status=status)["error"]
    return {"model": run.model, "type": "error", "status": status, "error": run.error}
