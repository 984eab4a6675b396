"""server.py as users run it: config errors, engine startup failure, the engines-only and
gateway-only modes, and Ctrl-C leaving no process behind (real vLLM engines)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
import yaml

import server
from gateway.app import create_app
from gateway.config import load_config
from tests.conftest import (
    ROOT,
    STARTUP_DEADLINE_S,
    Stack,
    start_server,
    stop_and_check_nothing_left,
    suite_port,
    wait_ready,
    write_test_config,
)


def run_server(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "server.py"), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_invalid_config_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    config = {
        "platform": "cpu",
        "models": [
            {"name": "a", "engine": {"model": "org/a", "max_model_len": 512, "port": 8111}},
            {"name": "b", "engine": {"model": "org/b", "max_model_len": 512, "port": 8111}},
        ],
    }
    path = tmp_path / "dup.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_server("--config", str(path), timeout=60)
    assert result.returncode == 2
    assert f"{path}: models[1].engine.port: port 8111 also used by models[0].engine.port" in result.stderr


def test_gateway_only_needs_engines() -> None:
    result = run_server("--gateway-only", timeout=60)
    assert result.returncode == 2 and "--gateway-only needs at least one --engine" in result.stderr


def test_gateway_only_keeps_a_traffic_name_only_when_both_its_models_are_among_the_engines() -> None:
    config = load_config(ROOT / "engine_config" / "test.yaml", check_paths=False)
    assert [t.name for t in config.traffic] == ["assistant"]
    both = server.external_engines_config(config, ["qwen-tiny=http://127.0.0.1:1", "r1=http://127.0.0.1:2"])
    assert [t.name for t in both.traffic] == ["assistant"]
    assert create_app(both).state is not None  # the traffic name resolves over the narrowed models
    one = server.external_engines_config(config, ["qwen-tiny=http://127.0.0.1:1"])
    assert one.traffic == [] and [m.name for m in one.models] == ["qwen-tiny"]
    create_app(one)  # with the name kept, this raised ConfigError: r1 is not among the engines


@pytest.mark.engines
def test_engine_that_cannot_load_its_model_fails_startup_with_log_tail(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "no_such_architecture"}))
    config = {
        "platform": "cpu",
        "gateway": {"port": suite_port(30)},
        "models": [{"name": "broken", "engine": {"model": str(broken), "max_model_len": 256, "port": suite_port(131)}}],
    }
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_server("--config", str(path), "--log-dir", str(tmp_path / "logs"))
    assert result.returncode == 1
    assert "engine startup failed: engine broken exited with code" in result.stderr
    assert "no_such_architecture" in result.stderr  # the log tail names the cause


@pytest.mark.engines
def test_engines_only_then_gateway_only_then_ctrl_c(tmp_path: Path, stack: Stack) -> None:
    """`--engines-only` serves engines without a gateway; `--gateway-only` fronts them
    (here: the session stack's engines, discovered by URL); SIGINT leaves nothing behind."""
    config_path = write_test_config(tmp_path, port_base=suite_port(30))
    only_r1 = yaml.safe_load(config_path.read_text())
    only_r1["models"] = only_r1["models"][:1]  # one engine is enough here; the CPU is shared
    only_r1["traffic"] = []  # `assistant` names qwen, which this config no longer has (a config error)
    config_path.write_text(yaml.safe_dump(only_r1))
    engines, log = start_server(config_path, tmp_path / "logs", "--engines-only")
    try:
        r1_url = f"http://127.0.0.1:{suite_port(131)}"
        wait_ready(r1_url, engines, log, deadline_s=STARTUP_DEADLINE_S, path="/health")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{suite_port(30)}/health")  # no gateway in this mode

        gateway, gateway_log = start_server(
            config_path,
            tmp_path / "gateway-logs",
            "--gateway-only",
            "--engine",
            r1_url,  # name discovered from the engine, aliases taken from the config
            "--engine",
            f"qwen-tiny={stack.engine_url('qwen-tiny')}",
            "--port",
            str(suite_port(35)),
        )
        try:
            wait_ready(f"http://127.0.0.1:{suite_port(35)}", gateway, gateway_log, deadline_s=120)
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{suite_port(35)}/v1", api_key="unused", max_retries=0)
            assert {m.id for m in client.models.list()} == {"r1-tiny", "qwen-tiny"}
            reply = client.chat.completions.create(
                model="deepseek-r1", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
            assert reply.model == "r1-tiny" and reply.usage is not None
            rows = httpx.get(f"http://127.0.0.1:{suite_port(35)}/engines").json()
            assert {r["url"] for r in rows} == {r1_url, stack.engine_url("qwen-tiny")}
            assert all(r["pid"] is None for r in rows)  # not started by this gateway
        finally:
            gateway.send_signal(signal.SIGTERM)
            assert gateway.wait(timeout=60) == 0
    finally:
        stop_and_check_nothing_left(engines, signal.SIGINT)
    assert engines.returncode == 0
    assert "stopped" in log.read_text()
