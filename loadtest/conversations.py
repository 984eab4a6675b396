"""Growing conversations that share one system prompt: the data of the `multi-turn` scenario.

    system = shared_system_prompt(factory, tokens=256, seed=7)   # the same text for every user
    conversation = Conversation(system, turns=6)
    messages = conversation.ask(factory.words(96))   # the next user turn appended; send these
    conversation.answer(reply_text)                  # the model's reply appended; ask again
    conversation.finished                            # True after `turns` answers

What a chat product sends: every request carries the whole conversation so far, so each turn's
prompt extends the previous turn's prompt and its answer, and every conversation starts with
the same system prompt. An engine that still holds the earlier turns in its prefix cache only
prefills the new user turn; whether it does depends on which replica the gateway chose.

The system prompt is drawn from `seed`, so every user and every Locust worker shares it, and a
run with another seed shares nothing with the last. User turns are drawn fresh every time.

Pure module: no User classes or event listeners (Locust imports every file in loadtest/).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from workload.prompts import PromptFactory, load_tokenizer


@functools.cache
def shared_system_prompt(tokenizer_dir: str, *, tokens: int, seed: int) -> str:
    """About `tokens` tokens of instructions (single-token words after a fixed sentence)."""
    words = PromptFactory(load_tokenizer(tokenizer_dir), seed=seed).words(tokens)
    return "You are a support assistant. Use the reference notes below. Notes: " + " ".join(words)


@dataclass
class Conversation:
    system: str
    turns: int
    messages: list[dict[str, str]] = field(default_factory=list)
    answers: int = 0

    def __post_init__(self) -> None:
        self.messages = [{"role": "system", "content": self.system}]

    @property
    def finished(self) -> bool:
        return self.answers >= self.turns

    def ask(self, words: list[str], *, instruction: str = "Answer in a few sentences.") -> list[dict[str, str]]:
        self.messages.append({"role": "user", "content": " ".join(words) + "\n\n" + instruction})
        return list(self.messages)

    def answer(self, text: str) -> None:
        self.messages.append({"role": "assistant", "content": text})
        self.answers += 1
