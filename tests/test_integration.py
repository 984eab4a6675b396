"""The real test stack (two vLLM CPU engines + gateway, started once per session by the
`stack` fixture) driven with the official `openai` SDK."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import Stack

pytestmark = pytest.mark.engines

R1, QWEN = "r1-tiny", "qwen-tiny"
CHAT = [{"role": "user", "content": "Count from one to five."}]


@pytest.fixture(scope="module")
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_sdk_lists_both_models_with_aliases(client: openai.OpenAI) -> None:
    models = {m.id: m.model_extra for m in client.models.list()}
    assert set(models) == {R1, QWEN}
    assert models[R1] is not None and models[R1]["aliases"] == ["deepseek-r1", "r1"]
    assert models[QWEN] is not None and models[QWEN]["aliases"] == ["qwen", "native"]


def reasoning_of(message: object) -> str | None:
    extra = getattr(message, "model_extra", None) or {}
    return extra.get("reasoning") or extra.get("reasoning_content")


@pytest.mark.parametrize("model", [R1, QWEN, "deepseek-r1", "qwen"])
def test_non_streaming_chat_with_usage(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(
        model=model, messages=CHAT, max_tokens=12, temperature=0, extra_body={"ignore_eos": True}
    )
    assert reply.model in {R1, QWEN}
    assert (reply.model == R1) == (model in {R1, "deepseek-r1"})
    assert reply.usage is not None and reply.usage.completion_tokens == 12
    assert reply.usage.prompt_tokens > 5
    message = reply.choices[0].message
    assert (message.content or "") + (reasoning_of(message) or "")


@pytest.mark.parametrize("model", [R1, QWEN])
def test_streaming_chat_with_usage(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model,
        messages=CHAT,
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    arrivals: list[float] = []
    text = ""
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            piece = (choice.delta.content or "") + (reasoning_of(choice.delta) or "")
            if piece:
                arrivals.append(time.monotonic())
                text += piece
    assert usage is not None and usage.completion_tokens == 40
    assert text
    # Passed through unbuffered: deltas arrive spread out, not in one burst at the end.
    assert len(arrivals) >= 10
    assert arrivals[-1] - arrivals[0] > 0.01


def test_r1_reasoning_is_split_out_by_the_reasoning_parser(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="deepseek-r1", messages=CHAT, max_tokens=16, extra_body={"ignore_eos": True}
    )
    # The template opens <think>, so a random model's whole output is reasoning until it
    # happens to emit </think>; either way the parser, not the raw text, carries it.
    message = reply.choices[0].message
    assert reasoning_of(message)
    assert "<think>" not in (message.content or "")


def test_completions_endpoint(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="qwen", prompt="The capital of France is", max_tokens=8, temperature=0)
    assert reply.usage is not None and reply.usage.completion_tokens <= 8
    assert reply.choices[0].text is not None


def test_r1_system_prompt_is_folded_into_the_user_turn(client: openai.OpenAI) -> None:
    with_system = client.chat.completions.create(
        model="r1",
        messages=[{"role": "system", "content": "Answer tersely."}, {"role": "user", "content": "Hi there"}],
        max_tokens=1,
    )
    folded = client.chat.completions.create(
        model="r1", messages=[{"role": "user", "content": "Answer tersely.\n\nHi there"}], max_tokens=1
    )
    assert with_system.usage is not None and folded.usage is not None
    assert with_system.usage.prompt_tokens == folded.usage.prompt_tokens


def test_unknown_model_is_404_listing_names(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=CHAT)
    assert "r1-tiny" in str(info.value) and "qwen" in str(info.value)


def test_prompt_longer_than_context_passes_vllms_400_through(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="qwen", prompt="hello " * 3000, max_tokens=16)
    assert "2048" in str(info.value)


def test_malformed_json_is_400_in_openai_format(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.gateway_url}/v1/chat/completions", content=b"{bad", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_engines_and_ready_report_local_processes(stack: Stack) -> None:
    assert httpx.get(f"{stack.gateway_url}/ready").status_code == 200
    rows = httpx.get(f"{stack.gateway_url}/engines").json()
    assert {r["name"] for r in rows} == {R1, QWEN}
    for row in rows:
        assert row["state"] == "ready" and row["local"] is True
        assert isinstance(row["pid"], int)
        assert row["url"] == stack.engine_url(row["name"])
