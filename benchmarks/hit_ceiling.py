"""The best prefix-cache hit rate a multi-turn workload allows, whatever the routing.

    ceiling = history_hit_ceiling(tokenizer_dir, lengths=[12] * 12, turn_tokens=128, reply_tokens=64,
                                  system_prompt_tokens=256)   # e.g. 0.87
    conversation_turns(requests=114, users=12, turns=12)      # -> [10, 10, 10, 10, 10, 10, 9, ...]

A turn's prompt is the conversation so far plus a new user turn (loadtest/conversations.py). At
best its engine still holds everything before that turn: the previous prompt and the reply it
generated. The new user turn, the template tokens around it, and the partial last block can
never be a hit (vLLM caches whole blocks, 128 tokens on the CPU backend, and always computes
the last prompt token). This is that best case, counted with the model's own tokenizer and chat
template over whole conversations, the first turn finding only the shared system prompt; it
compares hit rates as vLLM counts them (`vllm:prefix_cache_hits` over
`vllm:prefix_cache_queries`). Replies are random words of `reply_tokens` tokens, standing in for
the model's text, and count as cached exactly as tokenized. An engine gives less: the client sends
the reply back as text, which is tokenized afresh, and a model's generated ids are often not the
tokenizer's own split of their text (benchmarks/reply_tokens.py measured 4 replies of 10 agreeing
for SmolLM2), so the next turn's hit ends inside such a reply.

A run rarely gets through whole conversations: `lengths` are the turns of each conversation it
did get through (`conversation_turns`), since short ones are a larger share of first turns,
whose history is only the system prompt, and have the lower ceiling.
"""

from __future__ import annotations

from collections.abc import Sequence

from loadtest.conversations import Conversation, shared_system_prompt
from workload.prompts import PromptFactory, chat_ids, load_tokenizer

CPU_BLOCK_TOKENS = 128


def conversation_turns(*, requests: int, users: int, turns: int) -> list[int]:
    """The conversations `requests` turns over `users` make: the turns shared out as evenly as
    they divide, each user's cut into conversations of `turns` (a user who finishes one starts
    another, loadtest/users.py)."""
    lengths = []
    for user in range(users):
        mine = requests // users + (1 if user < requests % users else 0)
        lengths += [turns] * (mine // turns) + ([mine % turns] if mine % turns else [])
    return lengths


def history_hit_ceiling(
    tokenizer_dir: str,
    *,
    lengths: Sequence[int],
    turn_tokens: int,
    reply_tokens: int,
    system_prompt_tokens: int,
    block_tokens: int = CPU_BLOCK_TOKENS,
    seed: int = 0,
) -> float:
    tokenizer = load_tokenizer(tokenizer_dir)
    factory = PromptFactory(tokenizer, seed=seed)
    system = shared_system_prompt(tokenizer_dir, tokens=system_prompt_tokens, seed=seed)
    shared = chat_ids(tokenizer, [{"role": "system", "content": system}], generation_prompt=False)
    hits = queries = 0
    for turns in lengths:
        conversation = Conversation(system, turns=turns)
        cached = shared  # every replica holds the shared system prompt
        while not conversation.finished:
            prompt = chat_ids(tokenizer, conversation.ask(factory.words(turn_tokens)))
            common = common_prefix(prompt, cached)
            hits += min(common, len(prompt) - 1) // block_tokens * block_tokens
            queries += len(prompt)
            reply = tokenizer(" ".join(factory.words(reply_tokens)), add_special_tokens=False)["input_ids"]
            reply = reply[:reply_tokens]
            cached = prompt + reply
            conversation.answer(tokenizer.decode(reply))
    return hits / queries


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading ids `a` and `b` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
