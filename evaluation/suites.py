"""The suites by name.

    items = load_items(["math", "smoke"], limit=20, seed=42)   # up to 20 items per suite

`limit` caps each suite (HumanEval in order, the generated suites from the start of the seeded
stream), so a run with a larger limit extends, never reshuffles, a smaller one.
"""

from __future__ import annotations

from collections.abc import Callable

from evaluation.items import Item
from evaluation.suite_code import code_items
from evaluation.suite_logic import logic_items
from evaluation.suite_math import math_items
from evaluation.suite_smoke import smoke_items

SuiteBuilder = Callable[[int | None, int], list[Item]]
SUITES: dict[str, SuiteBuilder] = {
    "code": code_items,
    "math": math_items,
    "logic": logic_items,
    "smoke": smoke_items,
}
# Suites with items graded by running the model's code, which needs the sandbox.
RUNS_CODE = frozenset({"code", "smoke"})


def load_items(names: list[str], limit: int | None, seed: int) -> list[Item]:
    unknown = [name for name in names if name not in SUITES]
    if unknown:
        raise ValueError(f"unknown suite(s) {unknown}; choose from {sorted(SUITES)}")
    return [item for name in names for item in SUITES[name](limit, seed)]
