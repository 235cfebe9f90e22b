"""`access_line` writes exactly the access-log line `access_record` made before it
(proxy/eventlog.py), for the usual event and for odd values alike."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from metering.compact_json import compact
from metering.events import UsageEvent
from metering.journal_line import journal_line
from proxy.eventlog import access_line, access_record
from tests.metering.test_journal_line import ANY_EVENTS, USUAL_EVENTS


@given(USUAL_EVENTS, st.booleans())
def test_the_usual_event_is_logged_as_before(event: UsageEvent, fallback: bool) -> None:
    assert access_line(event, fallback) == compact(access_record(event, fallback))


@given(ANY_EVENTS, st.booleans() | st.integers(0, 1))
def test_any_event_is_logged_as_before(event: UsageEvent, fallback: bool) -> None:
    assert access_line(event, fallback) == compact(access_record(event, fallback))


def test_tags_are_an_object_and_every_member_is_there() -> None:
    event = UsageEvent(request_id="r", timestamp=1.5, org="o", app="a", operation="Converse", requested_model="m",
                       model="m", input_tokens=1, output_tokens=2, cache_read_tokens=3, cache_write_tokens=4,
                       cost_pico_usd=1_500_000, priced=True, latency_ms=6.12345, first_byte_ms=2.0, status=200,
                       estimated=False, tags=(("team", "é"), ("env", "prod")))
    line = access_line(event, True)
    assert line == compact(access_record(event, True))
    assert json.loads(line)["tags"] == {"team": "é", "env": "prod"}
    assert list(json.loads(line)) == list(access_record(event, True))


@given(st.lists(ANY_EVENTS, min_size=1, max_size=4), st.lists(st.integers(0, 3), max_size=12), st.booleans())
def test_what_the_journal_line_remembers_belongs_to_its_own_event(events: list[UsageEvent], order: list[int],
                                                                   fallback: bool) -> None:
    """The journal line remembers the last event's shared parts for its access line
    (metering/journal_line.py `shared_parts`): whatever the order the two lines of
    several events are written in, each line is its own event's."""
    for index in order:
        event = events[index % len(events)]
        assert journal_line(event) == (compact(event.to_record()) + "\n").encode()
        assert access_line(event, fallback) == compact(access_record(event, fallback))
        other = events[(index + 1) % len(events)]
        assert access_line(other, fallback) == compact(access_record(other, fallback))
