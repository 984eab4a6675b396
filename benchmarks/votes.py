"""What a vote tally costs as answers pile up: the store's kept counters against the previous
design (a GROUP BY over the wide table that also holds every answer), in one run.

    python -m benchmarks.votes [--votes 3000] [--answer-kb 60] [--repeat 20] [--out results/bench/votes]

Both databases get the same votes with answers of `--answer-kb` KB per side; the tally is then
timed `--repeat` times each, alternating. Prints a table and writes results.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from gateway.database import open_database
from gateway.votes import ComparisonRecord, Outcome, VoteOutcome, VoteStore

_WIDE = """CREATE TABLE votes (id INTEGER PRIMARY KEY AUTOINCREMENT, created_at REAL, prompt TEXT,
left_model TEXT, right_model TEXT, left_answer TEXT, right_answer TEXT, left_reasoning TEXT,
right_reasoning TEXT, left_timings TEXT, right_timings TEXT, params TEXT, outcome TEXT, anonymous INTEGER)"""
_WIDE_TALLY = "SELECT left_model, right_model, outcome, COUNT(*) FROM votes GROUP BY left_model, right_model, outcome"
OUTCOMES: tuple[VoteOutcome, ...] = ("left", "right", "tie", "both_bad")


def build(directory: Path, votes: int, answer_kb: int) -> tuple[Path, VoteStore]:
    rng = random.Random(0)
    answer = "x" * (answer_kb * 1024)
    wide = directory / "wide.sqlite3"
    with sqlite3.connect(wide) as db:
        db.execute(_WIDE)
        rows = []
        for i in range(votes):
            left, right = ("r1", "qwen") if i % 2 else ("qwen", "r1")
            rows.append(
                (time.time(), "p", left, right, answer, answer, "", "", "{}", "{}", "{}", rng.choice(OUTCOMES), 1)
            )
        db.executemany("INSERT INTO votes VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    store = VoteStore(open_database(directory / "store.sqlite3"), max_pending=votes * 2)
    for i in range(votes):
        left, right = ("r1", "qwen") if i % 2 else ("qwen", "r1")
        outcome = Outcome(answer=answer, answer_chars=len(answer))
        store.save_comparison(ComparisonRecord(id=f"cmp_{i}", source="compare", models={left: outcome, right: outcome}))
        store.add_vote(f"cmp_{i}", left=left, right=right, outcome=rng.choice(OUTCOMES))
    return wide, store


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--votes", type=int, default=3000)
    parser.add_argument("--answer-kb", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("results/bench/votes"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"building {args.votes} votes with {args.answer_kb} KB answers per side ...", flush=True)
        wide, store = build(Path(tmp), args.votes, args.answer_kb)
        times: dict[str, list[float]] = {"previous (GROUP BY over the wide table)": [], "kept counters": []}
        for _ in range(args.repeat):  # alternate, so drift affects both alike
            started = time.perf_counter()
            with sqlite3.connect(wide) as db:
                db.execute(_WIDE_TALLY).fetchall()
            times["previous (GROUP BY over the wide table)"].append(time.perf_counter() - started)
            started = time.perf_counter()
            store.tally()
            times["kept counters"].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    base = medians["previous (GROUP BY over the wide table)"]
    print(f"\n{'tally':<42} {'median ms':>10} {'vs previous':>12}")
    for name, ms in medians.items():
        print(f"{name:<42} {ms:>10.2f} {ms / base:>11.3f}x")
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"votes": args.votes, "answer_kb": args.answer_kb, "repeat": args.repeat, "median_ms": medians}
    (args.out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
