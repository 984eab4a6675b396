"""Suites, the three-way syllogism generator and per-model prompting (no engines)."""

from __future__ import annotations

from collections import Counter

import pytest
import reasoning_gym

from evaluation.grading import Grader
from evaluation.prompting import ModelInfo, policy_for
from evaluation.sandbox import Sandbox, SandboxLimits
from evaluation.suite_smoke import smoke_items
from evaluation.suites import load_items
from evaluation.syllogisms import generate_syllogisms, verdict


def test_code_suite_is_all_of_humaneval_in_order() -> None:
    items = load_items(["code"], None, 0)
    assert len(items) == 164
    assert [i.item_id for i in items[:3]] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert items[-1].item_id == "HumanEval/163"
    assert all({"prompt", "test", "entry_point"} <= set(i.reference) for i in items)


def test_math_suite_is_seeded_and_a_larger_limit_extends_a_smaller_one() -> None:
    full = load_items(["math"], None, 42)
    assert len(full) == 500 and len({i.question for i in full}) > 400
    assert load_items(["math"], 5, 42) == full[:5]
    assert load_items(["math"], 5, 7) != full[:5]
    assert all(i.reference.lstrip("-").isdigit() for i in full)


def test_logic_suite_takes_turns_between_tasks() -> None:
    items = load_items(["logic"], 8, 42)
    assert [i.task for i in items] == ["knights_knaves", "syllogism", "syllogism_3way", "zebra_puzzles"] * 2
    assert len({i.item_id for i in items}) == 8


def test_reasoning_gym_syllogisms_have_no_cannot_be_determined_answer() -> None:
    # Why syllogism_3way exists: the dataset's answers are only Yes / No.
    dataset = reasoning_gym.create_dataset("syllogism", seed=42, size=200)
    assert {entry["answer"] for entry in dataset} == {"Yes", "No"}


def test_three_way_syllogisms_have_every_answer_in_equal_shares() -> None:
    items = generate_syllogisms(30, seed=3)
    assert Counter(s.label for s in items) == {"true": 10, "false": 10, "undetermined": 10}
    assert generate_syllogisms(30, seed=3) == items
    assert all("Cannot be determined" in s.question for s in items)


@pytest.mark.parametrize(
    ("premises", "conclusion", "expected"),
    [
        # Terms: 0 = S (subject), 1 = M (middle), 2 = P (predicate).
        ([("all", 0, 1), ("all", 1, 2)], ("all", 0, 2), "true"),  # Barbara
        ([("all", 0, 1), ("some", 1, 2)], ("some", 0, 2), "undetermined"),  # the roses example
        ([("all", 0, 1), ("no", 1, 2)], ("some", 0, 2), "false"),  # Celarent's contradiction
        ([("some", 0, 1), ("all", 1, 2)], ("some", 0, 2), "true"),  # Darii
        ([("some_not", 0, 1), ("all", 2, 1)], ("some_not", 0, 2), "true"),  # Baroco
        ([("all", 0, 1), ("no", 0, 1)], ("all", 0, 2), None),  # inconsistent premises (S inhabited)
    ],
)
def test_syllogism_verdicts_for_classic_forms(
    premises: list[tuple[str, int, int]], conclusion: tuple[str, int, int], expected: str | None
) -> None:
    assert verdict(premises, conclusion) == expected


def test_smoke_suite_is_the_three_worked_examples() -> None:
    items = {i.task: i for i in smoke_items()}
    assert set(items) == {"percentage", "palindrome", "syllogism"}
    assert items["percentage"].reference == "50"
    assert items["syllogism"].reference == {"accepted": ["no", "undetermined"]}


def test_palindrome_tests_tell_a_right_function_from_a_naive_one() -> None:
    grader = Grader(Sandbox(SandboxLimits(timeout_s=5)))
    item = next(i for i in smoke_items() if i.task == "palindrome")
    right = (
        "```python\ndef is_palindrome(text):\n"
        "    s = [c.lower() for c in text if c.isalnum()]\n    return s == s[::-1]\n```"
    )
    naive = "```python\ndef is_palindrome(text):\n    return text == text[::-1]\n```"
    assert grader.grade(item, right).correct
    assert not grader.grade(item, naive).correct


R1 = {"id": "r1-tiny", "aliases": ["deepseek-r1", "r1"], "max_model_len": 2048, "sampling_defaults": {}}
QWEN = {
    "id": "Qwen/Qwen2.5-1.5B-Instruct",
    "aliases": ["qwen", "native"],
    "max_model_len": 16384,
    "sampling_defaults": {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05},
}


def test_r1_is_recognized_by_name_alias_or_reasoning_parser() -> None:
    assert ModelInfo.from_gateway(R1).is_deepseek_r1
    assert ModelInfo.from_gateway({"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"}).is_deepseek_r1
    assert ModelInfo.from_gateway({"id": "x", "reasoning_parser": "deepseek_r1"}).is_deepseek_r1
    assert not ModelInfo.from_gateway(QWEN).is_deepseek_r1
    assert not ModelInfo.from_gateway({"id": "smollm2-135m-instruct", "aliases": ["qwen"]}).is_deepseek_r1


def test_r1_prompting_follows_its_model_card() -> None:
    policy = policy_for(ModelInfo.from_gateway(R1))
    math = load_items(["math"], 1, 42)[0]
    messages = policy.messages(math)
    assert [m["role"] for m in messages] == ["user"]  # no system prompt
    assert messages[0]["content"].endswith("Please reason step by step, and put your final answer within \\boxed{}.")
    assert policy.sampling == {"temperature": 0.6, "top_p": 0.95}


def test_qwen_prompting_uses_its_template_defaults_from_the_gateway() -> None:
    policy = policy_for(ModelInfo.from_gateway(QWEN))
    code = load_items(["code"], 1, 0)[0]
    messages = policy.messages(code)
    assert [m["role"] for m in messages] == ["user"]  # the chat template adds Qwen's own system turn
    assert "```python\nfrom typing import List" in messages[0]["content"]
    assert policy.sampling == QWEN["sampling_defaults"]
    assert policy.sampling_source == "gateway sampling_defaults"
    assert policy_for(ModelInfo.from_gateway({"id": "qwen-tiny"})).sampling == {}
