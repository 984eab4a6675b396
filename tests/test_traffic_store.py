"""Live pairs and runtime traffic settings in the database (SQLite and a real PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.database import open_database
from gateway.errors import Conflict
from gateway.traffic_store import TrafficStore, parse_cursor
from gateway.votes import ComparisonRecord, Outcome, VoteStore
from tests.postgres import temporary_postgres

TABLES = ("comparisons", "judgements", "judgement_tally", "live_pairs", "traffic_settings")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with temporary_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TrafficStore]:
    if request.param == "sqlite":
        db = open_database(tmp_path / "votes.sqlite3")
    else:
        db = open_database(request.getfixturevalue("postgres_url"))
        with db.transaction() as tx:
            for table in TABLES:
                tx.execute(f"DROP TABLE IF EXISTS {table}")
    yield TrafficStore(VoteStore(db))
    db.close()


def pair(
    pid: str, *, name: str = "assistant", created_at: float = 1000.0, prompt: bool = True, failed: bool = False
) -> ComparisonRecord:
    models = {
        "qwen-tiny": Outcome(status=200, answer="hi" if prompt else None, answer_chars=2),
        "r1-tiny": Outcome(status=502 if failed else 200, answer="hello" if prompt else None, answer_chars=5),
    }
    return ComparisonRecord(
        id=pid,
        source="live",
        models=models,
        created_at=created_at,
        prompt=[{"role": "user", "content": "q"}] if prompt else None,
        prompt_sha256="0" * 64,
        name=name,
    )


def save(store: TrafficStore, record: ComparisonRecord) -> None:
    reviewable = record.prompt is not None and all(o.status == 200 for o in record.models.values())
    store.save_pair(record, reviewable=reviewable)


def test_pages_go_newest_first_and_end(store: TrafficStore) -> None:
    for i in range(7):
        save(store, pair(f"pair_{i}", created_at=1000.0 + i // 2))  # ties in time: the id breaks them
    save(store, pair("pair_other", name="coder"))
    seen, cursor = [], None
    while True:
        page = store.pairs("assistant", limit=3, cursor=cursor)
        seen += [row.record.id for row in page.rows]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ["pair_6", "pair_5", "pair_4", "pair_3", "pair_2", "pair_1", "pair_0"]
    assert len(store.pairs(None, limit=100).rows) == 8
    row = store.pair("pair_3")
    assert row is not None and row.record.prompt == [{"role": "user", "content": "q"}] and not row.voted
    with pytest.raises(ValueError):
        parse_cursor("garbage")


def test_review_draws_only_unvoted_pairs_with_text_and_a_vote_counts_once(store: TrafficStore) -> None:
    save(store, pair("pair_text"))
    save(store, pair("pair_hashed", prompt=False))
    save(store, pair("pair_failed", failed=True))
    for _ in range(10):
        picked = store.pick_for_review("assistant")
        assert picked is not None and picked.record.id == "pair_text"
    assert store.pick_for_review("assistant", exclude=("pair_text",)) is None
    store.votes.add_vote("pair_text", left="r1-tiny", right="qwen-tiny", outcome="left", anonymous=True)
    with pytest.raises(Conflict):
        store.votes.add_vote("pair_text", left="qwen-tiny", right="r1-tiny", outcome="right", anonymous=True)
    assert store.pick_for_review("assistant") is None
    row = store.pair("pair_text")
    assert row is not None and row.voted and row.vote == {"left": "r1-tiny", "right": "qwen-tiny", "outcome": "left"}
    [tally] = store.votes.tally("live")
    assert tally.wins == {"qwen-tiny": 0, "r1-tiny": 1} and store.votes.tally("compare") == []
    assert store.counts("assistant") == {"pairs": 3, "reviewable": 1, "voted": 1}


def test_retention_by_age_then_count_keeps_the_tally(store: TrafficStore) -> None:
    for i in range(10):
        save(store, pair(f"pair_{i:02}", created_at=1000.0 + i))
    save(store, pair("pair_coder", name="coder", created_at=1000.0))
    store.votes.add_vote("pair_09", left="r1-tiny", right="qwen-tiny", outcome="tie")
    removed = store.prune("assistant", max_pairs=4, max_age_s=5, now=1007.5)  # age drops 0..2, count 3..5
    assert removed == 6
    assert [r.record.id for r in store.pairs("assistant").rows] == ["pair_09", "pair_08", "pair_07", "pair_06"]
    assert store.pair("pair_coder") is not None  # another name keeps its own retention
    assert store.votes.get_comparison("pair_00") is None  # the text went with the pair
    store.prune("assistant", max_pairs=1, max_age_s=5, now=1008.5)
    assert [r.record.id for r in store.pairs("assistant").rows] == ["pair_09"]
    assert store.votes.tally("live")[0].ties == 1  # the vote is kept, with no text


def test_delete_one_or_many(store: TrafficStore) -> None:
    for i in range(5):
        save(store, pair(f"pair_{i}", created_at=1000.0 + i))
    assert store.delete_pair("pair_4") and not store.delete_pair("pair_4")
    assert store.votes.get_comparison("pair_4") is None
    assert store.delete_pairs("assistant", before=1002.0) == 2
    assert [r.record.id for r in store.pairs("assistant").rows] == ["pair_3", "pair_2"]
    assert store.delete_pairs("assistant") == 2 and store.pairs("assistant").rows == []


def test_side_by_side_pruning_leaves_live_pairs_alone(store: TrafficStore) -> None:
    save(store, pair("pair_old", created_at=1.0))
    store.votes.prune(now=10_000_000.0)
    assert store.pair("pair_old") is not None


def test_settings_round_trip_and_reset(store: TrafficStore) -> None:
    assert store.settings() == {}
    stamp = store.save_settings("assistant", {"mirror_fraction": 0.5, "split": None})
    store.save_settings("assistant", {"mirror_fraction": 0.25, "split": {"r1-tiny": 1.0}}, updated_at=stamp + 1)
    assert store.settings() == {"assistant": ({"mirror_fraction": 0.25, "split": {"r1-tiny": 1.0}}, stamp + 1)}
    store.delete_settings("assistant")
    assert store.settings() == {}
