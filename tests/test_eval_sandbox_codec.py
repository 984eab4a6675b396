"""What crosses the sandbox's pipe (evaluation/sandbox_codec.py): plain data, exactly, and nothing else."""

from __future__ import annotations

import enum
import math

import pytest

from evaluation.sandbox_codec import Opaque, decode, encode


def test_plain_data_survives_with_its_types() -> None:
    value = [
        None, True, False, 0, -7, 10**40, 1.5, -0.0, 2 + 3j, "", "héllo\n\"quoted\"\ud800", b"\x00\xff",
        (1, (2, 3)), [], (), {"a": 1, 2: [3], (4, 5): None}, {1, 2}, frozenset({"x"}), [[], [{}]],
    ]  # fmt: skip
    line = encode(value)
    assert "\n" not in line and line.isascii()
    back = decode(line)
    assert back == value
    assert [type(item) for item in back] == [type(item) for item in value]
    assert type(back[12][1]) is tuple and type(back[15]) is dict and type(back[17]) is frozenset


def test_special_floats_survive() -> None:
    back = decode(encode([math.inf, -math.inf, math.nan]))
    assert back[0] == math.inf and back[1] == -math.inf and math.isnan(back[2])


def test_subclasses_lose_their_overrides() -> None:
    class Sneaky(int):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = int.__hash__

    class Color(enum.IntEnum):
        RED = 1

    back = decode(encode([Sneaky(3), Color.RED]))
    assert back == [3, 1] and type(back[0]) is int and type(back[1]) is int
    assert back[0] != 4


def test_anything_else_arrives_opaque_and_equal_to_nothing() -> None:
    class Anything:
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = object.__hash__

    for value in (Anything(), (x for x in [1]), print, object()):
        back = decode(encode(value))
        assert isinstance(back, Opaque)
        assert back == back  # noqa: PLR0124 (itself, and nothing else)
        assert all(back != other for other in (back.description, Opaque(back.description), 1, None, [], True))
        assert type(value).__name__ in repr(back)


@pytest.mark.parametrize(
    "line",
    [
        "{",  # not JSON
        '{"tuple": 1}',  # a tag with the wrong body
        '{"nope": []}',  # an unknown tag
        '{"tuple": [], "set": []}',  # two tags
        '{"dict": [[1]]}',  # a pair that is not a pair
        '{"set": [[1]]}',  # an unhashable member
        '{"complex": ["1", 2.0]}',
        '{"bytes": "zz"}',
    ],
)
def test_malformed_input_is_refused(line: str) -> None:
    with pytest.raises((ValueError, TypeError)):
        decode(line)


def test_absurd_nesting_is_refused() -> None:
    with pytest.raises((ValueError, RecursionError)):
        decode("[" * 100_000 + "]" * 100_000)
