"""Today's fallback events of a scope, from the times its models were marked exhausted."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.admin.usage_api import fallback_events

A, B, C = "amazon.nova-pro-v1:0", "amazon.nova-lite-v1:0", "amazon.nova-micro-v1:0"
T = 1_741_608_000.0  # 2025-03-10T12:00:00Z


def _event(at: float | None, source: str, target: str | None) -> dict[str, Any]:
    time = None if at is None else f"2025-03-10T12:00:{int(at - T):02d}Z"
    return {"time": time, "from": source, "to": target}


@pytest.mark.parametrize(("marked", "expected"), [
    ({}, []),
    ({A: T + 1}, [_event(T + 1, A, B)]),
    ({B: T + 2, A: T + 1}, [_event(T + 1, A, B), _event(T + 2, B, C)]),  # in time order
    ({A: T + 1, B: T + 2, C: T + 3}, [_event(T + 1, A, B), _event(T + 2, B, C), _event(T + 3, C, None)]),
    # B was spent first (requests that asked for B directly): A then skips it.
    ({B: T + 1, A: T + 2}, [_event(T + 1, B, C), _event(T + 2, A, C)]),
    # A mark kept before its time was: listed first, without a time.
    ({B: T + 5, A: None}, [_event(None, A, B), _event(T + 5, B, C)]),
    # Marked under the profile sent upstream: the chain's configured id matches its base model.
    ({f"us.{A}": T + 1}, [_event(T + 1, f"us.{A}", B)]),
])
def test_fallback_events(marked: dict[str, float | None], expected: list[dict[str, Any]]) -> None:
    assert fallback_events([A, B, C], marked) == expected


@given(st.dictionaries(st.sampled_from([A, B, C]), st.none() | st.integers(0, 59).map(lambda s: T + s)))
def test_each_event_moves_down_the_chain_to_a_model_not_yet_spent(marked: dict[str, float | None]) -> None:
    chain = [A, B, C]
    events = fallback_events(chain, marked)
    assert [event["from"] for event in events] == sorted(marked, key=lambda m: (marked[m] is not None,
                                                                               marked[m] or 0.0, m))
    for event in events:
        at = marked[event["from"]]
        if event["to"] is None:
            later = chain[chain.index(event["from"]) + 1:]
            assert all(m in marked and (marked[m] is None or (at is not None and marked[m] <= at)) for m in later)
        else:
            assert chain.index(event["to"]) > chain.index(event["from"])
            then = marked.get(event["to"], float("inf"))
            assert then is not None and (at is None or then > at)
