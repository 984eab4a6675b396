"""Request ids, one JSON access-log line and one count in /metrics per request, as pure ASGI middleware.

An incoming `X-Request-Id` is kept (or one is generated), made available to the handlers in
`scope["state"]["request_id"]` so it is forwarded to the engine, and returned on the response.
The log line holds method, path, status, duration, model and token counts: never prompt text.
Every request is counted in `gateway_requests{model, route, status}`, where `route` is the route
template (`other` for paths the gateway does not serve, so strangers cannot mint label values)
and `status` is how the request really ended: a stream that broke after its 200 counts as the
error it ended with, a client that left as 499.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import GatewayMetrics

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

logger = logging.getLogger("gateway.access")


def request_state(scope: Scope) -> dict[str, Any]:
    """Per-request facts the handlers add for the access log (model, tokens, request id)."""
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


def route_label(scope: Scope) -> str:
    """The route template `scope` was served by (set by the data plane or FastAPI's router)."""
    state = scope.get("state", {})
    if state.get("route"):
        return str(state["route"])
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    return "/static" if scope.get("path", "").startswith("/static/") else "other"


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: GatewayMetrics | None = None, enabled: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"").decode("latin-1")
        request_id = incoming if _SAFE_ID.match(incoming) else secrets.token_hex(16)
        state = request_state(scope)
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER]
                message = {**message, "headers": [*headers, (REQUEST_ID_HEADER, request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            final = state.get("status", status)
            if self.metrics is not None:
                self.metrics.count_request(model=state.get("model", ""), route=route_label(scope), status=final)
            if self.enabled:
                record = {
                    "ts": round(time.time(), 3),
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": final,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "client": (scope.get("client") or ("", 0))[0],
                }
                record.update({k: v for k, v in state.items() if k.startswith(("model", "usage", "error"))})
                logger.info(json.dumps(record))
