"""The gateway application, composed in one place.

    app = create_app(config)                          # engines reached at their config URLs
    app = create_app(config, supervisor=supervisor)   # also restarts and reports local engines
    app = create_app(config, transport=httpx.MockTransport(handler))   # unit tests: fake upstream

The engines are reached over two clients: aiohttp on the data path (gateway/upstream.py, the
proxied requests) and httpx for the control plane (health checks, status, compare). With an
injected transport both go through it.

Nothing is created at import time: the HTTP client to the engines, the health monitor and the
admission gates live in the lifespan / the factory's closure.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.access_log import AccessLogMiddleware
from gateway.admission import AdmissionGate
from gateway.auth import ApiKeyMiddleware, load_api_keys
from gateway.compare import Comparer
from gateway.compare_api import STATIC_DIR, compare_router
from gateway.config import DeploymentConfig
from gateway.data_plane import DataPlane, gateway_error_response
from gateway.errors import GatewayError, error_body
from gateway.health import HealthMonitor
from gateway.metrics import GatewayMetrics
from gateway.proxy import ClientDisconnected, Proxy
from gateway.routing import Router
from gateway.status import StatusReporter
from gateway.supervisor import EngineSupervisor
from gateway.upstream import AiohttpUpstream, HttpxUpstream, Upstream
from gateway.votes import VoteStore, resolve_db_path


@dataclass
class Services:
    """Everything the route handlers use, built once per app lifetime."""

    client: httpx.AsyncClient
    proxy: Proxy
    status: StatusReporter
    compare: Comparer  # issue 4: side-by-side comparison
    votes: VoteStore  # issue 4: its votes


def create_app(
    config: DeploymentConfig,
    *,
    supervisor: EngineSupervisor | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    spec = config.gateway
    router = Router(config.models)
    metrics = GatewayMetrics()
    gates = {
        route.name: AdmissionGate(
            max_in_flight=route.spec.admission.max_in_flight * len(route.replicas),
            max_queue=route.spec.admission.max_queue,
            queue_timeout_s=route.spec.admission.queue_timeout_s,
        )
        for route in router.routes
    }
    for name, gate in gates.items():  # read at scrape time, so they are never stale
        metrics.in_flight.labels(name).set_function(functools.partial(getattr, gate, "in_flight"))
        metrics.queued.labels(name).set_function(functools.partial(getattr, gate, "queued"))
    if supervisor is not None:
        for engine in supervisor.engines:
            metrics.engine_restarts.labels(engine.name).set_function(functools.partial(getattr, engine, "restarts"))
    api_keys = load_api_keys(env_var=spec.api_keys_env, file=spec.api_keys_file)
    services: list[Services] = []  # filled by the lifespan; a list so handlers see the one instance

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        timeout = httpx.Timeout(spec.request_timeout_s, connect=spec.connect_timeout_s)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=512)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport) as client:
            # The data path gets its own, faster client; an injected (fake) transport is used for it too.
            upstream: Upstream = (
                HttpxUpstream(client)
                if transport is not None
                else AiohttpUpstream(connect_timeout_s=spec.connect_timeout_s)
            )
            monitor = HealthMonitor(client, router, metrics, supervisor, spec)
            await monitor.check_once()
            watch = asyncio.create_task(monitor.run())
            services.append(
                Services(
                    client,
                    Proxy(upstream, router, gates, metrics, spec),
                    StatusReporter(client, router, supervisor),
                    Comparer(client, router, gates),
                    VoteStore(resolve_db_path(spec.compare.votes_db)),
                )
            )
            try:
                yield
            finally:
                watch.cancel()
                services.clear()
                await upstream.aclose()

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

    @app.get("/metrics")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def models() -> dict[str, object]:
        return {"object": "list", "data": current().status.models()}

    # --- compare page and API (issue 4) ---
    compare = compare_router(lambda: current().compare, lambda: current().votes, anonymous=spec.compare.anonymous)
    app.include_router(compare)  # GET / (the page) and /v1/compare*
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")  # the page's scripts and styles
    # --- end compare ---

    _install_error_handlers(app, metrics)
    # Each add_middleware wraps what is there: the access log is outermost, so every response
    # (401s included) carries a request id and gets a log line; then API keys; then the
    # inference routes (POST /v1/chat/completions, /v1/completions), served without FastAPI.
    app.add_middleware(DataPlane, proxy=lambda: current().proxy, metrics=metrics)
    app.add_middleware(ApiKeyMiddleware, keys=api_keys)
    app.add_middleware(AccessLogMiddleware, enabled=spec.access_log)
    return app


def _install_error_handlers(app: FastAPI, metrics: GatewayMetrics) -> None:
    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return gateway_error_response(exc, request.scope, metrics)

    @app.exception_handler(ClientDisconnected)
    async def client_gone(_: Request, __: ClientDisconnected) -> Response:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind, code=exc.status_code), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        message = f"Internal gateway error ({type(exc).__name__})."
        return JSONResponse(error_body(message, "internal_error", code=500), status_code=500)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(str(exc.errors()), "invalid_request_error"), status_code=400)
