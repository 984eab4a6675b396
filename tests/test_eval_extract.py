"""Answer extraction and grading on tricky outputs (evaluation/extract.py, evaluation/grading.py).

No engines: the outputs below are written by hand to look like what R1 and Qwen produce.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from evaluation.extract import (
    classify_choice,
    extract_code,
    extract_number,
    final_answer_text,
    find_boxed,
    numbers_equal,
    parse_number,
    split_reasoning,
)
from evaluation.grading import Grader
from evaluation.items import Item
from evaluation.suite_logic import logic_items


def test_reasoning_section_is_removed_before_extraction() -> None:
    answer, reasoning = split_reasoning("<think>Maybe 42? No, \\boxed{41}.</think>\n\nSo the total is \\boxed{7}.")
    assert answer == "So the total is \\boxed{7}." and "42" in reasoning
    # R1's chat template opens <think> in the prompt, so the output starts inside the reasoning.
    answer, _ = split_reasoning("first 12, then 13 </think> The answer is 14.")
    assert extract_number(answer) == (Fraction(14), "stated")


def test_output_that_never_leaves_its_reasoning_has_no_answer() -> None:
    answer, reasoning = split_reasoning("<think>so it is \\boxed{50} or maybe", None)
    assert answer == "" and "boxed{50}" in reasoning
    assert extract_number(answer) == (None, "none")


def test_separate_reasoning_field_is_kept_apart_from_the_answer() -> None:
    # vLLM's deepseek_r1 parser moves the thinking into `reasoning` / `reasoning_content`.
    answer, reasoning = split_reasoning("The answer is \\boxed{9}.", "9? or 10? 10 is wrong")
    assert extract_number(answer) == (Fraction(9), "boxed")
    assert reasoning == "9? or 10? 10 is wrong"


@pytest.mark.parametrize(
    ("text", "inner"),
    [
        ("\\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),
        ("first \\boxed{1} then \\boxed{\\dfrac{1}{\\sqrt{2}}}", "\\dfrac{1}{\\sqrt{2}}"),
        ("\\boxed{\\text{\\$1,200}}.", "\\text{\\$1,200}"),
        ("unfinished \\boxed{5} and \\boxed{6", "5"),  # a cut-off last box falls back to the previous
        ("$\\boxed 8$", "8"),
        ("no box here", None),
    ],
)
def test_find_boxed_handles_nesting(text: str, inner: str | None) -> None:
    assert find_boxed(text) == inner


@pytest.mark.parametrize(
    ("output", "value", "source"),
    [
        ("So the price was \\boxed{50}.", Fraction(50), "boxed"),
        ("\\boxed{\\$1,250.50}", Fraction(250100, 200), "boxed"),
        ("\\boxed{\\frac{3}{4}}", Fraction(3, 4), "boxed"),
        ("\\boxed{50\\%}", Fraction(50), "boxed"),
        ("\\boxed{\\text{18 dollars}}", Fraction(18), "boxed"),
        ("\\boxed{x = -7}", Fraction(-7), "boxed"),
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", Fraction(72), "hashes"),
        ("#### 1,000", Fraction(1000), "hashes"),
        ("The answer is: $18.00.", Fraction(18), "stated"),
        ("**Final Answer:** 2,345 apples", Fraction(2345), "stated"),
        ("She pays 3 * 4 = 12 dollars, so she has 20 - 12 = 8 dollars left.", Fraction(8), "last_number"),
        ("He drives at 120 km/h.", Fraction(120), "last_number"),
        ("Half of it: 0.5", Fraction(1, 2), "last_number"),
        ("I don't know.", None, "none"),
    ],
)
def test_extract_number(output: str, value: Fraction | None, source: str) -> None:
    assert extract_number(output) == (value, source)


def test_equality_is_exact_across_fractions_decimals_and_formatting() -> None:
    assert numbers_equal(parse_number("0.5"), parse_number("1/2"))
    assert numbers_equal(parse_number("2.50"), parse_number("\\frac{5}{2}"))
    assert numbers_equal(parse_number("$1,000."), parse_number("1000"))
    assert not numbers_equal(parse_number("0.333"), parse_number("1/3"))
    assert not numbers_equal(parse_number("no number"), parse_number("0"))
    assert parse_number("1, 2, 3") == 3  # a list, not a thousands group
    assert parse_number("from 20-30 people") == 30


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("\\boxed{\\text{No}}", "no"),
        ("**Yes**", "yes"),
        ("True", "yes"),
        ("False.", "no"),
        ("Cannot be determined", "undetermined"),
        ("No, it cannot be determined from the premises.", "undetermined"),
        ("We cannot conclude that some roses fade quickly.", "undetermined"),
        ("It does not follow.", "no"),
        ("The statement is unknown", "undetermined"),
        ("Nothing useful", None),
        (None, None),
    ],
)
def test_classify_choice(text: str | None, label: str | None) -> None:
    assert classify_choice(text) == label


def test_final_answer_text_prefers_box_then_marker_then_last_line() -> None:
    assert final_answer_text("blah\n\\boxed{Zoey is a fool, and Riley is a sage}\nthanks") == (
        "Zoey is a fool, and Riley is a sage"
    )
    assert final_answer_text("Reasoning...\nAnswer: **Bob**") == "Bob"
    assert final_answer_text("line one\nline two\n") == "line two"
    assert final_answer_text("   ") is None


def test_extract_code_picks_the_block_that_defines_the_function() -> None:
    output = (
        "Here is the solution:\n```python\ndef add(a, b):\n    return a + b\n```\n"
        "Example:\n```python\nprint(add(1, 2))\n```\n"
    )
    assert extract_code(output, "add") == "def add(a, b):\n    return a + b\n"
    assert extract_code("```py\nx = 1\n```", "add") == "x = 1\n"
    assert extract_code("```python\ndef add(a, b):\n    return a +", "add") == "def add(a, b):\n    return a +"
    assert extract_code("def add(a, b):\n    return a + b", "add") == "def add(a, b):\n    return a + b"


def _item(grader: str, reference: object, kind: str = "math") -> Item:
    return Item("t", "t/0", "t", kind, "question", grader, reference)  # type: ignore[arg-type]


def test_number_and_choice_grading() -> None:
    grader = Grader(None)
    assert grader.grade(_item("number", "50"), "The original price was \\boxed{\\$50.00}.").correct
    assert not grader.grade(_item("number", "50"), "The original price was \\boxed{48}.").correct
    empty = grader.grade(_item("number", "50"), "")
    assert not empty.correct and empty.extracted is None
    smoke = _item("choice", {"accepted": ["no", "undetermined"]}, kind="logic")
    assert grader.grade(smoke, "Not necessarily: \\boxed{\\text{No}}").correct
    assert grader.grade(smoke, "Therefore it cannot be determined.").correct
    assert not grader.grade(smoke, "\\boxed{Yes}").correct


def test_reasoning_gym_scorers_on_extracted_answers() -> None:
    grader = Grader(None)
    items = {i.task: i for i in logic_items(limit=4, seed=42)}
    knights = items["knights_knaves"]
    right = knights.reference["entry"]["answer"]  # e.g. "Zoey is a fool, and Riley is a sage."
    assert grader.grade(knights, f"Let me think.\n\\boxed{{{right}}}").correct
    partial = grader.grade(knights, "\\boxed{Nobody is anything}")
    assert not partial.correct
    syllogism = items["syllogism"]
    truth = syllogism.reference["entry"]["answer"]
    assert grader.grade(syllogism, f"\\boxed{{{truth}}}").correct
    # "Cannot be determined" means the conclusion does not follow: reasoning-gym's "No".
    opposite = "cannot be determined" if truth == "Yes" else "\\boxed{Yes}"
    assert not grader.grade(syllogism, opposite).correct
    zebra = items["zebra_puzzles"]
    name = zebra.reference["entry"]["answer"]
    assert grader.grade(zebra, f"The person in house 1 is \\boxed{{{name.title()}}}.").correct
    three_way = items["syllogism_3way"]
    label = three_way.reference["label"]
    answer = {"true": "True", "false": "False", "undetermined": "Cannot be determined"}[label]
    assert grader.grade(three_way, f"\\boxed{{{answer}}}").correct
