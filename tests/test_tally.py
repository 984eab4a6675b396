"""The tally per source: counts from the kept counters, rates over decisive votes, the
length-controlled estimate from the judgement rows (cached), side-by-side and live apart."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from gateway.database import open_database
from gateway.preference import MIN_DECISIVE, wilson_interval
from gateway.tally import Tallies
from gateway.votes import ComparisonRecord, Outcome, Source, VoteOutcome, VoteStore


def vote(store: VoteStore, cid: str, outcome: VoteOutcome, *, source: Source, lengths: tuple[int, int]) -> None:
    models = {
        "r1-tiny": Outcome(answer="x" * lengths[0], answer_chars=lengths[0]),
        "qwen-tiny": Outcome(answer="y" * lengths[1], answer_chars=lengths[1]),
    }
    store.save_comparison(ComparisonRecord(id=cid, source=source, models=models, name="assistant"))
    left, right = ("r1-tiny", "qwen-tiny") if int(cid.split("_")[1]) % 2 else ("qwen-tiny", "r1-tiny")
    side = {"r1": "left" if left == "r1-tiny" else "right", "qwen": "right" if left == "r1-tiny" else "left"}
    store.add_vote(cid, left=left, right=right, outcome=side.get(outcome, outcome))  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> VoteStore:
    return VoteStore(open_database(tmp_path / "votes.sqlite3"))


def test_rates_are_over_decisive_votes_and_sources_stay_apart(store: VoteStore) -> None:
    for i, outcome in enumerate(["r1", "r1", "qwen", "tie", "both_bad"]):
        vote(store, f"cmp_{i}", outcome, source="compare", lengths=(100, 50))  # type: ignore[arg-type]
    vote(store, "pair_9", "qwen", source="live", lengths=(10, 20))  # type: ignore[arg-type]
    tallies = Tallies(store)
    compare = tallies.tally("compare", object_name="compare.tally")
    [pair] = compare.pairs
    assert compare.object == "compare.tally" and compare.total_votes == 5
    assert (pair.models, pair.wins, pair.ties, pair.both_bad, pair.decisive) == (
        ("qwen-tiny", "r1-tiny"), {"qwen-tiny": 1, "r1-tiny": 2}, 1, 1, 3,
    )  # fmt: skip
    expected = wilson_interval(2, 3)
    assert (pair.win_rate["r1-tiny"].rate, pair.win_rate["r1-tiny"].low) == (expected.rate, expected.low)
    assert pair.length_controlled is None  # 3 decisive votes: no fit
    [live] = tallies.tally("live").pairs
    assert live.wins == {"qwen-tiny": 1, "r1-tiny": 0} and live.votes == 1


def test_length_control_separates_length_from_the_model(store: VoteStore) -> None:
    rng = random.Random(7)
    # Votes drawn from a judge who only looks at length: P(r1 wins) = sigmoid(4 d), d the normalized
    # length difference, and r1 is usually the longer one. The raw rate favours r1; at equal
    # lengths there is nothing to choose between them.
    for i in range(200):
        r1_len = rng.randint(300, 900) if rng.random() < 0.8 else rng.randint(50, 300)
        qwen_len = rng.randint(100, 400)
        d = (r1_len - qwen_len) / (r1_len + qwen_len)
        won = "r1" if rng.random() < 1 / (1 + math.exp(-4 * d)) else "qwen"
        vote(store, f"pair_{i}", won, source="live", lengths=(r1_len, qwen_len))  # type: ignore[arg-type]
    [pair] = Tallies(store).tally("live").pairs
    control = pair.length_controlled
    assert control is not None and control.votes == pair.decisive == 200
    assert pair.win_rate["r1-tiny"].low > 0.5  # raw: r1 looks better
    assert control.length_coefficient > 0  # longer wins
    assert control.win_rate["r1-tiny"].low < 0.5 < control.win_rate["r1-tiny"].high  # at equal length: no evidence
    assert control.win_rate["r1-tiny"].rate + control.win_rate["qwen-tiny"].rate == pytest.approx(1)


def test_the_fit_is_cached_until_votes_change_and_refit_time_passes(store: VoteStore) -> None:
    for i in range(2 * MIN_DECISIVE):
        vote(store, f"pair_{i}", "r1" if i % 3 else "qwen", source="live", lengths=(100 + i * 7, 200))  # type: ignore[arg-type]
    tallies = Tallies(store, refit_s=3600)
    first = tallies.tally("live").pairs[0].length_controlled
    assert first is not None
    vote(store, "pair_99", "qwen", source="live", lengths=(500, 100))  # type: ignore[arg-type]
    cached = tallies.tally("live").pairs[0]
    assert cached.votes == 2 * MIN_DECISIVE + 1  # counts are always current
    assert cached.length_controlled is not None and cached.length_controlled.votes == first.votes  # the fit waits
    tallies.refit_s = 0
    assert tallies.tally("live").pairs[0].length_controlled.votes == first.votes + 1  # type: ignore[union-attr]
