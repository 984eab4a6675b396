from __future__ import annotations

import pytest

from gateway.config import ModelSpec, RequestLimits, SamplingDefaults
from gateway.errors import InvalidRequest
from gateway.request_policy import (
    API_BY_PATH,
    ShapedRequest,
    apply_model_policy,
    merge_system_into_user,
    parse_body,
    shape_request,
)

R1 = ModelSpec(
    name="r1-tiny",
    sampling_defaults=SamplingDefaults(temperature=0.6, top_p=0.95),
    system_prompt="merge_into_user",
    endpoints=["http://x:1"],
)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"messages": []}', "Missing required field 'model'"),
        (b'{"model": 5}', "'model' must be of type str"),
        (b'{"model": "m", "stream": "yes"}', "'stream' must be of type bool"),
        (b'{"model": "m", "stream_options": true}', "'stream_options' must be of type dict"),
        (b'{"model": "m", "max_tokens": true}', "'max_tokens' must be of type int"),
        (b'{"model": "m", "temperature": "hot"}', "'temperature' must be of type int or float"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_parse_body_rejects_bad_input(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_body(raw)


def test_defaults_fill_only_missing_fields_and_are_reported() -> None:
    body, applied = apply_model_policy({"model": "r1", "temperature": 0}, R1, chat=False)
    assert body["model"] == "r1-tiny"
    assert body["temperature"] == 0
    assert body["top_p"] == 0.95
    assert applied == {"top_p": 0.95}


def test_system_prompt_merged_into_first_user_message_for_r1() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    body, _ = apply_model_policy({"model": "r1", "messages": messages}, R1, chat=True)
    assert body["messages"] == [{"role": "user", "content": "Be brief.\n\nWhat is 2+2?"}]
    assert messages[0]["role"] == "system"  # the caller's list is not modified


def test_merge_without_user_message_creates_one() -> None:
    assert merge_system_into_user([{"role": "system", "content": "Hi"}]) == [{"role": "user", "content": "Hi"}]
    assert merge_system_into_user([{"role": "user", "content": "x"}]) == [{"role": "user", "content": "x"}]


def test_models_without_policy_keep_system_prompts() -> None:
    qwen = ModelSpec(name="qwen", endpoints=["http://x:1"])
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    body, applied = apply_model_policy({"model": "qwen", "messages": messages}, qwen, chat=True)
    assert body["messages"] == messages and applied == {}


def shape(path: str, body: dict[str, object], spec: ModelSpec = R1) -> ShapedRequest:
    return shape_request(API_BY_PATH[path], {"model": "r1"} | body, spec)


def test_admission_weighs_a_request_by_its_sequences() -> None:
    assert shape("/v1/chat/completions", {"messages": [], "n": 4}).weight == 4
    assert shape("/v1/completions", {"prompt": "x", "n": 2, "best_of": 5}).weight == 5
    assert shape("/v1/completions", {"prompt": ["a", "b", "c"], "n": 2}).weight == 6
    assert shape("/v1/chat/completions/batch", {"messages": [[{"role": "user", "content": "a"}]] * 3}).weight == 3
    assert shape("/v1/messages", {"messages": [], "max_tokens": 5}).weight == 1


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"messages": [], "n": 17}, "n"),
        ("/v1/completions", {"prompt": "x", "best_of": 100000}, "n"),
        ("/v1/chat/completions/batch", {"messages": [[{"role": "user", "content": "a"}]] * 17}, "n"),
        ("/v1/chat/completions", {"messages": [], "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ("/v1/completions", {"prompt": "x", "logprobs": 50}, "logprobs"),
        ("/v1/completions", {"prompt": "x", "prompt_logprobs": 21}, "prompt_logprobs"),
    ],
)
def test_requests_beyond_the_models_limits_are_400(path: str, body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        shape(path, body)
    assert refused.value.param == param and "at most" in refused.value.message


def test_limits_are_per_model() -> None:
    roomy = R1.model_copy(update={"limits": RequestLimits(max_n=64, max_top_logprobs=5)})
    assert shape("/v1/chat/completions", {"messages": [], "n": 64}, roomy).weight == 64
    with pytest.raises(InvalidRequest):
        shape("/v1/chat/completions", {"messages": [], "top_logprobs": 6}, roomy)


def test_defaults_apply_only_to_fields_the_api_has() -> None:
    qwen = ModelSpec(name="q", sampling_defaults=SamplingDefaults(top_k=20, max_tokens=9), endpoints=["http://x:1"])
    assert shape("/v1/messages", {"messages": []}, qwen).body["top_k"] == 20
    assert "max_tokens" not in shape("/v1/responses", {"input": "hi"}, qwen).body  # it has max_output_tokens
    assert shape("/tokenize", {"prompt": "hi"}, qwen).body == {"model": "q", "prompt": "hi"}


def test_streams_always_ask_the_engine_for_usage_but_remember_what_the_client_wanted() -> None:
    plain = shape("/v1/chat/completions", {"messages": [], "stream": True})
    assert plain.stream and plain.body["stream_options"] == {"include_usage": True} and not plain.client_wants_usage
    wanted = shape("/v1/chat/completions", {"messages": [], "stream": True, "stream_options": {"include_usage": True}})
    assert wanted.client_wants_usage
    assert not shape("/tokenize", {"prompt": "x", "stream": True}).stream  # an API that cannot stream


@pytest.mark.parametrize(
    "raw", [b'{"model": "m", "temperature": NaN}', b'{"model": "m", "x": Infinity}', b'{"model": "m", "p": "\\ud800"}']
)
def test_not_json_or_not_text_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_body(raw)
    assert parse_body(b'{"model": "m", "p": "\\ud83d\\ude00"}')["p"] == "\U0001f600"  # a proper pair is text
