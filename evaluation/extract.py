"""Reading answers out of model outputs.

    answer, reasoning = split_reasoning(message.get("content"), message.get("reasoning"))
    value, source = extract_number(answer)        # Fraction(50), "boxed"
    numbers_equal(value, parse_number("50.00"))   # True
    classify_choice("\\boxed{\\text{Cannot be determined}}")   # "undetermined"
    extract_code(answer, "is_palindrome")          # the code block that defines the function

Only the answer section counts: a model's reasoning (the `<think>...</think>` part, or the
separate `reasoning` / `reasoning_content` field a reasoning parser fills) is removed first, so a
number merely mentioned while thinking is never taken for the answer. An R1 output cut off
before `</think>` therefore has no answer at all.
"""

from __future__ import annotations

import re
from fractions import Fraction

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_HASHES = re.compile(r"####\s*([^\n]*)")
# "The answer is 42", "Final answer: 42", "**Answer:** 42" (last one wins).
_STATED = re.compile(r"(?:final answer|answer)\s*(?:is|:)?\s*[:*]*\s*([^\n]+)", re.IGNORECASE)
# A number not glued to a word: thousands groups (1,234,567) or plain digits, decimals, an
# optional sign, and an optional "/denominator" for fractions. "20-30" gives 20 and 30.
_NUMBER = re.compile(
    r"(?<![\w.])(-?)(\d{1,3}(?:,\d{3})+(?![\d,]\d)|\d+|(?=\.\d))(\.\d+)?(?:\s*/\s*(\d+(?:\.\d+)?))?(?![\d])"
)
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.,]+)\s*\}\s*\{\s*(-?[\d.,]+)\s*\}")
_LATEX_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
_CODE_BLOCK = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_OPEN_CODE_BLOCK = re.compile(r"```[ \t]*(?:python|py)?[^\n]*\n(.*)$", re.DOTALL)

_UNDETERMINED = re.compile(
    r"\b(?:cannot|can't|can not|could not|couldn't)\s+(?:be\s+)?(?:determined|determine|known|know|tell|told)\b"
    r"|\bundetermined\b|\bindeterminate\b|\bundecidable\b|\bunknown\b|\buncertain\b"
    r"|\b(?:not enough|insufficient) information\b|\bnot determinable\b|\bnot necessarily\b"
    r"|\b(?:cannot|can't|can not) (?:be )?(?:conclude|concluded|infer|inferred|say|said)\b",
    re.IGNORECASE,
)
_YES = re.compile(r"\b(?:yes|true)\b", re.IGNORECASE)
_NO = re.compile(r"\b(?:no|false)\b|\b(?:does not|doesn't|do not|don't) follow\b", re.IGNORECASE)


def split_reasoning(content: str | None, reasoning: str | None = None) -> tuple[str, str]:
    """(answer, reasoning): drop `<think>...</think>` from content; keep a separate reasoning field.

    >>> split_reasoning("<think>2+2=5?</think>The answer is 4.")
    ('The answer is 4.', '2+2=5?')
    >>> split_reasoning("Okay so... </think> 4")   # R1's template opens <think> in the prompt
    ('4', 'Okay so...')
    >>> split_reasoning(None, "thinking that never ended")
    ('', 'thinking that never ended')
    """
    text = content or ""
    parts = [reasoning.strip()] if reasoning else []
    if THINK_CLOSE in text:
        thought, _, text = text.rpartition(THINK_CLOSE)
        parts.append(thought.replace(THINK_OPEN, "").strip())
    elif THINK_OPEN in text:
        # Opened and never closed: everything after <think> is unfinished reasoning.
        text, _, thought = text.partition(THINK_OPEN)
        parts.append(thought.strip())
    return text.strip(), "\n".join(p for p in parts if p)


def find_boxed(text: str) -> str | None:
    r"""Content of the last `\boxed{...}` (nested braces kept), or of `\boxed 42`.

    >>> find_boxed(r"so \boxed{\frac{1}{2}} or \boxed{\dfrac{3}{4}}")
    '\\dfrac{3}{4}'
    """
    matches = list(_BOXED.finditer(text))
    for match in reversed(matches):
        start = match.end()
        if start < len(text) and text[start] == "{":
            depth = 0
            for i in range(start, len(text)):
                if text[i] == "{":
                    depth += 1
                elif text[i] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[start + 1 : i].strip()
            continue  # unbalanced (output cut off): try an earlier one
        bare = re.match(r"[^\s$]+", text[start:])
        if bare:
            return bare.group(0)
    return None


def after_hashes(text: str) -> str | None:
    """GSM8K's own answer marker: the text after the last `####`."""
    found = _HASHES.findall(text)
    return found[-1].strip() if found and found[-1].strip() else None


def stated_answer(text: str) -> str | None:
    """The rest of the line after the last "answer is" / "Answer:"."""
    found = _STATED.findall(text)
    return found[-1].strip() if found else None


def final_answer_text(text: str) -> str | None:
    r"""The part of an output that states the answer: \boxed{} > #### > "answer:" > last line."""
    for candidate in (find_boxed(text), after_hashes(text), stated_answer(text)):
        if candidate:
            return _strip_markup(candidate)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return _strip_markup(lines[-1]) if lines else None


def parse_number(text: str) -> Fraction | None:
    r"""The last number in `text` as an exact Fraction; $, commas, units, %, \frac handled.

    >>> parse_number(r"\$1,250.50 dollars.")
    Fraction(2501, 2)
    >>> parse_number(r"\dfrac{3}{4}")
    Fraction(3, 4)
    >>> parse_number("x = -7")
    Fraction(-7, 1)
    """
    numbers = _numbers(_normalize_math(text))
    return numbers[-1] if numbers else None


def extract_number(answer: str) -> tuple[Fraction | None, str]:
    """(value, where it came from) for a math answer section: boxed, ####, stated, or last number."""
    for source, candidate in (
        ("boxed", find_boxed(answer)),
        ("hashes", after_hashes(answer)),
        ("stated", stated_answer(answer)),
    ):
        if candidate is not None:
            value = parse_number(candidate)
            if value is not None:
                return value, source
    value = parse_number(answer)
    return value, ("last_number" if value is not None else "none")


def numbers_equal(a: Fraction | None, b: Fraction | None) -> bool:
    """Exact equality of rationals (so 0.5 == 1/2 == 0.50); None never equals anything."""
    return a is not None and b is not None and a == b


def classify_choice(text: str | None) -> str | None:
    """Map a final answer to "yes", "no" or "undetermined" (true/false count as yes/no).

    >>> classify_choice(r"\\boxed{\\text{No}}")
    'no'
    >>> classify_choice("It cannot be determined from the premises.")
    'undetermined'
    """
    if not text:
        return None
    cleaned = _strip_markup(text)
    # "No, it cannot be determined" means undetermined, so that phrase wins over a bare no.
    if _UNDETERMINED.search(cleaned):
        return "undetermined"
    yes, no = _YES.search(cleaned), _NO.search(cleaned)
    if yes and (not no or yes.start() < no.start()):
        return "yes"
    if no:
        return "no"
    return None


def extract_code(text: str, entry_point: str | None = None) -> str:
    """The code in an output: the last fenced block defining `entry_point`, else the last block.

    An output cut off inside a block yields what was written of it; an output with no fence at
    all is taken as code as is (some models answer with a bare function).
    """
    blocks: list[str] = [
        body for lang, body in _CODE_BLOCK.findall(text) if lang.lower() in {"", "python", "py", "python3"}
    ]
    if entry_point:
        defining = [b for b in blocks if re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", b)]
        if defining:
            return defining[-1]
    if blocks:
        return blocks[-1]
    unclosed = _OPEN_CODE_BLOCK.search(text)
    if unclosed:
        return unclosed.group(1)
    return text


def _normalize_math(text: str) -> str:
    text = text.replace("\u2212", "-").replace("\\left", "").replace("\\right", "")
    text = _FRAC.sub(r"\1/\2", text)
    previous = None
    while previous != text:  # \text{\textbf{5}} needs two passes
        previous = text
        text = _LATEX_WRAPPERS.sub(r"\1", text)
    for token in ("\\$", "$", "\\%", "\\,", "\\!", "\\;", "\\ ", "{", "}"):
        text = text.replace(token, " " if token in {"\\,", "\\;", "\\ "} else "")
    return text


def _numbers(text: str) -> list[Fraction]:
    values: list[Fraction] = []
    for sign, whole, decimals, denominator in _NUMBER.findall(text):
        if not whole and not decimals:
            continue
        value = Fraction((whole or "0").replace(",", "") + (decimals or ""))
        if denominator:
            den = Fraction(denominator)
            if den == 0:
                continue
            value /= den
        values.append(-value if sign else value)
    return values


def _strip_markup(text: str) -> str:
    text = _LATEX_WRAPPERS.sub(r"\1", text)
    return text.replace("**", "").replace("`", "").strip().strip("$").strip()
