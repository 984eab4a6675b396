from __future__ import annotations

import json

from gateway.answers import answer_of_completion, answer_of_stream


def event(data: object) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def test_a_whole_answer_with_reasoning_and_usage() -> None:
    body = {
        "choices": [{"message": {"content": "17 * 23 = 391", "reasoning": "Let me think"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 12},
    }
    answer = answer_of_completion(json.dumps(body).encode())
    assert (answer.content, answer.reasoning, answer.finish_reason) == ("17 * 23 = 391", "Let me think", "stop")
    assert answer.usage == {"prompt_tokens": 9, "completion_tokens": 12} and answer.error is None


def test_errors_and_garbage() -> None:
    error = {"error": {"message": "too long", "type": "BadRequestError", "code": 400}}
    assert answer_of_completion(json.dumps(error).encode()).error == error["error"]
    assert answer_of_completion(b"<html>").error is not None
    assert answer_of_completion(b"[1, 2]").error is not None


def test_a_stream_split_anywhere_reads_like_the_whole_answer() -> None:
    stream = b"".join(
        [
            event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            event({"choices": [{"index": 0, "delta": {"reasoning_content": "Hmm. "}}]}),
            event({"choices": [{"index": 0, "delta": {"content": "Par"}}]}),
            event({"choices": [{"index": 0, "delta": {"content": "is"}, "finish_reason": "length"}]}),
            event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
            b"data: [DONE]\n\n",
        ]
    )
    for cut in (1, 7, 50, len(stream) // 2):
        answer = answer_of_stream([stream[:cut], stream[cut:]])
        assert (answer.content, answer.reasoning, answer.finish_reason) == ("Paris", "Hmm. ", "length")
        assert answer.usage == {"prompt_tokens": 3, "completion_tokens": 4}


def test_an_in_band_error_event_is_the_answers_error() -> None:
    stream = event({"choices": [{"delta": {"content": "Par"}}]}) + event({"error": {"message": "engine died"}})
    answer = answer_of_stream([stream])
    assert answer.content == "Par" and answer.error == {"message": "engine died"}
