"""What a suite produces (Items) and what grading returns (Grades).

    item = Item(suite="math", item_id="gsm_symbolic/3", task="gsm_symbolic", kind="math",
                question="...", grader="number", reference="70")
    grade = Grade(correct=True, score=1.0, extracted="70")

Items are plain JSON-able data so a record can be re-graded or re-run from its own line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# The instruction a prompt gets depends on the kind of answer we need to extract.
Kind = Literal["math", "code", "logic"]
# How an output is scored: a number compared exactly, code run against tests, a label out of
# a set (yes / no / undetermined), or a reasoning-gym dataset's own scorer.
GraderName = Literal["number", "code", "choice", "reasoning_gym"]


@dataclass(frozen=True)
class Item:
    suite: str
    item_id: str  # unique within the suite, stable across runs with the same seed
    task: str  # the source dataset, e.g. "humaneval", "gsm_symbolic", "knights_knaves"
    kind: Kind
    question: str  # the problem text, without any model-specific instruction
    grader: GraderName
    reference: Any  # what the grader compares against (a number, tests, labels, a dataset entry)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Grade:
    correct: bool  # full credit; the statistics use this binary verdict
    score: float  # the scorer's own value in [0, 1] (reasoning-gym gives partial credit)
    extracted: str | None  # the answer we read from the output, None when there was none
    detail: str = ""  # why: sandbox status, parse failure, ...
