"""Which Bedrock Runtime operation a request is, read from the raw path.

Routing must see the path exactly as it arrived: botocore sends `%3A` for `:`,
the Anthropic SDK a raw `:`, and ARNs hold an encoded `/` (`%2F`), so the path is
split on `/` first and the model id unquoted afterwards (BEDROCK_WIRE.md §1.2).
Every operation of the service model is known; any other path is refused here
rather than signed with the proxy's credentials and sent on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote

from adapters.memo import remember
from adapters.modelid import MAX_MODEL_ID_LENGTH, is_valid_model_id
from proxy.errors import UnknownOperationException, ValidationException

__all__ = ["Operation", "Route", "parse_route", "INFERENCE", "METERED", "STREAMING"]


class Operation(StrEnum):
    INVOKE_MODEL = "InvokeModel"
    INVOKE_MODEL_STREAM = "InvokeModelWithResponseStream"
    CONVERSE = "Converse"
    CONVERSE_STREAM = "ConverseStream"
    COUNT_TOKENS = "CountTokens"
    APPLY_GUARDRAIL = "ApplyGuardrail"
    # Not metered by tokens (per unit, or not at all):
    INVOKE_MODEL_BIDI = "InvokeModelWithBidirectionalStream"
    INVOKE_GUARDRAIL_CHECKS = "InvokeGuardrailChecks"
    START_ASYNC_INVOKE = "StartAsyncInvoke"
    GET_ASYNC_INVOKE = "GetAsyncInvoke"
    LIST_ASYNC_INVOKES = "ListAsyncInvokes"


_MODEL_ACTIONS = {
    "invoke": Operation.INVOKE_MODEL,
    "invoke-with-response-stream": Operation.INVOKE_MODEL_STREAM,
    "converse": Operation.CONVERSE,
    "converse-stream": Operation.CONVERSE_STREAM,
    "count-tokens": Operation.COUNT_TOKENS,
    "invoke-with-bidirectional-stream": Operation.INVOKE_MODEL_BIDI,
}

#: What an app may call unless its `allowed_operations` says otherwise: model inference
#: the proxy meters by tokens. Jobs, guardrails and the bidirectional stream bill other
#: units, reach shared account state or outlive the request, so an operator opts in.
INFERENCE = frozenset({
    Operation.INVOKE_MODEL,
    Operation.INVOKE_MODEL_STREAM,
    Operation.CONVERSE,
    Operation.CONVERSE_STREAM,
    Operation.COUNT_TOKENS,
})
#: Operations whose responses carry token usage the proxy meters.
METERED = frozenset({
    Operation.INVOKE_MODEL,
    Operation.INVOKE_MODEL_STREAM,
    Operation.CONVERSE,
    Operation.CONVERSE_STREAM,
})
#: Operations answered with `application/vnd.amazon.eventstream`.
STREAMING = frozenset({Operation.INVOKE_MODEL_STREAM, Operation.CONVERSE_STREAM})
#: Operations whose request body is JSON the proxy must be able to read.
JSON_BODY = frozenset({
    Operation.CONVERSE,
    Operation.CONVERSE_STREAM,
    Operation.COUNT_TOKENS,
    Operation.APPLY_GUARDRAIL,
    Operation.START_ASYNC_INVOKE,
})

_INVALID_MODEL = "The provided model identifier is invalid."


@dataclass(frozen=True, slots=True)
class Route:
    operation: Operation
    #: The model id decoded (`us.anthropic.claude-…:0`, an ARN …); None for
    #: operations that do not name a model in the path.
    model_id: str | None = None


#: Model routes already parsed, by raw path (a Route is immutable): a client names the
#: same few models request after request, and splitting the path, percent-decoding and
#: checking the id cost 5 µs each time (issue #20). Read before the path is split: only
#: `POST /model/{id}/{action}` paths that parsed are kept, so a path found here is that
#: route for a POST and for no other method. A plain dict, not `functools.lru_cache`: the
#: cache must be asked before the shape is known. Client-chosen paths, so bounded: full, it
#: starts again empty (a flood of distinct ids cannot keep the models in use out of it for good).
_MODEL_ROUTES: dict[str, Route] = {}
_MODEL_ROUTES_KEPT = 512
#: Longer paths are parsed every time (the kept routes stay a few hundred KiB at most).
_MODEL_ROUTE_PATH_MAX = 512


def parse_route(method: str, raw_path: str) -> Route:
    """Map `POST /model/{id}/converse` etc. to a Route; raise a Bedrock-shaped error otherwise."""
    if method == "POST" and (route := _MODEL_ROUTES.get(raw_path)) is not None:
        return route
    parts = raw_path.split("/")
    # parts[0] is "" for an absolute path.
    if len(parts) == 4 and parts[1] == "model" and method == "POST":
        if parts[3] in _MODEL_ACTIONS:
            return _model_route(raw_path, parts[2], parts[3])
    elif parts[1:2] == ["guardrail"]:
        if len(parts) == 6 and parts[3] == "version" and parts[5] == "apply" and method == "POST":
            if parts[2] and parts[4]:
                return Route(Operation.APPLY_GUARDRAIL)
    elif parts[1:2] == ["async-invoke"]:
        if len(parts) == 2 and method == "POST":
            return Route(Operation.START_ASYNC_INVOKE)
        if len(parts) == 2 and method == "GET":
            return Route(Operation.LIST_ASYNC_INVOKES)
        if len(parts) == 3 and parts[2] and method == "GET":
            return Route(Operation.GET_ASYNC_INVOKE)
    elif raw_path == "/guardrail-checks/invoke" and method == "POST":
        return Route(Operation.INVOKE_GUARDRAIL_CHECKS)
    raise UnknownOperationException(f"Unknown operation {method} {raw_path[:200]}")


def _model_route(raw_path: str, model: str, action: str) -> Route:
    """`POST /model/{model}/{action}` (the caller checked the shape) as a Route, kept when it
    parsed (a refusal raises, so only good routes are kept)."""
    route = Route(_MODEL_ACTIONS[action], _model_id(model))
    if len(raw_path) <= _MODEL_ROUTE_PATH_MAX:
        remember(_MODEL_ROUTES, raw_path, route, _MODEL_ROUTES_KEPT)
    return route


def _model_id(segment: str) -> str:
    if not segment or len(segment) > 3 * MAX_MODEL_ID_LENGTH:
        raise ValidationException(_INVALID_MODEL)
    try:
        model_id = unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise ValidationException(_INVALID_MODEL) from None
    if not is_valid_model_id(model_id):
        raise ValidationException(_INVALID_MODEL)
    return model_id
