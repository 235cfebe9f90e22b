"""`journal_line` writes exactly the line `compact(event.to_record())` wrote before it
(metering/journal_line.py), for the usual event and for odd values alike."""

from __future__ import annotations

import json
from dataclasses import fields
from enum import StrEnum
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from metering.compact_json import compact
from metering.events import UsageEvent
from metering.journal_line import journal_line


class _Operation(StrEnum):
    CONVERSE = "Converse"


_TEXT = st.text(max_size=12)
#: The proxy's own types mostly, and now and then what a caller could hand in instead.
_STRINGS = _TEXT | st.just(_Operation.CONVERSE) | st.none()
_FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.floats() | st.integers(-10, 10**12)
_INTS = st.integers(-(2**70), 2**70) | st.booleans()
_BOOLS = st.booleans() | st.integers(0, 1)
_TAGS = (st.lists(st.tuples(_TEXT, _TEXT), max_size=3).map(tuple)
         | st.lists(st.lists(_TEXT, min_size=2, max_size=2), max_size=2).map(tuple) | st.just([("k", "v")]))

_BY_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "str": _STRINGS, "float": _FLOATS, "float | None": st.none() | _FLOATS, "int": _INTS, "bool": _BOOLS,
    "Tags": _TAGS,
}
ANY_EVENTS = st.builds(UsageEvent, **{f.name: _BY_TYPE[str(f.type)] for f in fields(UsageEvent)})
USUAL_EVENTS = st.builds(UsageEvent, **{f.name: {"str": _TEXT, "float": st.floats(allow_nan=False, allow_infinity=False),
                                           "float | None": st.none() | st.floats(allow_nan=False,
                                                                                 allow_infinity=False),
                                           "int": st.integers(-(2**70), 2**70), "bool": st.booleans(),
                                           "Tags": st.lists(st.tuples(_TEXT, _TEXT), max_size=3).map(tuple),
                                           }[str(f.type)] for f in fields(UsageEvent)})


def _before(event: UsageEvent) -> bytes:
    return (compact(event.to_record()) + "\n").encode()


@given(USUAL_EVENTS)
def test_the_usual_event_is_written_as_before(event: UsageEvent) -> None:
    assert journal_line(event) == _before(event)


@given(ANY_EVENTS)
def test_any_event_is_written_as_before(event: UsageEvent) -> None:
    assert journal_line(event) == _before(event)


def test_every_field_is_written_in_order() -> None:
    event = UsageEvent(request_id="r", timestamp=1.5, org="o", app="a", operation="Converse", requested_model="m",
                       model="m", input_tokens=1, output_tokens=2, cache_read_tokens=3, cache_write_tokens=4,
                       cost_pico_usd=5, priced=True, latency_ms=6.0, first_byte_ms=None, status=200, estimated=False,
                       tags=(("team", "é"),))
    assert list(json.loads(journal_line(event))) == [f.name for f in fields(UsageEvent)]
    assert journal_line(event) == _before(event)
