from __future__ import annotations

import pytest

from gateway.config import ModelSpec, SamplingDefaults
from gateway.errors import InvalidRequest
from gateway.request_policy import apply_model_policy, merge_system_into_user, parse_body

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
