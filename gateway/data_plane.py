"""The OpenAI inference routes, served as plain ASGI in front of FastAPI's router.

    app.add_middleware(DataPlane, proxy=lambda: services.proxy, metrics=metrics)

`POST /v1/chat/completions` and `POST /v1/completions` are every request the gateway exists
for, so they skip what FastAPI and Starlette add per request (route matching over every route,
two exception-handling wrappers, dependency solving): about a quarter of the gateway's time
per proxied request (py-spy, results/bench/gateway). Everything else (probes, status, metrics,
the compare page and API) goes through FastAPI as usual. The middlewares outside this one
(access log, API keys) apply to both.

Errors are rendered exactly as FastAPI's handlers render them (`gateway_error_response`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.access_log import request_state
from gateway.errors import GatewayError, InvalidRequest, error_body
from gateway.metrics import GatewayMetrics
from gateway.proxy import ClientDisconnected, Proxy

ROUTES = {"/v1/chat/completions": True, "/v1/completions": False}  # path -> is it the chat API

logger = logging.getLogger("gateway")


class MethodNotAllowed(InvalidRequest):
    status_code = 405


def gateway_error_response(exc: GatewayError, scope: Scope, metrics: GatewayMetrics) -> JSONResponse:
    """A GatewayError as the OpenAI error envelope, counted in the request metrics."""
    state = request_state(scope)
    state["error"] = exc.error_type
    metrics.requests.labels(state.get("model", "unknown"), scope["path"], str(exc.status_code)).inc()
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers())


class DataPlane:
    def __init__(self, app: ASGIApp, *, proxy: Callable[[], Proxy], metrics: GatewayMetrics) -> None:
        self.app = app
        self.proxy = proxy
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chat = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if chat is None:
            await self.app(scope, receive, send)
            return
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}; use POST.")
            response = await self.proxy().forward(Request(scope, receive), path=scope["path"], chat=chat)
        except GatewayError as exc:
            response = gateway_error_response(exc, scope, self.metrics)
            if isinstance(exc, MethodNotAllowed):
                response.headers["Allow"] = "POST"
        except ClientDisconnected:
            response = Response(status_code=499)  # nginx's "client closed request"; nobody reads it
        except Exception as exc:
            logger.exception("unexpected error on %s", scope["path"])
            message = f"Internal gateway error ({type(exc).__name__})."
            response = JSONResponse(error_body(message, "internal_error", code=500), status_code=500)
        await response(scope, receive, send)
