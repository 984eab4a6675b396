"""Shared fixtures. `stack` starts the REAL test deployment once per session:
`python server.py --config <engine_config/test.yaml with ports moved>`, i.e. two vLLM CPU
engines plus the gateway, exactly as `make run` does, and stops it at the end, checking that
no process is left behind.

    def test_something(stack: Stack) -> None:
        client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key="unused")

Set TEST_PORT_BASE to run a second suite beside a first (gateway on BASE, engines on
BASE+101 and BASE+102; default 8010 gives test.yaml's own ports).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from benchmarks.resources import process_tree
from gateway.config import DeploymentConfig, load_config

ROOT = Path(__file__).resolve().parent.parent
STARTUP_DEADLINE_S = 900


@dataclass
class Stack:
    gateway_url: str
    config: DeploymentConfig
    config_path: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    log_dir: Path

    def engine_url(self, name: str) -> str:
        model = self.config.find_model(name)
        assert model is not None and model.engine is not None, name
        return model.engine.url

    def model_names(self) -> list[str]:
        return [m.name for m in self.config.models]

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def write_test_config(directory: Path, *, port_base: int, source: Path | None = None) -> Path:
    """A copy of test.yaml with absolute model paths and ports moved to `port_base`."""
    config = load_config(source or ROOT / "engine_config" / "test.yaml")
    data: dict[str, Any] = config.model_dump(mode="json")
    data["gateway"]["port"] = port_base
    data["gateway"]["compare"]["votes_db"] = str(directory / "votes.sqlite3")  # never the repo's
    for i, model in enumerate(data["models"]):
        model["engine"]["port"] = port_base + 101 + i
    path = directory / f"test-{port_base}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def start_server(config_path: Path, log_dir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "--config", str(config_path), "--log-dir", str(log_dir), *extra],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, log_path


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log_path: Path, *, deadline_s: float, path: str = "/ready"
) -> None:
    """Poll `url + path` until it answers 200; fail with the log if the process exits first."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log_path.read_text(errors='replace')[-4000:]}")
        try:
            if httpx.get(f"{url}{path}", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"stack not ready after {deadline_s} s:\n{log_path.read_text(errors='replace')[-4000:]}")


def stop_and_check_nothing_left(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal the server, wait for it, and fail if any process of its tree survives."""
    tree = process_tree(process.pid)
    assert len(tree) > 1, "expected the server to have engine child processes"
    process.send_signal(sig)
    process.wait(timeout=120)
    _, alive = psutil.wait_procs(tree, timeout=30)
    leftovers = [f"{p.pid} {p.name()}" for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:
        p.kill()
    assert not leftovers, f"processes left behind after {sig.name}: {leftovers}"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    port_base = int(os.environ.get("TEST_PORT_BASE", "8010"))
    directory = tmp_path_factory.mktemp("stack")
    config_path = write_test_config(directory, port_base=port_base)
    config = load_config(config_path)
    process, log_path = start_server(config_path, directory / "logs")
    url = f"http://127.0.0.1:{port_base}"
    try:
        wait_ready(url, process, log_path, deadline_s=STARTUP_DEADLINE_S)
    except BaseException:
        for p in process_tree(process.pid):
            p.kill()
        raise
    yield Stack(url, config, config_path, process, log_path, directory / "logs")
    stop_and_check_nothing_left(process)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.contextmanager
def extra_gateway(
    stack: Stack,
    directory: Path,
    *,
    port: int,
    gateway: dict[str, Any] | None = None,
    models: dict[str, dict[str, Any]] | None = None,
    endpoints: dict[str, list[str]] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """A second gateway (`server.py --gateway-only`) in front of the session's engines, with
    gateway settings and per-model settings (e.g. admission) overridden; yields its URL.
    `endpoints` replaces a model's replica list (default: the stack's engine)."""
    data: dict[str, Any] = stack.config.model_dump(mode="json")
    data["gateway"] |= {"port": port} | (gateway or {})
    urls = {name: stack.engine_url(name) for name in stack.model_names()}
    for model in data["models"]:
        model.update((models or {}).get(model["name"], {}))
    path = directory / f"gateway-{port}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    args = ["--gateway-only"]
    for name, url in urls.items():
        for endpoint in (endpoints or {}).get(name, [url]):
            args += ["--engine", f"{name}={endpoint}"]
    log_dir = directory / f"gateway-{port}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "--config", str(path), *args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=os.environ | (env or {}),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log_path, deadline_s=60, path="/health")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
