"""Math suite: GSM8K-style word problems from reasoning-gym's seeded `gsm_symbolic` generator.

    items = math_items(limit=50, seed=42)     # the same 50 problems for the same seed

No PyPI package ships the GSM8K test set; `gsm_symbolic` re-instantiates GSM8K templates with
fresh numbers (the GSM-Symbolic idea), so answers are exact integers we compare as rationals.
"""

from __future__ import annotations

import reasoning_gym

from evaluation.items import Item

DEFAULT_SIZE = 500


def math_items(limit: int | None = None, seed: int = 42) -> list[Item]:
    # Always the same dataset, so the first N items do not depend on the limit.
    size = DEFAULT_SIZE if limit is None else min(limit, DEFAULT_SIZE)
    dataset = reasoning_gym.create_dataset("gsm_symbolic", seed=seed, size=DEFAULT_SIZE)
    items = []
    for index in range(size):
        entry = dataset[index]
        items.append(
            Item(
                suite="math",
                item_id=f"gsm_symbolic/{index}",
                task="gsm_symbolic",
                kind="math",
                question=entry["question"],
                grader="number",
                reference=str(entry["answer"]),
                meta={"seed": seed},
            )
        )
    return items
