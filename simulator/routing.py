"""Raw path → Bedrock Runtime operation (paths: BEDROCK_WIRE.md §1).

Routing must use the path as sent: botocore encodes a model id's `:` as `%3A`
and an ARN's `/` as `%2F`, the AnthropicBedrock SDK leaves `:` raw (§1.2). So
the raw path is split on `/` first and each segment unquoted afterwards;
Starlette's decoded `scope["path"]` would turn an ARN into extra segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["Route", "match", "STREAMING_OPERATIONS"]

_MODEL_OPERATIONS = {
    "invoke": "InvokeModel",
    "invoke-with-response-stream": "InvokeModelWithResponseStream",
    "converse": "Converse",
    "converse-stream": "ConverseStream",
    "count-tokens": "CountTokens",
    "invoke-with-bidirectional-stream": "InvokeModelWithBidirectionalStream",
}
STREAMING_OPERATIONS = frozenset({"InvokeModelWithResponseStream", "ConverseStream"})


@dataclass(frozen=True, slots=True)
class Route:
    operation: str
    #: Decoded model id as the client named it (profile id, ARN, …), if the path has one.
    model_id: str | None = None
    #: Other path labels, decoded: (guardrail id, version) or (invocation ARN,).
    params: tuple[str, ...] = ()


def match(method: str, raw_path: str) -> Route | None:
    parts = raw_path.split("/")
    count = len(parts)
    if count < 2 or parts[0]:
        return None
    head = parts[1]
    if head == "model" and count == 4 and method == "POST" and parts[2]:
        operation = _MODEL_OPERATIONS.get(parts[3])
        return Route(operation, unquote(parts[2])) if operation else None
    if (head == "guardrail" and count == 6 and method == "POST"
            and parts[3] == "version" and parts[5] == "apply" and parts[2] and parts[4]):
        return Route("ApplyGuardrail", params=(unquote(parts[2]), unquote(parts[4])))
    if head == "async-invoke":
        if count == 2 and method == "POST":
            return Route("StartAsyncInvoke")
        if count == 2 and method == "GET":
            return Route("ListAsyncInvokes")
        if count == 3 and method == "GET" and parts[2]:
            return Route("GetAsyncInvoke", params=(unquote(parts[2]),))
    return None
