from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.auth import exposure_check, load_api_keys
from gateway.config import DeploymentConfig, GatewaySpec, ModelSpec
from gateway.errors import ConfigError
from tests.conftest import ROOT, start_server, suite_port, wait_ready


def fake_upstream(request: httpx.Request) -> httpx.Response:  # a FAKE engine
    return httpx.Response(200, json={"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# one key per line\nfile-key\n")
    monkeypatch.setenv("TEST_GATEWAY_KEYS", "env-key-1, env-key-2")
    config = DeploymentConfig(
        platform="cpu",
        gateway=GatewaySpec(api_keys_env="TEST_GATEWAY_KEYS", api_keys_file=str(keys_file)),
        models=[ModelSpec(name="m", endpoints=["http://m.fake:1"])],
    )
    with TestClient(create_app(config, transport=httpx.MockTransport(fake_upstream))) as test_client:
        yield test_client


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("path", ["/v1/models", "/engines", "/metrics"])
def test_routes_need_a_key(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.headers["www-authenticate"] == "Bearer"
    assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get(path, headers={"Authorization": "Basic env-key-1"}).status_code == 401


@pytest.mark.parametrize("key", ["env-key-1", "env-key-2", "file-key"])
def test_keys_from_env_and_file_are_accepted(client: TestClient, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    assert client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
    assert client.get("/metrics", headers=headers).status_code == 200


def test_probes_stay_open(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200


def test_no_keys_means_no_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_API_KEYS", raising=False)
    assert load_api_keys(env_var="GATEWAY_API_KEYS", file=None) == []


def test_unreadable_key_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="api_keys_file"):
        load_api_keys(env_var="UNSET_VAR_FOR_TEST", file=str(tmp_path / "missing"))


# --- closed by default (issue 11 §2) ----------------------------------------------------------


def test_ready_without_a_key_says_only_ready_from_the_cached_state(client: TestClient) -> None:
    """/ready is open, so it tells a stranger nothing but the verdict: no engines, URLs, pids
    or model paths, and no health probe of the engines per call."""
    probes: list[str] = []

    def counting_upstream(request: httpx.Request) -> httpx.Response:  # a FAKE engine
        probes.append(request.url.path)
        return httpx.Response(200)

    config = DeploymentConfig(
        platform="cpu",
        gateway=GatewaySpec(health_interval_s=3600),  # one round at startup, then none during the test
        models=[ModelSpec(name="m", endpoints=["http://m.fake:1"])],
    )
    with TestClient(create_app(config, transport=httpx.MockTransport(counting_upstream))) as open_client:
        before = len(probes)
        for _ in range(5):
            response = open_client.get("/ready")
            assert response.status_code == 200 and response.json() == {"ready": True}
        assert len(probes) == before  # answered from the monitor's last round
    keyed = client.get("/ready")
    assert keyed.json() == {"ready": True}  # the same with auth on: no key needed, no detail given
    assert "m.fake" not in keyed.text


def test_ready_turns_503_when_the_monitor_saw_an_engine_down() -> None:
    def down(request: httpx.Request) -> httpx.Response:  # a FAKE engine that is not healthy
        return httpx.Response(503)

    config = DeploymentConfig(platform="cpu", models=[ModelSpec(name="m", endpoints=["http://m.fake:1"])])
    with TestClient(create_app(config, transport=httpx.MockTransport(down))) as open_client:
        response = open_client.get("/ready")
        assert response.status_code == 503 and response.json() == {"ready": False}


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "gateway.example"])
def test_non_loopback_without_keys_refuses_to_start(host: str) -> None:
    with pytest.raises(ConfigError) as info:
        exposure_check(host=host, keys=[], env_var="GATEWAY_API_KEYS", allow_unauthenticated=False)
    message = str(info.value)
    for needed in ("GATEWAY_API_KEYS", "api_keys_file", "allow_unauthenticated: true", "--allow-unauthenticated"):
        assert needed in message


def test_keys_loopback_or_an_explicit_opt_out_start() -> None:
    line = exposure_check(host="0.0.0.0", keys=["k"], env_var="GATEWAY_API_KEYS", allow_unauthenticated=False)
    assert line.startswith("auth is on")
    for loopback in ("127.0.0.1", "127.0.0.5", "::1", "localhost"):
        line = exposure_check(host=loopback, keys=[], env_var="GATEWAY_API_KEYS", allow_unauthenticated=False)
        assert line.startswith("auth is off") and "GATEWAY_API_KEYS" in line
    line = exposure_check(host="0.0.0.0", keys=[], env_var="GATEWAY_API_KEYS", allow_unauthenticated=True)
    assert "auth is off on 0.0.0.0" in line


def run_server(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "server.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=ROOT,
    )


def test_server_refuses_a_public_address_without_keys_and_starts_with_the_opt_out(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_API_KEYS"}
    port = suite_port(260)
    args = ["--gateway-only", "--engine", f"m=http://127.0.0.1:{suite_port(261)}", "--port", str(port)]
    refused = run_server(*args, "--host", "0.0.0.0", env=env)
    assert refused.returncode == 2
    assert "GATEWAY_API_KEYS" in refused.stderr and "--allow-unauthenticated" in refused.stderr

    for extra, expected in (
        (["--host", "0.0.0.0", "--allow-unauthenticated"], "auth is off on 0.0.0.0"),
        (["--host", "127.0.0.1"], "auth is off: no API key configured"),
    ):
        config = ROOT / "engine_config" / "test.yaml"
        process, log = start_server(config, tmp_path / "logs", *args, *extra, env={"GATEWAY_API_KEYS": ""})
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, log, deadline_s=60, path="/health")
            assert log.read_text().count(expected) == 1
        finally:
            process.terminate()
            assert process.wait(timeout=60) == 0
        log.unlink()
