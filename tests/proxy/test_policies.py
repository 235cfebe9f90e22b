from __future__ import annotations

from typing import Any

import pytest

from proxy.policies import PolicyError
from proxy.policy_build import build_policies

LABELS = {"premium": "amazon.nova-pro-v1:0", "standard": "amazon.nova-2-lite-v1:0",
          "economy": "amazon.nova-micro-v1:0", "claude": "anthropic.claude-haiku-4-5-20251001-v1:0",
          "llama": "meta.llama3-70b-instruct-v1:0"}
PRICED = {*LABELS.values()}


def _build(fallback: list[str] | None = None, orgs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    families = {"amazon": "nova", "anthropic": "anthropic", "meta": "llama"}
    return build_policies(
        models=kwargs.get("models", LABELS),
        fallback=fallback if fallback is not None else ["premium", "standard", "economy"],
        orgs=orgs or {},
        quotas=kwargs.get("quotas"),
        priced=lambda m: m in PRICED or m.split(".", 1)[-1] in PRICED,
        family_of=lambda m: families[m.split(".")[0] if not m.startswith("us.") else m.split(".")[1]],
        can_translate=lambda a, b: {a, b} != {"llama", "anthropic"},
    )


def test_chains_scopes_and_quotas_resolve() -> None:
    policies = _build(orgs={
        "acme": {"quota_scope": "ORG", "daily_quota_usd": {"premium": 50, "economy": 0.5},
                 "apps": {"bot": {"max_output_tokens": 512, "allowed_models": ["premium", "economy"],
                                  "rate_limits": {"premium": {"rpm": 10}}}}},
        "solo": {"quota_scope": "APP", "fallback": ["standard", "economy"], "daily_quota_usd": {"standard": 1},
                 "apps": {"a": {"daily_quota_usd": {"standard": 2}}}},
    })
    bot = policies.for_caller("acme", "bot")
    # pico-USD: $50 and $0.5
    assert bot.scope_key == "acme" and bot.quota_of("amazon.nova-pro-v1:0") == 50 * 10**12
    assert bot.quota_of("us.amazon.nova-micro-v1:0") == 5 * 10**11  # a profile of a quota'd model
    assert bot.chain_from("premium".replace("premium", "us.amazon.nova-pro-v1:0"))[0] == (
        "amazon.nova-pro-v1:0", "amazon.nova-2-lite-v1:0", "amazon.nova-micro-v1:0")
    assert bot.chain_from("amazon.nova-2-lite-v1:0") == (("amazon.nova-2-lite-v1:0", "amazon.nova-micro-v1:0"), True)
    assert bot.chain_from("anthropic.claude-x") == (("anthropic.claude-x",), False)
    assert bot.allows("amazon.nova-micro-v1:0") and not bot.allows("amazon.nova-2-lite-v1:0")
    assert bot.max_output_tokens == 512 and bot.rate_limits["amazon.nova-pro-v1:0"].rpm == 10
    a = policies.for_caller("solo", "a")
    assert (a.scope_key, a.chain[0], a.quota_of("amazon.nova-2-lite-v1:0")) == ("solo/a", "amazon.nova-2-lite-v1:0", 2 * 10**12)
    other = policies.for_caller("solo", "b")  # APP scope: each app its own, the org's quota as default
    assert (other.scope_key, other.quota_of("amazon.nova-2-lite-v1:0")) == ("solo/b", 10**12)
    assert policies.resolve_model("economy") == "amazon.nova-micro-v1:0"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fallback": ["premium", "platinum"]}, "unknown label 'platinum'"),
        ({"fallback": ["premium", "standard", "premium"]}, "cycle in the chain"),
        ({"fallback": ["premium", "us.amazon.nova-pro-v1:0"]}, "cycle in the chain"),
        ({"fallback": ["premium", "amazon.titan-text-express-v1"]}, "has no price"),
        ({"fallback": ["claude", "llama"]}, "cannot fall back from anthropic.claude-haiku-4-5-20251001-v1:0"),
        ({"orgs": {"acme": {"quota_scope": "TEAM"}}}, "quota_scope"),
        ({"orgs": {"acme": {"daily_quota_usd": {"gold": 1}}}}, "unknown label 'gold'"),
        # Quotas are exact pico-USD, and a scope's day must fit SQLite's 64-bit integers.
        ({"orgs": {"acme": {"daily_quota_usd": {"premium": 1e-13}}}},
         r"orgs\.acme\.daily_quota_usd\.premium: 1e-13 is not a whole number of pico-USD"),
        ({"orgs": {"acme": {"daily_quota_usd": {"premium": 10_000_000}}}},
         r"daily_quota_usd\.premium: 10000000 USD per day is above the largest daily quota, 9,000,000 USD"),
        ({"orgs": {"acme": {"apps": {"x": {"max_output_tokens": 0}}}}}, "max_output_tokens"),
        ({"orgs": {"acme": {"apps": {"x": {"rate_limits": {"premium": {"tpd": 1}}}}}}}, "tpm: N, rpm: N"),
        ({"orgs": {"acme": {"apps": {"x": {"budget": 1}}}}}, r"unknown key\(s\) \['budget'\]"),
        ({"quotas": {"lease_ttl": 0}}, "lease_ttl"),
        ({"quotas": {"lease_ttl": "soon"}}, "quotas"),
        ({"quotas": {"lease_tll": 30}}, r"unknown key\(s\) \['lease_tll'\]"),
        ({"models": {"a": "b"}, "fallback": []}, None),
        ({"orgs": {"acme": {"allowed_operations": ["InvokeModel", "StartAsyncJob"]}}},
         r"orgs.acme.allowed_operations: unknown operation\(s\) \['StartAsyncJob'\]"),
        ({"orgs": {"acme": {"apps": {"x": {"allowed_operations": "Converse"}}}}},
         "orgs.acme.apps.x.allowed_operations: expected a list"),
        ({"orgs": {"acme": {"allowed_s3_outputs": "s3://videos/"}}}, "allowed_s3_outputs: expected a list"),
        ({"orgs": {"acme": {"apps": {"x": {"allowed_s3_outputs": ["https://videos/"]}}}}},
         r"orgs.acme.apps.x.allowed_s3_outputs: expected s3://bucket/prefix/ locations, got 'https://videos/'"),
        ({"orgs": {"acme": {"allowed_s3_outputs": ["s3://"]}}}, "allowed_s3_outputs"),
    ],
)
def test_invalid_policies_are_refused_naming_the_key(kwargs: dict[str, Any], message: str | None) -> None:
    if message is None:
        _build(**kwargs)  # a label naming something with no dot is fine as long as no chain uses it
        return
    with pytest.raises(PolicyError, match=message):
        _build(**kwargs)


def test_allowed_operations_default_to_inference_and_an_apps_own_list_wins() -> None:
    policies = _build(orgs={
        "acme": {"allowed_operations": ["Converse", "StartAsyncInvoke", "GetAsyncInvoke"],
                 "apps": {"chat": {"allowed_operations": ["Converse"]}, "studio": {}}},
        "zeta": {"apps": {"api": {"allowed_operations": []}}},
    })
    studio, chat = policies.for_caller("acme", "studio"), policies.for_caller("acme", "chat")
    assert studio.allows_operation("StartAsyncInvoke") and not studio.allows_operation("InvokeModel")
    assert chat.allowed_operations == {"Converse"}
    assert policies.for_caller("zeta", "api").allowed_operations == frozenset()  # an app may be allowed nothing
    default = policies.for_caller("unknown", "app")
    assert default.allowed_operations == {"InvokeModel", "InvokeModelWithResponseStream", "Converse",
                                          "ConverseStream", "CountTokens"}
    for operation in ("StartAsyncInvoke", "GetAsyncInvoke", "ListAsyncInvokes", "ApplyGuardrail",
                      "InvokeGuardrailChecks", "InvokeModelWithBidirectionalStream"):
        assert not default.allows_operation(operation)


def test_a_quota_is_kept_under_the_id_it_is_configured_by() -> None:
    policy = _build(orgs={"acme": {"daily_quota_usd": {"economy": 1}}}).for_caller("acme", "app")
    assert policy.quota_key("us.amazon.nova-micro-v1:0") == "amazon.nova-micro-v1:0"
    assert policy.quota_key("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0") == (
        "amazon.nova-micro-v1:0")
    assert policy.quota_key("amazon.nova-reel-v1:1") == "amazon.nova-reel-v1:1"  # no quota: as named


def test_allowed_s3_outputs_are_prefixes_that_end_at_a_slash() -> None:
    policies = _build(orgs={"acme": {"allowed_s3_outputs": ["s3://videos/acme", "s3://shared/"],
                                     "apps": {"own": {"allowed_s3_outputs": ["s3://own-bucket"]}}}})
    acme = policies.for_caller("acme", "any")
    assert acme.allowed_s3_outputs == ("s3://videos/acme/", "s3://shared/")
    for uri in ("s3://videos/acme", "s3://videos/acme/", "s3://videos/acme/reel/1", "s3://shared/x", "s3://shared"):
        assert acme.allows_s3_output(uri), uri
    for uri in ("s3://videos/acme-other/x", "s3://videos/", "s3://own-bucket/x", "", "s3://sharedx"):
        assert not acme.allows_s3_output(uri), uri
    assert policies.for_caller("acme", "own").allows_s3_output("s3://own-bucket/clip")
    assert not policies.for_caller("acme", "own").allows_s3_output("s3://shared/x")  # its own list replaces the org's
    assert policies.for_caller("zeta", "app").allows_s3_output("s3://anywhere/")  # unset: the IAM policy decides
def test_the_settings_leases_replaced_are_accepted_and_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    policies = _build(quotas={"tight_threshold": 0.8, "normal_ttl": 2, "tight_ttl": 0.25})
    assert policies.quotas.lease_ttl == 30.0
    assert "normal_ttl, tight_threshold, tight_ttl no longer apply" in caplog.text
