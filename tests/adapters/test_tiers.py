"""Service tiers and latency modes: what a request asks for, what served it (issue #17 item 6)."""

from __future__ import annotations

import json

import pytest

from adapters import converse
from adapters.tiers import STANDARD, Tier, requested_tier, served_tier
from adapters.usage import Usage
from adapters.watch import BodyUsageWatcher


@pytest.mark.parametrize(("document", "expected"), [
    ({}, STANDARD),
    ({"serviceTier": {"type": "priority"}}, Tier("priority")),
    ({"serviceTier": {"type": "default"}, "performanceConfig": {"latency": "standard"}}, STANDARD),
    ({"serviceTier": {"type": "FLEX"}, "performanceConfig": {"latency": "optimized"}}, Tier("flex", "optimized")),
    ({"serviceTier": "priority", "performanceConfig": ["optimized"]}, STANDARD),  # Bedrock refuses these shapes
])
def test_converse_requests(document: dict[str, object], expected: Tier) -> None:
    assert requested_tier(True, [(b"x-amzn-bedrock-service-tier", b"priority")], document) == expected


def test_invoke_model_requests_read_the_headers_in_any_case() -> None:
    headers = [(b"X-Amzn-Bedrock-Service-Tier", b"priority"),
               (b"x-amzn-bedrock-performanceconfig-latency", b"optimized")]
    assert requested_tier(False, headers, {"serviceTier": {"type": "flex"}}) == Tier("priority", "optimized")
    assert requested_tier(False, [], {}) == STANDARD
    assert requested_tier(False, [(b"x-amzn-bedrock-service-tier", b"x" * 1000)], {}).service_tier == "x" * 32


def test_what_served_wins_over_what_was_asked() -> None:
    asked = Tier("priority", "optimized")
    # InvokeModel: the response headers say.
    usage = served_tier(asked, {"X-Amzn-Bedrock-Service-Tier": "default",
                                "x-amzn-bedrock-performanceconfig-latency": "standard"}, Usage(5, 5))
    assert (usage.service_tier, usage.latency) == ("", "")
    # Converse: the body said (already in the usage); silent parts fall back to what was asked.
    usage = served_tier(asked, {}, Usage(5, 5, service_tier="flex"))
    assert (usage.service_tier, usage.latency) == ("flex", "optimized")
    # A cut stream, an estimate: what was asked.
    usage = served_tier(asked, {}, Usage(5, 5, estimated=True))
    assert (usage.service_tier, usage.latency, usage.estimated) == ("priority", "optimized", True)


def test_converse_responses_carry_the_serving_tier() -> None:
    body = {"usage": {"inputTokens": 13, "outputTokens": 5}, "serviceTier": {"type": "flex"},
            "performanceConfig": {"latency": "optimized"}}
    usage = converse.usage_from_response(body)
    assert usage == Usage(13, 5, service_tier="flex", latency="optimized")
    assert converse.usage_from_event("metadata", body) == usage
    silent = converse.usage_from_response({"usage": {"inputTokens": 1, "outputTokens": 1}})
    assert silent is not None and (silent.service_tier, silent.latency) == (None, None)
    watcher = BodyUsageWatcher("Converse", "amazon.nova-pro-v1:0", b"{}")
    watcher.feed(json.dumps(body).encode())
    assert watcher.finish(200, {}).service_tier == "flex"
