"""Mirror copies without HTTP in front: the director, the dispatcher and a FAKE upstream whose
answers the test releases, to check what a copy may never do to the client's request."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from gateway.admission import AdmissionGate
from gateway.config import ModelSpec, TrafficSpec
from gateway.dispatch import Dispatcher
from gateway.errors import ClientDisconnected
from gateway.metrics import GatewayMetrics
from gateway.mirror import Mirror
from gateway.request_policy import API_BY_PATH
from gateway.routing import Router
from gateway.traffic import TrafficDirector
from gateway.upstream import HttpxUpstream
from gateway.votes import ComparisonRecord

pytestmark = pytest.mark.anyio
CHAT = API_BY_PATH["/v1/chat/completions"]
BODY = {"model": "assistant", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


class HeldEngine:
    """A FAKE engine that answers only when the test sets `release`."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0
        self.cancelled = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.started += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        name = json.loads(request.content)["model"]
        message = {"content": f"{name} says hi"}
        return httpx.Response(200, json={"choices": [{"message": message, "finish_reason": "stop"}], "usage": {}})


class Setup:
    def __init__(self, *, candidate_slots: int = 4, mirror_max_in_flight: int = 8) -> None:
        self.engine = HeldEngine()
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self.engine))
        router = Router([
            ModelSpec(name="qwen-tiny", aliases=["qwen"], endpoints=["http://qwen.fake:1"]),
            ModelSpec(name="r1-tiny", aliases=["r1"], endpoints=["http://r1.fake:2"]),
        ])  # fmt: skip
        self.gates = {
            "qwen-tiny": AdmissionGate(max_in_flight=4, max_queue=4, queue_timeout_s=1),
            "r1-tiny": AdmissionGate(max_in_flight=candidate_slots, max_queue=4, queue_timeout_s=1),
        }
        metrics = GatewayMetrics()
        self.saved: list[ComparisonRecord] = []
        dispatcher = Dispatcher(HttpxUpstream(self.client), self.gates, metrics)
        mirror = Mirror(dispatcher, self.save, request_timeout_s=10, first_byte_timeout_s=10)
        spec = TrafficSpec(
            name="assistant",
            primary="qwen",
            candidate="r1",
            mirror_fraction=1.0,
            mirror_max_in_flight=mirror_max_in_flight,
        )
        self.director = TrafficDirector([spec], router, metrics, mirror=mirror)
        self.traffic = self.director.routes["assistant"]

    def save(self, record: ComparisonRecord, reviewable: bool) -> None:
        self.saved.append(record)

    def request(self) -> Any:
        """What the proxy does for one request, up to the primary's admission."""
        assignment = self.director.assign(BODY, [])
        assert assignment is not None and assignment.arm == "primary"
        slot = self.gates["qwen-tiny"].try_acquire()
        assert slot is not None  # the primary's own admission, untouched by any copy
        tap = assignment.tap({"request_id": "req-1"}, time.perf_counter())
        tap.admitted(CHAT, BODY, stream=False)
        return tap, slot

    async def settle(self) -> None:
        mirror = self.director.mirror
        assert mirror is not None
        await asyncio.wait_for(asyncio.gather(*mirror.tasks, return_exceptions=True), 5)


async def test_a_full_candidate_drops_the_copy_and_never_queues_it() -> None:
    setup = Setup(candidate_slots=1)
    taken = setup.gates["r1-tiny"].try_acquire()  # someone else's request fills the candidate
    assert taken is not None
    tap, _ = setup.request()
    assert tap.mirror_task is None and not tap.capture
    assert setup.traffic.counters["dropped_candidate_full"] == 1 and setup.traffic.counters["sent"] == 0
    assert setup.gates["r1-tiny"].queued == 0 and setup.engine.started == 0
    tap.completed(200, b'{"choices": []}')  # the client's answer is unaffected
    assert setup.saved == []


async def test_copies_beyond_the_mirror_limit_are_dropped() -> None:
    setup = Setup(mirror_max_in_flight=1)
    first, _ = setup.request()
    second, _ = setup.request()
    assert first.mirror_task is not None and second.mirror_task is None
    assert setup.traffic.counters["dropped_mirror_limit"] == 1
    setup.engine.release.set()
    first.completed(200, b'{"choices": [{"message": {"content": "qwen says hi"}, "finish_reason": "stop"}]}')
    second.completed(200, b"{}")
    await setup.settle()
    [record] = setup.saved
    assert record.models["r1-tiny"].answer_chars == len("r1-tiny says hi") and record.models["r1-tiny"].answer is None
    assert setup.gates["r1-tiny"].in_flight == 0 and setup.traffic.mirror_in_flight == 0


async def test_the_copy_is_cancelled_and_its_slot_freed_when_the_client_leaves() -> None:
    setup = Setup()
    tap, slot = setup.request()
    await asyncio.sleep(0.05)  # the copy is in flight at the engine
    assert setup.engine.started == 1 and setup.gates["r1-tiny"].in_flight == 1
    tap.failed(ClientDisconnected())
    slot.release()
    await setup.settle()
    assert setup.engine.cancelled == 1  # the engine request was dropped, which makes vLLM abort it
    assert setup.gates["r1-tiny"].in_flight == 0 and setup.traffic.mirror_in_flight == 0
    assert setup.traffic.counters["cancelled"] == 1 and setup.saved == []


async def test_a_primary_error_is_kept_in_the_pair() -> None:
    setup = Setup()
    tap, _ = setup.request()
    setup.engine.release.set()
    tap.completed(400, b'{"error": {"message": "prompt too long", "type": "BadRequestError", "code": 400}}')
    await setup.settle()
    [record] = setup.saved
    assert record.models["qwen-tiny"].status == 400
    assert record.models["qwen-tiny"].error == {"message": "prompt too long", "type": "BadRequestError", "code": 400}
    assert record.models["r1-tiny"].status == 200


def sse(delta: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta}]}).encode() + b"\n\n"


async def test_for_a_streaming_client_the_copy_starts_after_its_first_token() -> None:
    setup = Setup()
    assignment = setup.director.assign(BODY, [])
    assert assignment is not None
    tap = assignment.tap({}, time.perf_counter())
    tap.admitted(CHAT, BODY, stream=True)
    tap.on_chunk(sse({"role": "assistant", "content": ""}), None)
    await asyncio.sleep(0.02)
    assert setup.engine.started == 0 and tap.mirror_task is None  # nothing before the first token
    tap.on_chunk(sse({"content": "Hel"}), time.perf_counter())
    assert tap.mirror_task is None  # not on the relay's path either: once this chunk is on its way
    await asyncio.sleep(0.02)
    assert tap.mirror_task is not None and setup.engine.started == 1
    tap.on_chunk(sse({"content": "lo"}), time.perf_counter())
    tap.on_close(200)
    setup.engine.release.set()
    await setup.settle()
    [record] = setup.saved
    assert record.models["qwen-tiny"].answer_chars == len("Hello")  # the chunks before the copy count too


async def test_a_stream_over_in_one_go_still_gets_its_copy_and_one_that_fails_first_gets_none() -> None:
    setup = Setup()
    setup.engine.release.set()
    whole, failed = (setup.director.assign(BODY, []) for _ in range(2))
    assert whole is not None and failed is not None
    tap = whole.tap({}, time.perf_counter())
    tap.admitted(CHAT, BODY, stream=True)
    tap.on_chunk(sse({"content": "Hi"}) + b"data: [DONE]\n\n", time.perf_counter())
    tap.on_close(200)  # before the scheduled start ran
    broken = failed.tap({}, time.perf_counter())
    broken.admitted(CHAT, BODY, stream=True)
    broken.on_close(502)
    await asyncio.sleep(0.02)
    await setup.settle()
    assert len(setup.saved) == 1 and setup.engine.started == 1
    assert setup.saved[0].models["qwen-tiny"].answer_chars == 2
