"""Per-item results as JSON lines, appended one by one so an interrupted run loses nothing.

    store = RecordStore(Path("results/eval/run1/records.jsonl"))
    done = store.done_keys()                  # {(model, suite, item_id, sample), ...} answered
    store.append({"model": "r1", "suite": "math", "item_id": "gsm_symbolic/0", "sample": 0, ...})
    records = store.load()                    # the last record per key wins

A record with an `error` (the request itself failed) is not "done": a resumed run asks again.
A truncated last line (the process was killed mid-write) is skipped on load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Key = tuple[str, str, str, int]


def record_key(record: dict[str, Any]) -> Key:
    return record["model"], record["suite"], record["item_id"], int(record["sample"])


class RecordStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._checked_end = False

    def load(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        latest: dict[Key, dict[str, Any]] = {}
        with self.path.open() as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut off by an interruption
                latest[record_key(record)] = record
        return list(latest.values())

    def done_keys(self) -> set[Key]:
        return {record_key(r) for r in self.load() if not r.get("error")}

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as out:
            if not self._checked_end:
                # After an interruption mid-line, start on a fresh line so the new record survives.
                self._checked_end = True
                if self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
                    out.write("\n")
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
