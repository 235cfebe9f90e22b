"""Admission: what goes upstream for a request (model, path, body), and when it is refused."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from adapters import family_of
from adapters.tiers import STANDARD, Tier
from adapters.translate import can_translate
from metering.pricing import Price, PriceTable
from metering.quotas import QuotaSelector
from proxy.admission import Admission
from proxy.errors import AccessDeniedException, ServiceUnavailableException, ValidationException
from proxy.identity import Caller
from proxy.policies import PolicyError, build_policies
from proxy.ratelimit import RateLimiter
from proxy.routing import parse_route
from tests.metering.test_quotas import MemoryQuotaStore

CLAUDE, NOVA = "anthropic.claude-haiku-4-5-20251001-v1:0", "amazon.nova-lite-v1:0"
PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"
PRICES = {CLAUDE: Price.from_mapping(CLAUDE, {"input": 1.0, "output": 5.0}),
          NOVA: Price.from_mapping(NOVA, {"input": 0.06, "output": 0.24})}


def _admission(orgs: dict[str, Any], healthy: bool = True) -> Admission:
    policies = build_policies(
        models={"smart": CLAUDE, "cheap": NOVA}, fallback=["smart", "cheap"], orgs=orgs, quotas=None,
        priced=lambda m: PriceTable(PRICES, {PROFILE: NOVA}).price_of(m) is not None,
        family_of=family_of, can_translate=can_translate, profiles={PROFILE: NOVA},
    )
    return Admission(policies, QuotaSelector(MemoryQuotaStore()), PriceTable(PRICES, {PROFILE: NOVA}),
                     RateLimiter(), store_healthy=lambda: healthy)


def _plan(admission: Admission, path: str, document: dict[str, Any], org: str = "acme") -> Any:
    body = json.dumps(document).encode()
    return asyncio.run(admission.plan(parse_route("POST", path), Caller(org, "app"), path, body, document))


CLAUDE_BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 20, "system": "Be brief.",
               "messages": [{"role": "user", "content": "hi"}]}


def test_unchanged_request_keeps_the_client_bytes() -> None:
    path = "/model/anthropic.claude-haiku-4-5-20251001-v1:0/invoke"
    body = json.dumps(CLAUDE_BODY).encode()
    plan = asyncio.run(_admission({}).plan(parse_route("POST", path), Caller("acme", "app"), path, body,
                                           dict(CLAUDE_BODY)))
    assert (plan.raw_path, plan.body, plan.model, plan.translate) == (path, body, CLAUDE, None)


def test_exhausted_claude_is_served_by_nova_with_a_translated_body() -> None:
    plan = _plan(_admission({"acme": {"daily_quota_usd": {"smart": 0}}}),
                 "/model/anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke", dict(CLAUDE_BODY))
    assert plan.model == NOVA and plan.fallback and plan.translate == ("anthropic", "nova")
    assert plan.raw_path == "/model/amazon.nova-lite-v1%3A0/invoke"
    sent = json.loads(plan.body)
    assert sent["system"] == [{"text": "Be brief."}] and sent["inferenceConfig"]["maxTokens"] == 20
    assert sent["messages"][0]["content"][0]["text"] == "hi"


def test_application_profile_takes_its_base_models_family() -> None:
    plan = _plan(_admission({}), "/model/" + PROFILE.replace(":", "%3A").replace("/", "%2F") + "/converse",
                 {"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
    assert (plan.model, plan.family_model) == (PROFILE, NOVA)
    assert PriceTable(PRICES, {PROFILE: NOVA}).price_of(PROFILE) == PRICES[NOVA]


@pytest.mark.parametrize("fail_closed", [True, False])
def test_store_outage_fails_closed_only_where_configured(fail_closed: bool) -> None:
    admission = _admission({"acme": {"fail_closed": fail_closed, "daily_quota_usd": {"smart": 10}}}, healthy=False)
    path = "/model/anthropic.claude-haiku-4-5-20251001-v1:0/invoke"
    if fail_closed:
        with pytest.raises(ServiceUnavailableException, match="fails closed"):
            _plan(admission, path, dict(CLAUDE_BODY))
    else:
        assert _plan(admission, path, dict(CLAUDE_BODY)).model == CLAUDE


def test_untranslatable_request_is_a_validation_error_naming_the_fallback() -> None:
    body = {**CLAUDE_BODY, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "AA=="}}]}]}
    with pytest.raises(ValidationException, match="fallback model amazon.nova-lite-v1:0"):
        _plan(_admission({"acme": {"daily_quota_usd": {"smart": 0}}}),
              "/model/anthropic.claude-haiku-4-5-20251001-v1:0/invoke", body)


def _tier_admission(orgs: dict[str, Any], tiers: dict[str, dict[str, float]]) -> tuple[Admission, Any]:
    """Claude → Nova, priced per tier as given; a selector that records the worst cases."""
    from tests.proxy.test_max_tokens import RecordingSelector

    prices = {CLAUDE: Price.from_mapping(CLAUDE, {"input": 1.0, "output": 5.0, "service_tiers": tiers.get(CLAUDE, {})}),
              NOVA: Price.from_mapping(NOVA, {"input": 0.06, "output": 0.24, "service_tiers": tiers.get(NOVA, {})})}
    table = PriceTable(prices)
    policies = build_policies(
        models={"smart": CLAUDE, "cheap": NOVA}, fallback=["smart", "cheap"], orgs=orgs, quotas=None,
        priced=lambda m: table.price_of(m) is not None, family_of=family_of, can_translate=can_translate,
    )
    selector = RecordingSelector()
    return Admission(policies, selector, table, RateLimiter()), selector  # type: ignore[arg-type]


def _tier_plan(admission: Admission, tier: Tier, app: str = "app") -> Any:
    path = "/model/anthropic.claude-haiku-4-5-20251001-v1:0/converse"
    document = {"messages": [{"role": "user", "content": [{"text": "hi"}]}], "inferenceConfig": {"maxTokens": 100}}
    return asyncio.run(admission.plan(parse_route("POST", path), Caller("acme", app), path,
                                      json.dumps(document).encode(), document, tier))


def test_the_worst_case_is_priced_at_the_tier_asked_for() -> None:
    tiers = {CLAUDE: {"priority": 1.75, "flex": 0.5}, NOVA: {"priority": 1.75}}
    admission, selector = _tier_admission({"acme": {"daily_quota_usd": {"smart": 1, "cheap": 1}}}, tiers)
    plan = _tier_plan(admission, STANDARD)
    standard = list(selector.worst)
    assert plan.tier == STANDARD
    plan = _tier_plan(admission, Tier("priority"))
    assert plan.tier == Tier("priority")
    assert [round(w / s, 2) for w, s in zip(selector.worst, standard, strict=True)] == [1.75, 1.75]
    _tier_plan(admission, Tier("flex"))
    assert len(selector.worst) == 1  # Nova cannot price flex: skipped as a fallback, like a missing scope


def test_a_tier_the_first_model_cannot_price_is_refused() -> None:
    admission, _ = _tier_admission({}, {NOVA: {"priority": 1.75}})
    with pytest.raises(ValidationException, match=r"no price for the priority tier of .*service_tiers\.priority"):
        _tier_plan(admission, Tier("priority"))
    with pytest.raises(ValidationException, match="latency_optimized"):
        _tier_plan(admission, Tier("", "optimized"))


def test_allowed_service_tiers_refuse_per_app() -> None:
    orgs = {"acme": {"apps": {"batch": {"allowed_service_tiers": ["flex"]},
                              "chat": {"allowed_service_tiers": ["default", "priority"]}}}}
    admission, _ = _tier_admission(orgs, {CLAUDE: {"priority": 1.75, "flex": 0.5}})
    assert _tier_plan(admission, Tier("flex"), "batch").tier == Tier("flex")
    with pytest.raises(AccessDeniedException, match="may not use the default service tier"):
        _tier_plan(admission, STANDARD, "batch")
    with pytest.raises(AccessDeniedException, match="may not use the flex service tier"):
        _tier_plan(admission, Tier("flex"), "chat")
    assert _tier_plan(admission, Tier("priority"), "chat").tier == Tier("priority")
    with pytest.raises(PolicyError, match="allowed_service_tiers"):
        _tier_admission({"acme": {"apps": {"x": {"allowed_service_tiers": ["turbo"]}}}}, {})
