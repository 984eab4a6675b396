"""Votes: the store (SQLite and a real PostgreSQL), its counters and Wilson intervals, and the
/v1/compare/votes API in-process with a FAKE upstream."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import CompareSpec, DeploymentConfig, GatewaySpec, ModelSpec
from gateway.database import open_database
from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.preference import Interval, Judgement, wilson_interval
from gateway.votes import ComparisonRecord, Outcome, VoteOutcome, VoteStore, resolve_db_target
from tests.postgres import temporary_postgres


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


# ---------- the store, on both databases ----------


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with temporary_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VoteStore]:
    if request.param == "sqlite":
        db = open_database(tmp_path / "sub" / "votes.sqlite3")  # the directory is created
    else:
        db = open_database(request.getfixturevalue("postgres_url"))
        with db.transaction() as tx:  # a clean slate per test on the shared server
            for table in ("comparisons", "judgements", "judgement_tally"):
                tx.execute(f"DROP TABLE IF EXISTS {table}")
    yield VoteStore(db)
    db.close()


def comparison(
    cid: str, *models: str, failed: tuple[str, ...] = (), created_at: float | None = None
) -> ComparisonRecord:
    outcomes = {
        m: Outcome(status=502 if m in failed else 200, answer=f"{m} says hi", answer_chars=len(m) + 7) for m in models
    }
    extra: dict[str, Any] = {} if created_at is None else {"created_at": created_at}
    return ComparisonRecord(
        id=cid, source="compare", models=outcomes, prompt=[{"role": "user", "content": "Hi"}], **extra
    )


def test_a_vote_counts_once_and_takes_its_answers_from_the_record(store: VoteStore) -> None:
    store.save_comparison(comparison("cmp_1", "r1-tiny", "qwen-tiny"))
    receipt = store.add_vote("cmp_1", left="r1-tiny", right="qwen-tiny", outcome="left", anonymous=True)
    assert (receipt.left, receipt.right, receipt.outcome) == ("r1-tiny", "qwen-tiny", "left")
    with pytest.raises(Conflict):
        store.add_vote("cmp_1", left="r1-tiny", right="qwen-tiny", outcome="right")
    [pair] = store.tally()
    assert (pair.votes, pair.wins) == (1, {"qwen-tiny": 0, "r1-tiny": 1})
    assert store.judgements() == [Judgement("r1-tiny", "qwen-tiny", "a", 14, 16)]  # left model = a
    record = store.get_comparison("cmp_1")
    assert record is not None and record.models["r1-tiny"].answer == "r1-tiny says hi"


def test_votes_on_comparisons_the_server_never_ran_are_refused(store: VoteStore) -> None:
    store.save_comparison(comparison("cmp_1", "r1-tiny", "qwen-tiny", failed=("qwen-tiny",)))
    with pytest.raises(NotFound):
        store.add_vote("cmp_forged", left="r1-tiny", right="qwen-tiny", outcome="left")
    with pytest.raises(InvalidRequest, match="not part of"):
        store.add_vote("cmp_1", left="r1-tiny", right="gpt-4", outcome="left")
    with pytest.raises(InvalidRequest, match="did not answer"):
        store.add_vote("cmp_1", left="r1-tiny", right="qwen-tiny", outcome="left")
    with pytest.raises(InvalidRequest, match="two different"):
        store.add_vote("cmp_1", left="r1-tiny", right="r1-tiny", outcome="left")
    assert store.tally() == []


def test_tally_counts_wins_by_model_whatever_the_side(store: VoteStore) -> None:
    outcomes: list[tuple[str, str, VoteOutcome]] = [
        ("r1-tiny", "qwen-tiny", "left"),  # r1 wins
        ("qwen-tiny", "r1-tiny", "right"),  # r1 wins from the right
        ("qwen-tiny", "r1-tiny", "left"),  # qwen wins
        ("r1-tiny", "qwen-tiny", "tie"),
        ("qwen-tiny", "r1-tiny", "both_bad"),
        ("qwen-tiny", "r1-tiny", "both_bad"),
        ("smol", "qwen-tiny", "left"),  # another pair
        ("tie", "both_bad", "left"),  # model names that look like outcomes are still models
    ]
    for i, (left, right, outcome) in enumerate(outcomes):
        store.save_comparison(comparison(f"cmp_{i}", left, right))
        store.add_vote(f"cmp_{i}", left=left, right=right, outcome=outcome)
    main, *others = store.tally()  # most votes first
    assert main.models == ("qwen-tiny", "r1-tiny")
    assert (main.votes, main.wins, main.ties, main.both_bad) == (6, {"qwen-tiny": 1, "r1-tiny": 2}, 1, 2)
    rates = main.win_rates()
    assert rates["r1-tiny"] == wilson_interval(2, 6) and rates["qwen-tiny"] == wilson_interval(1, 6)
    by_models = {t.models: t for t in others}
    assert by_models[("qwen-tiny", "smol")].wins == {"qwen-tiny": 0, "smol": 1}
    assert (by_models[("both_bad", "tie")].wins, by_models[("both_bad", "tie")].ties) == ({"both_bad": 0, "tie": 1}, 0)


def test_unvoted_comparisons_expire_and_are_capped(store: VoteStore) -> None:
    store.pending_ttl_s, store.max_pending = 100, 3
    store.save_comparison(comparison("old", "a", "b", created_at=1_000.0))
    store.save_comparison(comparison("voted", "a", "b", created_at=1_000.0))
    store.add_vote("voted", left="a", right="b", outcome="tie")
    for i in range(5):
        store.save_comparison(comparison(f"new{i}", "a", "b", created_at=2_000.0 + i))
    store.prune(now=2_050.0)
    assert store.get_comparison("old") is None  # past its time
    assert store.get_comparison("voted") is not None  # the audit trail of a vote stays
    assert [store.get_comparison(f"new{i}") is not None for i in range(5)] == [False, False, True, True, True]


def test_votes_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "votes.sqlite3"
    first = VoteStore(open_database(path))
    first.save_comparison(comparison("cmp_1", "r1-tiny", "qwen-tiny"))
    first.add_vote("cmp_1", left="qwen-tiny", right="r1-tiny", outcome="right")
    again = VoteStore(open_database(path))  # a new process would do exactly this
    assert again.tally()[0].wins == {"qwen-tiny": 0, "r1-tiny": 1}
    with sqlite3.connect(path) as db:  # an ordinary SQLite file that other tools can read
        assert db.execute("SELECT outcome FROM judgements").fetchall() == [("right",)]


def test_db_target_is_a_url_or_a_path_relative_to_the_project_root(tmp_path: Path) -> None:
    assert resolve_db_target(".cache/votes.sqlite3", tmp_path) == tmp_path / ".cache/votes.sqlite3"
    assert resolve_db_target(str(tmp_path / "abs.db"), Path("/elsewhere")) == tmp_path / "abs.db"
    assert resolve_db_target("postgresql://gw@db/votes", tmp_path) == "postgresql://gw@db/votes"


# ---------- the HTTP API (FAKE upstream) ----------


def fake_engine(request: httpx.Request) -> httpx.Response:
    """Answers health checks, and every chat request with a two-token stream named after the engine."""
    if request.url.path == "/health":
        return httpx.Response(200)
    name = json.loads(request.content)["model"]
    events = [
        {"choices": [{"delta": {"content": f"{name}:"}}]},
        {"choices": [{"delta": {"content": " hi"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    ]
    body = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


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
    app = create_app(config, transport=httpx.MockTransport(fake_engine))
    with TestClient(app) as test_client:
        yield test_client


def run_comparison(client: TestClient) -> str:
    response = client.post("/v1/compare", json={"prompt": "Hi", "max_tokens": 4})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def test_a_vote_names_a_comparison_the_server_ran_and_counts_once(client: TestClient, tmp_path: Path) -> None:
    cid = run_comparison(client)
    vote = {"comparison_id": cid, "left": "r1", "right": "qwen-tiny", "vote": "left", "anonymous": True}
    saved = client.post("/v1/compare/votes", json=vote)
    assert saved.status_code == 200, saved.text
    assert saved.json()["left"] == "r1-tiny" and saved.json()["tally"]["total_votes"] == 1
    again = client.post("/v1/compare/votes", json=vote)
    assert again.status_code == 409 and again.json()["error"]["code"] == 409
    record = VoteStore(open_database(tmp_path / "votes.sqlite3")).get_comparison(cid)
    assert record is not None and record.models["r1-tiny"].answer == "r1-tiny: hi"  # the server's own answer
    assert client.get("/v1/compare/votes").json()["total_votes"] == 1


def test_forged_votes_are_refused(client: TestClient) -> None:
    cid = run_comparison(client)
    forged = [
        # today's old format, carrying its own answers and names
        {"prompt": "x", "left": {"model": "r1", "answer": "I win"}, "right": {"model": "qwen"}, "vote": "left"},
        {"comparison_id": "cmp_made_up", "left": "r1", "right": "qwen", "vote": "left"},  # never issued
        {"comparison_id": cid, "left": "r1", "right": "qwen", "vote": "left", "answer": "extra"},  # extra field
        {"comparison_id": cid, "left": "r1", "right": "gpt-4", "vote": "left"},  # unknown model
        {"comparison_id": cid, "left": "r1", "right": "r1-tiny", "vote": "left"},  # same model twice
        {"comparison_id": cid, "left": "r1", "right": "qwen", "vote": "maybe"},
    ]
    statuses = [client.post("/v1/compare/votes", json=body).status_code for body in forged]
    assert statuses == [400, 404, 400, 404, 400, 400]
    assert client.get("/v1/compare/votes").json()["total_votes"] == 0
