"""Every error the gateway raises, and the one place that renders them.

    GatewayError                      500  a bug: logged with its request id, never raised on purpose
    ├── InvalidRequest                400  malformed JSON, missing/ill-typed fields, a limit exceeded
    ├── Unauthorized                  401  carries WWW-Authenticate
    ├── NotFound                      404  no such route, pair or comparison
    ├── UnknownModel                  404  names the models that do exist
    ├── MethodNotAllowed              405  carries Allow
    ├── Conflict                      409  e.g. a second vote on one comparison
    ├── PayloadTooLarge               413
    ├── Overloaded                    429  carries Retry-After
    ├── UpstreamError                 502  engine answered garbage or reset the connection
    ├── EngineUnavailable             503  engine down or not ready; carries Retry-After
    ├── ShuttingDown                  503  the gateway is draining before it stops; carries Retry-After
    └── UpstreamTimeout               504

    ClientDisconnected                the client left: nobody is there to answer (logged as 499)

`render_error(exc, scope)` turns any exception into the response the client gets: the OpenAI
error envelope `{"error": {"message", "type", "param", "code"}}` with the matching status, where
`code` is always the HTTP status as an integer, as vLLM's own errors carry it (so an engine's
error passed through and the gateway's own look alike). Anything that is not a GatewayError is
a bug: it is logged with its request id and rendered as a 500 without internals.

Transport errors become gateway errors in one place per HTTP client: `map_httpx_errors` here
(control plane and injected test transports), gateway/upstream.py for aiohttp (the data path).
Configuration problems are a separate tree (`ConfigError`), raised before anything starts.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
from starlette.responses import Response
from starlette.types import Scope

logger = logging.getLogger("gateway")


class GatewayError(Exception):
    status_code = 500
    error_type = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self._headers = headers or {}

    def to_body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, status=self.status_code, param=self.param)

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return dict(self._headers)
        return {**self._headers, "Retry-After": str(max(1, round(self.retry_after)))}


class InvalidRequest(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class Unauthorized(GatewayError):
    status_code = 401
    error_type = "authentication_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class NotFound(GatewayError):
    status_code = 404
    error_type = "not_found_error"


class UnknownModel(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"

    def __init__(self, model: str, available: list[str]) -> None:
        super().__init__(
            f"The model '{model}' does not exist. Available models: {', '.join(available)}.", param="model"
        )


class MethodNotAllowed(GatewayError):
    status_code = 405
    error_type = "invalid_request_error"

    def __init__(self, method: str, path: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            f"{method} is not allowed on {path}; use {' or '.join(allowed)}.", headers={"Allow": ", ".join(allowed)}
        )


class Conflict(GatewayError):
    status_code = 409
    error_type = "invalid_request_error"


class PayloadTooLarge(GatewayError):
    status_code = 413
    error_type = "invalid_request_error"


class Overloaded(GatewayError):
    status_code = 429
    error_type = "rate_limit_error"


class UpstreamError(GatewayError):
    status_code = 502
    error_type = "upstream_error"


class EngineUnavailable(GatewayError):
    status_code = 503
    error_type = "engine_unavailable"


class ShuttingDown(GatewayError):
    status_code = 503
    error_type = "service_unavailable"


class UpstreamTimeout(GatewayError):
    status_code = 504
    error_type = "timeout_error"


class ClientDisconnected(Exception):
    """The client went away before the answer was ready."""


class ConfigError(Exception):
    """An invalid deployment config; the message names the file and the key."""


class EngineStartupError(Exception):
    """An engine died or missed its deadline while starting; carries its log tail."""


def error_body(message: str, error_type: str, *, status: int, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": status}}


CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client left"; nobody reads it, the logs do


def as_gateway_error(exc: BaseException, scope: Scope) -> GatewayError:
    """The GatewayError a client gets for `exc`; anything unexpected is logged as the bug it is."""
    if isinstance(exc, GatewayError):
        return exc
    request_id = scope.get("state", {}).get("request_id", "-")
    logger.error(
        "internal error on %s %s (request id %s)", scope.get("method"), scope.get("path"), request_id, exc_info=exc
    )
    return GatewayError(f"Internal gateway error ({type(exc).__name__}); request id {request_id}.")


def render_error(exc: BaseException, scope: Scope) -> Response:
    """The one renderer: the response for any exception raised while serving `scope`."""
    state: dict[str, Any] = scope.setdefault("state", {})
    if isinstance(exc, ClientDisconnected):
        state["status"] = CLIENT_CLOSED_REQUEST
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    error = as_gateway_error(exc, scope)
    state["error"] = error.error_type
    state["status"] = error.status_code
    return Response(
        json.dumps(error.to_body()).encode(),
        status_code=error.status_code,
        headers=error.headers(),
        media_type="application/json",
    )


def sse_error_event(exc: GatewayError) -> bytes:
    """A failure after a stream's headers were sent: reported in-band, as vLLM does."""
    return b"data: " + json.dumps(exc.to_body()).encode() + b"\n\n"


@contextlib.contextmanager
def map_httpx_errors(engine: str) -> Iterator[None]:
    """Translate httpx transport failures talking to `engine` into gateway errors."""
    try:
        yield
    except httpx.ConnectError as exc:
        raise EngineUnavailable(f"Engine '{engine}' is not reachable: {exc}", retry_after=5) from exc
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"Engine '{engine}' timed out ({type(exc).__name__}).") from exc
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise UpstreamError(f"Engine '{engine}' dropped the connection: {exc}") from exc
