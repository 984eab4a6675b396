"""Smoke suite: the three worked examples of the widely shared R1-vs-Qwen comparison.

    items = smoke_items()     # percentage word problem, palindrome function, syllogism

Three items decide nothing statistically (the report's intervals say so); they are here so a
reader can see how the harness scores exactly the questions that comparison judged by eye.
"""

from __future__ import annotations

from evaluation.items import Item

PALINDROME_PROMPT = '''def is_palindrome(text: str) -> bool:
    """Return True if `text` reads the same forwards and backwards, ignoring case, spaces and
    punctuation (only letters and digits count).
    >>> is_palindrome("A man, a plan, a canal: Panama")
    True
    >>> is_palindrome("hello")
    False
    """
'''

PALINDROME_TEST = """def check(candidate):
    assert candidate("A man, a plan, a canal: Panama") is True
    assert candidate("racecar") is True
    assert candidate("No 'x' in Nixon") is True
    assert candidate("Was it a car or a cat I saw?") is True
    assert candidate("") is True
    assert candidate("a") is True
    assert candidate("hello") is False
    assert candidate("ab") is False
    assert candidate("12321") is True
    assert candidate("123") is False
"""


def smoke_items(limit: int | None = None, seed: int = 0) -> list[Item]:
    del seed
    items = [
        Item(
            suite="smoke",
            item_id="smoke/percentage",
            task="percentage",
            kind="math",
            question="A store sells a shirt for $40 after a 20% discount. What was the original price?",
            grader="number",
            reference="50",
        ),
        Item(
            suite="smoke",
            item_id="smoke/palindrome",
            task="palindrome",
            kind="code",
            question=PALINDROME_PROMPT,
            grader="code",
            reference={"prompt": PALINDROME_PROMPT, "test": PALINDROME_TEST, "entry_point": "is_palindrome"},
        ),
        Item(
            suite="smoke",
            item_id="smoke/syllogism",
            task="syllogism",
            kind="logic",
            question=(
                "All roses are flowers. Some flowers fade quickly. Can we conclude that some roses fade quickly?"
            ),
            grader="choice",
            # "No" and "cannot be determined" are both right: the premises leave it open.
            reference={"accepted": ["no", "undetermined"]},
        ),
    ]
    return items[:limit]
