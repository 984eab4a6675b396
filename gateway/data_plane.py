"""The engine routes the gateway forwards, served as plain ASGI in front of FastAPI's router.

    app.add_middleware(DataPlane, proxy=lambda: services.proxy)

Every model-routed route vLLM's OpenAI server has goes through here: `POST /v1/chat/completions`,
`/v1/completions`, `/v1/chat/completions/batch`, `/v1/responses` (with `GET /v1/responses/{id}`
and `POST /v1/responses/{id}/cancel`), the Anthropic-style `/v1/messages` and
`/v1/messages/count_tokens`, `/tokenize` and `/detokenize`. They are every request the gateway
exists for, so they skip what FastAPI and Starlette add per request (route matching over every
route, two exception-handling wrappers, dependency solving): about a quarter of the gateway's
time per proxied request (py-spy, results/bench/gateway). Everything else (probes, status,
metrics, the compare page and API) goes through FastAPI. The middlewares outside this one
(request log, API keys, request guard) apply to both; errors are rendered by the one renderer.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.access_log import request_state
from gateway.errors import MethodNotAllowed, render_error
from gateway.proxy import RESPONSES_PATH, Proxy
from gateway.request_guard import require_json
from gateway.request_policy import API_BY_PATH

_RESPONSE_OBJECT = re.compile(r"^/v1/responses/([A-Za-z0-9_.:-]{1,256})(/cancel)?$")


def route_label(path: str) -> str | None:
    """The route template a data-plane path belongs to, or None if it is not one."""
    if path in API_BY_PATH:
        return path
    match = _RESPONSE_OBJECT.match(path)
    if match:
        return RESPONSES_PATH + "/{response_id}" + (match.group(2) or "")
    return None


class DataPlane:
    def __init__(self, app: ASGIApp, *, proxy: Callable[[], Proxy]) -> None:
        self.app = app
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        api = API_BY_PATH.get(path)
        match = None if api is not None else _RESPONSE_OBJECT.match(path)
        if api is None and match is None:
            await self.app(scope, receive, send)
            return
        state = request_state(scope)
        state["route"], state["model"] = route_label(path), "unknown"  # until the body names one
        method = scope["method"]
        try:
            if api is not None:
                if method != "POST":
                    raise MethodNotAllowed(method, path, ("POST",))
                require_json(scope)
                response = await self.proxy().forward(scope, receive, api)
            else:
                assert match is not None
                cancel = match.group(2) or ""
                allowed = ("POST",) if cancel else ("GET",)
                if method not in allowed:
                    raise MethodNotAllowed(method, path, allowed)
                response = await self.proxy().forward_object(scope, receive, match.group(1), cancel)
        except Exception as exc:
            response = render_error(exc, scope)
        await response(scope, receive, send)
