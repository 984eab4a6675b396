"""Comparisons the gateway ran, the votes on them, and their tally per model pair.

    store = VoteStore(open_database(".cache/votes.sqlite3"))
    store.save_comparison(ComparisonRecord(id="cmp_1", source="compare", models={"r1-tiny": Outcome(...), ...}))
    receipt = store.add_vote("cmp_1", left="r1-tiny", right="qwen-tiny", outcome="left", anonymous=True)
    store.tally("compare")     # [PairTally(models=("qwen-tiny", "r1-tiny"), votes=1, wins={...}, ...)]
    store.judgements("compare")   # per vote, a gateway.preference.Judgement: models, outcome (left = a), answer lengths

Votes cannot be forged: the server issues the comparison id with every `/v1/compare` result and
keeps what each model answered under it; a vote names that id and the two models the judge saw
(left and right), and nothing else. Its answers, timings and parameters come from the server's
record, a comparison takes one vote (a second is a 409), and an id the server never issued, or
one that expired unvoted, is a 404. Live pairs from mirrored traffic (source "live") are kept and
voted on the same way.

The tally reads a table of counters kept in the same transaction as each vote, so it costs the
same with a million long answers stored; the per-vote rows it may also need (for a
length-controlled estimate) are narrow: models, outcome and two lengths.

Unvoted comparisons are kept for `pending_ttl_s` (default a day) and at most `max_pending` of
them; voted ones stay as the audit trail of their vote. The store is the gateway's database:
SQLite by default, PostgreSQL by URL when several gateway replicas must share one
(gateway/database.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.database import Database, DuplicateKey, Transaction, is_database_url
from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.preference import Interval, Judgement, wilson_interval
from gateway.preference import Outcome as JudgedOutcome

VoteOutcome = Literal["left", "right", "tie", "both_bad"]
# A vote as gateway.preference judges it: the left model is `a`.
_AS_PREFERENCE: dict[str, JudgedOutcome] = {"left": "a", "right": "b", "tie": "tie", "both_bad": "both_bad"}
OUTCOMES: tuple[VoteOutcome, ...] = ("left", "right", "tie", "both_bad")
Source = Literal["compare", "live"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS comparisons (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        voted INTEGER NOT NULL DEFAULT 0,
        record TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS comparisons_pending ON comparisons (voted, created_at)",
    """CREATE TABLE IF NOT EXISTS judgements (
        comparison_id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        left_model TEXT NOT NULL,
        right_model TEXT NOT NULL,
        outcome TEXT NOT NULL,
        left_length INTEGER NOT NULL,
        right_length INTEGER NOT NULL,
        anonymous INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS judgements_source ON judgements (source)",
    """CREATE TABLE IF NOT EXISTS judgement_tally (
        source TEXT NOT NULL,
        model_a TEXT NOT NULL,
        model_b TEXT NOT NULL,
        wins_a INTEGER NOT NULL,
        wins_b INTEGER NOT NULL,
        ties INTEGER NOT NULL,
        both_bad INTEGER NOT NULL,
        PRIMARY KEY (source, model_a, model_b)
    )""",
)


@dataclass(frozen=True)
class Outcome:
    """What one model of a comparison answered, as the server saw it."""

    status: int = 200
    answer: str | None = None  # None when the text is not stored (live pairs without store_prompts)
    reasoning: str | None = None
    answer_chars: int = 0
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class ComparisonRecord:
    id: str
    source: Source
    models: dict[str, Outcome]
    created_at: float = field(default_factory=time.time)
    prompt: list[Any] | None = None  # the messages; None when not stored
    prompt_sha256: str | None = None
    prompt_chars: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    name: str | None = None  # the public model name of a live pair

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> ComparisonRecord:
        data = json.loads(text)
        data["models"] = {m: Outcome(**o) for m, o in data["models"].items()}
        return cls(**data)


@dataclass(frozen=True)
class PairTally:
    """All votes between two models, whichever side each sat on."""

    models: tuple[str, str]  # sorted, so a pair has one key
    votes: int
    wins: dict[str, int]
    ties: int
    both_bad: int

    def win_rates(self) -> dict[str, Interval]:
        return {model: wilson_interval(self.wins[model], self.votes) for model in self.models}


@dataclass(frozen=True)
class VoteReceipt:
    comparison_id: str
    left: str
    right: str
    outcome: VoteOutcome


PROJECT_ROOT = Path(__file__).resolve().parent.parent


def resolve_db_target(configured: str, root: Path = PROJECT_ROOT) -> str | Path:
    """`gateway.compare.votes_db`: a PostgreSQL URL as is, a path relative to the project root."""
    if is_database_url(configured):
        return configured
    path = Path(configured).expanduser()
    return path if path.is_absolute() else root / path


class VoteStore:
    def __init__(self, db: Database, *, pending_ttl_s: float = 86_400, max_pending: int = 100_000) -> None:
        self.db = db
        self.pending_ttl_s = pending_ttl_s
        self.max_pending = max_pending
        self._ready = False
        self._saved = 0

    def _schema(self) -> None:
        if self._ready:
            return
        with self.db.transaction() as tx:
            for statement in _SCHEMA:
                tx.execute(statement)
        self._ready = True

    def ensure_schema(self) -> None:
        """Create the tables if they are missing (checked once per store)."""
        self._schema()

    def save_comparison(self, record: ComparisonRecord) -> None:
        self._schema()
        with self.db.transaction() as tx:
            insert_comparison(tx, record)
        self._saved += 1
        if self._saved % 100 == 1:
            self.prune()

    def get_comparison(self, comparison_id: str) -> ComparisonRecord | None:
        self._schema()
        with self.db.transaction() as tx:
            row = tx.execute("SELECT record FROM comparisons WHERE id = ?", (comparison_id,)).fetchone()
        return ComparisonRecord.from_json(row[0]) if row else None

    def add_vote(
        self, comparison_id: str, *, left: str, right: str, outcome: VoteOutcome, anonymous: bool = False
    ) -> VoteReceipt:
        """Record one vote on a comparison the server ran; raise NotFound, InvalidRequest or
        Conflict (already voted) otherwise."""
        if outcome not in OUTCOMES:
            raise InvalidRequest(f"Unknown vote {outcome!r}; use one of {', '.join(OUTCOMES)}.", param="vote")
        if left == right:
            raise InvalidRequest("A vote compares two different models.", param="right")
        self._schema()
        with self.db.transaction() as tx:
            row = tx.execute("SELECT record, voted FROM comparisons WHERE id = ?", (comparison_id,)).fetchone()
            if row is None:
                raise NotFound(
                    f"No comparison '{comparison_id}': run /v1/compare and vote on the id it returns "
                    "(unvoted comparisons expire).",
                    param="comparison_id",
                )
            if row[1]:
                raise Conflict(f"Comparison '{comparison_id}' already has its vote.", param="comparison_id")
            record = ComparisonRecord.from_json(row[0])
            for side, model in (("left", left), ("right", right)):
                outcome_of = record.models.get(model)
                if outcome_of is None:
                    raise InvalidRequest(
                        f"Model '{model}' was not part of comparison '{comparison_id}' "
                        f"(it compared {', '.join(record.models)}).",
                        param=side,
                    )
                if outcome_of.status != 200:
                    raise InvalidRequest(f"Model '{model}' did not answer in this comparison.", param=side)
            lengths = (record.models[left].answer_chars, record.models[right].answer_chars)
            try:
                tx.execute(
                    "INSERT INTO judgements (comparison_id, source, created_at, left_model, right_model, outcome,"
                    " left_length, right_length, anonymous) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (comparison_id, record.source, time.time(), left, right, outcome, *lengths, int(anonymous)),
                )
            except DuplicateKey as exc:  # a concurrent vote won the race
                raise Conflict(f"Comparison '{comparison_id}' already has its vote.", param="comparison_id") from exc
            tx.execute("UPDATE comparisons SET voted = 1 WHERE id = ?", (comparison_id,))
            a, b = sorted((left, right))
            winner = left if outcome == "left" else right if outcome == "right" else None
            counts = (
                int(winner == a),
                int(winner == b),
                int(outcome == "tie"),
                int(outcome == "both_bad"),
            )
            tx.execute(
                "INSERT INTO judgement_tally (source, model_a, model_b, wins_a, wins_b, ties, both_bad)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, model_a, model_b) DO UPDATE SET"
                " wins_a = judgement_tally.wins_a + excluded.wins_a, wins_b = judgement_tally.wins_b + excluded.wins_b,"
                " ties = judgement_tally.ties + excluded.ties, both_bad = judgement_tally.both_bad + excluded.both_bad",
                (record.source, a, b, *counts),
            )
        return VoteReceipt(comparison_id, left, right, outcome)

    def tally(self, source: Source = "compare") -> list[PairTally]:
        """One entry per unordered model pair, most-voted first."""
        self._schema()
        with self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT model_a, model_b, wins_a, wins_b, ties, both_bad FROM judgement_tally WHERE source = ?",
                (source,),
            ).fetchall()
        tallies = [
            PairTally(models=(a, b), votes=wa + wb + t + bb, wins={a: wa, b: wb}, ties=t, both_bad=bb)
            for a, b, wa, wb, t, bb in rows
        ]
        return sorted(tallies, key=lambda t: (-t.votes, t.models))

    def judgements(self, source: Source = "compare") -> list[Judgement]:
        """Every vote of `source`, oldest first, as a preference Judgement (left model = a;
        lengths in characters of the answers the judge saw)."""
        self._schema()
        with self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT left_model, right_model, outcome, left_length, right_length FROM judgements"
                " WHERE source = ? ORDER BY created_at",
                (source,),
            ).fetchall()
        return [Judgement(a, b, _AS_PREFERENCE[outcome], la, lb) for a, b, outcome, la, lb in rows]

    def prune(self, now: float | None = None) -> int:
        """Drop unvoted side-by-side comparisons past their time, and the oldest beyond
        `max_pending`. Live pairs have their own retention (gateway/traffic_store.py)."""
        now = time.time() if now is None else now
        self._schema()
        with self.db.transaction() as tx:
            removed = tx.execute(
                "DELETE FROM comparisons WHERE voted = 0 AND source = 'compare' AND created_at < ?",
                (now - self.pending_ttl_s,),
            ).rowcount
            row = tx.execute(
                "SELECT created_at FROM comparisons WHERE voted = 0 AND source = 'compare'"
                " ORDER BY created_at DESC LIMIT 1 OFFSET ?",
                (self.max_pending,),
            ).fetchone()
            if row is not None:
                removed += tx.execute(
                    "DELETE FROM comparisons WHERE voted = 0 AND source = 'compare' AND created_at <= ?", (row[0],)
                ).rowcount
        return max(0, removed)


def insert_comparison(tx: Transaction, record: ComparisonRecord) -> None:
    """One comparison row, inside the caller's transaction (live pairs add their index row beside it)."""
    tx.execute(
        "INSERT INTO comparisons (id, source, created_at, voted, record) VALUES (?, ?, ?, 0, ?)",
        (record.id, record.source, record.created_at, record.to_json()),
    )
