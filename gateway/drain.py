"""Graceful stop: finish what is in flight, refuse what is new, then exit.

    drain = Drain(timeout_s=30)
    app.add_middleware(DrainMiddleware, drain=drain)      # counts requests, refuses them once draining
    DrainingServer(uvicorn.Config(app, ...), drain).run() # SIGTERM / Ctrl-C: drain, then stop

On the first SIGTERM or Ctrl-C `drain.begin()` runs: `/ready` answers 503 at once (load
balancers stop sending), every new request except the probes and metrics gets a 503 in the
OpenAI envelope with `Retry-After`, and requests already in flight, streams included, run to
completion. The server exits once none is left or after `timeout_s`, whichever comes first;
a second Ctrl-C (or SIGTERM) exits at once.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import ShuttingDown, render_error

logger = logging.getLogger("gateway.drain")
# Answered while draining, and not counted: probes must keep telling the truth, metrics keep flowing.
ALWAYS_SERVED = frozenset({"/health", "/ready", "/metrics", "/engines"})
RETRY_AFTER_S = 5


class Drain:
    def __init__(self, *, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.in_flight = 0
        self.started: float | None = None  # monotonic time drain began
        self.abandoned = False

    @property
    def draining(self) -> bool:
        return self.started is not None

    def begin(self) -> None:
        if self.started is None:
            self.started = time.monotonic()

    def abandon(self) -> None:
        """Stop waiting for requests in flight (a second signal)."""
        self.begin()
        self.abandoned = True

    def finished(self) -> bool:
        """Draining, and nothing is left to wait for (or waiting is over)."""
        if self.started is None:
            return False
        return self.abandoned or self.in_flight == 0 or time.monotonic() - self.started >= self.timeout_s


class DrainMiddleware:
    """Counts HTTP requests in flight (until their last byte is sent); refuses new ones while draining."""

    def __init__(self, app: ASGIApp, *, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in ALWAYS_SERVED:
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            error = ShuttingDown("The gateway is shutting down; retry on another replica.", retry_after=RETRY_AFTER_S)
            await render_error(error, scope)(scope, receive, send)
            return
        self.drain.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.in_flight -= 1


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain before its own shutdown; `interrupted` says a signal stopped it."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain
        self.interrupted = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the main thread between two steps of the event loop: set flags only.
        name = signal.Signals(sig).name
        if not self.drain.draining:
            self.interrupted = True
            self.drain.begin()
            logger.warning(
                "%s: draining: %d request(s) in flight get up to %.0f s; %s again stops at once",
                name,
                self.drain.in_flight,
                self.drain.timeout_s,
                name,
            )
            return
        logger.warning("%s again: stopping now", name)
        self.drain.abandon()
        self.should_exit = True
        self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        if self.drain.finished():
            left = self.drain.in_flight
            logger.warning("drain over (%d request(s) still in flight); stopping the server", left)
            return True
        return False
