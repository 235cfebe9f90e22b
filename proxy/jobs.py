"""Async invocations of many callers on one AWS account: who started which job.

Every StartAsyncInvoke goes upstream under the proxy's identity, so Bedrock's own
GetAsyncInvoke and ListAsyncInvokes answer for every job of the account, whichever
org started it. The proxy records the owner (org and app) of each invocation ARN it
starts (`metering/invocations.py`, in the store every replica shares) and answers:

* **Get** only for the caller's own ARN; any other — another org's, another app's of
  the same org, or one that does not exist — gets the same 404
  `ResourceNotFoundException`, before anything is sent upstream, so an answer tells
  nothing about other callers' jobs.
* **List** with the upstream's page filtered to the caller's own ARNs. `nextToken`
  passes through unchanged, so a page may hold fewer jobs than `maxResults` — none
  at all when the page held only others' jobs — while `nextToken` leads on: keep
  following it (botocore's paginator does). The proxy does not fetch more pages to
  fill one: a caller with few jobs in a busy account would cost any number of
  upstream calls per request.
* **Start** records the ARN before the client has it, so its first Get finds it. A
  repeated `clientRequestToken` makes Bedrock answer with the job it started first:
  the caller's own repeat costs nothing; a token another caller's job holds is
  refused (`ConflictException`) without its ARN. If the record cannot be written the
  client gets a 500, which SDKs retry with the same token, and the job is metered
  (it runs): while the store is out, a retried start can be counted twice, never
  not at all.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapters.units import job_units
from metering.invocations import Invocation, InvocationStore
from metering.unit_prices import UnitPrices
from proxy.admission import Plan
from proxy.errors import (
    BedrockError,
    ConflictException,
    InternalServerException,
    ResourceNotFoundException,
    ServiceUnavailableException,
)
from proxy.identity import Caller

__all__ = ["Jobs", "Started"]

logger = logging.getLogger(__name__)

_STORE_DOWN = "Async invocation records are unavailable; please try again shortly."


@dataclass(frozen=True, slots=True)
class Started:
    """What a successful StartAsyncInvoke comes to for this caller."""

    #: pico-USD to meter; None: the job runs but its model has no unit price for it.
    cost: int | None
    #: The answer instead of the upstream's, when the caller must not have it.
    error: BedrockError | None = None


class Jobs:
    def __init__(self, store: InvocationStore, unit_prices: UnitPrices,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._unit_prices = unit_prices
        self._clock = clock

    async def owned(self, caller: Caller, arn: str) -> Invocation:
        """The caller's record of `arn`; ResourceNotFoundException if it has none."""
        try:
            found = await self._store.invocations([arn])
        except Exception as exc:
            logger.warning("async invocation lookup failed: %s", type(exc).__name__)
            raise ServiceUnavailableException(_STORE_DOWN) from None
        record = found.get(arn)
        if record is None or not record.owned_by(caller.org, caller.app):
            raise ResourceNotFoundException(f"The specified invocation {arn[:300]} was not found.")
        return record

    async def started(self, caller: Caller, plan: Plan, response_body: bytes, cost: int | None) -> Started:
        """Record who started the job a 200 StartAsyncInvoke answered with; `cost`: the job's (`job_cost`)."""
        arn = _field(response_body, "invocationArn")
        if arn is None:
            logger.warning("a StartAsyncInvoke answer without an invocationArn: its owner is not recorded")
            return Started(cost)
        try:
            record, new = await self._store.record_invocation(
                Invocation(arn, caller.org, caller.app, plan.model, self._clock()))
        except Exception as exc:
            logger.error("could not record the owner of %s: %s", arn, type(exc).__name__)
            return Started(cost, InternalServerException(
                "The invocation started but could not be recorded; retry with the same clientRequestToken."))
        if new:
            return Started(cost)
        if record.owned_by(caller.org, caller.app):
            return Started(0)  # Bedrock started nothing new: the token's first job answered
        return Started(0, ConflictException(
            "The clientRequestToken is already in use by another invocation; use a new token."))

    def job_cost(self, plan: Plan) -> int | None:
        """The cost of the job `plan` sends (as admission priced it), None if unpriced."""
        try:
            document = json.loads(plan.body)
        except ValueError:
            return None
        model_input = document.get("modelInput") if isinstance(document, dict) else None
        return self._unit_prices.cost_pico_usd(plan.model, job_units(model_input))

    async def listed(self, caller: Caller, response_body: bytes) -> bytes:
        """A ListAsyncInvokes page with only the caller's own jobs (the bytes unchanged
        when every job is theirs)."""
        document = _object(response_body)
        summaries = document.get("asyncInvokeSummaries") if document is not None else None
        if document is None or not isinstance(summaries, list):
            # Nothing can be shown unless it is known to be the caller's.
            return json.dumps({"asyncInvokeSummaries": []}).encode()
        arns = [item.get("invocationArn") for item in summaries if isinstance(item, dict)]
        try:
            records = await self._store.invocations([arn for arn in arns if isinstance(arn, str)])
        except Exception as exc:
            logger.warning("async invocation lookup failed: %s", type(exc).__name__)
            raise ServiceUnavailableException(_STORE_DOWN) from None

        def mine(item: Any) -> bool:
            arn = item.get("invocationArn") if isinstance(item, dict) else None
            record = records.get(arn) if isinstance(arn, str) else None
            return record is not None and record.owned_by(caller.org, caller.app)

        kept = [item for item in summaries if mine(item)]
        if len(kept) == len(summaries):
            return response_body
        return json.dumps({**document, "asyncInvokeSummaries": kept}, separators=(",", ":")).encode()


def _object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _field(body: bytes, name: str) -> str | None:
    document = _object(body)
    value = document.get(name) if document is not None else None
    return value if isinstance(value, str) and value else None
