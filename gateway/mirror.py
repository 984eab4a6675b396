"""Shadow copies: a client's chat request also sent, in the background, to the other model.

    mirror = Mirror(dispatcher, save_pair, request_timeout_s=1800, first_byte_timeout_s=300)
    task = mirror.start(assignment, api, body, tap)   # None when dropped; never waits, never queues
    await mirror.aclose()                              # on shutdown: cancels the copies in flight

What a copy may never do to the client's request:
- delay it: `start` is synchronous and only takes what is free right now, and for a streaming
  client it runs once the client's first token is on its way (TrafficTap defers it);
- take its slots: it is started after the primary was admitted, and takes a slot of the other
  model's admission gate only if one is free (`try_acquire`); with none free, or with
  `mirror_max_in_flight` copies of this name already running, it is dropped and counted;
- fail it: everything the copy does runs in its own task, and its errors are recorded in the
  pair, never raised.
A copy is non-streaming (no per-token work in the gateway), gets the other model's own policy
(its sampling defaults, R1's system prompt folded into the user turn) and is cancelled when the
client leaves. When both answers are in, the pair is saved (gateway/traffic_store.py): ids,
time, the public name, both models' status, usage, timings, finish reasons and errors; the
prompt and the answers only with `store_prompts`, otherwise a sha256 of the prompt and lengths.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from gateway.answers import Answer, answer_of_completion, answer_of_stream
from gateway.dispatch import Call, Dispatcher
from gateway.errors import GatewayError, UpstreamTimeout
from gateway.request_policy import EngineApi, shape_request
from gateway.traffic import Assignment, PrimaryOutcome, TrafficTap
from gateway.votes import ComparisonRecord, Outcome

logger = logging.getLogger("gateway.mirror")
ROUTE = "mirror"  # the route label of mirror copies in gateway_engine_requests
# Client fields kept in a pair's params: how the answers were asked for (never the messages).
_PARAMS = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed", "stop")

SavePair = Callable[[ComparisonRecord, bool], None]  # (record, reviewable); blocking, run in a thread


class Mirror:
    def __init__(
        self,
        dispatcher: Dispatcher,
        save_pair: SavePair,
        *,
        request_timeout_s: float,
        first_byte_timeout_s: float,
    ) -> None:
        self.dispatcher = dispatcher
        self.save_pair = save_pair
        self.request_timeout_s = request_timeout_s
        self.first_byte_timeout_s = first_byte_timeout_s
        self.tasks: set[asyncio.Task[None]] = set()

    def start(
        self, assignment: Assignment, api: EngineApi, body: dict[str, Any], tap: TrafficTap
    ) -> asyncio.Task[None] | None:
        traffic, other = assignment.traffic, assignment.other
        if traffic.mirror_in_flight >= traffic.spec.mirror_max_in_flight:
            traffic.count("dropped_mirror_limit")
            return None
        copy = {k: v for k, v in body.items() if k != "stream_options"} | {"stream": False}
        try:
            shaped = shape_request(api, copy, other.spec)
        except GatewayError:  # beyond the other model's limits: the client's request is not its business
            traffic.count("skipped")
            return None
        if shaped.weight != 1:  # n > 1: a pair compares one answer with one answer
            traffic.count("skipped")
            return None
        slot = self.dispatcher.gates[other.name].try_acquire(weight=1)
        if slot is None:
            traffic.count("dropped_candidate_full")
            return None
        traffic.mirror_in_flight += 1
        traffic.count("sent")
        request_id = tap.state.get("request_id")
        call = Call(
            api.path,
            json.dumps(shaped.body).encode(),
            route_label=ROUTE,
            request_id=f"{request_id}-mirror" if request_id else None,
        )
        task = asyncio.get_running_loop().create_task(self._run(assignment, call, slot, tap, body))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _run(self, assignment: Assignment, call: Call, slot: Any, tap: TrafficTap, body: dict[str, Any]) -> None:
        traffic, other = assignment.traffic, assignment.other
        started = time.perf_counter()
        status, answer = 200, Answer()
        try:
            try:
                status, answer = await self._send(assignment, call, slot)
            finally:
                traffic.mirror_in_flight -= 1
            total_s = time.perf_counter() - started
            if status != 200:
                traffic.count("failed")
            assert tap.outcome is not None
            async with asyncio.timeout(self.request_timeout_s):
                primary = await tap.outcome  # the client's answer, once it is complete
            if primary.status == 499:
                traffic.count("cancelled")
                return
            record = pair_record(assignment, body, primary, (status, answer, total_s))
            reviewable = record.prompt is not None and all(o.status == 200 for o in record.models.values())
            await asyncio.to_thread(self.save_pair, record, reviewable)
            traffic.count("saved")
        except asyncio.CancelledError:
            traffic.count("cancelled")
            raise
        except Exception:  # a bug or the database: logged, counted, never the client's problem
            logger.exception("mirror copy of '%s' to '%s' was not recorded", traffic.name, other.name)
            traffic.count("failed")

    async def _send(self, assignment: Assignment, call: Call, slot: Any) -> tuple[int, Answer]:
        other = assignment.other
        status: int | None = None
        try:
            async with asyncio.timeout(self.request_timeout_s):
                exchange = await self.dispatcher.open(
                    other, call, slot=slot, first_byte_timeout_s=self.first_byte_timeout_s
                )
                try:
                    content = await exchange.read()
                    status = exchange.status
                finally:
                    exchange.close(status if status is not None else 499)
        except TimeoutError:
            error = UpstreamTimeout(f"Mirror copy to '{other.name}' did not finish in time.")
            return 504, Answer(error=error.to_body()["error"])
        except GatewayError as exc:
            return exc.status_code, Answer(error=exc.to_body()["error"])
        answer = answer_of_completion(content)
        return status, answer

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def pair_record(
    assignment: Assignment, body: dict[str, Any], primary: PrimaryOutcome, copy: tuple[int, Answer, float]
) -> ComparisonRecord:
    """The pair as stored: the client's answer (from the model the canary chose) and the copy's."""
    traffic = assignment.traffic
    store = traffic.spec.store_prompts
    messages: list[Any] = body["messages"] if isinstance(body.get("messages"), list) else []
    prompt_json = json.dumps(messages, ensure_ascii=False, sort_keys=True)
    first = answer_of_stream(primary.chunks) if primary.streamed else answer_of_completion(primary.content)
    if primary.status != 200 and first.error is None:
        first.error = {"message": f"the client's request ended with status {primary.status}", "code": primary.status}
    copy_status, copy_answer, copy_total = copy
    models = {
        assignment.route.name: _outcome(primary.status, first, primary.ttft_s, primary.total_s, store=store),
        assignment.other.name: _outcome(copy_status, copy_answer, None, copy_total, store=store),
    }
    params = {k: body[k] for k in _PARAMS if k in body}
    params |= {
        "answered": assignment.route.name,  # the model the client got (the canary's choice)
        "mirrored_to": assignment.other.name,
        "arm": assignment.arm,
        "stream": primary.streamed,  # how the client asked (the copy is never streamed)
        "primary": traffic.models["primary"].name,
        "candidate": traffic.models["candidate"].name,
    }
    return ComparisonRecord(
        id="pair_" + secrets.token_hex(12),
        source="live",
        models=models,
        prompt=messages if store else None,
        prompt_sha256=hashlib.sha256(prompt_json.encode()).hexdigest(),
        prompt_chars=sum(
            len(m["content"]) for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str)
        ),
        params=params,
        name=traffic.name,
    )


def _outcome(status: int, answer: Answer, ttft_s: float | None, total_s: float | None, *, store: bool) -> Outcome:
    tokens = (answer.usage or {}).get("completion_tokens")
    per_s = round(tokens / total_s, 2) if isinstance(tokens, int) and total_s else None
    timings = {
        "ttft_s": None if ttft_s is None else round(ttft_s, 4),
        "total_s": None if total_s is None else round(total_s, 4),
        "output_tokens_per_s": per_s,
    }
    return Outcome(
        status=status,
        answer=answer.content if store else None,
        reasoning=answer.reasoning if store else None,
        answer_chars=len(answer.content),
        finish_reason=answer.finish_reason,
        usage=answer.usage,
        timings=timings,
        error=answer.error,
    )
