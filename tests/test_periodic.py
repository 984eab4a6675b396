from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.periodic import every

pytestmark = pytest.mark.anyio


async def test_a_failing_round_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    rounds: list[int] = []
    fourth = asyncio.Event()

    async def step() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 4:
            fourth.set()
        if len(rounds) == 2:
            raise RuntimeError("engine away")

    with caplog.at_level(logging.ERROR, logger="gateway.periodic"):
        task = asyncio.create_task(every(0.01, step, what="test round"))
        await asyncio.wait_for(fourth.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    failures = [r for r in caplog.records if "test round failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert "engine away" in caplog.text


async def test_wait_first_skips_the_round_at_start() -> None:
    rounds: list[float] = []
    first = asyncio.Event()

    async def step() -> None:
        rounds.append(asyncio.get_running_loop().time())
        first.set()

    start = asyncio.get_running_loop().time()
    task = asyncio.create_task(every(0.2, step, what="late", wait_first=True))
    await asyncio.sleep(0.1)
    assert rounds == []  # without wait_first the first round would have run at once
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    assert rounds[0] - start >= 0.2


async def test_cancel_stops_a_round_in_progress() -> None:
    started, finished = asyncio.Event(), []

    async def step() -> None:
        started.set()
        await asyncio.sleep(10)
        finished.append(True)

    task = asyncio.create_task(every(0.01, step, what="slow"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == [] and task.cancelled()
