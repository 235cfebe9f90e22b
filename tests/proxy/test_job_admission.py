"""Admission of StartAsyncInvoke (model in the body, admitted by the job's priced
cost) and of the bidirectional stream (per model; its fallback: tests/proxy/test_bidi_admission.py), and
`allowed_operations`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from adapters import family_of
from adapters.translate import can_translate
from metering.leases import BudgetLeases
from metering.pricing import Price, PriceTable
from metering.quotas import QuotaSelector
from metering.unit_prices import UnitPrice, UnitPrices
from proxy.admission import Admission, Plan
from proxy.errors import AccessDeniedException, ServiceQuotaExceededException, ValidationException
from proxy.identity import Caller
from proxy.job_admission import job_request
from proxy.policies import Policies
from proxy.policy_build import build_policies
from proxy.ratelimit import RateLimiter
from proxy.routing import parse_route
from tests.metering.budget_memory import MemoryBudgetStore

REEL, SONIC, NOVA = "amazon.nova-reel-v1:1", "amazon.nova-sonic-v1:0", "amazon.nova-lite-v1:0"
OUTPUT = {"s3OutputDataConfig": {"s3Uri": "s3://videos/out"}}


PRICES = PriceTable({NOVA: Price.from_mapping(NOVA, {"input": 0.06, "output": 0.24})})
UNIT_PRICES = UnitPrices({REEL: UnitPrice.from_mapping(REEL, {"per_second": 0.08})})


def _policies(orgs: dict[str, Any]) -> Policies:
    return build_policies(
        models={"video": REEL, "voice": SONIC, "cheap": NOVA}, fallback=["cheap"], orgs=orgs, quotas=None,
        priced=lambda m: PRICES.price_of(m) is not None, family_of=family_of, can_translate=can_translate,
    )


def _admission(orgs: dict[str, Any]) -> Admission:
    return Admission(_policies(orgs), QuotaSelector(BudgetLeases(MemoryBudgetStore())), PRICES, RateLimiter(),
                     unit_prices=UNIT_PRICES)


def _job(admission: Admission, document: dict[str, Any], raw: bytes | None = None) -> Plan:
    body = raw if raw is not None else json.dumps(document).encode()
    route = parse_route("POST", "/async-invoke")
    return asyncio.run(admission.plan(route, Caller("acme", "studio"), "/async-invoke", body, document))


def _video(model: str, seconds: int | None = 6) -> dict[str, Any]:
    config = {} if seconds is None else {"durationSeconds": seconds}
    return {"modelId": model, "outputDataConfig": OUTPUT,
            "modelInput": {"taskType": "TEXT_VIDEO", "textToVideoParams": {"text": "waves"},
                           "videoGenerationConfig": config}}


def test_a_label_in_the_body_resolves_and_only_then_is_the_body_rewritten() -> None:
    admission = _admission({})
    labelled = _job(admission, _video("video"))
    assert labelled.model == REEL and json.loads(labelled.body) == _video(REEL)
    raw = json.dumps(_video(REEL), indent=2).encode()  # the client's own bytes, spacing and all
    named = _job(admission, json.loads(raw), raw)
    assert named.body is raw and named.raw_path == "/async-invoke"


def test_allowed_models_apply_to_the_body_model() -> None:
    admission = _admission({"acme": {"apps": {"studio": {"allowed_models": ["voice"]}}}})
    with pytest.raises(AccessDeniedException):
        _job(admission, _video("video"))


@pytest.mark.parametrize("model_id", [None, 7, "", "bad..id", "x" * 3000])
def test_an_invalid_model_id_is_refused(model_id: Any) -> None:
    document = _video(REEL)
    document["modelId"] = model_id
    with pytest.raises(ValidationException, match="model identifier is invalid"):
        _job(_admission({}), document)


def test_a_priced_job_whose_length_cannot_be_read_is_refused() -> None:
    with pytest.raises(ValidationException, match="durationSeconds"):
        _job(_admission({}), _video(REEL, seconds=None))
    # An unpriced model's job is forwarded (and metered as unpriced).
    assert _job(_admission({}), _video("amazon.nova-reel-v1:0", seconds=None)).model == "amazon.nova-reel-v1:0"


def test_a_job_is_admitted_by_its_cost_against_the_quota() -> None:
    # $1 a day: a 6 s job ($0.48) is admitted, a 15 s one ($1.20) can never fit.
    first = _job(_admission({"acme": {"daily_quota_usd": {"video": 1.0}}}), _video("video", 6))
    # Half the quota: claimed for itself alone (TIGHT), exactly its cost held against the lease.
    assert (first.quota_scope, first.quota_model, first.mode) == ("acme", REEL, "TIGHT")
    assert first.selection is not None and first.selection.grant is not None
    assert first.selection.grant.worst == 480_000_000_000
    with pytest.raises(ServiceQuotaExceededException):
        _job(_admission({"acme": {"daily_quota_usd": {"video": 1.0}}}), _video("video", 15))


def test_the_bidirectional_stream_is_admitted_per_model_without_fallback() -> None:
    admission = _admission({"acme": {"apps": {"studio": {"allowed_models": ["voice"]}}}})
    path = "/model/voice/invoke-with-bidirectional-stream"
    route = parse_route("POST", path)
    plan = asyncio.run(admission.plan(route, Caller("acme", "studio"), path, b"", None))
    assert (plan.model, plan.raw_path) == (SONIC, "/model/amazon.nova-sonic-v1%3A0/invoke-with-bidirectional-stream")
    other = "/model/amazon.nova-lite-v1:0/invoke-with-bidirectional-stream"
    with pytest.raises(AccessDeniedException):
        asyncio.run(admission.plan(parse_route("POST", other), Caller("acme", "studio"), other, b"", None))
    spent = _admission({"acme": {"daily_quota_usd": {"voice": 0}}})
    with pytest.raises(ServiceQuotaExceededException):
        asyncio.run(spent.plan(route, Caller("acme", "studio"), path, b"", None))


def test_check_operation_names_the_operation() -> None:
    admission = _admission({"acme": {"allowed_operations": ["Converse"]}})
    admission.check_operation("Converse", Caller("acme", "studio"))
    with pytest.raises(AccessDeniedException, match="ConverseStream") as raised:
        admission.check_operation("ConverseStream", Caller("acme", "studio"))
    assert raised.value.status == 403
    with pytest.raises(AccessDeniedException, match="StartAsyncInvoke"):
        admission.check_operation("StartAsyncInvoke", Caller("other", "app"))


def test_output_outside_the_allowed_s3_locations_is_refused() -> None:
    admission = _admission({"acme": {"allowed_s3_outputs": ["s3://videos/acme/"]}})
    document = _video(REEL)
    with pytest.raises(AccessDeniedException, match="s3://videos/out"):
        _job(admission, document)
    document["outputDataConfig"] = {"s3OutputDataConfig": {"s3Uri": "s3://videos/acme/clips"}}
    assert _job(admission, document).model == REEL
    document["outputDataConfig"] = {}
    with pytest.raises(AccessDeniedException, match="allowed_s3_outputs"):
        _job(admission, document)


def test_a_job_is_read_and_priced_before_any_quota_is_held() -> None:
    """proxy/job_admission.py alone, no store: the bytes sent (the client's own unless a
    label resolved), the model and the job's cost (6 s at $0.08 a second)."""
    policies = _policies({})
    raw = json.dumps(_video(REEL)).encode()
    assert job_request(policies, policies.for_caller("acme", "studio"), UNIT_PRICES, raw, _video(REEL)) == \
        (raw, REEL, 480_000_000_000)
    body, model, cost = job_request(policies, policies.for_caller("acme", "studio"), UNIT_PRICES, b"{}",
                                    _video("video", 15))
    assert (json.loads(body), model, cost) == (_video(REEL, 15), REEL, 1_200_000_000_000)
    unpriced = "amazon.nova-reel-v1:0"
    assert job_request(policies, policies.for_caller("acme", "studio"), UNIT_PRICES, raw, _video(unpriced))[1:] == \
        (unpriced, 0)
