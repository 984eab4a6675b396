"""Plain Python values to one line of JSON and back, for calls across the sandbox's boundary.

    line = encode([1, (2, 3.5), {"a": None}])   # one line of ASCII
    decode(line)                                # [1, (2, 3.5), {'a': None}]
    to_data(value) / from_data(data)            # the same, as JSON-ready structures

Only data crosses: None, bool, int, float (nan and infinities too), complex, str, bytes, and
lists, tuples, dicts, sets and frozensets of these. decode() builds nothing else, so an answer
read from the sandbox is data and never code: anything else the model's function returns (a
generator, an instance of its own class, an object whose __eq__ always says True) arrives as an
Opaque value, equal only to itself. Standard library only: the sandbox's interpreter imports it too.
"""

from __future__ import annotations

import json
from typing import Any


class Opaque:
    """Stands for a value that is not plain data; compares equal to nothing else."""

    def __init__(self, description: str) -> None:
        self.description = description

    def __repr__(self) -> str:
        return f"<not plain data: {self.description}>"


def encode(value: object) -> str:
    return json.dumps(to_data(value), separators=(",", ":"))


def decode(line: str | bytes) -> Any:
    """Raises ValueError, TypeError (an unhashable key) or RecursionError on anything but encode()'s output."""
    return from_data(json.loads(line))


def to_data(value: object) -> object:
    # bool before int (it is one); subclasses become their base type, dropping any overrides.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, list):
        return [to_data(item) for item in value]
    if isinstance(value, tuple):
        return {"tuple": [to_data(item) for item in value]}
    if isinstance(value, dict):
        return {"dict": [[to_data(k), to_data(v)] for k, v in value.items()]}
    if isinstance(value, frozenset):
        return {"frozenset": [to_data(item) for item in value]}
    if isinstance(value, set):
        return {"set": [to_data(item) for item in value]}
    if isinstance(value, bytes | bytearray):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    return {"opaque": f"{type(value).__name__} {_short_repr(value)}"}


def _short_repr(value: object) -> str:
    try:
        return repr(value)[:200]
    except Exception:  # a hostile or broken __repr__
        return "(no repr)"


def from_data(data: object) -> Any:
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if isinstance(data, list):
        return [from_data(item) for item in data]
    if not isinstance(data, dict) or len(data) != 1:
        raise ValueError(f"not an encoded value: {str(data)[:100]}")
    ((tag, body),) = data.items()
    if tag == "opaque" and isinstance(body, str):
        return Opaque(body)
    if tag == "bytes" and isinstance(body, str):
        return bytes.fromhex(body)
    if not isinstance(body, list):
        raise ValueError(f"not an encoded {tag}")
    items = [from_data(item) for item in body]
    if tag == "tuple":
        return tuple(items)
    if tag == "set":
        return set(items)
    if tag == "frozenset":
        return frozenset(items)
    if tag == "dict" and all(isinstance(pair, list) and len(pair) == 2 for pair in items):
        return {key: value for key, value in items}
    if tag == "complex" and len(items) == 2 and all(isinstance(part, float) for part in items):
        return complex(items[0], items[1])
    raise ValueError(f"not an encoded value: tag {tag!r}")
