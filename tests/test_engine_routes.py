"""Every engine route the gateway forwards, through the real test stack with the official SDKs
(`openai` for the Responses API, `anthropic` for the Messages API): the answer through the
gateway is the engine's own answer (greedy, so both runs generate the same tokens)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import Stack

pytestmark = pytest.mark.engines

R1, QWEN = "r1-tiny", "qwen-tiny"


def sdk(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)


def claude(base: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0, timeout=120)


@pytest.mark.parametrize("model", [QWEN, R1])
def test_responses_api_through_the_gateway_is_the_engines_answer(stack: Stack, model: str) -> None:
    kwargs: dict[str, Any] = {"input": "Name three colours.", "max_output_tokens": 16, "temperature": 0}
    via_gateway = sdk(stack.gateway_url).responses.create(model=model, **kwargs)
    direct = sdk(stack.engine_url(model)).responses.create(model=model, **kwargs)
    assert via_gateway.output_text == direct.output_text and via_gateway.model == model
    assert via_gateway.usage is not None and via_gateway.usage.output_tokens == direct.usage.output_tokens  # type: ignore[union-attr]
    alias = sdk(stack.gateway_url).responses.create(model="qwen" if model == QWEN else "r1", **kwargs)
    assert alias.output_text == direct.output_text


def test_streamed_responses_api_through_the_gateway(stack: Stack) -> None:
    kwargs: dict[str, Any] = {"input": "Count to five.", "max_output_tokens": 12, "temperature": 0}
    events = list(sdk(stack.gateway_url).responses.create(model=QWEN, stream=True, **kwargs))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    direct = sdk(stack.engine_url(QWEN)).responses.create(model=QWEN, **kwargs)
    assert text == direct.output_text


def test_a_stored_response_is_read_back_through_the_gateway(stack: Stack) -> None:
    """`GET /v1/responses/{id}` goes to the replica that made the response; whatever that engine
    says about it (stored, or not stored by this vLLM's settings) reaches the client unchanged."""
    created = sdk(stack.gateway_url).responses.create(model=QWEN, input="Hi", max_output_tokens=4, temperature=0)
    via_gateway = httpx.get(f"{stack.gateway_url}/v1/responses/{created.id}", timeout=30)
    direct = httpx.get(f"{stack.engine_url(QWEN)}/v1/responses/{created.id}", timeout=30)
    assert via_gateway.status_code == direct.status_code
    assert via_gateway.json() == direct.json()
    unknown = httpx.get(f"{stack.gateway_url}/v1/responses/resp_does_not_exist", timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == 404


@pytest.mark.parametrize("model", [QWEN, R1])
def test_anthropic_messages_through_the_gateway(stack: Stack, model: str) -> None:
    kwargs: dict[str, Any] = {
        "max_tokens": 12,
        "extra_body": {"temperature": 0},  # greedy (this SDK version has no temperature argument)
        "messages": [{"role": "user", "content": "Say hello."}],
    }

    def blocks(message: anthropic.types.Message) -> list[dict[str, Any]]:
        # A thinking block's signature is a fresh random id per answer, even from the engine itself.
        return [{k: v for k, v in b.model_dump().items() if k != "signature"} for b in message.content]

    via_gateway = claude(stack.gateway_url).messages.create(model=model, **kwargs)
    direct = claude(stack.engine_url(model)).messages.create(model=model, **kwargs)
    assert blocks(via_gateway) == blocks(direct)
    assert via_gateway.usage.output_tokens == direct.usage.output_tokens
    with claude(stack.gateway_url).messages.stream(model=model, **kwargs) as stream:
        streamed = stream.get_final_message()
    assert blocks(streamed) == blocks(direct)
    counted = claude(stack.gateway_url).messages.count_tokens(model=model, messages=kwargs["messages"])
    assert (
        counted.input_tokens
        == claude(stack.engine_url(model)).messages.count_tokens(model=model, messages=kwargs["messages"]).input_tokens
    )


def test_tokenize_detokenize_and_batch_through_the_gateway(stack: Stack) -> None:
    def both(path: str, body: dict[str, Any]) -> tuple[httpx.Response, httpx.Response]:
        return (
            httpx.post(f"{stack.gateway_url}{path}", json={"model": "qwen"} | body, timeout=60),
            httpx.post(f"{stack.engine_url(QWEN)}{path}", json={"model": QWEN} | body, timeout=60),
        )

    tokenized, direct = both("/tokenize", {"prompt": "The capital of France is Paris."})
    assert tokenized.status_code == 200 and tokenized.json() == direct.json()
    detokenized, direct = both("/detokenize", {"tokens": tokenized.json()["tokens"]})
    assert detokenized.json()["prompt"] == "The capital of France is Paris."
    conversations = [[{"role": "user", "content": f"Say {word}."}] for word in ("one", "two", "three")]
    batch, direct = both("/v1/chat/completions/batch", {"messages": conversations, "max_tokens": 6, "temperature": 0})
    assert batch.status_code == 200, batch.text
    assert [c["message"]["content"] for c in batch.json()["choices"]] == [
        c["message"]["content"] for c in direct.json()["choices"]
    ]
    too_many = httpx.post(
        f"{stack.gateway_url}/v1/chat/completions/batch",
        json={"model": "qwen", "messages": conversations * 6, "max_tokens": 2},
        timeout=60,
    )
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "n"  # 18 sequences > max_n 16
