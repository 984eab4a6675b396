"""One model output -> one Grade, by the item's grader.

    grader = Grader(Sandbox())
    grade = grader.grade(item, answer)      # answer: the output with its reasoning removed

Blocking (code runs in the sandbox): async callers use `await asyncio.to_thread(grader.grade, ...)`.
`correct` is full credit only; reasoning-gym's partial credit stays in `score`.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import reasoning_gym

from evaluation.extract import (
    classify_choice,
    extract_code,
    extract_number,
    final_answer_text,
    numbers_equal,
    parse_number,
)
from evaluation.items import Grade, Item
from evaluation.sandbox import CodeTask, Sandbox


class Grader:
    def __init__(self, sandbox: Sandbox | None) -> None:
        self.sandbox = sandbox  # None is fine for suites without code

    def grade(self, item: Item, answer: str) -> Grade:
        if not answer.strip():
            return Grade(False, 0.0, None, "no answer (empty, or the output ended inside its reasoning)")
        if item.grader == "number":
            return _grade_number(answer, str(item.reference))
        if item.grader == "choice":
            return _grade_choice(answer, list(item.reference["accepted"]))
        if item.grader == "reasoning_gym":
            return _grade_reasoning_gym(answer, item.reference["dataset"], item.reference["entry"])
        if item.grader == "code":
            return self._grade_code(answer, item.reference)
        raise ValueError(f"unknown grader {item.grader!r}")

    def _grade_code(self, answer: str, reference: dict[str, str]) -> Grade:
        if self.sandbox is None:
            raise RuntimeError("code items need a Sandbox")
        code = extract_code(answer, reference["entry_point"])
        result = self.sandbox.check(build_task(reference, code))
        return Grade(result.passed, 1.0 if result.passed else 0.0, code, result.detail)


def build_task(reference: dict[str, str], code: str) -> CodeTask:
    """HumanEval's problem around a solution, which may be a whole function or only its body.

    The sandbox runs the prompt and then the solution: the prompt holds the imports and helper
    functions a solution may use, and a full definition in `code` simply replaces the stub. The
    test runs outside it, with the prompt's own helpers (some tests call them, e.g. poly()).
    """
    entry = reference["entry_point"]
    defines = re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE)
    program = f"{reference['prompt']}\n{code}" if defines else f"{reference['prompt']}{code}"
    return CodeTask(program=program, entry_point=entry, test=reference["test"], helpers=reference["prompt"])


def _grade_number(answer: str, reference: str) -> Grade:
    value, source = extract_number(answer)
    expected = parse_number(reference)
    correct = numbers_equal(value, expected)
    shown = None if value is None else (str(value.numerator) if value.denominator == 1 else str(value))
    return Grade(correct, 1.0 if correct else 0.0, shown, f"from {source}")


def _grade_choice(answer: str, accepted: list[str]) -> Grade:
    text = final_answer_text(answer)
    label = classify_choice(text)
    correct = label in accepted
    return Grade(correct, 1.0 if correct else 0.0, label, f"read {text!r}"[:200])


def _grade_reasoning_gym(answer: str, dataset_name: str, entry: dict[str, Any]) -> Grade:
    text = final_answer_text(answer) or ""
    if dataset_name == "syllogism":
        # Its scorer wants exactly "Yes" or "No"; "cannot be determined" means it does not follow.
        label = classify_choice(text)
        text = {"yes": "Yes", "no": "No", "undetermined": "No"}.get(label or "", text)
    else:
        text = text.strip().rstrip(".").strip()
    score = float(_dataset(dataset_name).score_answer(text, entry))
    return Grade(score >= 1.0, score, text[:500], f"reasoning-gym {dataset_name} scorer")


@functools.cache
def _dataset(name: str) -> Any:
    # Scorers read only the entry they are given; the dataset object just provides the method.
    return reasoning_gym.create_dataset(name, seed=0, size=1)
