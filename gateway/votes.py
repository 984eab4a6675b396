"""Votes from the side-by-side page, kept in SQLite, and their tally per model pair.

    store = VoteStore(Path(".cache/votes.sqlite3"))        # creates the file and table if needed
    vote_id = store.add(Vote(prompt="Hi", left=Side("r1-tiny", "Hello"), right=Side("qwen-tiny", "Hey"),
                             outcome="left"))
    store.tally()   # [PairTally(models=("qwen-tiny", "r1-tiny"), votes=1, wins={"r1-tiny": 1, ...}, ...)]

Each vote keeps what a later reader needs to audit it: the prompt, both answers (and
reasoning), the sampling parameters, both models' timings, which model sat on which side and
whether the judge saw the names. A pair is unordered: (r1, qwen) and (qwen, r1) votes add up.

Win rates count every vote of the pair in the denominator (ties and "both bad" are votes
that neither model won), each with a 95% Wilson score interval, which behaves at 0 or 1
wins and small counts where the normal approximation does not.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Outcome = Literal["left", "right", "tie", "both_bad"]
OUTCOMES: tuple[Outcome, ...] = ("left", "right", "tie", "both_bad")
Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    prompt TEXT NOT NULL,
    left_model TEXT NOT NULL,
    right_model TEXT NOT NULL,
    left_answer TEXT NOT NULL,
    right_answer TEXT NOT NULL,
    left_reasoning TEXT NOT NULL,
    right_reasoning TEXT NOT NULL,
    left_timings TEXT NOT NULL,
    right_timings TEXT NOT NULL,
    params TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('left', 'right', 'tie', 'both_bad')),
    anonymous INTEGER NOT NULL
)
"""


@dataclass(frozen=True)
class Side:
    """One column of a comparison as the judge saw it."""

    model: str
    answer: str = ""
    reasoning: str = ""
    timings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Vote:
    prompt: str
    left: Side
    right: Side
    outcome: Outcome
    params: dict[str, Any] = field(default_factory=dict)
    anonymous: bool = False


@dataclass(frozen=True)
class Interval:
    rate: float
    low: float
    high: float


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


def wilson_interval(successes: int, trials: int, *, z: float = Z_95) -> Interval:
    """Wilson score interval for a binomial proportion: `wilson_interval(7, 10)` is 0.70 in [0.397, 0.892]."""
    if trials <= 0:
        return Interval(0.0, 0.0, 1.0)  # no votes: nothing is known
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


PROJECT_ROOT = Path(__file__).resolve().parent.parent


def resolve_db_path(configured: str, root: Path = PROJECT_ROOT) -> Path:
    """`gateway.compare.votes_db` is relative to the project root unless absolute."""
    path = Path(configured).expanduser()
    return path if path.is_absolute() else root / path


class VoteStore:
    """A SQLite file of votes. Each call opens its own short connection, so the store can be
    used from FastAPI's worker threads without sharing a connection between them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ready = False  # the file is created on first use: a gateway nobody votes on leaves none

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(sqlite3.connect(self.path, timeout=10)) as db:
                db.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
                db.execute(_SCHEMA)
            self._ready = True
        db = sqlite3.connect(self.path, timeout=10)
        try:
            with db:  # commits on success, rolls back on error
                yield db
        finally:
            db.close()

    def add(self, vote: Vote) -> int:
        if vote.outcome not in OUTCOMES:
            raise ValueError(f"unknown vote outcome {vote.outcome!r}")
        row = (
            time.time(),
            vote.prompt,
            vote.left.model,
            vote.right.model,
            vote.left.answer,
            vote.right.answer,
            vote.left.reasoning,
            vote.right.reasoning,
            json.dumps(vote.left.timings),
            json.dumps(vote.right.timings),
            json.dumps(vote.params),
            vote.outcome,
            int(vote.anonymous),
        )
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO votes (created_at, prompt, left_model, right_model, left_answer, right_answer,"
                " left_reasoning, right_reasoning, left_timings, right_timings, params, outcome, anonymous)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def get(self, vote_id: int) -> Vote | None:
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM votes WHERE id = ?", (vote_id,)).fetchone()
        if row is None:
            return None
        return Vote(
            prompt=row["prompt"],
            left=Side(row["left_model"], row["left_answer"], row["left_reasoning"], json.loads(row["left_timings"])),
            right=Side(
                row["right_model"], row["right_answer"], row["right_reasoning"], json.loads(row["right_timings"])
            ),
            outcome=row["outcome"],
            params=json.loads(row["params"]),
            anonymous=bool(row["anonymous"]),
        )

    def tally(self) -> list[PairTally]:
        """One entry per unordered model pair, most-voted first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT left_model, right_model, outcome, COUNT(*) FROM votes GROUP BY left_model, right_model, outcome"
            ).fetchall()
        # Per sorted pair (a, b): [wins of a, wins of b, ties, both bad].
        counts: dict[tuple[str, str], list[int]] = {}
        for left, right, outcome, n in rows:
            a, b = sorted((left, right))
            pair = counts.setdefault((a, b), [0, 0, 0, 0])
            if outcome in ("left", "right"):
                winner = left if outcome == "left" else right
                pair[0 if winner == a else 1] += n
            else:
                pair[2 if outcome == "tie" else 3] += n
        tallies = [
            PairTally(models=(a, b), votes=sum(c), wins={a: c[0], b: c[1]}, ties=c[2], both_bad=c[3])
            for (a, b), c in counts.items()
        ]
        return sorted(tallies, key=lambda t: (-t.votes, t.models))
