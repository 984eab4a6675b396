"""Start the engines of a deployment and the gateway in front of them.

    python server.py                                   # gpu.yaml with a GPU, cpu.yaml without
    python server.py --config engine_config/test.yaml
    python server.py --engines-only                    # engines only; stop with Ctrl-C
    python server.py --gateway-only --engine http://127.0.0.1:8101 --engine qwen=http://host:8102

Ctrl-C or SIGTERM stops the gateway and every engine it started.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import httpx
import uvicorn

from gateway.app import create_app
from gateway.config import DeploymentConfig, ModelSpec, load_config
from gateway.errors import ConfigError, EngineStartupError
from gateway.hardware import default_config_name
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
        config = load_config(config_path, check_paths=not args.gateway_only)
        if args.gateway_only:
            config = external_engines_config(config, args.engine)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    gateway = config.gateway.model_copy(
        update={k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    )
    config = config.model_copy(update={"gateway": gateway})
    log_dir = args.log_dir or (ROOT / config.gateway.log_dir)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    access = logging.getLogger("gateway.access")
    access.addHandler(logging.StreamHandler(sys.stderr))
    access.setLevel(logging.INFO)

    supervisor = None if args.gateway_only else EngineSupervisor(config, log_dir=log_dir, progress=_say)
    try:
        if supervisor is not None:
            supervisor.start_all()
            for engine in supervisor.engines:
                _say(f"engine {engine.name}: {engine.spec.url}/v1 (pid {engine.pid})")
        if args.engines_only:
            _say("engines ready; Ctrl-C stops them")
            while True:
                time.sleep(3600)
        names = ", ".join(f"{m.name} (aliases: {', '.join(m.aliases) or '-'})" for m in config.models)
        _say(f"gateway: http://{gateway.host}:{gateway.port}/v1  models: {names}")
        app = create_app(config, supervisor=supervisor)
        uvicorn.run(app, host=gateway.host, port=gateway.port, log_level="warning", timeout_graceful_shutdown=5)
    except EngineStartupError as exc:
        print(f"engine startup failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abort the cleanup
        if supervisor is not None:
            _say("stopping engines")
            supervisor.stop_all()
            _say("stopped")
    return 0


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
    return config.model_copy(update={"models": models})


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


if __name__ == "__main__":
    sys.exit(main())
