"""The gateway application, composed in one place.

    app = create_app(config)                          # engines reached at their config URLs
    app = create_app(config, supervisor=supervisor)   # also restarts and reports local engines
    app = create_app(config, transport=httpx.MockTransport(handler))   # unit tests: fake upstream
    app = create_app(config, resolver=fake_resolver)  # DNS discovery through another resolver

The engines are reached over two clients: aiohttp on the data path (gateway/upstream.py, every
request that makes an engine work, through gateway/dispatch.py) and httpx for the control plane
(health checks, status). With an injected transport both go through it.

Nothing is created at import time: the HTTP clients, the health monitor, the database and the
admission gates live in the lifespan / the factory's closure.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.access_log import AccessLogMiddleware
from gateway.admission import AdmissionGate
from gateway.auth import ApiKeyMiddleware, load_api_keys
from gateway.compare import ComparePlan, Comparer
from gateway.compare_api import STATIC_DIR, compare_router, record_of
from gateway.config import DeploymentConfig
from gateway.data_plane import DataPlane
from gateway.database import open_database
from gateway.discovery import Discovery, Resolver, system_resolver
from gateway.dispatch import Dispatcher
from gateway.drain import Drain, DrainMiddleware
from gateway.engine_load import EngineLoadMonitor
from gateway.errors import GatewayError, InvalidRequest, MethodNotAllowed, NotFound, render_error
from gateway.health import HealthMonitor
from gateway.metrics import GatewayMetrics
from gateway.mirror import Mirror
from gateway.proxy import Proxy
from gateway.report_page import report_router, resolve_report_dir
from gateway.request_guard import RequestGuard
from gateway.routing import ModelRoute, Replica, Router
from gateway.status import StatusReporter
from gateway.supervisor import EngineProcess, EngineState, EngineSupervisor
from gateway.tally import Tallies
from gateway.traffic import TrafficDirector
from gateway.traffic_api import traffic_router
from gateway.traffic_store import TrafficStore
from gateway.upstream import POOL_KEEPALIVE_S, AiohttpUpstream, HttpxUpstream, Upstream
from gateway.votes import VoteStore, resolve_db_target


@dataclass
class Services:
    """Everything the route handlers use, built once per app lifetime."""

    client: httpx.AsyncClient
    proxy: Proxy
    status: StatusReporter
    compare: Comparer
    votes: VoteStore
    monitor: HealthMonitor
    tallies: Tallies
    traffic_store: TrafficStore


def create_app(
    config: DeploymentConfig,
    *,
    supervisor: EngineSupervisor | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    drain: Drain | None = None,
    resolver: Resolver = system_resolver,
) -> FastAPI:
    spec = config.gateway
    drain = drain or Drain(timeout_s=spec.drain_timeout_s)  # server.py passes the one its signals start
    router = Router(config.models)
    metrics = GatewayMetrics()
    gates = {
        route.name: AdmissionGate(
            # Per replica; resized as discovered replicas come and go (replicas_changed below).
            max_in_flight=max(1, route.spec.admission.max_in_flight * len(route.replicas)),
            max_queue=route.spec.admission.max_queue,
            queue_timeout_s=route.spec.admission.queue_timeout_s,
        )
        for route in router.routes
    }
    for name, gate in gates.items():  # read at scrape time, so they are never stale
        metrics.in_flight.labels(name).set_function(functools.partial(getattr, gate, "in_flight"))
        metrics.queued.labels(name).set_function(functools.partial(getattr, gate, "queued"))
    for route in router.routes:
        metrics.replicas.labels(route.name).set_function(functools.partial(_routable, route))

    def replicas_changed(route: ModelRoute, joined: list[Replica], left: list[Replica]) -> None:
        gates[route.name].resize(route.spec.admission.max_in_flight * len(route.routable))

    discovery = Discovery(router, metrics=metrics, on_change=replicas_changed, resolver=resolver)
    if supervisor is not None:
        for engine in supervisor.engines:
            metrics.engine_restarts.labels(engine.name).set_function(functools.partial(getattr, engine, "restarts"))
            metrics.engine_failed.labels(engine.name).set_function(functools.partial(_is_failed, engine))
    # Public traffic names (canary + mirror); built here so that a wrong name fails at startup.
    traffic = TrafficDirector(config.traffic, router, metrics)
    api_keys = load_api_keys(env_var=spec.api_keys_env, file=spec.api_keys_file)
    services: list[Services] = []  # filled by the lifespan; a list so handlers see the one instance

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        timeout = httpx.Timeout(spec.request_timeout_s, connect=spec.connect_timeout_s)
        # Idle connections go before the engine's keep-alive closes them (see gateway/upstream.py).
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=512, keepalive_expiry=POOL_KEEPALIVE_S)
        database = open_database(resolve_db_target(os.environ.get(spec.compare.votes_db_env) or spec.compare.votes_db))
        async with httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport) as client:
            # The data path gets its own, faster client; an injected (fake) transport is used for it too.
            upstream: Upstream = (
                HttpxUpstream(client)
                if transport is not None
                else AiohttpUpstream(
                    connect_timeout_s=spec.connect_timeout_s,
                    on_resend=lambda model: metrics.resent.labels(model).inc(),
                )
            )
            votes = VoteStore(database)
            dispatcher = Dispatcher(upstream, gates, metrics)
            traffic_store = TrafficStore(votes)
            traffic.store = traffic_store
            traffic.mirror = Mirror(
                dispatcher,
                lambda record, reviewable: traffic_store.save_pair(record, reviewable=reviewable),
                request_timeout_s=spec.request_timeout_s,
                first_byte_timeout_s=spec.first_byte_timeout_s,
            )

            async def keep_comparison(plan: ComparePlan) -> None:
                await asyncio.to_thread(votes.save_comparison, record_of(plan))

            await discovery.refresh()  # the first addresses, before the first health checks
            finding = asyncio.create_task(discovery.run())
            monitor = HealthMonitor(client, router, metrics, spec)
            await monitor.check_once()
            watch = asyncio.create_task(monitor.run())
            engine_load = EngineLoadMonitor(client, router)  # `prefix` models only; else it returns at once
            reading = asyncio.create_task(engine_load.run())
            if traffic.routes:
                await traffic.sync_once()  # runtime settings other replicas (or a previous run) stored
            follow = asyncio.create_task(traffic.run())
            services.append(
                Services(
                    client,
                    Proxy(dispatcher, router, metrics, spec, traffic),
                    StatusReporter(client, router, supervisor),
                    Comparer(dispatcher, router, timeout_s=spec.request_timeout_s, on_finished=keep_comparison),
                    votes,
                    monitor,
                    Tallies(votes),
                    traffic_store,
                )
            )
            try:
                yield
            finally:
                watch.cancel()
                reading.cancel()
                follow.cancel()
                await traffic.mirror.aclose()
                finding.cancel()
                services.clear()
                await upstream.aclose()
                database.close()

    app = FastAPI(title="R1 vs Qwen gateway", version="0.1.0", lifespan=lifespan)

    def current() -> Services:
        return services[0]

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Response:
        # Open to anyone, so it says nothing but the verdict, from the monitor's last round
        # (no probe per call); details are on /engines, behind the key. 503 once draining.
        ok = current().monitor.ready and not drain.draining
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

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

    # The compare page and API.
    app.include_router(
        compare_router(
            lambda: current().compare,
            lambda: current().votes,
            anonymous=spec.compare.anonymous,
            tallies=lambda: current().tallies,
        )
    )
    app.include_router(traffic_router(lambda: traffic, lambda: current().traffic_store, lambda: current().tallies))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")  # the page's scripts and styles
    app.include_router(report_router(resolve_report_dir(spec.report_dir)))  # GET /report/: make report's newest

    _install_error_handlers(app)
    _document_errors_as_served(app)
    # Each add_middleware wraps what is there. From the outside in: the request log (request id,
    # one log line and one count per request, 401s included), the drain, API keys, the request guard (body
    # size, JSON content type), then the engine routes, served without FastAPI.
    app.add_middleware(DataPlane, proxy=lambda: current().proxy)
    app.add_middleware(RequestGuard, max_body_bytes=spec.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=api_keys)
    app.add_middleware(DrainMiddleware, drain=drain)  # counts requests in flight; 503 once stopping
    app.add_middleware(AccessLogMiddleware, metrics=metrics, enabled=spec.access_log)
    return app


def _is_failed(engine: EngineProcess) -> float:
    return 1.0 if engine.state is EngineState.FAILED else 0.0


def _routable(route: ModelRoute) -> int:
    return len(route.routable)


def _install_error_handlers(app: FastAPI) -> None:
    """FastAPI's own errors, mapped into the one hierarchy and rendered by the one renderer."""

    @app.exception_handler(Exception)
    async def any_error(request: Request, exc: Exception) -> Response:
        return render_error(exc, request.scope)

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> Response:
        return render_error(exc, request.scope)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        error: GatewayError
        if exc.status_code == 404:
            error = NotFound(f"No route {request.url.path}.")
        elif exc.status_code == 405:
            allowed = tuple((exc.headers or {}).get("Allow", "GET").split(", "))
            error = MethodNotAllowed(request.method, request.url.path, allowed)
        else:
            error = InvalidRequest(str(exc.detail))
            error.status_code = exc.status_code
        return render_error(error, request.scope)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = exc.errors()
        first = problems[0] if problems else {}
        location = [str(p) for p in first.get("loc", ()) if p != "body"]
        message = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}" for e in problems
        )
        return render_error(
            InvalidRequest(message or "Invalid request.", param=".".join(location) or None), request.scope
        )


def _document_errors_as_served(app: FastAPI) -> None:
    """FastAPI documents a 422 for every route with a body; this gateway answers 400 (as vLLM
    does), always in the error envelope: make the schema say so."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["ErrorResponse"] = {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                        "code": {"type": "integer"},
                    },
                }
            },
        }
        error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.setdefault("responses", {})
                had_body = responses.pop("422", None) is not None
                if had_body:
                    responses["400"] = {"description": "Invalid request", **error}
                    responses["413"] = {"description": "Body too large", **error}
                responses.setdefault("401", {"description": "Missing or invalid API key", **error})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
