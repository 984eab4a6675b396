"""The prefix tree behind the `prefix` policy (gateway/prefix_index.py): matching and its cap."""

from __future__ import annotations

import random
import string
import tracemalloc

import pytest

from gateway.prefix_index import PrefixIndex

A, B = "http://10.0.0.1:8101", "http://10.0.0.2:8101"


def text(chars: int, seed: int) -> str:
    return "".join(random.Random(seed).choices(string.ascii_letters, k=chars))


def test_blocks_are_named_by_their_whole_prefix() -> None:
    index = PrefixIndex(block_chars=4, max_blocks=100)
    assert len(index.path("abcdefghij")) == 2  # the partial last block is left out
    assert index.path("abcdefgh") == index.path("abcdefghXY")
    # The same block after a different prefix is a different node.
    assert index.path("abcdWXYZ")[1] != index.path("zzzzWXYZ")[1]


def test_match_counts_leading_blocks_per_replica() -> None:
    index = PrefixIndex(block_chars=8, max_blocks=100)
    shared = text(80, seed=1)
    index.insert(A, index.path(shared + text(40, seed=2)))
    index.insert(B, index.path(shared))
    probe = index.path(shared + text(40, seed=2) + text(16, seed=3))
    assert index.matched(probe, A) == 15
    assert index.matched(probe, B) == 10
    assert index.matched(index.path(text(80, seed=4)), A) == 0
    assert index.matched(probe, "http://unknown:1") == 0


def test_continued_tells_a_shared_prefix_from_the_whole_of_an_earlier_prompt() -> None:
    index = PrefixIndex(block_chars=8, max_blocks=100)
    system, first_turn = text(80, seed=1), text(40, seed=2)
    index.insert(A, index.path(system + first_turn))
    # A new conversation matches the system prompt (10 blocks), where the first one went on.
    new = index.path(system + text(40, seed=3))
    assert index.matched(new, A) == 10 and index.continued(new, 10, A)
    # The first conversation's next turn matches all of its first prompt, a leaf.
    next_turn = index.path(system + first_turn + text(40, seed=4))
    assert index.matched(next_turn, A) == 15 and not index.continued(next_turn, 15, A)
    index.insert(A, next_turn)
    assert index.continued(next_turn, 15, A)  # now a later prompt went on past it
    # A re-insert of the shorter prompt does not clear the flag; other replicas have their own.
    index.insert(A, index.path(system + first_turn))
    assert index.continued(next_turn, 15, A)
    assert not index.continued(next_turn, 15, B) and not index.continued(next_turn, 0, A)


def test_the_cap_holds_and_evicts_least_recently_used_leaves_first() -> None:
    index = PrefixIndex(block_chars=8, max_blocks=50)
    system = index.path(text(80, seed=5))  # 10 blocks every prompt shares
    prompts = [index.path(text(80, seed=5) + text(80, seed=100 + i)) for i in range(40)]
    for path in prompts:
        index.insert(A, path)
        assert index.size(A) <= 50
    assert index.size(A) == 50
    # The shared system prompt is refreshed by every insert: never evicted.
    assert index.matched(system, A) == len(system)
    # The newest prompts are whole; the oldest lost their own blocks, deepest first, so what is
    # left of any prompt is still a prefix of it (a tree, not scattered blocks).
    assert index.matched(prompts[-1], A) == 20
    assert index.matched(prompts[0], A) == 10
    for path in prompts:
        held = [name in index._trees[A] for name in path]
        assert held == sorted(held, reverse=True), "a block is held without its parent"


def test_a_prompt_longer_than_the_cap_keeps_its_beginning() -> None:
    index = PrefixIndex(block_chars=4, max_blocks=10)
    path = index.path(text(400, seed=6))
    index.insert(A, path)
    assert index.size(A) == 10 and index.matched(path, A) == 10


def test_the_cap_is_per_replica_and_forget_drops_a_replica() -> None:
    index = PrefixIndex(block_chars=8, max_blocks=20)
    for i in range(30):
        index.insert(A, index.path(text(80, seed=i)))
        index.insert(B, index.path(text(80, seed=1000 + i)))
    assert index.size(A) == index.size(B) == 20 and index.total_blocks == 40
    index.forget(A)
    assert index.size(A) == 0 and index.total_blocks == 20


def test_memory_stops_growing_at_the_cap() -> None:
    # production-stack's router trie (issue #687) grew with every distinct prompt until the
    # process died. Here, past the cap, more distinct prompts cost no more memory.
    index = PrefixIndex(block_chars=64, max_blocks=2_000)
    prompts = (f"{i:08d}" * 250 for i in range(3_000))  # 2,000 characters, distinct from the first block

    def feed(n: int) -> None:
        for _ in range(n):
            index.insert(A, index.path(next(prompts)))

    tracemalloc.start()
    try:
        feed(300)  # 300 x 31 blocks: past the cap already
        at_cap, _ = tracemalloc.get_traced_memory()
        feed(2_000)  # 62,000 more distinct blocks
        later, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert index.size(A) == 2_000
    # Uncapped, the 62,000 blocks would take megabytes (an entry and its int: ~100 bytes).
    assert later - at_cap < 64 * 1024, f"grew by {later - at_cap} bytes past the cap"


def test_rejects_a_zero_cap() -> None:
    with pytest.raises(ValueError):
        PrefixIndex(block_chars=64, max_blocks=0)
