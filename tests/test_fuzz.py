"""Property-based tests: no request body, however malformed, gets a 5xx from the gateway.

In-process against a FAKE upstream (many examples, fast) and against the REAL engines of the
session stack (fewer examples: each one is a real generation)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.config import DeploymentConfig, ModelSpec
from tests.conftest import Stack

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
fields = st.sampled_from(
    [
        "model",
        "messages",
        "prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "stream",
        "stream_options",
        "n",
        "stop",
        "seed",
        "logprobs",
        "ignore_eos",
        "unknown_field",
    ]
)
models = st.sampled_from(["qwen", "r1-tiny", "qwen-tiny", "nope", "", 5, None])
messages = st.one_of(
    st.lists(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "system", "assistant", "tool", "x"]),
                "content": st.one_of(st.text(max_size=30), json_values),
            }
        ),
        max_size=3,
    ),
    json_values,
)


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = draw(st.dictionaries(fields, json_values, max_size=6))
    if draw(st.booleans()):
        body["model"] = draw(models)
    if draw(st.booleans()):
        body["messages"] = draw(messages)
    if isinstance(body.get("max_tokens"), int):
        body["max_tokens"] = min(abs(body["max_tokens"]), 8)  # keep real generations short
    return body


async def _events() -> AsyncIterator[bytes]:
    yield b'data: {"choices": [{"delta": {"content": "x"}}]}\n\n'
    yield b"data: [DONE]\n\n"


def fake_engine(request: httpx.Request) -> httpx.Response:  # a FAKE upstream
    if request.url.path == "/health":
        return httpx.Response(200)
    body = json.loads(request.content)  # the gateway must only forward valid JSON
    if body.get("stream") is True:
        return httpx.Response(200, content=_events(), headers={"content-type": "text/event-stream"})
    return httpx.Response(200, json={"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 0}})


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    config = DeploymentConfig(
        platform="cpu",
        models=[
            ModelSpec(name="qwen-tiny", aliases=["qwen"], endpoints=["http://fake:1"]),
            ModelSpec(name="r1-tiny", endpoints=["http://fake:2"]),
        ],
    )
    with TestClient(create_app(config, transport=httpx.MockTransport(fake_engine))) as test_client:
        yield test_client


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies())
def test_fake_upstream_no_5xx(client: TestClient, body: dict[str, Any]) -> None:
    for path in ("/v1/chat/completions", "/v1/completions"):
        response = client.post(path, json=body)
        assert response.status_code < 500, (body, response.text)
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_fake_upstream_raw_bytes_no_5xx(client: TestClient, raw: bytes) -> None:
    response = client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code < 500


@pytest.mark.engines
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies())
def test_real_engines_no_5xx(stack: Stack, body: dict[str, Any]) -> None:
    body.pop("stream", None)  # streamed errors arrive in-band; status codes are the point here
    response = httpx.post(f"{stack.gateway_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code < 500, (body, response.text)
