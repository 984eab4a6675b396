"""Votes: the SQLite store, its tally and Wilson intervals, and the /v1/compare/votes API
(in-process, with a FAKE upstream that only answers health checks)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import CompareSpec, DeploymentConfig, GatewaySpec, ModelSpec
from gateway.votes import Interval, Outcome, Side, Vote, VoteStore, resolve_db_path, wilson_interval


def vote(left: str, right: str, outcome: Outcome, **extra: Any) -> Vote:
    return Vote("Capital of France?", Side(left, f"{left} says"), Side(right, f"{right} says"), outcome, **extra)


# Reference values: Newcombe (1998), "Two-sided confidence intervals for the single
# proportion", Statistics in Medicine 17:857-872, Table I, method 3 (Wilson score, no correction).
@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_interval_matches_published_values(successes: int, trials: int, low: float, high: float) -> None:
    interval = wilson_interval(successes, trials)
    assert interval.rate == pytest.approx(successes / trials)
    assert (round(interval.low, 4), round(interval.high, 4)) == (low, high)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) == Interval(0.0, 0.0, 1.0)  # no votes: anything goes
    full = wilson_interval(29, 29)
    assert full.high == 1.0 and 0.88 < full.low < 0.89  # all wins still leaves doubt below 1


def test_store_keeps_everything_about_a_vote(tmp_path: Path) -> None:
    store = VoteStore(tmp_path / "sub" / "votes.sqlite3")  # the directory is created
    original = Vote(
        prompt="Why is the sky blue?",
        left=Side("r1-tiny", "Rayleigh.", "Light scatters...", {"ttft_s": 0.1, "total_s": 2.0}),
        right=Side("qwen-tiny", "Because.", "", {"ttft_s": 0.05, "total_s": 1.0}),
        outcome="both_bad",
        params={"max_tokens": 64, "seed": 7},
        anonymous=True,
    )
    vote_id = store.add(original)
    assert store.get(vote_id) == original
    assert store.get(vote_id + 1) is None


def test_votes_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "votes.sqlite3"
    first = VoteStore(path)
    first.add(vote("r1-tiny", "qwen-tiny", "left"))
    first.add(vote("qwen-tiny", "r1-tiny", "tie"))
    del first
    again = VoteStore(path)  # a new process would do exactly this
    [pair] = again.tally()
    assert (pair.votes, pair.wins["r1-tiny"], pair.ties) == (2, 1, 1)
    again.add(vote("r1-tiny", "qwen-tiny", "right"))
    assert again.tally()[0].wins == {"qwen-tiny": 1, "r1-tiny": 1}
    with sqlite3.connect(path) as db:  # an ordinary SQLite file that other tools can read
        assert db.execute("SELECT COUNT(*) FROM votes").fetchone() == (3,)


def test_tally_counts_wins_by_model_whatever_the_side(tmp_path: Path) -> None:
    store = VoteStore(tmp_path / "votes.sqlite3")
    outcomes: list[tuple[str, str, Outcome]] = [
        ("r1-tiny", "qwen-tiny", "left"),  # r1 wins
        ("qwen-tiny", "r1-tiny", "right"),  # r1 wins from the right
        ("qwen-tiny", "r1-tiny", "left"),  # qwen wins
        ("r1-tiny", "qwen-tiny", "tie"),
        ("qwen-tiny", "r1-tiny", "both_bad"),
        ("qwen-tiny", "r1-tiny", "both_bad"),
        ("smol", "qwen-tiny", "left"),  # another pair
    ]
    for left, right, outcome in outcomes:
        store.add(vote(left, right, outcome))
    main, other = store.tally()  # most votes first
    assert main.models == ("qwen-tiny", "r1-tiny")
    assert (main.votes, main.wins, main.ties, main.both_bad) == (6, {"qwen-tiny": 1, "r1-tiny": 2}, 1, 2)
    rates = main.win_rates()
    assert rates["r1-tiny"] == wilson_interval(2, 6) and rates["qwen-tiny"] == wilson_interval(1, 6)
    assert (other.models, other.votes, other.wins) == (("qwen-tiny", "smol"), 1, {"qwen-tiny": 0, "smol": 1})


def test_model_names_that_look_like_outcomes_are_still_models(tmp_path: Path) -> None:
    store = VoteStore(tmp_path / "votes.sqlite3")
    store.add(vote("tie", "both_bad", "left"))
    [pair] = store.tally()
    assert (pair.wins, pair.ties, pair.both_bad) == ({"both_bad": 0, "tie": 1}, 0, 0)


def test_db_path_is_relative_to_the_project_root(tmp_path: Path) -> None:
    assert resolve_db_path(".cache/votes.sqlite3", tmp_path) == tmp_path / ".cache/votes.sqlite3"
    assert resolve_db_path(str(tmp_path / "abs.db"), Path("/elsewhere")) == tmp_path / "abs.db"


# ---------- the HTTP API ----------


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    config = DeploymentConfig(
        platform="cpu",
        gateway=GatewaySpec(compare=CompareSpec(votes_db=str(tmp_path / "votes.sqlite3"))),
        models=[
            ModelSpec(name="r1-tiny", aliases=["r1"], endpoints=["http://r1.fake:1"]),
            ModelSpec(name="qwen-tiny", aliases=["qwen"], endpoints=["http://qwen.fake:2"]),
        ],
    )
    app = create_app(config, transport=httpx.MockTransport(lambda _: httpx.Response(200)))  # FAKE: health only
    with TestClient(app) as test_client:
        yield test_client


def post_vote(client: TestClient, left: str, right: str, outcome: str) -> httpx.Response:
    body = {
        "prompt": "Capital of France?",
        "left": {"model": left, "answer": "Paris", "timings": {"ttft_s": 0.2}},
        "right": {"model": right, "answer": "Lyon", "reasoning": "hmm"},
        "vote": outcome,
        "params": {"max_tokens": 32, "seed": 1},
        "anonymous": True,
    }
    return client.post("/v1/compare/votes", json=body)


def test_vote_api_stores_and_returns_the_updated_tally(client: TestClient, tmp_path: Path) -> None:
    assert client.get("/v1/compare/votes").json() == {"object": "compare.tally", "total_votes": 0, "pairs": []}
    saved = post_vote(client, "r1", "qwen-tiny", "left")  # an alias is counted under the served name
    assert saved.status_code == 200, saved.text
    assert (saved.json()["left"], saved.json()["right"]) == ("r1-tiny", "qwen-tiny")
    post_vote(client, "qwen", "r1", "tie")
    tally = client.get("/v1/compare/votes").json()
    assert tally["total_votes"] == 2
    [pair] = tally["pairs"]
    assert pair["models"] == ["qwen-tiny", "r1-tiny"] and pair["wins"] == {"qwen-tiny": 0, "r1-tiny": 1}
    assert pair["ties"] == 1 and pair["both_bad"] == 0
    expected = wilson_interval(1, 2)
    assert pair["win_rate"]["r1-tiny"] == {"rate": 0.5, "low": expected.low, "high": expected.high}
    stored = VoteStore(tmp_path / "votes.sqlite3").get(saved.json()["id"])
    assert stored is not None and stored.anonymous and stored.right.reasoning == "hmm"
    assert stored.left.timings == {"ttft_s": 0.2} and stored.params == {"max_tokens": 32, "seed": 1}


@pytest.mark.parametrize(
    ("left", "right", "outcome", "status"),
    [("r1", "r1-tiny", "left", 400), ("r1", "gpt-4", "left", 404), ("r1", "qwen", "maybe", 400)],
)
def test_bad_votes_are_refused(client: TestClient, left: str, right: str, outcome: str, status: int) -> None:
    response = post_vote(client, left, right, outcome)
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert client.get("/v1/compare/votes").json()["total_votes"] == 0
