"""Admission: what goes upstream for a request (model, path, body), and when it is refused."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from adapters import family_of
from adapters.translate import can_translate
from metering.pricing import Price, PriceTable
from metering.quotas import QuotaSelector
from proxy.admission import Admission
from proxy.errors import ServiceUnavailableException, ValidationException
from proxy.identity import Caller
from proxy.policies import build_policies
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
