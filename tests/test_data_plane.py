"""Every engine route the gateway forwards, in-process against a FAKE upstream (no engines):
the Responses API (objects pinned to the replica that made them), the Anthropic-style
Messages API, tokenize/detokenize and the chat batch route; the request guard in front of
them; and the OpenAPI schema. tests/test_integration.py drives the same routes through real
vLLM engines with the official SDKs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import AdmissionSpec, CompareSpec, DeploymentConfig, GatewaySpec, ModelSpec

VLLM_MEDIA_TYPE_ERROR = {
    "error": {
        "message": "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed",
        "type": "Bad Request",
        "param": None,
        "code": 400,
    }
}  # what vLLM 0.32 answers, word for word (curl against a real engine)


class FakeEngines:
    """FAKE vLLM replicas: remember what each received; answer the routes the gateway forwards."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, Any]] = []  # (replica, method, path+query, body)
        self.stored: dict[str, str] = {}  # response id -> replica that made it

    def __call__(self, request: httpx.Request) -> httpx.Response:
        replica = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        path = request.url.path
        if path == "/health":
            return httpx.Response(200)
        body = json.loads(request.content) if request.content else None
        query = f"?{request.url.query.decode()}" if request.url.query else ""
        self.seen.append((replica, request.method, path + query, body))
        if path == "/v1/responses" and body is not None:
            rid = f"resp_{len(self.stored)}"
            self.stored[rid] = replica
            if body.get("stream"):
                events = [
                    ("response.created", {"type": "response.created", "response": {"id": rid}}),
                    ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "Hi"}),
                    (
                        "response.completed",
                        {
                            "type": "response.completed",
                            "response": {"id": rid, "usage": {"input_tokens": 3, "output_tokens": 1}},
                        },
                    ),
                ]
                text = "".join(f"event: {k}\ndata: {json.dumps(v)}\n\n" for k, v in events)
                return httpx.Response(200, content=text.encode(), headers={"content-type": "text/event-stream"})
            return httpx.Response(200, json={"id": rid, "object": "response", "usage": {"input_tokens": 3}})
        if path.startswith("/v1/responses/"):
            rid = path.split("/")[3]
            if self.stored.get(rid) != replica:
                return httpx.Response(
                    404, json={"error": {"message": "not found", "type": "NotFoundError", "code": 404}}
                )
            return httpx.Response(
                200, json={"id": rid, "status": "cancelled" if path.endswith("/cancel") else "completed"}
            )
        return httpx.Response(200, json={"path": path, "model": body.get("model") if body else None})


R1 = ["http://r1a.fake:1", "http://r1b.fake:2"]


@pytest.fixture
def engines() -> FakeEngines:
    return FakeEngines()


@pytest.fixture
def client(engines: FakeEngines, tmp_path: Path) -> Iterator[TestClient]:
    config = DeploymentConfig(
        platform="cpu",
        gateway=GatewaySpec(max_body_bytes=1000, compare=CompareSpec(votes_db=str(tmp_path / "v.sqlite3"))),
        models=[
            ModelSpec(name="r1-tiny", aliases=["r1"], endpoints=R1, admission=AdmissionSpec(max_in_flight=4)),
            ModelSpec(name="qwen-tiny", aliases=["qwen"], endpoints=["http://qwen.fake:3"]),
        ],
    )
    with TestClient(create_app(config, transport=httpx.MockTransport(engines))) as test_client:
        yield test_client


@pytest.mark.parametrize(
    "path", ["/v1/messages", "/v1/messages/count_tokens", "/tokenize", "/detokenize", "/v1/chat/completions/batch"]
)
def test_model_routed_engine_routes_are_forwarded(client: TestClient, engines: FakeEngines, path: str) -> None:
    response = client.post(path, json={"model": "qwen", "messages": [], "max_tokens": 5})
    assert response.status_code == 200, response.text
    assert response.json() == {"path": path, "model": "qwen-tiny"}  # routed by alias, served name sent
    assert engines.seen[-1][:3] == ("http://qwen.fake:3", "POST", path)
    metrics = client.get("/metrics").text
    assert f'gateway_requests_total{{model="qwen-tiny",route="{path}",status="200"}} 1.0' in metrics
    assert f'gateway_engine_requests_total{{model="qwen-tiny",route="{path}",status="200"}} 1.0' in metrics


def test_a_stored_response_is_read_and_cancelled_where_it_was_made(client: TestClient, engines: FakeEngines) -> None:
    made = {}
    for _ in range(4):  # least-loaded round robin spreads them over both R1 replicas
        rid = client.post("/v1/responses", json={"model": "r1", "input": "hi"}).json()["id"]
        made[rid] = engines.seen[-1][0]
    assert set(made.values()) == set(R1)
    for rid, replica in made.items():
        got = client.get(f"/v1/responses/{rid}")
        assert got.status_code == 200 and got.json()["status"] == "completed"
        assert engines.seen[-1][:3] == (replica, "GET", f"/v1/responses/{rid}")
        cancelled = client.post(f"/v1/responses/{rid}/cancel")  # no body, no content type: as in vLLM
        assert cancelled.json()["status"] == "cancelled" and engines.seen[-1][0] == replica
    assert client.get("/v1/responses/resp_0?stream=false").status_code == 200
    assert engines.seen[-1][2] == "/v1/responses/resp_0?stream=false"  # the query goes along


def test_a_streamed_response_is_remembered_too(client: TestClient, engines: FakeEngines) -> None:
    with client.stream("POST", "/v1/responses", json={"model": "r1", "input": "hi", "stream": True}) as response:
        text = "".join(response.iter_text())
    assert "event: response.completed" in text and "[DONE]" not in text  # passed through as is
    replica = engines.seen[-1][0]
    client.get("/v1/responses/resp_0")
    assert engines.seen[-1][0] == replica
    assert 'gateway_completion_tokens_total{model="r1-tiny"} 1.0' in client.get("/metrics").text


def test_an_unknown_response_id_is_asked_of_every_replica_then_404(client: TestClient, engines: FakeEngines) -> None:
    engines.stored["resp_elsewhere"] = R1[1]  # made through another gateway replica
    assert client.get("/v1/responses/resp_elsewhere").json()["id"] == "resp_elsewhere"
    missing = client.get("/v1/responses/resp_nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == 404
    assert client.get("/v1/responses/bad%20id").status_code == 404  # not a response id: no such route


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/chat/completions", "POST"),
        ("GET", "/v1/messages", "POST"),
        ("DELETE", "/v1/responses/resp_1", "GET"),
        ("GET", "/v1/responses/resp_1/cancel", "POST"),
        ("GET", "/v1/compare", "POST"),
    ],
)
def test_wrong_method_is_405_with_allow(client: TestClient, method: str, path: str, allowed: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 405 and response.headers["allow"] == allowed
    assert response.json()["error"]["code"] == 405


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/v1/messages", "/tokenize", "/v1/compare", "/v1/compare/votes"]
)
@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_body_that_is_not_json_gets_vllms_400(client: TestClient, path: str, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    body = b'{"model": "qwen", "messages": [], "prompt": "x"}'
    request = client.build_request("POST", path, content=body, headers=headers)
    if content_type is None:
        request.headers.pop("content-type", None)
    response = client.send(request)
    assert (response.status_code, response.json()) == (400, VLLM_MEDIA_TYPE_ERROR)


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/v1/compare", "/v1/compare/votes", "/v1/messages", "/nowhere"]
)
def test_every_route_bounds_the_body(client: TestClient, path: str) -> None:
    huge = {"prompt": "x" * 2000, "model": "qwen"}
    response = client.post(path, json=huge)
    assert response.status_code == 413 and response.json()["error"]["code"] == 413

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        yield b'{"prompt": "'
        for _ in range(40):
            yield b"x" * 100
        yield b'"}'

    if path != "/nowhere":
        streamed = client.post(path, content=chunked(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413


def test_an_unknown_path_is_a_404_in_the_envelope_whatever_its_body(client: TestClient) -> None:
    for method in ("GET", "POST", "PUT"):
        response = client.request(method, "/v1/nothing", content=b"plain text")
        assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"


def test_error_code_is_always_the_status_as_an_integer(client: TestClient) -> None:
    cases = [
        client.post("/v1/chat/completions", json={"model": "gpt-4", "messages": []}),  # 404
        client.post("/v1/chat/completions", json={"messages": []}),  # 400
        client.post("/v1/chat/completions", json={"model": "r1", "messages": [], "n": 99}),  # 400 limit
        client.get("/v1/nothing"),  # 404 route
        client.put("/v1/chat/completions"),  # 405
        client.post("/v1/compare", json={"prompt": "x", "temperature": "hot"}),  # 400 validation
    ]
    for response in cases:
        assert response.json()["error"]["code"] == response.status_code, response.text


def test_openapi_documents_400_not_422(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    responses = [r for item in schema["paths"].values() for op in item.values() for r in op["responses"]]
    assert "422" not in responses and "400" in responses
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    compare = schema["paths"]["/v1/compare"]["post"]["responses"]["400"]
    assert compare["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
