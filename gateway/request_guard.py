"""Limits on every request body, whichever route it is for.

    app.add_middleware(RequestGuard, max_body_bytes=4 << 20)    # pure ASGI middleware
    require_json(scope)                                          # in a route that takes a JSON body

- A body larger than `max_body_bytes` is a 413, on every route: at once when Content-Length says
  so, or as soon as a chunked body passes the limit while the route reads it.
- A route that takes a JSON body (every engine route and the gateway's own POST/PUT routes)
  refuses any other Content-Type with a 400 carrying vLLM's own error ("Only 'application/json'
  is allowed"), so the gateway answers as the engine would. This also keeps a web page from
  making a visitor's browser spend engine time (or cast a vote) through a cross-site "simple"
  POST, which can only send form or text bodies without a preflight. It is checked once the
  route is known, so an unknown path is still a 404.

Limits on the connection itself (header size, header read time, open connections) are the
HTTP protocol's: gateway/http_server.py.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import InvalidRequest, PayloadTooLarge, render_error


class UnsupportedMediaType(InvalidRequest):
    """vLLM's answer to a body that is not JSON, word for word (a 400, not a 415)."""

    error_type = "Bad Request"

    def __init__(self) -> None:
        super().__init__("1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed")


def require_json(scope: Scope) -> None:
    """Raise vLLM's 400 unless the request says its body is JSON."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            if value.split(b";", 1)[0].strip().lower() == b"application/json":
                return
            break
    raise UnsupportedMediaType


class RequestGuard:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        problem = self._check(headers)
        if problem is not None:
            await render_error(problem, scope)(scope, receive, send)
            return
        limit, seen = self.limit, 0

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"Request body is larger than {limit} bytes.")
            return message

        await self.app(scope, bounded_receive, send)

    def _check(self, headers: dict[bytes, bytes]) -> PayloadTooLarge | None:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return PayloadTooLarge(f"Request body is larger than {self.limit} bytes.")
        return None
