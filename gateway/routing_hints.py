"""What a routing policy keys on, taken from a request once, before it is sent.

    hints = routing_hints(route.spec.routing, "chat", body, scope["headers"])
    hints.session_key      # policy session: the X-Session-Id header, else the OpenAI `user` field
    hints.prompt_text      # policy prefix: the prompt as text, in the order the engine sees it

Only what the model's policy uses is computed (least_loaded needs nothing, so it costs nothing).
The prompt text is not the engine's token stream: it is the request's messages (tools and
system text first, as chat templates put them) joined in order, so two requests whose
conversations start alike get texts that start alike, which is all a prefix tree needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway.config import RoutingSpec


@dataclass(frozen=True)
class RoutingHints:
    session_key: str | None = None
    prompt_text: str | None = None


NO_HINTS = RoutingHints()


def routing_hints(
    routing: RoutingSpec, api_kind: str, body: dict[str, Any], headers: Iterable[tuple[bytes, bytes]]
) -> RoutingHints:
    if routing.policy == "session":
        return RoutingHints(session_key=session_key(routing.session_header, body, headers))
    if routing.policy == "prefix":
        return RoutingHints(prompt_text=prompt_text(api_kind, body))
    return NO_HINTS


def session_key(header: str, body: dict[str, Any], headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The session header's value (ASGI headers: lower-case names), else a non-empty `user`."""
    wanted = header.lower().encode("latin-1")
    for name, value in headers:
        if name == wanted and value:
            return value.decode("latin-1")
    user = body.get("user")
    return user if isinstance(user, str) and user else None


def prompt_text(api_kind: str, body: dict[str, Any]) -> str | None:
    """The prompt as one text for prefix matching; None when the request has no single prompt."""
    if api_kind in ("chat", "messages"):
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        head = [("tools", body.get("tools")), ("system", body.get("system"))]
        return _join([*head, *((_role(m), _content(m)) for m in messages)])
    if api_kind == "responses":
        given = body.get("input")
        items = given if isinstance(given, list) else [{"role": "user", "content": given}]
        head = [("tools", body.get("tools")), ("instructions", body.get("instructions"))]
        return _join([*head, *((_role(m), _content(m)) for m in items)])
    if api_kind == "completions":
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]
        if isinstance(prompt, str):
            return prompt
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return " ".join(map(str, prompt))  # token ids: a shared token prefix is a shared text prefix
    return None  # batches of prompts or conversations, and routes that generate nothing


def _role(message: Any) -> str:
    return str(message.get("role", "")) if isinstance(message, dict) else ""


def _content(message: Any) -> Any:
    return message.get("content") if isinstance(message, dict) else message


def _join(parts: list[tuple[str, Any]]) -> str:
    out = []
    for role, content in parts:
        if content is None:
            continue
        text = content if isinstance(content, str) else json.dumps(content, sort_keys=True, ensure_ascii=False)
        out.append(f"<{role}>{text}\n")
    return "".join(out)
