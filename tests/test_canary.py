from __future__ import annotations

import pytest

from gateway.canary import CanarySplit, key_point, sticky_key


def test_the_user_field_comes_first_then_the_session_header() -> None:
    headers = [(b"x-session-id", b"conv-7")]
    assert sticky_key({"user": "alice"}, headers) == "user:alice"
    assert sticky_key({"user": ""}, headers) == "session:conv-7"
    assert sticky_key({"user": 42}, headers) == "session:conv-7"  # not a string: not a key
    assert sticky_key({}, []) is None


def test_a_key_always_gets_the_same_arm() -> None:
    split = CanarySplit("assistant", 0.5)
    for i in range(200):
        key = f"user:{i}"
        assert len({split.choose(key) for _ in range(5)}) == 1


def test_shares_follow_the_weights() -> None:
    split = CanarySplit.from_weights("assistant", primary=90, candidate=10)
    assert split.candidate_share == pytest.approx(0.1)
    chosen = [split.choose(f"user:{i}") for i in range(20_000)]
    assert chosen.count("candidate") / len(chosen) == pytest.approx(0.1, abs=0.01)
    assert CanarySplit("x", 0).choose("user:a") == "primary"
    assert CanarySplit("x", 1).choose("user:a") == "candidate"


def test_moving_the_split_only_moves_users_towards_the_new_share() -> None:
    keys = [f"user:{i}" for i in range(5_000)]
    at = {share: {k for k in keys if CanarySplit("assistant", share).choose(k) == "candidate"} for share in (0.1, 0.2)}
    assert at[0.1] < at[0.2]  # everyone on the candidate at 10% stays there at 20%
    assert len(at[0.2] - at[0.1]) == pytest.approx(500, rel=0.15)


def test_names_split_independently() -> None:
    keys = [f"user:{i}" for i in range(2_000)]
    a = {k for k in keys if CanarySplit("assistant", 0.5).choose(k) == "candidate"}
    b = {k for k in keys if CanarySplit("coder", 0.5).choose(k) == "candidate"}
    assert 0.35 < len(a & b) / len(a) < 0.65  # about half overlap, as for independent coins
    assert 0 <= key_point("assistant", "user:1") < 1


def test_requests_without_a_key_are_drawn_at_random() -> None:
    split = CanarySplit("assistant", 0.5)
    drawn = [split.choose(None) for _ in range(2_000)]
    assert 800 < drawn.count("candidate") < 1200
    with pytest.raises(ValueError):
        CanarySplit("assistant", 1.5)
