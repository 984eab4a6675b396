"""Start the engines of a deployment and the gateway in front of them.

    python server.py                                   # gpu.yaml with a GPU, cpu.yaml without
    python server.py --config engine_config/test.yaml
    python server.py --engines-only                    # engines only; stop with Ctrl-C
    python server.py --gateway-only --engine http://127.0.0.1:8101 --engine qwen=http://host:8102
    python server.py --config engine_config/gpu.yaml --dry-run   # print the launch plan (JSON), start nothing

Ctrl-C or SIGTERM drains the gateway (in-flight requests finish, new ones get 503, for up to
gateway.drain_timeout_s), then stops every engine it started; a second Ctrl-C stops at once.
A gateway on a non-loopback address refuses to start without an API key unless
--allow-unauthenticated (or gateway.allow_unauthenticated: true) says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import httpx
import uvicorn

from gateway.app import create_app
from gateway.auth import exposure_check, load_api_keys
from gateway.config import DeploymentConfig, GatewaySpec, ModelSpec, load_config
from gateway.drain import Drain, DrainingServer
from gateway.errors import ConfigError, EngineStartupError
from gateway.hardware import default_config_name
from gateway.http_server import http_options
from gateway.launch_plan import plan_json
from gateway.supervisor import EngineSupervisor

ROOT = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="deployment YAML (default: engine_config/gpu.yaml or cpu.yaml)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--engines-only", action="store_true", help="start the engines, not the gateway")
    mode.add_argument("--gateway-only", action="store_true", help="serve the gateway for engines started elsewhere")
    parser.add_argument(
        "--engine",
        action="append",
        default=[],
        metavar="[NAME=]URL",
        help="with --gateway-only: an engine URL, optionally named (repeatable)",
    )
    parser.add_argument("--host", help="gateway bind address (default from the config)")
    parser.add_argument("--port", type=int, help="gateway port (default from the config)")
    parser.add_argument("--log-dir", type=Path, help="engine log directory (default from the config)")
    parser.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve a non-loopback address without API keys (gateway.allow_unauthenticated: true)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the launch plan as JSON (waves of engines) and exit"
    )
    args = parser.parse_args(argv)
    if args.engine and not args.gateway_only:
        parser.error("--engine needs --gateway-only")
    if args.gateway_only and not args.engine:
        parser.error("--gateway-only needs at least one --engine URL")
    return args


def _raise_interrupt(signum: int, _: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config_path = args.config or ROOT / "engine_config" / default_config_name()
    try:
        # A dry run shows what would start; it does not need the local models built yet.
        config = load_config(config_path, check_paths=not (args.gateway_only or args.dry_run))
        if args.gateway_only:
            config = external_engines_config(config, args.engine)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    overrides = {"host": args.host, "port": args.port, "allow_unauthenticated": args.allow_unauthenticated or None}
    gateway = config.gateway.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    config = config.model_copy(update={"gateway": gateway})
    log_dir = args.log_dir or (ROOT / config.gateway.log_dir)
    if args.dry_run:
        print(json.dumps(plan_json(config, log_dir=log_dir), indent=2))
        return 0
    if not args.engines_only:
        try:
            keys = load_api_keys(env_var=gateway.api_keys_env, file=gateway.api_keys_file)
            auth_line = exposure_check(
                host=gateway.host,
                keys=keys,
                env_var=gateway.api_keys_env,
                allow_unauthenticated=gateway.allow_unauthenticated,
            )
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return 2
        _say(auth_line)
    # Both signals stop the server, even where SIGINT was inherited as ignored (a background job).
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    _configure_logging()

    supervisor = None if args.gateway_only else EngineSupervisor(config, log_dir=log_dir, progress=_say)
    try:
        if supervisor is not None:
            supervisor.start_all()
            supervisor.start_tending(interval_s=gateway.health_interval_s)
            for engine in supervisor.engines:
                _say(f"engine {engine.name}: {engine.spec.url}/v1 (pid {engine.pid})")
        if args.engines_only:
            _say("engines ready; Ctrl-C stops them")
            while True:
                time.sleep(3600)
        serve_gateway(config, supervisor)
    except EngineStartupError as exc:
        print(f"engine startup failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        if supervisor is not None:
            # Engines drain for their --shutdown-timeout; another Ctrl-C / SIGTERM kills them now.
            signal.signal(signal.SIGINT, lambda *_: supervisor.hurry())
            signal.signal(signal.SIGTERM, lambda *_: supervisor.hurry())
            _say("stopping engines")
            supervisor.stop_all()
            _say("stopped")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return 0


def serve_gateway(config: DeploymentConfig, supervisor: EngineSupervisor | None) -> None:
    """Serve until SIGTERM / Ctrl-C, then drain (see gateway/drain.py)."""
    spec: GatewaySpec = config.gateway
    names = ", ".join(f"{m.name} (aliases: {', '.join(m.aliases) or '-'})" for m in config.models)
    _say(f"gateway: http://{spec.host}:{spec.port}/v1  models: {names}")
    drain = Drain(timeout_s=spec.drain_timeout_s)
    app = create_app(config, supervisor=supervisor, drain=drain)
    # The drain already waited for requests in flight; uvicorn's own grace only closes idle connections.
    settings = uvicorn.Config(app, host=spec.host, port=spec.port, timeout_graceful_shutdown=2, **http_options(spec))
    server = DrainingServer(settings, drain)
    server.run()
    if server.force_exit and supervisor is not None:
        supervisor.hurry()  # a second signal during the drain: the engines go at once too
    if server.interrupted:
        _say("gateway stopped")


def external_engines_config(config: DeploymentConfig, engines: list[str]) -> DeploymentConfig:
    """Models for --gateway-only: each URL's served name (given or asked of the engine),
    keeping aliases, defaults and admission from the config where the name matches. Several
    URLs with one name are replicas of that model."""
    endpoints: dict[str, list[str]] = {}
    for item in engines:
        name, _, url = item.rpartition("=")
        url = url.rstrip("/")
        endpoints.setdefault(name or discover_served_name(url), []).append(url)
    models: list[ModelSpec] = []
    for name, urls in endpoints.items():
        known = config.find_model(name)
        if known is not None:
            models.append(known.model_copy(update={"name": name, "engine": None, "endpoints": urls}))
        else:
            models.append(ModelSpec(name=name, endpoints=urls))
    narrowed = config.model_copy(update={"models": models})
    # A traffic name over a model that is not among these engines cannot serve; it goes, said aloud.
    kept = [
        t for t in config.traffic if all(narrowed.find_model(m) for m in (t.primary, t.candidate, *(t.split or {})))
    ]
    for dropped in (t for t in config.traffic if t not in kept):
        _say(
            f"traffic {dropped.name!r} is off: {dropped.primary} and {dropped.candidate} are not both among the engines"
        )
    return narrowed.model_copy(update={"traffic": kept})


def discover_served_name(url: str, *, deadline_s: float = 60) -> str:
    end = time.monotonic() + deadline_s
    while True:
        try:
            response = httpx.get(f"{url}/v1/models", timeout=5)
            response.raise_for_status()
            return str(response.json()["data"][0]["id"])
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            if time.monotonic() > end:
                raise ConfigError(f"--engine {url}: cannot ask the engine for its model name: {exc}") from exc
            time.sleep(1)


def _say(message: str) -> None:
    print(f"[server] {message}", flush=True)


def _configure_logging() -> None:
    """The gateway's own loggers to stderr; the access log keeps its JSON lines unprefixed."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(name)s] %(levelname)s %(message)s"))
    root = logging.getLogger("gateway")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    access = logging.getLogger("gateway.access")
    access.addHandler(logging.StreamHandler(sys.stderr))
    access.setLevel(logging.INFO)
    access.propagate = False


if __name__ == "__main__":
    sys.exit(main())
