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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from benchmarks.resources import process_tree
from gateway.config import DeploymentConfig, load_config
from gateway.process import Child, ChildExited, ChildTimeout, launch

ROOT = Path(__file__).resolve().parent.parent
STARTUP_DEADLINE_S = 900
PORT_BASE = int(os.environ.get("TEST_PORT_BASE", "8010"))
# A model config shaped like the test models (2 layers x 1 KV head x 128 dims, float32): 2,048 B
# of KV per token, so 1 GiB holds 524,288 tokens at max_model_len 2048.
TINY_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 128,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "dtype": "float32",
}


def suite_port(offset: int) -> int:
    """A port in this suite's range, TEST_PORT_BASE + offset (0-999). Taken: the stack 0, 101, 102;
    test_server 30-35 and 131-132; test_hardening 41-47; test_traffic 61-65; test_web_page 66;
    test_supervisor 200-229; test_drain 230-259."""
    assert 0 <= offset < 1000
    return PORT_BASE + offset


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
    config = load_config(source or ROOT / "engine_config" / "test.yaml").with_port_base(port_base)
    gateway = config.gateway.model_copy(
        update={
            "compare": config.gateway.compare.model_copy(update={"votes_db": str(directory / "votes.sqlite3")}),
            "unhealthy_restart_after_s": 15,  # tests/test_hardening.py hangs an engine
        }
    )
    return config.model_copy(update={"gateway": gateway}).write(directory / f"test-{port_base}.yaml")


def start_server(
    config_path: Path, log_dir: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    """`server.py --config ... --log-dir ...` as the project runs children (gateway/process.py)."""
    log_path = log_dir / "server.log"
    argv = [sys.executable, str(ROOT / "server.py"), "--config", str(config_path), "--log-dir", str(log_dir), *extra]
    child = launch(argv, log=log_path, cwd=ROOT, env=os.environ | (env or {}))
    return child.process, log_path


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log_path: Path, *, deadline_s: float, path: str = "/ready"
) -> None:
    """Poll `url + path` until it answers 200; fail with the log if the process exits first."""
    try:
        Child(["server.py"], process).wait_until_answers(f"{url}{path}", deadline_s=deadline_s)
    except (ChildExited, ChildTimeout) as exc:
        pytest.fail(f"{exc}:\n{log_path.read_text(errors='replace')[-4000:]}")


def stop_and_check_nothing_left(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal the server, wait for it, and fail if any process of its tree survives."""
    tree = process_tree(process.pid)
    assert len(tree) > 1, "expected the server to have engine child processes"
    process.send_signal(sig)
    process.wait(timeout=120)
    assert_nothing_left(tree, after=sig.name)


def assert_nothing_left(tree: list[psutil.Process], *, after: str) -> None:
    """Every process of `tree` is gone (zombies count as gone); kills and fails on survivors."""
    _, alive = psutil.wait_procs(tree, timeout=30)
    leftovers = [f"{p.pid} {p.name()}" for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:
        p.kill()
    assert not leftovers, f"processes left behind after {after}: {leftovers}"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    port_base = PORT_BASE
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
    traffic: list[dict[str, Any]] | None = None,
) -> Iterator[str]:
    """A second gateway (`server.py --gateway-only`) in front of the session's engines, with
    gateway settings and per-model settings (e.g. admission) overridden; yields its URL.
    `endpoints` replaces a model's replica list (default: the stack's engine); `traffic`
    replaces the public traffic names."""
    data: dict[str, Any] = stack.config.model_dump(mode="json")
    data["gateway"] |= {"port": port} | (gateway or {})
    if traffic is not None:
        data["traffic"] = traffic
    urls = {name: stack.engine_url(name) for name in stack.model_names()}
    for model in data["models"]:
        model.update((models or {}).get(model["name"], {}))
    path = directory / f"gateway-{port}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    args = ["--gateway-only"]
    for name, url in urls.items():
        for endpoint in (endpoints or {}).get(name, [url]):
            args += ["--engine", f"{name}={endpoint}"]
    argv = [sys.executable, str(ROOT / "server.py"), "--config", str(path), *args]
    log_path = directory / f"gateway-{port}-logs" / "server.log"
    child = launch(argv, log=log_path, cwd=ROOT, env=os.environ | (env or {}))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, child.process, log_path, deadline_s=60, path="/health")
        yield url
    finally:
        child.stop(grace_s=30)
