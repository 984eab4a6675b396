from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.auth import load_api_keys
from gateway.config import DeploymentConfig, GatewaySpec, ModelSpec
from gateway.errors import ConfigError


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
