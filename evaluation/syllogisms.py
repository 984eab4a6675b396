"""Seeded syllogisms with three possible answers: true, false, or cannot be determined.

    items = generate_syllogisms(count=30, seed=7)
    items[0].question, items[0].label      # ("Assume these statements are true: ...", "undetermined")

reasoning-gym's `syllogism` dataset answers only Yes/No ("does it follow?"), so "No" lumps
together conclusions that are false and conclusions the premises leave open. These items keep
the two apart. The right answer is not written by hand: every assignment of empty/inhabited to
the 7 regions of the three terms' Venn diagram (2^7 models, each term inhabited) is checked,
and the conclusion is "true" if it holds in every model of the premises, "false" if it fails
in every one, and "undetermined" otherwise. Nonsense nouns keep world knowledge out of it.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

NOUNS = (
    "wugs", "blickets", "daxes", "feps", "zorbs", "glorps", "tovs", "snarks", "grobbles", "lorps",
    "mimbles", "quints", "vebs", "yorks", "plinths", "traxes", "bloops", "kivas", "nerps", "sorns",
)  # fmt: skip
QUANTIFIERS = ("all", "no", "some", "some_not")
LABELS = ("true", "false", "undetermined")
Statement = tuple[str, int, int]  # (quantifier, subject term, predicate term)


@dataclass(frozen=True)
class Syllogism:
    question: str
    label: str  # "true" | "false" | "undetermined"
    premises: tuple[str, str]
    conclusion: str


def generate_syllogisms(count: int, seed: int) -> list[Syllogism]:
    """`count` items with the three labels in turn (true, false, undetermined, true, ...)."""
    rng = random.Random(seed)
    return [_generate(rng, LABELS[i % 3]) for i in range(count)]


def verdict(premises: list[Statement], conclusion: Statement) -> str | None:
    """ "true" / "false" / "undetermined", or None when the premises contradict each other."""
    outcomes = {_holds(conclusion, model) for model in _models() if all(_holds(p, model) for p in premises)}
    if not outcomes:
        return None
    if outcomes == {True}:
        return "true"
    if outcomes == {False}:
        return "false"
    return "undetermined"


def sentence(statement: Statement, nouns: tuple[str, str, str]) -> str:
    quantifier, subject, predicate = statement
    s, p = nouns[subject], nouns[predicate]
    return {
        "all": f"All {s} are {p}",
        "no": f"No {s} are {p}",
        "some": f"Some {s} are {p}",
        "some_not": f"Some {s} are not {p}",
    }[quantifier]


def _generate(rng: random.Random, label: str) -> Syllogism:
    nouns_list = rng.sample(NOUNS, 3)
    nouns = (nouns_list[0], nouns_list[1], nouns_list[2])
    while True:  # a few dozen draws at most: each label is common among random syllogisms
        premises = [_statement(rng, 0, 1), _statement(rng, 1, 2)]
        conclusion = _statement(rng, 0, 2)
        if verdict(premises, conclusion) == label:
            break
    first, second = (sentence(p, nouns) for p in premises)
    claim = sentence(conclusion, nouns)
    question = (
        "Assume these statements are true, and that there is at least one of each kind of thing mentioned:\n"
        f"1. {first}.\n2. {second}.\n\n"
        "Based only on these statements, is the following statement true, false, or cannot it be determined?\n"
        f"{claim}.\n"
        "Answer True, False, or Cannot be determined."
    )
    return Syllogism(question, label, (first, second), claim)


def _statement(rng: random.Random, a: int, b: int) -> Statement:
    subject, predicate = (a, b) if rng.random() < 0.5 else (b, a)
    return rng.choice(QUANTIFIERS), subject, predicate


def _models() -> list[frozenset[int]]:
    """Every set of inhabited Venn regions (region = bitmask of terms) in which each term is inhabited."""
    regions = range(1, 8)
    models = []
    for flags in itertools.product((False, True), repeat=7):
        inhabited = frozenset(r for r, on in zip(regions, flags, strict=True) if on)
        if all(any(r >> term & 1 for r in inhabited) for term in range(3)):
            models.append(inhabited)
    return models


def _holds(statement: Statement, inhabited: frozenset[int]) -> bool:
    quantifier, s, p = statement

    def has(region: int, term: int) -> bool:
        return bool(region >> term & 1)

    if quantifier == "all":
        return not any(has(r, s) and not has(r, p) for r in inhabited)
    if quantifier == "no":
        return not any(has(r, s) and has(r, p) for r in inhabited)
    if quantifier == "some":
        return any(has(r, s) and has(r, p) for r in inhabited)
    return any(has(r, s) and not has(r, p) for r in inhabited)
