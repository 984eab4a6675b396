"""Logic suite: seeded puzzles, scored by reasoning-gym's own scorers where it has them.

    items = logic_items(limit=8, seed=42)    # tasks in turn: knights_knaves, syllogism,
                                             # syllogism_3way, zebra_puzzles, knights_knaves, ...

- knights_knaves, syllogism, zebra_puzzles: reasoning-gym 0.1.25 generators and scorers.
- syllogism_3way (ours, syllogisms.py): reasoning-gym's syllogisms answer only Yes/No, with
  "No" covering both "false" and "cannot be determined"; these items have all three answers
  in equal shares, the right one found by checking every model of the premises.
"""

from __future__ import annotations

import json
from typing import Any

import reasoning_gym

from evaluation.items import Item
from evaluation.syllogisms import generate_syllogisms

TASKS = ("knights_knaves", "syllogism", "syllogism_3way", "zebra_puzzles")
DEFAULT_PER_TASK = 100
LABEL_TO_CHOICE = {"true": "yes", "false": "no", "undetermined": "undetermined"}


def logic_items(limit: int | None = None, seed: int = 42) -> list[Item]:
    total = DEFAULT_PER_TASK * len(TASKS) if limit is None else limit
    per_task = -(-total // len(TASKS))  # ceiling: enough of each task to take turns
    by_task = {task: _task_items(task, per_task, seed) for task in TASKS}
    interleaved = [by_task[task][i] for i in range(per_task) for task in TASKS]
    return interleaved[:total]


def _task_items(task: str, count: int, seed: int) -> list[Item]:
    if task == "syllogism_3way":
        return [
            Item(
                suite="logic",
                item_id=f"{task}/{i}",
                task=task,
                kind="logic",
                question=s.question,
                grader="choice",
                reference={"accepted": [LABEL_TO_CHOICE[s.label]], "label": s.label},
                meta={"seed": seed},
            )
            for i, s in enumerate(generate_syllogisms(count, seed))
        ]
    dataset = reasoning_gym.create_dataset(task, seed=seed, size=max(count, DEFAULT_PER_TASK))
    items = []
    for i in range(count):
        entry = _jsonable(dataset[i])
        items.append(
            Item(
                suite="logic",
                item_id=f"{task}/{i}",
                task=task,
                kind="logic",
                question=entry["question"],
                grader="reasoning_gym",
                reference={"dataset": task, "entry": entry},
                meta={"seed": seed},
            )
        )
    return items


def _jsonable(entry: dict[str, Any]) -> dict[str, Any]:
    """Entries go into JSONL records; their metadata may hold tuples or numpy scalars."""
    loaded: dict[str, Any] = json.loads(json.dumps(entry, default=str))
    return loaded
