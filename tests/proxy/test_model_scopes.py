"""Model ids as Bedrock requires them (issue #16): a request that is not moved goes
upstream byte for byte; a fallback keeps the request's routing scope (`us.` →
`us.`, an inference-profile ARN → the same ARN form); a chain Bedrock could not
serve is refused at start-up; the price follows the id actually sent.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters import family_of
from adapters.modelid import IN_REGION, base_model_id, encode_model_id, routing_scope
from adapters.modelid import SCOPES as ROUTING_SCOPES
from adapters.translate import can_translate
from adapters.usage import Usage
from metering.leases import BudgetLeases
from metering.pricing import Price, PriceTable
from metering.quotas import QuotaSelector
from proxy.admission import Admission, Plan
from proxy.errors import AccessDeniedException
from proxy.identity import Caller
from proxy.policies import PolicyError
from proxy.policy_build import build_policies, parse_model_scopes
from proxy.ratelimit import RateLimiter
from proxy.routing import parse_route
from tests.adapters.strategies import fuzz
from tests.metering.budget_memory import MemoryBudgetStore

SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU = "anthropic.claude-haiku-4-5-20251001-v1:0"
NOVA = "amazon.nova-pro-v1:0"
def _usd(input_usd: float, output_usd: float) -> Price:
    """A price in config.yaml's unit, USD per 1M tokens."""
    return Price.from_mapping("test", {"input": input_usd, "output": output_usd})


SCOPES = {SONNET: ["us", "eu", "jp", "au", "global"], HAIKU: ["us", "eu", "apac", "jp", "au", "global"],
          NOVA: ["in_region", "us", "eu", "apac"]}
PRICES = {
    SONNET: _usd(3.0, 15.0), f"global.{SONNET}": _usd(3.0, 15.0),
    f"us.{SONNET}": _usd(3.3, 16.5), f"eu.{SONNET}": _usd(3.3, 16.5),
    HAIKU: _usd(1.0, 5.0), f"us.{HAIKU}": _usd(1.1, 5.5), f"eu.{HAIKU}": _usd(1.1, 5.5),
    NOVA: _usd(0.8, 3.2), f"eu.{NOVA}": _usd(1.05, 4.2),
}
BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
PROPERTY = fuzz(300)


def _policies(chain: list[str], orgs: dict[str, Any] | None = None, labels: dict[str, str] | None = None,
              scopes: dict[str, list[str]] | None = None) -> Any:
    prices = PriceTable(PRICES)
    return build_policies(
        models=labels or {}, fallback=chain, orgs=orgs or {}, quotas=None,
        priced=lambda m: prices.price_of(m) is not None, family_of=family_of, can_translate=can_translate,
        model_scopes=parse_model_scopes(SCOPES if scopes is None else scopes),
    )


def _plan(chain: list[str], path: str, *, exhausted_first: bool = False, app: dict[str, Any] | None = None,
          labels: dict[str, str] | None = None, scopes: dict[str, list[str]] | None = None) -> Plan:
    orgs: dict[str, Any] = {}
    if exhausted_first:
        orgs = {"acme": {"daily_quota_usd": {chain[0]: 0}}}
    if app is not None:
        orgs.setdefault("acme", {})["apps"] = {"app": app}
    policies = _policies(chain, orgs, labels, scopes)
    admission = Admission(policies, QuotaSelector(BudgetLeases(MemoryBudgetStore())), PriceTable(PRICES), RateLimiter())
    body = json.dumps(BODY).encode()
    return asyncio.run(admission.plan(parse_route("POST", path), Caller("acme", "app"), path, body, dict(BODY)))


def _arn(profile: str, region: str = "us-east-1") -> str:
    return f"arn:aws:bedrock:{region}:123456789012:inference-profile/{profile}"


# Every form a client may name Sonnet 4.5 by, in every scope Bedrock serves it in.
requested_ids = st.one_of(
    st.sampled_from(SCOPES[SONNET]).map(lambda scope: f"{scope}.{SONNET}"),
    st.sampled_from(SCOPES[SONNET]).map(lambda scope: _arn(f"{scope}.{SONNET}")),
)
# How a path spells it: botocore's `%3A`, the Anthropic SDK's raw `:`, everything encoded.
spellings = st.sampled_from([encode_model_id, lambda m: quote(m, safe=":"), lambda m: quote(m, safe="")])
# How the chain names its models (Bedrock-valid ids only: Claude 4.5 has no bare form).
chain_scopes = st.sampled_from(["us", "eu", "global"])


@PROPERTY
@given(requested=requested_ids, spell=spellings, sonnet_scope=chain_scopes, haiku_scope=chain_scopes,
       chain_arns=st.tuples(st.booleans(), st.booleans()), fallback=st.booleans(),
       action=st.sampled_from(["invoke", "invoke-with-response-stream"]))
def test_the_upstream_id_is_profile_valid_keeps_the_scope_and_is_byte_identical_without_fallback(
    requested: str, spell: Any, sonnet_scope: str, haiku_scope: str, chain_arns: tuple[bool, bool],
    fallback: bool, action: str
) -> None:
    """Chain entries are profile ids or inference-profile ARNs (Claude 4.5 has no bare form)."""
    chain = [_arn(profile) if arn else profile
             for profile, arn in zip((f"{sonnet_scope}.{SONNET}", f"{haiku_scope}.{HAIKU}"), chain_arns, strict=True)]
    path = f"/model/{spell(requested)}/{action}"
    plan = _plan(chain, path, exhausted_first=fallback)
    if not fallback:
        assert plan.raw_path == path and plan.model == requested and not plan.fallback
        return
    scope = routing_scope(requested)
    assert plan.fallback and base_model_id(plan.model) == HAIKU
    assert routing_scope(plan.model) == scope  # never another geography, never bare
    assert scope in SCOPES[HAIKU]  # a profile Bedrock has
    assert plan.model.startswith("arn:") == requested.startswith("arn:")
    if requested.startswith("arn:"):
        assert plan.model == _arn(f"{scope}.{HAIKU}")
    assert parse_route("POST", plan.raw_path).model_id == plan.model
    assert plan.quota_model == chain[1]


#: Every routing scope issue #16 names, geographies then `global`.
EVERY_SCOPE = ("us", "eu", "apac", "jp", "au", "ca", "us-gov", "global")


@pytest.mark.parametrize("fallback", [False, True], ids=["as-sent", "fallback"])
@pytest.mark.parametrize("spell", [encode_model_id, lambda m: quote(m, safe=":")], ids=["botocore", "raw-colon"])
@pytest.mark.parametrize("arn", [False, True], ids=["id", "arn"])
@pytest.mark.parametrize("scope", EVERY_SCOPE)
def test_every_scope_is_sent_as_asked_and_kept_by_a_fallback(scope: str, arn: bool, spell: Any,
                                                             fallback: bool) -> None:
    """The property above draws the scopes Sonnet 4.5 has; this names each one, `apac.`,
    `ca.` and `us-gov.` (its ARN in the `aws-us-gov` partition) included."""
    assert set(EVERY_SCOPE) == set(ROUTING_SCOPES)
    requested = f"{scope}.{SONNET}"
    if arn:
        partition, region = ("aws-us-gov", "us-gov-west-1") if scope == "us-gov" else ("aws", "us-east-1")
        requested = f"arn:{partition}:bedrock:{region}:123456789012:inference-profile/{requested}"
    path = f"/model/{spell(requested)}/invoke"
    everywhere = {SONNET: list(EVERY_SCOPE), HAIKU: list(EVERY_SCOPE)}
    plan = _plan([f"us.{SONNET}", f"us.{HAIKU}"], path, exhausted_first=fallback, scopes=everywhere)
    if not fallback:
        assert (plan.raw_path, plan.model, plan.fallback) == (path, requested, False)
        return
    assert plan.fallback and plan.model == requested.replace(SONNET, HAIKU)
    assert parse_route("POST", plan.raw_path).model_id == plan.model


@pytest.mark.parametrize("spell", [encode_model_id, lambda m: quote(m, safe=":")])
def test_a_bare_request_falls_back_to_the_chains_configured_id(spell: Any) -> None:
    plan = _plan([NOVA, f"us.{HAIKU}"], f"/model/{spell(NOVA)}/converse", exhausted_first=True)
    assert plan.model == f"us.{HAIKU}" and plan.fallback


def test_a_label_is_sent_as_its_configured_profile() -> None:
    plan = _plan(["premium"], "/model/premium/invoke", labels={"premium": f"us.{SONNET}"})
    assert plan.model == f"us.{SONNET}" and plan.raw_path == f"/model/{encode_model_id(f'us.{SONNET}')}/invoke"
    assert not plan.fallback


def test_allowed_models_moving_the_request_is_a_fallback() -> None:
    plan = _plan([f"us.{SONNET}", f"us.{HAIKU}"], f"/model/eu.{SONNET}/invoke", app={"allowed_models": [HAIKU]})
    assert plan.model == f"eu.{HAIKU}" and plan.fallback


def test_a_fallback_without_a_profile_in_the_scope_is_skipped_never_moved() -> None:
    # `jp.` Haiku exists, `jp.` Nova does not: with Haiku not allowed, nothing serves a `jp.` request.
    table = {**SCOPES, SONNET: ["us", "jp"], HAIKU: ["us", "jp"], NOVA: ["in_region", "us", "jp"]}
    policies = build_policies(
        models={}, fallback=[f"us.{SONNET}", f"us.{HAIKU}", NOVA], orgs={"acme": {"apps": {"app": {
            "allowed_models": [SONNET, NOVA]}}, "daily_quota_usd": {SONNET: 0}}}, quotas=None,
        priced=lambda m: True, family_of=family_of, can_translate=can_translate,
        model_scopes=parse_model_scopes(table),
    )
    # The table said `jp.` Nova exists; the runtime check is what keeps a request in scope
    # when the table is not the whole truth: an unlisted scope is never invented.
    assert policies.serves(NOVA, "jp") and not policies.serves(NOVA, "global")
    narrow = build_policies(
        models={}, fallback=[f"us.{HAIKU}", NOVA], orgs={}, quotas=None, priced=lambda m: True,
        family_of=family_of, can_translate=can_translate,
        model_scopes=parse_model_scopes({HAIKU: ["us"], NOVA: ["in_region", "us"]}),
    )
    admission = Admission(narrow, QuotaSelector(BudgetLeases(MemoryBudgetStore())), PriceTable(PRICES), RateLimiter())
    path = f"/model/jp.{HAIKU}/invoke"
    plan = asyncio.run(admission.plan(parse_route("POST", path), Caller("acme", "app"), path,
                                      json.dumps(BODY).encode(), dict(BODY)))
    assert plan.model == f"jp.{HAIKU}"  # asked for, served as asked (Bedrock answers for it)
    only_nova = build_policies(
        models={}, fallback=[f"us.{HAIKU}", NOVA], orgs={"acme": {"apps": {"app": {"allowed_models": [NOVA]}}}},
        quotas=None, priced=lambda m: True, family_of=family_of, can_translate=can_translate,
        model_scopes=parse_model_scopes({HAIKU: ["us"], NOVA: ["in_region", "us"]}),
    )
    admission = Admission(only_nova, QuotaSelector(BudgetLeases(MemoryBudgetStore())), PriceTable(PRICES), RateLimiter())
    with pytest.raises(AccessDeniedException):
        asyncio.run(admission.plan(parse_route("POST", path), Caller("acme", "app"), path,
                                   json.dumps(BODY).encode(), dict(BODY)))


@pytest.mark.parametrize(("chain", "message"), [
    ([SONNET], rf"fallback\[0\]: Bedrock serves {SONNET} only through inference profiles.*us\.{SONNET}"),
    ([f"apac.{SONNET}"], rf"fallback\[0\]: apac\.{SONNET} has no `apac\.` inference profile"),
    ([f"us.{HAIKU}", NOVA], rf"{NOVA} cannot serve the `au\.` requests .* from us\.{HAIKU}"),
])
def test_a_chain_bedrock_cannot_serve_is_refused_naming_model_and_scope(chain: list[str], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        _policies(chain)


def test_the_refusal_advises_a_model_scopes_key_that_is_accepted() -> None:
    """The refusal names the base model to list in `model_scopes`: the chain's profile id
    it named before is itself refused there ("expected a base model id")."""
    with pytest.raises(PolicyError) as refused:
        _policies([f"us.{SONNET}", NOVA])
    assert f"List {SONNET} in model_scopes" in str(refused.value)
    parse_model_scopes({SONNET: ["us", "eu", "apac"]})  # the advice, followed, is a valid table


def test_a_label_naming_a_bare_profile_only_model_is_refused() -> None:
    with pytest.raises(PolicyError, match=rf"models\.premium: Bedrock serves {SONNET} only through"):
        _policies([], labels={"premium": SONNET})


@pytest.mark.parametrize(("raw", "message"), [
    ({f"us.{SONNET}": ["us"]}, "expected a base model id"),
    ({SONNET: []}, "non-empty list"),
    ({SONNET: ["mars"]}, r"unknown scope\(s\) \['mars'\]"),
])
def test_a_malformed_scope_table_is_refused(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_model_scopes(raw)


def test_an_unlisted_model_is_served_in_every_scope() -> None:
    policies = _policies([f"us.{SONNET}"])
    assert policies.serves("writer.palmyra-x5-v1:0", "jp") and policies.serves("x.y", IN_REGION)


@pytest.mark.parametrize(("model", "usd"), [
    (f"us.{SONNET}", 3.3 + 16.5),
    (_arn(f"us.{SONNET}"), 3.3 + 16.5),  # an inference-profile ARN bills as its profile
    (_arn(f"global.{SONNET}"), 3.0 + 15.0),
    (f"global.{SONNET}", 3.0 + 15.0),
    (f"jp.{SONNET}", 3.0 + 15.0),  # an unpriced profile: its base model's price
    (f"arn:aws:bedrock:us-east-1::foundation-model/{NOVA}", 0.8 + 3.2),
])
def test_the_price_follows_the_id_sent(model: str, usd: float) -> None:
    cost = PriceTable(PRICES).cost_pico_usd(model, Usage(1_000_000, 1_000_000))
    assert cost == round(usd * 10**12)


def test_a_fallback_is_priced_and_reserved_as_the_profile_sent() -> None:
    plan = _plan([f"us.{SONNET}", f"us.{HAIKU}"], f"/model/eu.{SONNET}/invoke", exhausted_first=True)
    assert plan.model == f"eu.{HAIKU}"
    assert PriceTable(PRICES).price_of(plan.model) == PRICES[f"eu.{HAIKU}"]


LITE = "amazon.nova-lite-v1:0"
NOVA_SCOPES = ["us", "eu", "apac"]
nova_requests = st.one_of(
    st.just(NOVA),  # bare: served in-Region
    st.just(f"arn:aws:bedrock:us-east-1::foundation-model/{NOVA}"),
    st.sampled_from(NOVA_SCOPES).map(lambda scope: f"{scope}.{NOVA}"),
    st.sampled_from(NOVA_SCOPES).map(lambda scope: _arn(f"{scope}.{NOVA}")),
)
nova_chain_forms = st.sampled_from(["", "us.", "eu.", "apac."])


@PROPERTY
@given(requested=nova_requests, spell=spellings, pro_form=nova_chain_forms, lite_form=nova_chain_forms,
       fallback=st.booleans())
def test_every_id_form_of_an_on_demand_model_keeps_its_scope_or_takes_the_configured_id(
    requested: str, spell: Any, pro_form: str, lite_form: str, fallback: bool
) -> None:
    """Nova v1 is served in-Region and through profiles: bare ids and foundation-model ARNs
    are valid requests too. A bare one falls back to the chain's configured id, a scoped one
    to the same scope; nothing moved is sent byte for byte."""
    chain = [pro_form + NOVA, lite_form + LITE]
    table = {**SCOPES, LITE: ["in_region", *NOVA_SCOPES]}
    policies = build_policies(
        models={}, fallback=chain, orgs={"acme": {"daily_quota_usd": {chain[0]: 0}}} if fallback else {},
        quotas=None, priced=lambda m: True, family_of=family_of, can_translate=can_translate,
        model_scopes=parse_model_scopes(table),
    )
    admission = Admission(policies, QuotaSelector(BudgetLeases(MemoryBudgetStore())), PriceTable(PRICES), RateLimiter())
    path = f"/model/{spell(requested)}/converse"
    document = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    plan = asyncio.run(admission.plan(parse_route("POST", path), Caller("acme", "app"), path,
                                      json.dumps(document).encode(), document))
    if not fallback:
        assert (plan.raw_path, plan.model, plan.fallback) == (path, requested, False)
        return
    scope = routing_scope(requested)
    assert plan.fallback and base_model_id(plan.model) == LITE and plan.quota_model == chain[1]
    if scope is None:
        assert plan.model == chain[1]  # the chain's configured id, as configured
    else:
        assert routing_scope(plan.model) == scope
        assert plan.model.startswith("arn:") == requested.startswith("arn:")
    assert parse_route("POST", plan.raw_path).model_id == plan.model
