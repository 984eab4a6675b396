"""Validate an OpenAI request body just enough to route it, and apply per-model policy.

    body = parse_body(raw_bytes)                      # InvalidRequest on bad JSON or types
    body, applied = apply_model_policy(body, spec, chat=True)

The engine validates everything else and its 400s are passed through unchanged, so the
gateway does not re-implement vLLM's schema. Per-model defaults (R1: temperature 0.6,
top_p 0.95) apply only to fields the request leaves out.
"""

from __future__ import annotations

import json
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
}


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity, which are not JSON and cannot be forwarded.
    raise ValueError(f"{name} is not valid JSON")


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {exc}") from exc
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


def apply_model_policy(body: dict[str, Any], spec: ModelSpec, *, chat: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the body to send upstream and the sampling fields the model's defaults supplied."""
    out = dict(body)
    out["model"] = spec.name
    applied = {k: v for k, v in spec.sampling_defaults.as_request_fields().items() if out.get(k) is None}
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
