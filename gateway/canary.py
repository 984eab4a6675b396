"""The canary split: which of two models answers a request sent to a public traffic name.

    split = CanarySplit("assistant", candidate_share=0.1)
    split.choose("user:alice")     # "candidate" or "primary"; the same key always gets the same arm
    split.choose(None)             # no key: drawn at random with the same odds
    key = sticky_key(body, headers)   # the OpenAI `user` field, else the X-Session-Id header

Sticky by hashing: a key's point `u` in [0, 1) is a hash of the public name and the key, and
the candidate answers the keys with `u < candidate_share`. So a user (or a conversation) never
switches model while the split stays put, and moving the split is consistent: raising the
candidate's share from 10% to 20% moves exactly the keys in [0.1, 0.2) to the candidate and
none back; lowering it moves only keys back to the primary. The name salts the hash, so two
public names split the same users independently.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import Any, Literal

Arm = Literal["primary", "candidate"]
SESSION_HEADER = b"x-session-id"
MAX_KEY_CHARS = 512  # longer keys are hashed as their first 512 characters


def sticky_key(body: Mapping[str, Any], headers: list[tuple[bytes, bytes]]) -> str | None:
    """What keeps a client on one model: the OpenAI `user` field, else `X-Session-Id`, else None."""
    user = body.get("user")
    if isinstance(user, str) and user:
        return "user:" + user[:MAX_KEY_CHARS]
    for name, value in headers:
        if name == SESSION_HEADER and value:
            return "session:" + value[:MAX_KEY_CHARS].decode("latin-1")
    return None


def key_point(salt: str, key: str) -> float:
    """A key's fixed place in [0, 1): 64 bits of BLAKE2b over the salt and the key."""
    digest = hashlib.blake2b(f"{salt}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class CanarySplit:
    def __init__(self, salt: str, candidate_share: float = 0.0) -> None:
        if not 0 <= candidate_share <= 1:
            raise ValueError(f"candidate_share must be within 0..1, got {candidate_share}")
        self.salt = salt
        self.candidate_share = candidate_share

    @classmethod
    def from_weights(cls, salt: str, primary: float, candidate: float) -> CanarySplit:
        return cls(salt, candidate / (primary + candidate) if primary + candidate > 0 else 0.0)

    def choose(self, key: str | None) -> Arm:
        share = self.candidate_share
        if share <= 0:
            return "primary"
        if share >= 1:
            return "candidate"
        point = random.random() if key is None else key_point(self.salt, key)
        return "candidate" if point < share else "primary"
