"""Runtime quota overrides: which one is in force, how it layers over config.yaml,
and which quota grew (metering/overrides.py, proxy/admin/overrides.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters import family_of
from adapters.translate import can_translate
from metering.overrides import QuotaOverride, active_overrides
from metering.pricing import Price, PriceTable
from proxy.admin.overrides import (
    OverrideError,
    callers_of,
    grown_quotas,
    new_override,
    with_overrides,
)
from proxy.policies import Policies
from proxy.policy_build import build_policies

PRO, LITE = "amazon.nova-pro-v1:0", "amazon.nova-lite-v1:0"
USD = 10**12
TODAY = "2026-12-05"
NOW = 1796428800.0 + 3600  # 2026-12-05T01:00Z


def _policies(orgs: dict[str, object]) -> Policies:
    return build_policies(models={"premium": PRO, "standard": LITE}, fallback=["premium", "standard"], orgs=orgs,
                          quotas={}, priced=lambda model: True, family_of=family_of, can_translate=can_translate)


def _prices() -> PriceTable:
    return PriceTable({PRO: Price.from_mapping(PRO, {"input": 1, "output": 1}),
                       LITE: Price.from_mapping(LITE, {"input": 1, "output": 1})})


def _o(org: str, app: str, model: str, day: str, usd: int) -> QuotaOverride:
    return QuotaOverride(org, app, model, day, usd * USD, "t")


@given(st.lists(st.tuples(st.sampled_from(["", TODAY, "2026-12-06", "2026-12-04"]), st.integers(0, 100)),
                max_size=8))
def test_a_dated_override_wins_on_its_day_and_no_other(entries: list[tuple[str, int]]) -> None:
    overrides = {day: _o("acme", "", PRO, day, usd) for day, usd in entries}  # one per key, as stored
    active = active_overrides(overrides.values(), TODAY)
    expected = overrides.get(TODAY) or overrides.get("")
    assert active.get(("acme", ""), {}).get(PRO) == expected


def test_overrides_layer_over_the_configured_quota() -> None:
    policies = _policies({"acme": {"daily_quota_usd": {"premium": 5}},
                          "beta": {"quota_scope": "APP", "daily_quota_usd": {"premium": 1},
                                   "apps": {"a": {"daily_quota_usd": {"premium": 2}}}}})
    active = active_overrides([_o("acme", "", PRO, "", 50), _o("beta", "", PRO, "", 7), _o("beta", "b", LITE, "", 3)],
                              TODAY)
    live = with_overrides(policies, active)
    acme = live.for_caller("acme", "x")
    assert acme.quota_of(PRO) == 50 * USD and acme.overridden == {PRO: "t"}
    assert live.for_caller("beta", "a").quota_of(PRO) == 7 * USD  # the org's override is every app's default
    b = live.for_caller("beta", "b")
    assert b.quota_of(PRO) == 7 * USD and b.quota_of(LITE) == 3 * USD
    assert policies.for_caller("acme", "x").quota_of(PRO) == 5 * USD  # the configured policies are unchanged
    grown = grown_quotas(policies, live, callers_of(policies, live))
    assert ("acme", "acme", PRO) in grown and ("beta", "beta/a", PRO) in grown and ("beta", "beta/", PRO) in grown
    # Back to config.yaml: nothing grew, but LITE of beta/b has no quota at all any more (no limit).
    assert grown_quotas(live, policies, callers_of(policies, live)) == [("beta", "beta/b", LITE)]


def test_new_override_checks_what_it_is_given() -> None:
    policies = _policies({"acme": {"daily_quota_usd": {"premium": 5}}, "beta": {"quota_scope": "APP"}})
    made = new_override(policies, _prices(), org="beta", app="a", model="premium", usd=2.5, day=TODAY,
                        set_by="me", now=NOW)
    assert (made.model, made.app, made.day, made.quota_pico_usd) == (PRO, "a", TODAY, 2_500_000_000_000)
    for kwargs, message in (
        ({"org": "acme", "app": "x", "model": "premium", "usd": 1}, "quota_scope ORG"),
        ({"org": "acme", "model": "nope", "usd": 1}, "unknown label"),
        ({"org": "acme", "model": "meta.unpriced-v1:0", "usd": 1}, "no price"),
        ({"org": "acme", "model": "premium", "usd": -1}, "non-negative"),
        ({"org": "acme", "model": "premium", "usd": 1, "day": "2026-12-04"}, "not today"),
        ({"org": "acme", "model": "premium", "usd": 1, "day": "tomorrow"}, "YYYY-MM-DD"),
    ):
        with pytest.raises(OverrideError, match=message):
            new_override(policies, _prices(), **{"app": None, "day": None, **kwargs},  # type: ignore[arg-type]
                         set_by="me", now=NOW)
