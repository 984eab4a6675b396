"""Serving the gateway over HTTP: uvicorn with limits on the connection itself.

    uvicorn.run(app, host=spec.host, port=spec.port, **http_options(spec))

An ASGI app only sees a request once its headers are complete, so three limits have to live in
the HTTP protocol (uvicorn's httptools protocol, extended here):

- header size: request line plus headers above `max_header_bytes` get a 431 and the connection
  is closed (llhttp itself sets no limit, so uvicorn would keep collecting);
- header read time: a connection must complete a request's headers within `header_timeout_s`
  of opening or of the request's first byte (a client that sends half a header and waits is
  cut off with a 408); uvicorn's keep-alive timeout covers idle connections between requests,
  but not one that never sends a byte or stops mid-header;
- open connections: beyond `max_connections` a new connection gets a 503 with Retry-After and
  is closed, before any request is read.

Each answer is the OpenAI error envelope, like every other refusal of the gateway.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config import GatewaySpec
from gateway.errors import error_body

_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def raw_error_response(status: int, message: str, error_type: str, *, retry_after: int | None = None) -> bytes:
    body = json.dumps(error_body(message, error_type, status=status)).encode()
    head = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus the header-size, header-time and connection limits."""

    max_header_bytes = 16 * 1024
    header_timeout_s = 10.0
    max_connections = 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            self._refused = True
            message = f"The gateway has {len(self.connections)} open connections, its limit; try again shortly."
            transport.write(raw_error_response(503, message, "engine_unavailable", retry_after=1))
            transport.close()
            return
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431, f"Request headers are larger than {self.max_header_bytes} bytes.")
            else:
                self._refuse(400, "Invalid HTTP request received.")
        except httptools.HttpParserError:
            self._refuse(400, "Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    # Parser callbacks: count what the headers take, and time them.
    def on_message_begin(self) -> None:
        self._header_bytes = 0
        self._arm_header_timer()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.max_header_bytes:
            raise ValueError("request headers too large")  # surfaces as HttpParserCallbackError

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being served; its headers were complete
        self._refuse(408, f"Request headers were not complete within {self.header_timeout_s:g} s.")

    def _refuse(self, status: int, message: str) -> None:
        self._cancel_header_timer()
        if not self.transport.is_closing():
            kind = "invalid_request_error" if status != 408 else "timeout_error"
            self.transport.write(raw_error_response(status, message, kind))
            self.transport.close()


def http_options(spec: GatewaySpec) -> dict[str, Any]:
    """uvicorn settings that carry the gateway's connection limits."""
    protocol = type(
        "GatewayHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "max_header_bytes": spec.max_header_bytes,
            "header_timeout_s": spec.header_timeout_s,
            "max_connections": spec.max_connections,
        },
    )
    return {
        "http": protocol,
        "timeout_keep_alive": spec.keep_alive_timeout_s,
        "log_level": "warning",
    }
