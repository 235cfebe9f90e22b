"""Admission: what goes upstream for a request (model, path, body), and when it is refused."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters import family_of
from adapters.tiers import STANDARD, Tier
from adapters.translate import can_translate
from metering.leases import BudgetLeases, Mode
from metering.pricing import Price, PriceTable
from metering.quotas import QuotaSelector, Selection
from proxy.admission import Admission, Plan
from proxy.errors import (
    AccessDeniedException,
    ServiceUnavailableException,
    ThrottlingException,
    ValidationException,
)
from proxy.identity import Caller
from proxy.policies import PolicyError
from proxy.policy_build import build_policies
from proxy.ratelimit import RateLimiter
from proxy.routing import parse_route
from tests.adapters.strategies import fuzz
from tests.metering.test_quotas import CountingStore

CLAUDE, NOVA = "anthropic.claude-haiku-4-5-20251001-v1:0", "amazon.nova-lite-v1:0"
PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"
PRICES = {CLAUDE: Price.from_mapping(CLAUDE, {"input": 1.0, "output": 5.0}),
          NOVA: Price.from_mapping(NOVA, {"input": 0.06, "output": 0.24})}


def _admission(orgs: dict[str, Any], healthy: bool = True, store: CountingStore | None = None,
               profiles: dict[str, str] | None = None) -> Admission:
    profiles = {PROFILE: NOVA} if profiles is None else profiles
    policies = build_policies(
        models={"smart": CLAUDE, "cheap": NOVA}, fallback=["smart", "cheap"], orgs=orgs, quotas=None,
        priced=lambda m: PriceTable(PRICES, profiles).price_of(m) is not None,
        family_of=family_of, can_translate=can_translate, profiles=profiles,
    )
    store = store or CountingStore()
    store.down = not healthy
    return Admission(policies, QuotaSelector(BudgetLeases(store)), PriceTable(PRICES, profiles), RateLimiter())


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
def _spent(store: CountingStore, org: str = "acme") -> dict[str, tuple[int, int]]:
    """model → (committed, leased) of the org's quota today."""
    found: dict[str, tuple[int, int]] = {}
    for (scope, _, model), committed in store.committed.items():
        if scope == org:
            leased = sum(lease.amount for lease in store.leases.get((scope, _, model), {}).values())
            found[model] = (committed, leased)
    return found


def _held(admission: Admission) -> int:
    """What this process holds for requests in flight (their worst cases)."""
    selector: Any = admission._selector  # noqa: SLF001 - the test looks inside
    return sum(inflight for _, inflight in selector.leases.held().values())


def test_an_application_profile_mapped_to_a_chain_model_counts_against_its_quota() -> None:
    """Issue #18 item 11: the ARN goes through the chain, quota and rate limits of its model."""
    profile = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/team01"
    admission = _admission({"acme": {"daily_quota_usd": {"smart": 0}}}, profiles={profile: CLAUDE})
    encoded = profile.replace(":", "%3A").replace("/", "%2F")
    plan = _plan(admission, f"/model/{encoded}/converse", {"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
    assert (plan.model, plan.fallback, plan.quota_model) == (NOVA, True, NOVA)  # premium's quota is spent
    limited = _admission({"acme": {"apps": {"app": {"rate_limits": {"smart": {"rpm": 1}}}}}},
                         profiles={profile: CLAUDE})
    first = _plan(limited, f"/model/{encoded}/converse", {"messages": [{"role": "user", "content": [{"text": "a"}]}]})
    assert (first.model, first.quota_model, first.rate is not None) == (profile, CLAUDE, True)
    with pytest.raises(ThrottlingException):
        _plan(limited, f"/model/{encoded}/converse", {"messages": [{"role": "user", "content": [{"text": "b"}]}]})


def test_every_id_form_of_a_model_is_one_quota() -> None:
    store = CountingStore()
    admission = _admission({"acme": {"daily_quota_usd": {"smart": 1}}}, store=store)
    body = {"messages": [{"role": "user", "content": [{"text": "hi"}]}], "inferenceConfig": {"maxTokens": 10}}
    for path in ("/model/smart/converse", f"/model/{CLAUDE}/converse", f"/model/us.{CLAUDE}/converse",
                 f"/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fglobal.{CLAUDE}/converse"):
        plan = _plan(admission, path, dict(body))
        assert plan.quota_model == CLAUDE and plan.quota_scope == "acme"
    assert set(_spent(store)) == {CLAUDE}


def test_a_request_refused_after_its_worst_case_was_admitted_gives_it_back() -> None:
    store = CountingStore()
    admission = _admission({"acme": {"daily_quota_usd": {"smart": 10}, "apps": {
        "app": {"rate_limits": {"smart": {"tpm": 1}}}}}}, store=store)
    with pytest.raises(ThrottlingException):
        _plan(admission, f"/model/{CLAUDE}/invoke", dict(CLAUDE_BODY))
    assert _held(admission) == 0
    untranslatable = {**CLAUDE_BODY, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "AA=="}}]}]}
    spent = _admission({"acme": {"daily_quota_usd": {"smart": 0, "cheap": 10}}})
    with pytest.raises(ValidationException):
        _plan(spent, f"/model/{CLAUDE}/invoke", untranslatable)
    assert _held(spent) == 0


def test_settling_a_plan_covers_its_cost_up_to_its_worst_case_once() -> None:
    from adapters.usage import Usage

    admission = _admission({"acme": {"daily_quota_usd": {"smart": 10}}})
    plan: Plan = _plan(admission, f"/model/{CLAUDE}/invoke", dict(CLAUDE_BODY))
    assert plan.selection is not None and _held(admission) > 0
    reserved, lease = admission.settle(plan, Usage(10, 5))
    assert reserved == (10 * 1 + 5 * 5) * 10**6 and lease  # pico-USD: $1 and $5 per million tokens
    assert admission.settle(plan, Usage(10, 5)) == (0, "") and _held(admission) == 0


def test_the_day_is_the_admissions_day() -> None:
    plan = _plan(_admission({"acme": {"daily_quota_usd": {"smart": 10}}}), f"/model/{CLAUDE}/invoke",
                 dict(CLAUDE_BODY))
    assert plan.selection is not None and plan.selection.day == plan.day
    assert plan.selection.grant is not None and plan.selection.grant.key[1] == plan.day


@pytest.mark.parametrize("max_tokens", [10**4000, 2**70], ids=["4001-digits", "2^70"])
def test_an_absurd_max_tokens_is_refused_before_the_quota_without_raising(max_tokens: int) -> None:
    """Beyond the model's limit it is a ValidationException (issue #17 item 3) before any worst
    case is priced; a worst case too large to price refuses by the quota (`_UNAFFORDABLE`)."""
    admission = _admission({"acme": {"daily_quota_usd": {"smart": 10, "cheap": 10}}})
    with pytest.raises(ValidationException, match="exceeds the model's limit"):
        _plan(admission, f"/model/{CLAUDE}/invoke", {**CLAUDE_BODY, "max_tokens": max_tokens})


@fuzz(60)
@given(asks=st.lists(st.tuples(st.sampled_from([CLAUDE, NOVA, PROFILE]), st.sampled_from(["2026-01-01", "2026-01-02"]),
                               st.booleans()), max_size=30))
def test_a_chain_without_a_quota_is_selected_as_if_anew_every_time(asks: list[tuple[str, str, bool]]) -> None:
    """The remembered selection of an unquoted chain (issue #20) is the one a fresh request
    would make, whatever came before: its model, its day, no grant; a quoted chain has none."""
    admission = _admission({"acme": {}, "capped": {"daily_quota_usd": {"smart": 10}}})
    free, capped = admission.caller_policy(Caller("acme", "app")), admission.caller_policy(Caller("capped", "app"))
    for model, day, quoted in asks:
        chain = (CLAUDE, NOVA) if quoted else (model,)
        selection = admission._free(capped if quoted else free, chain, day)
        if quoted:
            assert selection is None
        else:
            assert selection == Selection(model, False, Mode.NORMAL, day=day) and selection.grant is None
