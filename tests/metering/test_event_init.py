"""`UsageEvent`'s `__init__` (adapters/slot_init.py) makes the instance the dataclass's
own `__init__` made, for any event: the same values, defaults, errors, equality, hash
and frozenness."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metering.events import UsageEvent
from tests.metering.test_journal_line import ANY_EVENTS

#: The same class with the dataclass's own `__init__`, to compare against.
_Reference = dataclasses.make_dataclass(
    "_Reference", [(f.name, f.type, f) for f in dataclasses.fields(UsageEvent)],
    frozen=True, slots=True, kw_only=True)
_DEFAULTED = [f.name for f in dataclasses.fields(UsageEvent) if f.default is not dataclasses.MISSING]


def _values(instance: Any) -> dict[str, Any]:
    return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}


@given(ANY_EVENTS, st.sets(st.sampled_from(_DEFAULTED)))
def test_every_field_is_what_the_dataclass_init_stores(event: UsageEvent, left_out: set[str]) -> None:
    given_values = {name: value for name, value in _values(event).items() if name not in left_out}
    made = UsageEvent(**given_values)
    assert _values(made) == _values(_Reference(**given_values))
    assert made == UsageEvent(**given_values)
    with contextlib.suppress(TypeError):  # an odd list among the tags is not hashable, in either class
        assert hash(made) == hash(_Reference(**given_values))
    assert dataclasses.replace(made) == made


def test_wrong_calls_fail_as_the_dataclass_init_does() -> None:
    values = _values(UsageEvent(request_id="r", timestamp=1.0, org="o", app="a", operation="Converse",
                                requested_model="m", model="m", input_tokens=1, output_tokens=2,
                                cache_read_tokens=0, cache_write_tokens=0, cost_pico_usd=5, priced=True,
                                latency_ms=1.5, first_byte_ms=None, status=200, estimated=False))
    made = UsageEvent(**values)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.org = "other"  # type: ignore[misc]
    for wrong in ({**values, "unknown": 1}, {name: value for name, value in values.items() if name != "org"}):
        with pytest.raises(TypeError):
            UsageEvent(**wrong)
        with pytest.raises(TypeError):
            _Reference(**wrong)
    with pytest.raises(TypeError):
        UsageEvent(*values.values())  # type: ignore[call-arg]
