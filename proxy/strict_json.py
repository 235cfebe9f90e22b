"""JSON as Bedrock reads it: numbers that are numbers, and where one is not.

Python's `json` accepts `NaN`, `Infinity` and `-Infinity`, turns `1e400` into
`inf`, and stops at integers longer than `sys.get_int_max_str_digits()` (4,300
digits) with a `ValueError` that names no field. Bedrock refuses all of them. A
request body holding one is refused before admission, naming the field, so a
max-tokens value can never reach the worst-case estimate as a float infinity
(which would raise on the way to integer micro-USD) or stop the parser with a
message that does not say where.

Valid bodies take the fast path: the C parser with two hooks that only run for
the non-standard constants and for floats. Only a body that failed is parsed a
second time, to find the path of the offending literal.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["BadNumber", "loads"]

#: Longest key and path shown in a message; a hostile body chooses both.
_KEY_SHOWN, _PATH_SHOWN, _LITERAL_SHOWN = 64, 200, 32


class BadNumber(ValueError):
    """A number Bedrock does not accept; `path` is where it is (`inferenceConfig.maxTokens`)."""

    def __init__(self, path: str, literal: str) -> None:
        super().__init__(f"{path}: {literal} is not a number Bedrock accepts")
        self.path = path
        self.literal = literal


class _Refused(Exception):
    """Raised by the fast path's hooks; the slow path then finds where."""


class _Literal:
    """A refused literal left in place by the slow path, so its path can be named."""

    __slots__ = ("shown",)

    def __init__(self, shown: str) -> None:
        self.shown = shown


def _refuse(_: str) -> Any:
    raise _Refused


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused
    return value


#: The fast path's decoder, built once: `json.loads` with hooks builds a new one per call.
_FAST = json.JSONDecoder(parse_constant=_refuse, parse_float=_finite)


def _fast_loads(data: bytes | str) -> Any:
    """`json.loads(data, parse_constant=_refuse, parse_float=_finite)`, with `_FAST`."""
    if isinstance(data, str):
        if data.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", data, 0)
    elif isinstance(data, bytes | bytearray):
        data = data.decode(json.detect_encoding(data), "surrogatepass")
    else:
        raise TypeError(f"the JSON object must be str, bytes or bytearray, not {type(data).__name__}")
    return _FAST.decode(data)


def loads(data: bytes | str) -> Any:
    """`json.loads`, refusing `NaN`, `±Infinity`, floats beyond the double range and
    integers too long to convert (`BadNumber`, naming the path). Other malformed
    input raises what `json.loads` raises (ValueError, RecursionError …)."""
    try:
        return _fast_loads(data)
    except _Refused:
        pass
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
    marked = json.loads(data, parse_constant=_Literal, parse_float=_float_or_literal, parse_int=_int_or_literal)
    path, literal = _find(marked)
    raise BadNumber(path, literal)


def _float_or_literal(text: str) -> float | _Literal:
    value = float(text)
    return _Literal(_shorten(text)) if math.isinf(value) else value


def _int_or_literal(text: str) -> int | _Literal:
    try:
        return int(text)
    except ValueError:  # longer than the interpreter converts
        return _Literal(f"a {len(text.lstrip('-'))}-digit integer")


def _shorten(text: str) -> str:
    return text if len(text) <= _LITERAL_SHOWN else text[:_LITERAL_SHOWN] + "…"


def _find(document: Any) -> tuple[str, str]:
    """(path, literal) of the first `_Literal` in `document`, depth first, iteratively."""
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, _Literal):
            return _shown_path(path), node.shown
        if isinstance(node, dict):
            stack.extend((value, f"{path}.{_shown_key(key)}" if path else _shown_key(key))
                         for key, value in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((value, f"{path}[{index}]") for index, value in reversed(list(enumerate(node))))
    return "(body)", "a number"  # not reached: the slow path only runs when a literal was refused


def _shown_key(key: str) -> str:
    key = "".join(char if char.isprintable() else "?" for char in key[:_KEY_SHOWN])
    return key or '""'


def _shown_path(path: str) -> str:
    if not path:
        return "(body)"
    return path if len(path) <= _PATH_SHOWN else "…" + path[-_PATH_SHOWN:]
