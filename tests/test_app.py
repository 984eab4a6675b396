"""The gateway in-process against a FAKE upstream (httpx.MockTransport), no engines.

These check the gateway's own logic; tests/test_integration.py drives real vLLM engines.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import DeploymentConfig, ModelSpec, SamplingDefaults

R1_URL = "http://r1.fake:1"
QWEN_URL = "http://qwen.fake:2"


class FakeUpstream:
    """Records what the gateway sent and answers like a vLLM server would."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.down: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        if base in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/health":
            return httpx.Response(200)
        body = json.loads(request.content)
        self.seen.append((str(request.url), body))
        if body.get("max_tokens", 0) > 1000:
            return httpx.Response(400, json={"error": {"message": "max_tokens too large", "type": "BadRequestError"}})
        if body.get("stream"):
            chunks = [
                {"choices": [{"delta": {"content": "Hel"}}]},
                {"choices": [{"delta": {"content": "lo"}}]},
            ]
            events = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]
            return httpx.Response(200, content=_aiter(events), headers={"content-type": "text/event-stream"})
        answer = {"choices": [{"message": {"content": "Hello"}}], "usage": {"total_tokens": 3}, "model": body["model"]}
        return httpx.Response(200, json=answer)


async def _aiter(items: list[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
def client(upstream: FakeUpstream) -> Iterator[TestClient]:
    config = DeploymentConfig(
        platform="cpu",
        models=[
            ModelSpec(
                name="r1-tiny",
                aliases=["deepseek-r1"],
                sampling_defaults=SamplingDefaults(temperature=0.6, top_p=0.95),
                system_prompt="merge_into_user",
                endpoints=[R1_URL],
            ),
            ModelSpec(name="qwen-tiny", aliases=["qwen"], endpoints=[QWEN_URL]),
        ],
    )
    app = create_app(config, transport=httpx.MockTransport(upstream))
    with TestClient(app) as test_client:
        yield test_client


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]} | extra


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return dict(error)


def test_alias_routes_to_the_served_name_with_defaults(client: TestClient, upstream: FakeUpstream) -> None:
    response = client.post("/v1/chat/completions", json=chat("deepseek-r1", top_p=0.5))
    assert response.status_code == 200
    url, body = upstream.seen[-1]
    assert url == f"{R1_URL}/v1/chat/completions"
    assert body["model"] == "r1-tiny"
    assert body["temperature"] == 0.6 and body["top_p"] == 0.5


def test_completions_route_to_the_other_engine(client: TestClient, upstream: FakeUpstream) -> None:
    response = client.post("/v1/completions", json={"model": "qwen", "prompt": "x"})
    assert response.status_code == 200
    assert upstream.seen[-1][0] == f"{QWEN_URL}/v1/completions"
    assert "temperature" not in upstream.seen[-1][1]


def test_unknown_model_is_404_listing_names(client: TestClient) -> None:
    error = assert_openai_error(client.post("/v1/chat/completions", json=chat("gpt-4")), 404)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "r1-tiny" in error["message"] and "qwen" in error["message"]


@pytest.mark.parametrize(
    "content",
    [b"{oops", b'{"messages": []}', b'"just a string"', b'{"model": "qwen", "stream": 1}'],
)
def test_malformed_requests_are_400(client: TestClient, content: bytes) -> None:
    response = client.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    assert_openai_error(response, 400)


def test_engine_400_is_passed_through(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json=chat("qwen", max_tokens=5000))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "max_tokens too large"


def test_streaming_passes_sse_through(client: TestClient) -> None:
    with client.stream("POST", "/v1/chat/completions", json=chat("qwen", stream=True)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    assert text.count("data: ") == 3 and text.endswith("data: [DONE]\n\n")


def test_engine_down_is_503_with_retry_after(client: TestClient, upstream: FakeUpstream) -> None:
    upstream.down.add(QWEN_URL)
    response = client.post("/v1/chat/completions", json=chat("qwen"))
    assert_openai_error(response, 503)
    assert int(response.headers["retry-after"]) >= 1
    assert client.post("/v1/chat/completions", json=chat("r1-tiny")).status_code == 200
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert {e["name"]: e["healthy"] for e in ready.json()["engines"]} == {"r1-tiny": True, "qwen-tiny": False}


def test_models_lists_both_with_aliases(client: TestClient) -> None:
    data = client.get("/v1/models").json()["data"]
    assert [(m["id"], m["aliases"]) for m in data] == [("r1-tiny", ["deepseek-r1"]), ("qwen-tiny", ["qwen"])]


def test_health_ready_engines(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    rows = client.get("/engines").json()
    assert [(r["name"], r["url"], r["state"], r["pid"]) for r in rows] == [
        ("r1-tiny", R1_URL, "ready", None),
        ("qwen-tiny", QWEN_URL, "ready", None),
    ]


def test_unknown_route_is_an_openai_404(client: TestClient) -> None:
    assert_openai_error(client.get("/v1/nothing"), 404)
