"""The gateway application, composed in one place.

    app = create_app(config)                          # engines reached at their config URLs
    app = create_app(config, supervisor=supervisor)   # also reports pids and states of local engines
    app = create_app(config, transport=httpx.MockTransport(handler))   # unit tests: fake upstream

Nothing is created at import time: the HTTP client to the engines lives in the lifespan.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.config import DeploymentConfig
from gateway.errors import GatewayError, error_body
from gateway.proxy import ClientDisconnected, Proxy
from gateway.routing import Router
from gateway.status import StatusReporter
from gateway.supervisor import EngineSupervisor


@dataclass
class Services:
    """Everything the route handlers use, built once per app lifetime."""

    proxy: Proxy
    status: StatusReporter


def create_app(
    config: DeploymentConfig,
    *,
    supervisor: EngineSupervisor | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    router = Router(config.models)
    services: list[Services] = []  # filled by the lifespan; a list so handlers see the one instance

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        timeout = httpx.Timeout(config.gateway.request_timeout_s, connect=config.gateway.connect_timeout_s)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport) as client:
            services.append(Services(Proxy(client, router), StatusReporter(client, router, supervisor)))
            try:
                yield
            finally:
                services.clear()

    app = FastAPI(title="R1 vs Qwen gateway", version="0.1.0", lifespan=lifespan)

    def current() -> Services:
        return services[0]

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        rows = await current().status.engines()
        ok = all(row["healthy"] for row in rows)
        return JSONResponse({"ready": ok, "engines": rows}, status_code=200 if ok else 503)

    @app.get("/engines")
    async def engines() -> list[dict[str, object]]:
        return await current().status.engines()

    @app.get("/v1/models")
    async def models() -> dict[str, object]:
        return {"object": "list", "data": current().status.models()}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await current().proxy.forward(request, path="/v1/chat/completions", chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await current().proxy.forward(request, path="/v1/completions", chat=False)

    _install_error_handlers(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers())

    @app.exception_handler(ClientDisconnected)
    async def client_gone(_: Request, __: ClientDisconnected) -> Response:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind, code=exc.status_code), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(str(exc.errors()), "invalid_request_error"), status_code=400)
