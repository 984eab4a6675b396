from __future__ import annotations

import asyncio

import pytest

from gateway.admission import AdmissionGate
from gateway.errors import Overloaded

pytestmark = pytest.mark.anyio


async def test_admits_up_to_the_limit_then_queues_in_order() -> None:
    gate = AdmissionGate(max_in_flight=2, max_queue=5, queue_timeout_s=5)
    first, second = await gate.acquire(), await gate.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        slot = await gate.acquire()
        order.append(i)
        slot.release()

    waiters = [asyncio.create_task(wait(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert gate.in_flight == 2 and gate.queued == 3
    first.release()
    second.release()
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    assert gate.in_flight == 0 and gate.queued == 0


async def test_full_queue_is_refused_at_once_with_retry_after() -> None:
    gate = AdmissionGate(max_in_flight=1, max_queue=1, queue_timeout_s=10)
    held = await gate.acquire()
    queued = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded) as info:
        await gate.acquire()
    assert info.value.status_code == 429 and info.value.headers()["Retry-After"] == "5"
    held.release()
    (await queued).release()
    assert gate.in_flight == 0


async def test_queue_timeout_is_a_429_and_leaves_no_trace() -> None:
    gate = AdmissionGate(max_in_flight=1, max_queue=3, queue_timeout_s=0.05)
    held = await gate.acquire()
    with pytest.raises(Overloaded, match="waited"):
        await gate.acquire()
    assert gate.queued == 0
    held.release()
    assert gate.in_flight == 0


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    gate = AdmissionGate(max_in_flight=1, max_queue=3, queue_timeout_s=5)
    held = await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    held.release()
    assert gate.in_flight == 0 and gate.queued == 0
    (await gate.acquire()).release()


async def test_release_is_idempotent() -> None:
    gate = AdmissionGate(max_in_flight=1, max_queue=0, queue_timeout_s=1)
    slot = await gate.acquire()
    slot.release()
    slot.release()
    assert gate.in_flight == 0


async def test_a_request_weighs_the_sequences_it_asks_for() -> None:
    gate = AdmissionGate(max_in_flight=8, max_queue=2, queue_timeout_s=5)
    big = await gate.acquire(weight=6)
    assert gate.in_flight == 6
    assert gate.try_acquire(weight=3) is None  # 6 + 3 > 8: no room, and try_ never queues
    small = await gate.acquire(weight=2)
    heavy = asyncio.create_task(gate.acquire(weight=4))  # waits at the head of the queue
    await asyncio.sleep(0.01)
    light = asyncio.create_task(gate.acquire(weight=1))  # must not overtake the heavy one
    await asyncio.sleep(0.01)
    assert gate.queued == 2 and not light.done()
    big.release()
    slot = await heavy  # 2 + 4, then the light one behind it: 7
    assert (await light).weight == 1 and gate.in_flight == 7
    huge = gate.try_acquire(weight=100)  # more than the gate holds: capped, so it can run alone
    assert huge is None
    for s in (small, slot):
        s.release()
    assert gate.in_flight == 1
