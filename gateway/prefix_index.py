"""An approximate prefix tree of the prompts sent to each replica, capped in size.

    index = PrefixIndex(block_chars=64, max_blocks=65_536)
    path = index.path(prompt)                 # the prompt's blocks, each named by its whole prefix
    index.matched(path, "http://10.0.0.7:8101")  # -> leading blocks this replica was sent: 12
    index.insert("http://10.0.0.7:8101", path)
    index.continued(path, 12, "http://10.0.0.7:8101")  # -> True: another prompt went on past block 12
    index.size("http://10.0.0.7:8101")        # blocks remembered for it (never above max_blocks)
    index.forget("http://10.0.0.7:8101")      # a replica that left

What it stands for: the engine's prefix cache, which vLLM keeps per block of tokens, each block
named by a hash of every token before it and its own. The gateway cannot afford to tokenize,
so it does the same with text: the prompt is cut into blocks of `block_chars` characters, the
i-th block is named by a hash chained over blocks 0..i, and a replica's share of the tree is the
set of names it was sent. A name stands for a whole path from the root, so this set *is* a trie
(a radix tree with fixed-size edges); a lookup walks it from the root, a dict probe per block,
and never compares characters. The last, partial block is left out, as vLLM leaves out a
partial block of tokens.

The cap (production-stack's trie had none and grew until its router died: issue #687): at most
`max_blocks` names per replica, evicted least recently used first. A lookup-and-insert refreshes
a path from its deepest block up to the root, so an ancestor is always fresher than its
descendants and eviction takes leaves first: what is left is still a tree of whole prefixes. A
replica that leaves takes its share with it (`forget`), so replicas coming and going cannot
leave entries behind either. Memory is therefore bounded by replicas x `max_blocks` entries.

Each name also records whether some prompt sent to that replica went on past it (`continued`):
a match that ends where others went on is a prefix several prompts share (a system prompt, a
conversation another branched from), and one that ends at a leaf is the whole of an earlier
prompt that this one extends (the next turn of a conversation). The flag outlives an evicted
child, which at worst makes a leaf look shared.

Names are Python's 64-bit `hash` of (parent name, block): fast, and stable within a process,
which is all this index needs (it is not shared).
"""

from __future__ import annotations

import collections


class PrefixIndex:
    def __init__(self, *, block_chars: int, max_blocks: int) -> None:
        if block_chars < 1 or max_blocks < 1:
            raise ValueError("block_chars and max_blocks must be positive")
        self.block_chars = block_chars
        self.max_blocks = max_blocks
        # name -> whether a prompt sent to the replica went on past that block
        self._trees: dict[str, collections.OrderedDict[int, bool]] = {}

    def path(self, text: str) -> list[int]:
        """The names of the prompt's whole blocks, root first."""
        names = []
        name = 0
        size = self.block_chars
        for start in range(0, len(text) - size + 1, size):
            name = hash((name, text[start : start + size]))
            names.append(name)
        return names

    def matched(self, path: list[int], replica: str) -> int:
        """How many leading blocks of `path` this replica's tree holds."""
        tree = self._trees.get(replica)
        if not tree:
            return 0
        count = 0
        for name in path:
            if name not in tree:
                break
            count += 1
        return count

    def continued(self, path: list[int], blocks: int, replica: str) -> bool:
        """Whether a prompt sent to `replica` went on past the first `blocks` blocks of `path`
        (which the replica's tree holds: `blocks` <= matched(path, replica))."""
        tree = self._trees.get(replica)
        return bool(blocks >= 1 and tree and tree.get(path[blocks - 1], False))

    def insert(self, replica: str, path: list[int]) -> None:
        """Remember that `path` was sent to `replica`, freshest at the root; evict beyond the cap."""
        tree = self._trees.setdefault(replica, collections.OrderedDict())
        last = len(path) - 1
        for i in range(last, -1, -1):
            name = path[i]
            tree[name] = i < last or tree.get(name, False)
            tree.move_to_end(name)
        while len(tree) > self.max_blocks:
            tree.popitem(last=False)

    def size(self, replica: str) -> int:
        return len(self._trees.get(replica, ()))

    def forget(self, replica: str) -> None:
        self._trees.pop(replica, None)

    @property
    def total_blocks(self) -> int:
        return sum(len(tree) for tree in self._trees.values())
