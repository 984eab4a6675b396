"""What a model answered to a chat request, read from its response: whole or streamed.

    answer = answer_of_completion(body_bytes)          # a /v1/chat/completions JSON object
    answer = answer_of_stream(chunks)                  # the SSE bytes a client was sent
    answer.content, answer.reasoning, answer.finish_reason, answer.usage, answer.error

Only the first choice counts (pairs are made of requests with n = 1). vLLM's reasoning parsers
put R1's thinking in `reasoning` (newer) or `reasoning_content` (older); both are read. An
engine error (a JSON error body, or an in-band `{"error": ...}` event in a stream) becomes
`error`. These run after the answer is complete, off the relay's per-token path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


def answer_of_completion(content: bytes) -> Answer:
    data = _json_object(content)
    answer = Answer()
    if data is None:
        answer.error = {"message": "the engine's answer is not a JSON object", "type": "upstream_error"}
        return answer
    if isinstance(data.get("error"), dict):
        answer.error = data["error"]
        return answer
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
        message = _object(choice.get("message"))
        answer.content = _text(message.get("content"))
        answer.reasoning = _text(message.get("reasoning") or message.get("reasoning_content"))
        answer.finish_reason = _str_or_none(choice.get("finish_reason"))
    answer.usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
    return answer


def answer_of_stream(chunks: Iterable[bytes]) -> Answer:
    """Read the `data:` events of an SSE stream (whole events, as the relay sent them)."""
    content: list[str] = []
    reasoning: list[str] = []
    answer = Answer()
    for line in b"".join(chunks).split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            break
        event = _json_object(payload)
        if event is None:
            continue
        if isinstance(event.get("error"), dict):
            answer.error = event["error"]
            continue
        if isinstance(event.get("usage"), dict):
            answer.usage = event["usage"]
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = _object(choice.get("delta"))
            content.append(_text(delta.get("content")))
            reasoning.append(_text(delta.get("reasoning") or delta.get("reasoning_content")))
            if choice.get("finish_reason"):
                answer.finish_reason = _str_or_none(choice["finish_reason"])
    answer.content, answer.reasoning = "".join(content), "".join(reasoning)
    return answer


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
