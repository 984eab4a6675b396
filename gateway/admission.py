"""Admission control: a bounded number of requests in flight, a bounded queue, a wait limit.

    gate = AdmissionGate(max_in_flight=64, max_queue=128, queue_timeout_s=30)
    slot = await gate.acquire()       # raises Overloaded (429) when full or after the timeout
    slot = await gate.acquire(weight=4)   # a request for n=4 sequences counts as 4
    try:
        ...                           # the slot is held for the whole request, streams included
    finally:
        slot.release()

Capacity is counted in sequences, since that is what an engine batches: a request with `n`
sequences weighs `n` (capped at the gate's capacity, so it can always be admitted eventually).
Requests are admitted in arrival order. Without this, vLLM queues without bound and every
client sees its latency grow; with it, excess load gets a fast 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

from gateway.errors import Overloaded


@dataclass
class Slot:
    gate: AdmissionGate
    waited_s: float
    weight: int = 1
    _released: bool = field(default=False, repr=False)

    def release(self) -> None:
        """Give the capacity back; safe to call more than once."""
        if not self._released:
            self._released = True
            self.gate._release(self.weight)


class AdmissionGate:
    def __init__(self, *, max_in_flight: int, max_queue: int, queue_timeout_s: float) -> None:
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.in_flight = 0
        self._waiters: collections.deque[tuple[asyncio.Future[None], int]] = collections.deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def resize(self, max_in_flight: int) -> None:
        """Change capacity (e.g. when replicas come and go), admitting waiters if it grew."""
        self.max_in_flight = max(1, max_in_flight)
        self._wake()

    async def acquire(self, *, weight: int = 1) -> Slot:
        weight = max(1, min(weight, self.max_in_flight))
        started = time.monotonic()
        if self.in_flight + weight <= self.max_in_flight and not self._waiters:
            self.in_flight += weight
            return Slot(self, 0.0, weight)
        if len(self._waiters) >= self.max_queue:
            raise Overloaded(
                f"Too many requests: {self.in_flight} in flight and {len(self._waiters)} queued.",
                retry_after=self._retry_after(),
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((waiter, weight))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.queue_timeout_s)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():  # admitted just as the timer fired
                return Slot(self, time.monotonic() - started, weight)
            self._discard(waiter)
            raise Overloaded(
                f"Request waited {self.queue_timeout_s:.0f} s in the queue without being admitted.",
                retry_after=self._retry_after(),
            ) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(weight)  # we were handed a slot but the client left: pass it on
            else:
                self._discard(waiter)
            raise
        return Slot(self, time.monotonic() - started, weight)

    def try_acquire(self, *, weight: int = 1) -> Slot | None:
        """A slot now, or None: never queues (for work that must not wait, such as a mirror copy)."""
        weight = max(1, min(weight, self.max_in_flight))
        if self.in_flight + weight <= self.max_in_flight and not self._waiters:
            self.in_flight += weight
            return Slot(self, 0.0, weight)
        return None

    def _release(self, weight: int) -> None:
        self.in_flight -= weight
        self._wake()

    def _wake(self) -> None:
        # Strict arrival order: a heavy request at the head is not overtaken by lighter ones.
        while self._waiters:
            waiter, weight = self._waiters[0]
            if waiter.done():
                self._waiters.popleft()
                continue
            if self.in_flight + min(weight, self.max_in_flight) > self.max_in_flight:
                return
            self._waiters.popleft()
            self.in_flight += min(weight, self.max_in_flight)
            waiter.set_result(None)

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        for entry in self._waiters:
            if entry[0] is waiter:
                self._waiters.remove(entry)
                break
        waiter.cancel()

    def _retry_after(self) -> float:
        return max(1.0, min(30.0, self.queue_timeout_s / 2))
