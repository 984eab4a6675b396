"""Prompts with an exact token count, different on every request.

    factory = PromptFactory.from_dir(".cache/models/qwen-tiny")   # the model's own tokenizer, never the hub
    prompt = factory.chat(128)              # chat messages that the engine counts as exactly 128 prompt tokens
    prompt.messages, prompt.prompt_tokens   # -> [{"role": "user", "content": "..."}], 128
    prompt = factory.chat(512, instruction="Summarize the text above.")

The text is random English words that are single vocabulary entries with a leading space
("Ġapple"), so every added word is exactly one more token (the byte-level BPE pre-tokenizer
splits on them) and the count can be hit exactly, chat template included. Every request
draws new words from the first token on, so vLLM's prefix cache can reuse only the chat
template's header, never the body, and measured throughput is not inflated by cache hits.

Pure module: no Locust classes or event listeners (Locust imports every file in loadtest/).
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_WORD = re.compile(r"Ġ[a-z]{3,12}")  # "Ġ" is byte-level BPE's marker for a leading space
_MAX_FIT_ROUNDS = 6


@dataclass(frozen=True)
class ChatPrompt:
    messages: list[dict[str, str]]
    prompt_tokens: int  # as the engine counts them: chat template and generation prompt included


class PromptFactory:
    """Builds token-exact prompts with one tokenizer; `seed` makes the words reproducible."""

    def __init__(self, tokenizer: Any, *, seed: int | None = None) -> None:
        self.tokenizer = tokenizer
        self._words = sorted(t[1:] for t in tokenizer.get_vocab() if _WORD.fullmatch(t))
        if len(self._words) < 1000:
            raise ValueError("tokenizer has too few single-token words for random prompts (not a byte-level BPE?)")
        self._random = random.Random(seed)

    @classmethod
    def from_dir(cls, path: str | Path, *, seed: int | None = None) -> PromptFactory:
        return cls(load_tokenizer(str(path)), seed=seed)

    def words(self, count: int) -> list[str]:
        return self._random.choices(self._words, k=count)

    def count_chat(self, messages: list[dict[str, str]]) -> int:
        """Prompt tokens of `messages` after the model's chat template, as vLLM counts them."""
        return len(chat_ids(self.tokenizer, messages))

    def count_text(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def chat(self, prompt_tokens: int, *, instruction: str = "") -> ChatPrompt:
        """One user message whose templated length is exactly `prompt_tokens`."""

        def build(body: str) -> list[dict[str, str]]:
            return [{"role": "user", "content": f"{body}\n\n{instruction}" if instruction else body}]

        body = self._fit(prompt_tokens, lambda text: self.count_chat(build(text)))
        return ChatPrompt(build(body), prompt_tokens)

    def text(self, prompt_tokens: int) -> str:
        """Raw text (for /v1/completions) of exactly `prompt_tokens` tokens."""
        return self._fit(prompt_tokens, self.count_text)

    def _fit(self, target: int, count: Callable[[str], int]) -> str:
        """Random words whose token count, as measured by `count`, is exactly `target`.

        Each word after the first adds exactly one token, so the word count is corrected by
        the difference until it fits (one or two rounds)."""
        words = self.words(target)
        n = max(1, target - (count(words[0]) - 1))
        for _ in range(_MAX_FIT_ROUNDS):
            if n < 1:
                break
            if n > len(words):
                words += self.words(n - len(words))
            text = " ".join(words[:n])
            actual = count(text)
            if actual == target:
                return text
            n += target - actual
        raise ValueError(f"cannot build a prompt of exactly {target} tokens (template overhead larger than that?)")


def chat_ids(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool = True) -> list[int]:
    """Token ids of `messages` after the model's chat template (transformers returns a list or,
    in newer releases, a BatchEncoding)."""
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


@functools.cache
def load_tokenizer(path: str) -> Any:
    """The tokenizer in a local model directory (cached per process: loading takes seconds)."""
    if not Path(path).is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist (run `make models`, or pass --tokenizer)")
    from transformers import AutoTokenizer  # noqa: PLC0415 - slow (pulls torch): only when prompts are needed

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


@functools.cache
def prompt_factory(path: str) -> PromptFactory:
    """One factory per tokenizer directory and process (e.g. per Locust worker)."""
    return PromptFactory.from_dir(path)
