"""The gateway in-process against a FAKE upstream (httpx.MockTransport), no engines.

These check the gateway's own logic; tests/test_integration.py drives real vLLM engines.
"""

from __future__ import annotations

import collections
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import DeploymentConfig, GatewaySpec, ModelSpec, SamplingDefaults
from gateway.policies import HashRing

R1_URL = "http://r1.fake:1"
QWEN_URL = "http://qwen.fake:2"


class FakeUpstream:
    """Records what the gateway sent and answers like a vLLM server would."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.request_ids: list[str | None] = []
        self.down: set[str] = set()  # nothing answers, health checks included
        self.refused: set[str] = set()  # health checks pass, requests cannot connect
        self.attempts: collections.Counter[str] = collections.Counter()  # requests tried, per replica
        self.break_streams = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        if base in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/health":
            return httpx.Response(200)
        self.attempts[base] += 1
        if base in self.refused:
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content)
        self.seen.append((str(request.url), body))
        if body.get("max_tokens", 0) > 1000:
            return httpx.Response(400, json={"error": {"message": "max_tokens too large", "type": "BadRequestError"}})
        self.request_ids.append(request.headers.get("x-request-id"))
        if body.get("stream"):
            chunks: list[dict[str, Any]] = [
                {"choices": [{"delta": {"role": "assistant", "content": ""}}]},
                {"choices": [{"delta": {"content": "Hel"}}]},
                {"choices": [{"delta": {"content": "lo"}}]},
            ]
            if (body.get("stream_options") or {}).get("include_usage"):
                chunks.append({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}})
            events = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]
            if self.break_streams:
                events = events[:2]
            content = _aiter(events, fail=self.break_streams)
            return httpx.Response(200, content=content, headers={"content-type": "text/event-stream"})
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        answer = {"choices": [{"message": {"content": "Hello"}}], "usage": usage, "model": body["model"]}
        return httpx.Response(200, json=answer)


async def _aiter(items: list[bytes], *, fail: bool = False) -> AsyncIterator[bytes]:
    for item in items:
        yield item
    if fail:
        raise httpx.ReadError("engine died mid-stream")


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
    assert error["code"] == 404 and error["param"] == "model"
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


def stream_text(client: TestClient, body: dict[str, Any]) -> str:
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return "".join(response.iter_text())


def test_streaming_passes_sse_through_and_hides_usage_it_added(client: TestClient, upstream: FakeUpstream) -> None:
    text = stream_text(client, chat("qwen", stream=True))
    assert upstream.seen[-1][1]["stream_options"] == {"include_usage": True}  # asked for the metrics
    assert text.count("data: ") == 4 and text.endswith("data: [DONE]\n\n")
    assert '"usage"' not in text  # the client did not ask for it


def test_streaming_keeps_usage_the_client_asked_for(client: TestClient) -> None:
    text = stream_text(client, chat("qwen", stream=True, stream_options={"include_usage": True}))
    assert '"completion_tokens": 2' in text


def test_stream_broken_midway_ends_with_an_sse_error_event(client: TestClient, upstream: FakeUpstream) -> None:
    upstream.break_streams = True
    text = stream_text(client, chat("qwen", stream=True))
    *_, error, done = text.strip().split("\n\n")  # as vLLM ends a failed stream: the error, then [DONE]
    last = json.loads(error.removeprefix("data: "))
    assert last["error"]["type"] == "upstream_error" and last["error"]["code"] == 502 and done == "data: [DONE]"


def test_metrics_count_requests_tokens_and_latencies(client: TestClient) -> None:
    client.post("/v1/chat/completions", json=chat("qwen"))
    stream_text(client, chat("qwen", stream=True))
    client.post("/v1/chat/completions", json=chat("nope"))
    text = client.get("/metrics").text
    assert 'gateway_requests_total{model="qwen-tiny",route="/v1/chat/completions",status="200"} 2.0' in text
    assert 'gateway_requests_total{model="unknown",route="/v1/chat/completions",status="404"} 1.0' in text
    assert 'gateway_completion_tokens_total{model="qwen-tiny"} 5.0' in text
    assert 'gateway_prompt_tokens_total{model="qwen-tiny"} 9.0' in text
    assert 'gateway_time_to_first_token_seconds_count{model="qwen-tiny"} 1.0' in text
    assert 'gateway_inter_token_latency_seconds_count{model="qwen-tiny"} 1.0' in text
    assert 'gateway_requests_in_flight{model="qwen-tiny"} 0.0' in text
    assert 'gateway_added_latency_seconds_count{model="qwen-tiny"} 2.0' in text
    assert 'gateway_engine_up{model="r1-tiny",url="http://r1.fake:1"} 1.0' in text


def test_request_id_is_kept_forwarded_and_returned(client: TestClient, upstream: FakeUpstream) -> None:
    response = client.post("/v1/chat/completions", json=chat("qwen"), headers={"X-Request-Id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert upstream.request_ids[-1] == "abc-123"
    generated = client.post("/v1/chat/completions", json=chat("qwen")).headers["x-request-id"]
    assert len(generated) == 32 and upstream.request_ids[-1] == generated
    assert client.get("/v1/nothing").headers["x-request-id"]


def test_oversized_body_is_413(client: TestClient) -> None:
    huge = chat("qwen", messages=[{"role": "user", "content": "x" * (5 * 1024 * 1024)}])
    assert_openai_error(client.post("/v1/chat/completions", json=huge), 413)


def test_engine_down_is_503_with_retry_after(client: TestClient, upstream: FakeUpstream) -> None:
    upstream.down.add(QWEN_URL)
    response = client.post("/v1/chat/completions", json=chat("qwen"))
    assert_openai_error(response, 503)
    assert int(response.headers["retry-after"]) >= 1
    assert client.post("/v1/chat/completions", json=chat("r1-tiny")).status_code == 200
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json() == {"ready": False}  # the verdict only; details below
    assert {e["name"]: e["healthy"] for e in client.get("/engines").json()} == {"r1-tiny": True, "qwen-tiny": False}


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


def test_connect_failure_is_retried_once_on_another_replica(upstream: FakeUpstream) -> None:
    config = DeploymentConfig(
        platform="cpu",
        gateway=GatewaySpec(health_interval_s=3600),
        models=[ModelSpec(name="m", endpoints=["http://dead.fake:1", "http://alive.fake:2", "http://b.fake:3"])],
    )
    upstream.down.update({"http://dead.fake:1"})
    with TestClient(create_app(config, transport=httpx.MockTransport(upstream))) as test_client:
        # The startup health check already marked the dead replica; force it back to "healthy"
        # to exercise the retry path the health checker would otherwise hide.
        for _ in range(4):
            assert test_client.post("/v1/chat/completions", json=chat("m")).status_code == 200
        assert all("dead" not in url for url, _ in upstream.seen)
        upstream.down.update({"http://alive.fake:2", "http://b.fake:3"})
        assert_openai_error(test_client.post("/v1/chat/completions", json=chat("m")), 503)


def test_replica_that_recovers_gets_traffic_again(upstream: FakeUpstream) -> None:
    config = DeploymentConfig(
        platform="cpu",
        gateway=GatewaySpec(health_interval_s=0.05),
        models=[ModelSpec(name="m", endpoints=["http://a.fake:1", "http://b.fake:2"])],
    )
    upstream.down.add("http://a.fake:1")
    with TestClient(create_app(config, transport=httpx.MockTransport(upstream))) as test_client:
        for _ in range(3):
            test_client.post("/v1/chat/completions", json=chat("m"))
        assert {url.split("/v1")[0] for url, _ in upstream.seen} == {"http://b.fake:2"}
        upstream.down.clear()
        time.sleep(0.3)  # a few health-check rounds
        upstream.seen.clear()
        for _ in range(4):
            test_client.post("/v1/chat/completions", json=chat("m"))
        assert {url.split("/v1")[0] for url, _ in upstream.seen} == {"http://a.fake:1", "http://b.fake:2"}


def test_inference_routes_take_only_post(client: TestClient) -> None:
    for path in ("/v1/chat/completions", "/v1/completions"):
        response = client.get(path)
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert "use POST" in response.json()["error"]["message"]


def replicas_seen(upstream: FakeUpstream) -> list[str]:
    return [url.split("/v1")[0] for url, _ in upstream.seen]


def test_session_policy_keys_on_the_header_then_the_user_field(upstream: FakeUpstream) -> None:
    urls = [f"http://s{i}.fake:{i}" for i in range(1, 5)]
    config = DeploymentConfig(
        platform="cpu",
        models=[ModelSpec.model_validate({"name": "m", "endpoints": urls, "routing": {"policy": "session"}})],
    )
    with TestClient(create_app(config, transport=httpx.MockTransport(upstream))) as test_client:
        for _ in range(5):
            test_client.post("/v1/chat/completions", json=chat("m"), headers={"X-Session-Id": "tab-1"})
        assert len(set(replicas_seen(upstream))) == 1
        upstream.seen.clear()
        for i in range(40):
            for _ in range(2):
                test_client.post("/v1/chat/completions", json=chat("m", user=f"user-{i}"))
        seen = replicas_seen(upstream)
        assert all(seen[2 * i] == seen[2 * i + 1] for i in range(40))  # each user stays put
        assert len(set(seen)) == 4  # users spread over the replicas
        metrics = test_client.get("/metrics").text
        assert 'gateway_routing_decisions_total{model="m",reason="sticky"} 85.0' in metrics


def test_prefix_policy_keeps_a_conversation_where_its_history_is(upstream: FakeUpstream) -> None:
    urls = ["http://p1.fake:1", "http://p2.fake:2"]
    config = DeploymentConfig(
        platform="cpu",
        models=[ModelSpec.model_validate({"name": "m", "endpoints": urls, "routing": {"policy": "prefix"}})],
    )
    with TestClient(create_app(config, transport=httpx.MockTransport(upstream))) as test_client:
        system = {"role": "system", "content": "You answer in one word. " * 40}
        for conversation in range(4):
            messages: list[dict[str, str]] = [system]
            for turn in range(4):
                messages += [{"role": "user", "content": f"Conversation {conversation}, question {turn}? " * 5}]
                test_client.post("/v1/chat/completions", json={"model": "m", "messages": messages})
                messages += [{"role": "assistant", "content": "Hello"}]
        seen = replicas_seen(upstream)
        for conversation in range(4):
            assert len(set(seen[4 * conversation : 4 * conversation + 4])) == 1, seen
        metrics = test_client.get("/metrics").text
        assert 'gateway_routing_decisions_total{model="m",reason="cache_hit"}' in metrics


def counter(metrics: str, name: str) -> float:
    match = next((line for line in metrics.splitlines() if line.startswith(name)), None)
    return float(match.rsplit(" ", 1)[1]) if match else 0.0


@pytest.mark.parametrize("policy", ["least_loaded", "session", "prefix"])
def test_every_policy_retries_elsewhere_and_skips_an_ejected_replica(upstream: FakeUpstream, policy: str) -> None:
    """The replica a request's policy prefers (its session's, its conversation's) fails to
    connect: the request is retried on another; fails its health checks: it gets nothing until
    it recovers. The same for every policy, since the dispatcher filters the candidates."""
    urls = ["http://a.fake:1", "http://b.fake:2", "http://c.fake:3"]
    config = DeploymentConfig(
        platform="cpu",
        gateway=GatewaySpec(health_interval_s=0.05),
        models=[ModelSpec.model_validate({"name": "m", "endpoints": urls, "routing": {"policy": policy}})],
    )
    user = next(f"user-{i}" for i in itertools.count() if next(HashRing(urls).walk(f"user-{i}")) == urls[0])
    messages = [{"role": "user", "content": "A question about routing that is long enough to match. " * 8}]
    retries = 'gateway_upstream_retries_total{model="m"}'

    with TestClient(create_app(config, transport=httpx.MockTransport(upstream))) as test_client:

        def send(turns: int = 1) -> None:
            for _ in range(turns):
                body = {"model": "m", "messages": messages, "user": user}
                assert test_client.post("/v1/chat/completions", json=body).status_code == 200
                messages.append({"role": "user", "content": "And then?"})

        send()
        home = replicas_seen(upstream)[-1]  # the session's, the conversation's, or the next in turn
        if policy == "session":
            assert home == urls[0]

        upstream.refused.add(home)
        send(len(urls))  # least_loaded comes round to it within a turn of the replicas
        assert upstream.attempts[home] >= 2 and home not in replicas_seen(upstream)[1:]
        assert counter(test_client.get("/metrics").text, retries) >= 1

        def wait_until_up(up: float) -> None:  # the background health checks' verdict
            series, deadline = f'gateway_engine_up{{model="m",url="{home}"}}', time.monotonic() + 10
            while counter(test_client.get("/metrics").text, series) != up:
                assert time.monotonic() < deadline, f"{home} never came {'up' if up else 'down'}"
                time.sleep(0.02)

        upstream.refused.clear()
        upstream.down.add(home)
        wait_until_up(0.0)  # ejected
        attempts, before = upstream.attempts[home], counter(test_client.get("/metrics").text, retries)
        send(2 * len(urls))
        assert upstream.attempts[home] == attempts, "an ejected replica was tried"
        assert counter(test_client.get("/metrics").text, retries) == before, "ejection is not a retry"

        upstream.down.clear()
        wait_until_up(1.0)  # back
        upstream.seen.clear()
        for i in range(2 * len(urls)):  # the session comes home; new conversations and turns spread
            messages[:] = [{"role": "user", "content": f"New question {i}. " * 20}]
            send()
        assert home in replicas_seen(upstream)
