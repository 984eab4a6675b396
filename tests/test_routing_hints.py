"""What routing policies key on, taken from requests (gateway/routing_hints.py)."""

from __future__ import annotations

from typing import Any

from gateway.config import RoutingSpec
from gateway.routing_hints import NO_HINTS, prompt_text, routing_hints, session_key

SESSION = RoutingSpec(policy="session")
PREFIX = RoutingSpec(policy="prefix")


def test_least_loaded_computes_nothing() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "user": "u"}
    assert routing_hints(RoutingSpec(), "chat", body, [(b"x-session-id", b"s")]) is NO_HINTS


def test_session_key_is_the_header_then_the_user_field() -> None:
    assert session_key("X-Session-Id", {"user": "u1"}, [(b"x-session-id", b"s1")]) == "s1"
    assert session_key("X-Session-Id", {"user": "u1"}, [(b"other", b"x")]) == "u1"
    assert session_key("X-Session-Id", {"user": ""}, []) is None
    assert session_key("X-Session-Id", {"user": 42}, []) is None
    hints = routing_hints(SESSION.model_copy(update={"session_header": "X-Tenant"}), "chat", {}, [(b"x-tenant", b"t")])
    assert hints.session_key == "t" and hints.prompt_text is None


def chat(*turns: tuple[str, Any], **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": content} for role, content in turns], **extra}


def test_a_growing_conversation_extends_its_own_prompt_text() -> None:
    first = prompt_text("chat", chat(("system", "Be brief."), ("user", "Hi")))
    second = prompt_text("chat", chat(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"), ("user", "Bye")))
    assert first and second and second.startswith(first) and len(second) > len(first)


def test_prompt_text_puts_tools_and_system_text_first_and_keeps_content_parts() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    parts = [{"type": "text", "text": "look"}]
    text = prompt_text("chat", chat(("user", parts), tools=tools))
    assert text is not None and text.index('"name": "f"') < text.index('"text": "look"')
    anthropic = prompt_text("messages", chat(("user", "hi"), system="sys"))
    assert anthropic is not None and anthropic.index("sys") < anthropic.index("hi")
    responses = prompt_text("responses", {"input": "question", "instructions": "rules"})
    assert responses is not None and responses.index("rules") < responses.index("question")


def test_completions_prompts() -> None:
    assert prompt_text("completions", {"prompt": "Once upon"}) == "Once upon"
    assert prompt_text("completions", {"prompt": ["Once upon"]}) == "Once upon"
    assert prompt_text("completions", {"prompt": [1, 2, 3]}) == "1 2 3"
    assert prompt_text("completions", {"prompt": ["a", "b"]}) is None  # several prompts: no single prefix


def test_routes_without_one_prompt_have_none() -> None:
    assert prompt_text("chat_batch", {"messages": [[{"role": "user", "content": "a"}]]}) is None
    assert prompt_text("tokenize", {"prompt": "a"}) is None
    assert prompt_text("chat", {"messages": "not a list"}) is None
    assert routing_hints(PREFIX, "chat", chat(("user", "x")), []).prompt_text == "<user>x\n"
