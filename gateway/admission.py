"""Admission control: a bounded number of requests in flight, a bounded queue, a wait limit.

    gate = AdmissionGate(max_in_flight=64, max_queue=128, queue_timeout_s=30)
    slot = await gate.acquire()       # raises Overloaded (429) when full or after the timeout
    try:
        ...                           # the slot is held for the whole request, streams included
    finally:
        slot.release()

Requests are admitted in arrival order. Without this, vLLM queues without bound and every
client sees its latency grow; with it, excess load gets a fast 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass, field

from gateway.errors import Overloaded


@dataclass
class Slot:
    gate: AdmissionGate
    waited_s: float
    _released: bool = field(default=False, repr=False)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.gate._release()


class AdmissionGate:
    def __init__(self, *, max_in_flight: int, max_queue: int, queue_timeout_s: float) -> None:
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def resize(self, max_in_flight: int) -> None:
        """Change capacity (e.g. when replicas come and go), admitting waiters if it grew."""
        self.max_in_flight = max(1, max_in_flight)
        self._wake()

    async def acquire(self) -> Slot:
        started = time.monotonic()
        if self.in_flight < self.max_in_flight and not self._waiters:
            self.in_flight += 1
            return Slot(self, 0.0)
        if len(self._waiters) >= self.max_queue:
            raise Overloaded(
                f"Too many requests: {self.in_flight} in flight and {len(self._waiters)} queued.",
                retry_after=self._retry_after(),
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.queue_timeout_s)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():  # admitted just as the timer fired
                return Slot(self, time.monotonic() - started)
            self._discard(waiter)
            raise Overloaded(
                f"Request waited {self.queue_timeout_s:.0f} s in the queue without being admitted.",
                retry_after=self._retry_after(),
            ) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # we were handed a slot but the client left: pass it on
            else:
                self._discard(waiter)
            raise
        return Slot(self, time.monotonic() - started)

    def _release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.max_in_flight:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):  # already handed a slot and removed
            self._waiters.remove(waiter)
        waiter.cancel()

    def _retry_after(self) -> float:
        return max(1.0, min(30.0, self.queue_timeout_s / 2))
