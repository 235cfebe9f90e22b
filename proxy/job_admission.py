"""What a StartAsyncInvoke may start, and what its job costs, before a quota sees it.

StartAsyncInvoke names its model in the body: it does not fall back. Its model must be
allowed, its output must go where the app may write (`allowed_s3_outputs`), and what
is left of its quota must hold the job's cost (its video seconds or images, priced
before it runs; admitted by exactly that cost against a budget lease and settled at
it, since one job can be a large share of a quota). A label in a StartAsyncInvoke
body resolves to its model id (the only rewrite of that body).

This module reads the request and prices it, no I/O; `Admission` (proxy/admission.py)
then holds the cost against the model's quota as it does for any one-model request,
and `Jobs` (proxy/jobs.py) records who started the job once Bedrock answers. It
imports nothing of either, so neither import is a circle.
"""

from __future__ import annotations

import json
from typing import Any

from adapters.modelid import is_valid_model_id
from adapters.units import job_units
from metering.unit_prices import UnitPrices
from proxy.errors import AccessDeniedException, ValidationException
from proxy.policies import CallerPolicy, Policies

__all__ = ["JobRequest", "job_request"]

_INVALID_MODEL = "The provided model identifier is invalid."

#: (the body to send, the model id it names, the job's cost in pico-USD: 0 when its model has no unit price).
JobRequest = tuple[bytes, str, int]


def job_request(policies: Policies, policy: CallerPolicy, unit_prices: UnitPrices, body: bytes,
                document: dict[str, Any]) -> JobRequest:
    """The StartAsyncInvoke `body` (parsed: `document`) as it is sent, its model and cost;
    ValidationException or AccessDeniedException when it may not be sent at all. The
    client's exact bytes go on unless a label was resolved."""
    named = document.get("modelId")
    if not isinstance(named, str) or not is_valid_model_id(named):
        raise ValidationException(_INVALID_MODEL)
    model = policies.resolve_model(named)
    output = document.get("outputDataConfig")
    s3 = output.get("s3OutputDataConfig") if isinstance(output, dict) else None
    uri = s3.get("s3Uri") if isinstance(s3, dict) else None
    if not policy.allows_s3_output(uri if isinstance(uri, str) else ""):
        raise AccessDeniedException(f"This application may not write job output to {str(uri)[:300]!r} "
                                    "(it is not in its allowed_s3_outputs).")
    if model != named:
        body = json.dumps({**document, "modelId": model}, separators=(",", ":")).encode()
    cost = 0
    price = unit_prices.price_of(model)
    if price is not None:
        priced = price.cost_pico_usd(job_units(document.get("modelInput")))
        if priced is None:
            # Forwarded, it could not be metered: a job of unknown cost never runs unchecked.
            raise ValidationException(
                f"The cost of this {model} job cannot be read from its modelInput: set "
                "videoGenerationConfig.durationSeconds (video) or imageGenerationConfig.numberOfImages (images).")
        cost = priced
    return body, model, cost
