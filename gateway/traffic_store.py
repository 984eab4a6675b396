"""Live pairs and runtime traffic settings, kept in the gateway's database beside the votes.

    store = TrafficStore(votes)                       # votes: the VoteStore (same database)
    store.save_pair(record, reviewable=True)          # a ComparisonRecord with source "live"
    page = store.pairs("assistant", limit=50)          # newest first; page.next_cursor for the next
    store.pair("pair_...") / store.delete_pair("pair_...") / store.delete_pairs("assistant", before=t)
    store.pick_for_review("assistant")                # a random unvoted pair whose prompt was kept
    store.prune("assistant", max_pairs=10_000, max_age_s=30 * 86_400)
    store.save_settings("assistant", {"mirror_fraction": 0.2})   # seen by every gateway replica
    store.settings()                                  # {"assistant": (settings, updated_at)}

A live pair is a comparison (source "live") in the votes' `comparisons` table, so a vote on it
is the same unforgeable, one-per-pair vote as on a side-by-side comparison
(`VoteStore.add_vote`), counted in its own tally. A narrow `live_pairs` row beside it holds what
listing, review and retention need (public name, time, whether it can be reviewed). Deleting a
pair deletes its text; a vote it had stays in the tally (judgement rows hold no text).

Runtime settings (`PUT /v1/traffic/{name}`) are stored here too, so that every gateway replica
sharing the database applies the same mirror fraction and canary split, and a restarted gateway
keeps them; deleting them returns a name to its config file's values.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from gateway.database import Transaction
from gateway.votes import ComparisonRecord, VoteStore, insert_comparison

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS live_pairs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        reviewable INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS live_pairs_by_name ON live_pairs (name, created_at)",
    """CREATE TABLE IF NOT EXISTS traffic_settings (
        name TEXT PRIMARY KEY,
        settings TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    )""",
)
_PAIR_COLUMNS = (
    "SELECT c.record, c.voted, j.left_model, j.right_model, j.outcome FROM live_pairs p"
    " JOIN comparisons c ON c.id = p.id LEFT JOIN judgements j ON j.comparison_id = p.id"
)


@dataclass(frozen=True)
class PairRow:
    record: ComparisonRecord
    voted: bool
    vote: dict[str, str] | None  # {"left", "right", "outcome"} once voted

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.record.to_json())
        return data | {"voted": self.voted, "vote": self.vote}


@dataclass(frozen=True)
class PairPage:
    rows: list[PairRow]
    next_cursor: str | None  # None: this was the last page


class TrafficStore:
    def __init__(self, votes: VoteStore) -> None:
        self.votes = votes
        self.db = votes.db
        self._ready = False

    def _schema(self) -> None:
        if self._ready:
            return
        self.votes.ensure_schema()
        with self.db.transaction() as tx:
            for statement in _SCHEMA:
                tx.execute(statement)
        self._ready = True

    # --- live pairs ---------------------------------------------------------------------

    def save_pair(self, record: ComparisonRecord, *, reviewable: bool) -> None:
        assert record.source == "live" and record.name, "a live pair has source 'live' and a public name"
        self._schema()
        with self.db.transaction() as tx:
            insert_comparison(tx, record)
            tx.execute(
                "INSERT INTO live_pairs (id, name, created_at, reviewable) VALUES (?, ?, ?, ?)",
                (record.id, record.name, record.created_at, int(reviewable)),
            )

    def pair(self, pair_id: str) -> PairRow | None:
        self._schema()
        with self.db.transaction() as tx:
            row = tx.execute(f"{_PAIR_COLUMNS} WHERE p.id = ?", (pair_id,)).fetchone()
        return _row(row) if row else None

    def pairs(self, name: str | None = None, *, limit: int = 50, cursor: str | None = None) -> PairPage:
        """Newest first. `cursor` is the `next_cursor` of the previous page."""
        where: list[str] = []
        params: list[Any] = []
        if name is not None:
            where.append("p.name = ?")
            params.append(name)
        if cursor is not None:
            created_at, pair_id = parse_cursor(cursor)
            where.append("(p.created_at < ? OR (p.created_at = ? AND p.id < ?))")
            params += [created_at, created_at, pair_id]
        sql = _PAIR_COLUMNS + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY p.created_at DESC, p.id DESC LIMIT ?"
        self._schema()
        with self.db.transaction() as tx:
            rows = [_row(r) for r in tx.execute(sql, (*params, limit + 1)).fetchall()]
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1].record if more and rows else None
        return PairPage(rows, f"{last.created_at!r}~{last.id}" if last else None)

    def pick_for_review(self, name: str, *, exclude: tuple[str, ...] = ()) -> PairRow | None:
        """A random pair of `name` that has no vote yet and whose prompt and answers were kept."""
        self._schema()
        skip = " AND p.id NOT IN (" + ", ".join("?" * len(exclude)) + ")" if exclude else ""
        with self.db.transaction() as tx:
            row = tx.execute(
                f"{_PAIR_COLUMNS} WHERE p.name = ? AND p.reviewable = 1 AND c.voted = 0{skip}"
                " ORDER BY random() LIMIT 1",
                (name, *exclude),
            ).fetchone()
        return _row(row) if row else None

    def counts(self, name: str) -> dict[str, int]:
        self._schema()
        with self.db.transaction() as tx:
            total, reviewable, voted = tx.execute(
                "SELECT COUNT(*), COALESCE(SUM(p.reviewable), 0), COALESCE(SUM(c.voted), 0)"
                " FROM live_pairs p JOIN comparisons c ON c.id = p.id WHERE p.name = ?",
                (name,),
            ).fetchone()
        return {"pairs": int(total), "reviewable": int(reviewable), "voted": int(voted)}

    def delete_pair(self, pair_id: str) -> bool:
        self._schema()
        with self.db.transaction() as tx:
            removed = tx.execute("DELETE FROM live_pairs WHERE id = ?", (pair_id,)).rowcount
            tx.execute("DELETE FROM comparisons WHERE id = ? AND source = 'live'", (pair_id,))
        return removed > 0

    def delete_pairs(self, name: str, *, before: float | None = None) -> int:
        """Every pair of `name` (made before `before`, when given)."""
        cutoff = time.time() + 1 if before is None else before
        self._schema()
        with self.db.transaction() as tx:
            return self._delete_older(tx, name, cutoff, inclusive=False)

    def prune(self, name: str, *, max_pairs: int, max_age_s: float, now: float | None = None) -> int:
        """Retention: drop pairs of `name` older than `max_age_s`, then the oldest beyond `max_pairs`."""
        now = time.time() if now is None else now
        self._schema()
        with self.db.transaction() as tx:
            removed = self._delete_older(tx, name, now - max_age_s, inclusive=False)
            row = tx.execute(
                "SELECT created_at FROM live_pairs WHERE name = ? ORDER BY created_at DESC LIMIT 1 OFFSET ?",
                (name, max_pairs),
            ).fetchone()
            if row is not None:
                removed += self._delete_older(tx, name, row[0], inclusive=True)
        return removed

    @staticmethod
    def _delete_older(tx: Transaction, name: str, cutoff: float, *, inclusive: bool) -> int:
        op = "<=" if inclusive else "<"
        tx.execute(
            f"DELETE FROM comparisons WHERE source = 'live' AND id IN"
            f" (SELECT id FROM live_pairs WHERE name = ? AND created_at {op} ?)",
            (name, cutoff),
        )
        removed: int = tx.execute(
            f"DELETE FROM live_pairs WHERE name = ? AND created_at {op} ?", (name, cutoff)
        ).rowcount
        return max(0, removed)

    # --- runtime settings ---------------------------------------------------------------

    def save_settings(self, name: str, settings: dict[str, Any], *, updated_at: float | None = None) -> float:
        stamp = time.time() if updated_at is None else updated_at
        self._schema()
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO traffic_settings (name, settings, updated_at) VALUES (?, ?, ?) ON CONFLICT (name)"
                " DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
                (name, json.dumps(settings), stamp),
            )
        return stamp

    def delete_settings(self, name: str) -> None:
        self._schema()
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM traffic_settings WHERE name = ?", (name,))

    def settings(self) -> dict[str, tuple[dict[str, Any], float]]:
        self._schema()
        with self.db.transaction() as tx:
            rows = tx.execute("SELECT name, settings, updated_at FROM traffic_settings").fetchall()
        return {name: (json.loads(text), float(stamp)) for name, text, stamp in rows}


def parse_cursor(cursor: str) -> tuple[float, str]:
    """A page cursor, `<created_at>~<id>`; ValueError if it is not one."""
    created_at, sep, pair_id = cursor.partition("~")
    if not sep or not pair_id:
        raise ValueError(f"not a page cursor: {cursor!r}")
    return float(created_at), pair_id


def _row(row: Any) -> PairRow:
    text, voted, left, right, outcome = row
    vote = {"left": left, "right": right, "outcome": outcome} if outcome is not None else None
    return PairRow(ComparisonRecord.from_json(text), bool(voted), vote)
