"""The cheaper forms of an `Aggregate` count what the full one counts, where they count it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from metering.aggregate import Aggregate, Tally
from metering.events import UsageEvent
from tests.metering.conftest import _make_event

_events = st.lists(st.builds(
    lambda n, scope, lease, model, quota_model, status, reserved, cost, day, tags: _make_event(
        f"r{n}", quota_scope=scope, lease=lease, quota_model=quota_model, model=model, status=status,
        reserved_pico_usd=reserved, cost_pico_usd=cost, timestamp=1_741_600_000.0 + day * 86_400 + n,
        tags=tags),
    st.integers(0, 10_000), st.sampled_from(["", "acme", "acme/chat"]), st.sampled_from(["", "h1", "h2"]),
    st.sampled_from(["m1", "m2"]), st.sampled_from(["", "m1", "q"]), st.sampled_from([200, 400, 429]),
    st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 2),
    st.sampled_from([(), (("team", "a"),), (("env", "prod"), ("team", "b"))]),
), max_size=30)


@given(_events)
def test_a_tally_counts_and_settles_what_an_aggregate_does(events: list[UsageEvent]) -> None:
    tally, aggregate = Tally(events), Aggregate(events)
    assert (tally.events, tally.settled) == (aggregate.events, aggregate.settled)


@given(_events)
def test_an_aggregate_without_rows_counts_the_rest_as_the_full_one(events: list[UsageEvent]) -> None:
    full, lean = Aggregate(events), Aggregate(events, rows=False)
    assert (lean.usage, lean.tagged) == ({}, {})
    assert (lean.events, lean.rates, lean.committed, lean.settled) == (full.events, full.rates, full.committed,
                                                                      full.settled)
