"""One error hierarchy for the gateway, rendered as the OpenAI error envelope.

    GatewayError                      (500, never raised on purpose)
    ├── InvalidRequest                400  malformed JSON, missing/ill-typed fields
    ├── Unauthorized                  401
    ├── UnknownModel                  404  names the models that do exist
    ├── PayloadTooLarge               413
    ├── Overloaded                    429  carries Retry-After
    ├── UpstreamError                 502  engine answered garbage or reset the connection
    ├── EngineUnavailable             503  engine down or not ready; carries Retry-After
    └── UpstreamTimeout               504

Transport errors become gateway errors in one place per HTTP client: `map_upstream_errors`
for httpx (control plane, compare), gateway/upstream.py for aiohttp (the proxied requests).
Configuration problems are a separate tree (`ConfigError`),
raised before anything starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx


class GatewayError(Exception):
    status_code = 500
    error_type = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def to_body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, param=self.param, code=self.code)

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class InvalidRequest(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class Unauthorized(GatewayError):
    status_code = 401
    error_type = "authentication_error"


class UnknownModel(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"

    def __init__(self, model: str, available: list[str]) -> None:
        super().__init__(
            f"The model '{model}' does not exist. Available models: {', '.join(available)}.",
            param="model",
            code="model_not_found",
        )


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


class UpstreamTimeout(GatewayError):
    status_code = 504
    error_type = "timeout_error"


class ConfigError(Exception):
    """An invalid deployment config; the message names the file and the key."""


class EngineStartupError(Exception):
    """An engine died or missed its deadline while starting; carries its log tail."""


def error_body(
    message: str, error_type: str, *, param: str | None = None, code: str | int | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


@contextlib.contextmanager
def map_upstream_errors(engine: str) -> Iterator[None]:
    """Translate transport failures talking to `engine` into gateway errors."""
    try:
        yield
    except httpx.ConnectError as exc:
        raise EngineUnavailable(f"Engine '{engine}' is not reachable: {exc}", retry_after=5) from exc
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"Engine '{engine}' timed out ({type(exc).__name__}).") from exc
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise UpstreamError(f"Engine '{engine}' dropped the connection: {exc}") from exc
