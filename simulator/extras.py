"""ApplyGuardrail and the async-invoke operations: plausible answers, no policy.

Enough for a proxy to forward, meter (guardrail text units) and route them:
ApplyGuardrail never intervenes and bills one text unit per 1,000 characters
per policy (AWS pricing unit); an async invocation is "Completed" at once.
ListAsyncInvokes pages like Bedrock: `maxResults` (1-1000) jobs a page, newest
first, and an opaque `nextToken` while more remain.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qs

from adapters.modelid import base_model_id, is_valid_model_id
from proxy.errors import BedrockError, ValidationException
from simulator.context import Call
from simulator.wire import send_json

__all__ = ["HANDLERS", "ResourceNotFoundException"]

_ACCOUNT = "123456789012"
_CHARACTERS_PER_UNIT = 1000
_MAX_JOBS = 1000
_TOKEN_PREFIX = "page-"


class ResourceNotFoundException(BedrockError):
    status: ClassVar[int] = 404
    code: ClassVar[str] = "ResourceNotFoundException"


def _document(call: Call) -> dict[str, Any]:
    try:
        document = json.loads(call.body or b"{}")
    except ValueError:
        raise ValidationException("Malformed input request, please reformat your input and try again.") from None
    if not isinstance(document, dict):
        raise ValidationException("Malformed input request, please reformat your input and try again.")
    return document


async def apply_guardrail(call: Call) -> None:
    document = _document(call)
    content = document.get("content")
    if document.get("source") not in ("INPUT", "OUTPUT") or not isinstance(content, list):
        raise ValidationException("source must be INPUT or OUTPUT and content a list of blocks.")
    characters = 0
    for block in content:
        text = block.get("text") if isinstance(block, Mapping) else None
        if isinstance(text, Mapping) and isinstance(text.get("text"), str):
            characters += len(text["text"])
    units = -(-characters // _CHARACTERS_PER_UNIT)
    await send_json(call, {
        "usage": {
            "topicPolicyUnits": units,
            "contentPolicyUnits": units,
            "wordPolicyUnits": units,
            "sensitiveInformationPolicyUnits": units,
            "sensitiveInformationPolicyFreeUnits": 0,
            "contextualGroundingPolicyUnits": 0,
        },
        "action": "NONE",
        "actionReason": "No action.",
        "outputs": [],
        "assessments": [],
        "guardrailCoverage": {"textCharacters": {"guarded": characters, "total": characters}},
    })


def _timestamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


async def start_async_invoke(call: Call) -> None:
    document = _document(call)
    model_id = document.get("modelId")
    if not isinstance(model_id, str) or not is_valid_model_id(model_id):
        raise ValidationException("The provided model identifier is invalid.")
    if not isinstance(document.get("outputDataConfig"), Mapping):
        raise ValidationException("outputDataConfig is required.")
    jobs = call.state.async_jobs
    token = document.get("clientRequestToken")
    for job in jobs.values():  # idempotent on clientRequestToken, as the API documents
        if token and job.get("clientRequestToken") == token:
            await send_json(call, {"invocationArn": job["invocationArn"]})
            return
    arn = f"arn:aws:bedrock:{call.region}:{_ACCOUNT}:async-invoke/{uuid.uuid4().hex[:12]}"
    now = _timestamp(time.time())
    job = {
        "invocationArn": arn,
        "modelArn": f"arn:aws:bedrock:{call.region}::foundation-model/{base_model_id(model_id)}",
        "status": "Completed",
        "submitTime": now,
        "lastModifiedTime": now,
        "endTime": now,
        "outputDataConfig": document["outputDataConfig"],
    }
    if token:
        job["clientRequestToken"] = token
    if len(jobs) >= _MAX_JOBS:
        del jobs[next(iter(jobs))]
    jobs[arn] = job
    await send_json(call, {"invocationArn": arn})


async def get_async_invoke(call: Call) -> None:
    job = call.state.async_jobs.get(call.params[0])
    if job is None:
        raise ResourceNotFoundException(f"The specified invocation {call.params[0]} was not found.")
    await send_json(call, job)


async def list_async_invokes(call: Call) -> None:
    # Newest first; jobs of one millisecond keep the order they were started in, reversed.
    summaries = list(reversed(call.state.async_jobs.values()))
    summaries.sort(key=lambda job: job["submitTime"], reverse=True)
    query = parse_qs(call.record.get("query") or "")
    try:
        size = int(query.get("maxResults", ["1000"])[0])
        token = query.get("nextToken", [f"{_TOKEN_PREFIX}0"])[0]
        start = int(token.removeprefix(_TOKEN_PREFIX)) if token.startswith(_TOKEN_PREFIX) else -1
    except ValueError:
        size, start = 0, -1
    if not 1 <= size <= 1000 or start < 0:
        raise ValidationException("maxResults must be 1-1000 and nextToken one this service returned.")
    page: dict[str, Any] = {"asyncInvokeSummaries": summaries[start:start + size]}
    if start + size < len(summaries):
        page["nextToken"] = f"{_TOKEN_PREFIX}{start + size}"
    await send_json(call, page)


HANDLERS: dict[str, Callable[[Call], Awaitable[None]]] = {
    "ApplyGuardrail": apply_guardrail,
    "StartAsyncInvoke": start_async_invoke,
    "GetAsyncInvoke": get_async_invoke,
    "ListAsyncInvokes": list_async_invokes,
}
