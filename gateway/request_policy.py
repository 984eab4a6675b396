"""What the gateway checks and changes in a request before an engine sees it.

    body = parse_body(raw_bytes)                        # InvalidRequest on bad JSON or types
    shaped = shape_request(API_BY_PATH["/v1/chat/completions"], body, route.spec)
    shaped.body, shaped.stream, shaped.weight           # what to send, how, and what admission counts

The engine validates everything else and its 400s are passed through unchanged, so the gateway
does not re-implement vLLM's schemas. It adds only what an engine cannot know:

- per-model sampling defaults (R1: temperature 0.6, top_p 0.95), for fields the request left out
  and that the API has;
- R1's system prompt folded into the first user message (chat only);
- limits per model (`limits` in the config): `n` / `best_of` / the conversations of a batch
  above `max_n` sequences, and `top_logprobs` / `logprobs` / `prompt_logprobs` above
  `max_top_logprobs`, are a 400; admission counts a request by the sequences it asks for.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from gateway.config import ModelSpec
from gateway.errors import InvalidRequest

_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "stream": (bool,),
    "stream_options": (dict,),
    "messages": (list,),
    "max_tokens": (int,),
    "temperature": (int, float),
    "top_p": (int, float),
    "n": (int,),
    "best_of": (int,),
    "top_logprobs": (int,),
    "prompt_logprobs": (int,),
}


@dataclass(frozen=True)
class EngineApi:
    """One engine route the gateway forwards, and what the gateway knows about its body."""

    path: str  # exact path; routes addressed by an object id are in gateway/proxy.py
    kind: str  # chat | completions | chat_batch | responses | messages | count_tokens | tokenize | detokenize
    sampling: tuple[str, ...] = ()  # the model's sampling defaults this API takes
    can_stream: bool = False
    done_marker: bool = False  # its streams end with `data: [DONE]`


# The sampling defaults the OpenAI chat and completions bodies take.
_OPENAI_SAMPLING = ("temperature", "top_p", "top_k", "max_tokens", "repetition_penalty")
APIS = (
    EngineApi(
        "/v1/chat/completions",
        "chat",
        _OPENAI_SAMPLING,
        can_stream=True,
        done_marker=True,
    ),
    EngineApi(
        "/v1/completions",
        "completions",
        _OPENAI_SAMPLING,
        can_stream=True,
        done_marker=True,
    ),
    EngineApi(
        "/v1/chat/completions/batch",
        "chat_batch",
        _OPENAI_SAMPLING,
    ),
    EngineApi("/v1/responses", "responses", ("temperature", "top_p", "top_k", "repetition_penalty"), can_stream=True),
    EngineApi("/v1/messages", "messages", ("temperature", "top_p", "top_k"), can_stream=True),
    EngineApi("/v1/messages/count_tokens", "count_tokens"),
    EngineApi("/tokenize", "tokenize"),
    EngineApi("/detokenize", "detokenize"),
)
API_BY_PATH = {api.path: api for api in APIS}


@dataclass(frozen=True)
class ShapedRequest:
    body: dict[str, Any]  # what the engine gets
    defaults_applied: dict[str, Any]
    stream: bool
    client_wants_usage: bool
    weight: int  # sequences: what admission counts


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity, which are not JSON and cannot be forwarded.
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """Strict JSON (InvalidRequest otherwise): no NaN or Infinity, which are not JSON, and no lone
    UTF-16 surrogate escapes, which are not text (they cannot be encoded, so a tokenizer fails)."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {exc}") from exc
    # Raw UTF-8 cannot carry a surrogate, only a \uD800-\uDFFF escape can: check only then.
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequest("Request body contains a lone UTF-16 surrogate (\\uD800-\\uDFFF escape).") from exc
    return value


def parse_body(raw: bytes) -> dict[str, Any]:
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object.")
    if "model" not in body:
        raise InvalidRequest("Missing required field 'model'.", param="model")
    for key, types in _TYPES.items():
        value = body.get(key)
        # bool is an int in Python; a numeric field must not accept true/false.
        if value is not None and (not isinstance(value, types) or (bool not in types and isinstance(value, bool))):
            names = " or ".join(t.__name__ for t in types)
            raise InvalidRequest(f"Field '{key}' must be of type {names}.", param=key)
    return body


def shape_request(api: EngineApi, body: dict[str, Any], spec: ModelSpec) -> ShapedRequest:
    """Check the model's limits, apply its policy, and say how to send the request."""
    weight = _sequences(api, body)
    limits = spec.limits
    if weight > limits.max_n:
        raise InvalidRequest(
            f"This request asks for {weight} sequences; '{spec.name}' allows at most {limits.max_n} per request.",
            param="n",
        )
    for key in ("top_logprobs", "prompt_logprobs", "logprobs"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > limits.max_top_logprobs:
            raise InvalidRequest(
                f"'{key}' is {value}; '{spec.name}' allows at most {limits.max_top_logprobs}.", param=key
            )
    out, applied = apply_model_policy(body, spec, chat=api.kind == "chat", fields=api.sampling)
    stream = api.can_stream and bool(body.get("stream"))
    options = body.get("stream_options") or {}
    client_wants_usage = bool(options.get("include_usage")) if api.done_marker else True
    if stream and api.done_marker:  # always ask for usage so token counters stay right; dropped again later
        out["stream_options"] = {**options, "include_usage": True}
    return ShapedRequest(out, applied, stream, client_wants_usage, max(1, weight))


def _sequences(api: EngineApi, body: dict[str, Any]) -> int:
    n = body.get("n") if isinstance(body.get("n"), int) else 1
    best_of = body.get("best_of") if isinstance(body.get("best_of"), int) else 1
    per_prompt = max(n or 1, best_of or 1) if api.kind == "completions" else (n or 1)
    if api.kind == "chat_batch" and isinstance(body.get("messages"), list):
        return per_prompt * max(1, len(body["messages"]))
    if api.kind == "completions" and isinstance(body.get("prompt"), list) and body["prompt"]:
        first = body["prompt"][0]
        if isinstance(first, (str, list)):  # a list of prompts (or of token lists): one sequence set each
            return per_prompt * len(body["prompt"])
    return per_prompt


def apply_model_policy(
    body: dict[str, Any], spec: ModelSpec, *, chat: bool, fields: tuple[str, ...] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the body to send upstream and the sampling fields the model's defaults supplied
    (only those in `fields`, when given: the ones the API has)."""
    out = dict(body)
    out["model"] = spec.name
    defaults = spec.sampling_defaults.as_request_fields()
    applied = {k: v for k, v in defaults.items() if out.get(k) is None and (fields is None or k in fields)}
    out.update(applied)
    if chat and spec.system_prompt == "merge_into_user" and isinstance(out.get("messages"), list):
        out["messages"] = merge_system_into_user(out["messages"])
    return out, applied


def merge_system_into_user(messages: list[Any]) -> list[Any]:
    """Fold system messages into the first user message (R1 is trained without a system role)."""
    system = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "system"]
    rest = [m for m in messages if not (isinstance(m, dict) and m.get("role") == "system")]
    text = "\n\n".join(c for c in system if isinstance(c, str) and c)
    if not text:
        return rest
    for i, message in enumerate(rest):
        if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
            rest[i] = message | {"content": f"{text}\n\n{message['content']}"}
            return rest
    return [{"role": "user", "content": text}, *rest]
