"""The one loop behind every periodic job of the gateway: do a round, say what failed, wait.

    task = asyncio.create_task(every(5.0, monitor.check_once, what="health check round"))
    task = asyncio.create_task(every(2.0, refresh, what="discovery round", wait_first=True))
    task.cancel()                                    # the only way it stops

Health checks, engine-load reads, DNS discovery and the traffic-settings poll all repeat a
step for ever. A step that raises is logged with its traceback and the loop goes on (a
monitoring hiccup must never stop monitoring); cancelling the task stops it at once, since
`CancelledError` is not an `Exception`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger("gateway.periodic")


async def every(
    interval_s: float,
    step: Callable[[], Awaitable[object]],
    *,
    what: str,
    wait_first: bool = False,
    log: logging.Logger = logger,
) -> None:
    """Await `step()` every `interval_s` seconds until cancelled; `wait_first` waits one interval
    before the first round (for jobs whose first round already ran before serving)."""
    if wait_first:
        await asyncio.sleep(interval_s)
    while True:
        try:
            await step()
        except Exception:
            log.exception("%s failed; next one in %.1f s", what, interval_s)
        await asyncio.sleep(interval_s)
