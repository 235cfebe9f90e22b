"""The bidirectional stream's admission (proxy/admission.py `_plan_stream`): a spent
quota falls back, only along a chain of bidirectional models, and a chain that mixes
them with others is refused at start-up (proxy/policies.py), naming the models."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters import family_of
from adapters.translate import can_translate
from metering.leases import BudgetLeases
from metering.pricing import Price, PriceTable
from metering.quotas import QuotaSelector
from proxy.admission import Admission, Plan
from proxy.errors import ServiceQuotaExceededException
from proxy.identity import Caller
from proxy.policies import PolicyError
from proxy.policy_build import build_policies
from proxy.ratelimit import RateLimiter
from proxy.routing import parse_route
from tests.metering.budget_memory import MemoryBudgetStore

SONIC, SONIC2, LITE = "amazon.nova-sonic-v1:0", "amazon.nova-2-sonic-v1:0", "amazon.nova-lite-v1:0"
RATES = {"input": 0.06, "output": 0.24, "speech_input": 3.4, "speech_output": 13.6}
PRICES = PriceTable({model: Price.from_mapping(model, RATES) for model in (SONIC, SONIC2, LITE)})


def _policies(fallback: list[str], orgs: dict[str, Any] | None = None) -> Any:
    return build_policies(models={"voice": SONIC, "voice2": SONIC2, "cheap": LITE}, fallback=fallback,
                          orgs=orgs or {}, quotas=None, priced=lambda m: m in PRICES, family_of=family_of,
                          can_translate=can_translate)


def _plan(orgs: dict[str, Any], model: str = SONIC) -> Plan:
    admission = Admission(_policies(["voice", "voice2"], orgs), QuotaSelector(BudgetLeases(MemoryBudgetStore())),
                          PRICES, RateLimiter())
    path = f"/model/{model.replace(':', '%3A')}/invoke-with-bidirectional-stream"
    return asyncio.run(admission.plan(parse_route("POST", path), Caller("acme", "voice"), path, b"", None))


@pytest.mark.parametrize("fallback", [["voice", "cheap"], ["cheap", "voice2"], ["voice", "voice2", "cheap"]])
def test_a_chain_mixing_bidirectional_models_with_others_is_refused_at_start_up(fallback: list[str]) -> None:
    with pytest.raises(PolicyError, match="InvokeModelWithBidirectionalStream") as refused:
        _policies(fallback)
    assert LITE in str(refused.value) and (SONIC in str(refused.value) or SONIC2 in str(refused.value))
    with pytest.raises(PolicyError, match=LITE):
        _policies(["cheap"], {"acme": {"fallback": ["voice", "cheap"]}})


def test_a_stream_is_admitted_on_its_model_while_the_quota_lasts() -> None:
    plan = _plan({"acme": {"daily_quota_usd": {"voice": 1.0}}})
    assert (plan.model, plan.fallback, plan.body) == (SONIC, False, b"")
    assert plan.raw_path == "/model/amazon.nova-sonic-v1%3A0/invoke-with-bidirectional-stream"
    assert plan.selection is not None and plan.selection.grant is not None


def test_a_spent_quota_falls_back_to_the_next_bidirectional_model_path_only() -> None:
    plan = _plan({"acme": {"daily_quota_usd": {"voice": 0, "voice2": 1.0}}})
    assert (plan.model, plan.fallback, plan.quota_model) == (SONIC2, True, SONIC2)
    assert plan.raw_path == "/model/amazon.nova-2-sonic-v1%3A0/invoke-with-bidirectional-stream"
    # The request's scope is kept: a us. profile falls back to the fallback's us. profile.
    scoped = _plan({"acme": {"daily_quota_usd": {"voice": 0, "voice2": 1.0}}}, "us." + SONIC)
    assert scoped.model == "us." + SONIC2


def test_a_chain_spent_everywhere_refuses_the_stream() -> None:
    with pytest.raises(ServiceQuotaExceededException):
        _plan({"acme": {"daily_quota_usd": {"voice": 0, "voice2": 0}}})


@pytest.mark.parametrize("orgs", [
    {"acme": {"daily_quota_usd": {"voice": 1.0}}},  # a chain: `_plan_stream`
    {"acme": {"fallback": ["voice"], "daily_quota_usd": {"voice": 1.0}}},  # one model: `_plan_one`
])
def test_a_stream_holds_a_worst_case_of_one_pico_usd_whichever_way_it_is_admitted(orgs: dict[str, Any]) -> None:
    """What the README says: its cost is unknown until it ends, so a stream is admitted while
    its quota is not spent and holds 1 pico-USD; its usage is settled when it ends."""
    plan = _plan(orgs)
    assert plan.selection is not None and plan.selection.grant is not None
    assert plan.selection.grant.worst == 1
