from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy import routing
from proxy.errors import BedrockError, UnknownOperationException, ValidationException
from proxy.routing import Operation, Route, parse_route


@pytest.mark.parametrize(
    ("method", "path", "operation", "model"),
    [
        ("POST", "/model/amazon.nova-lite-v1%3A0/invoke", Operation.INVOKE_MODEL, "amazon.nova-lite-v1:0"),
        ("POST", "/model/eu.anthropic.claude-haiku-4-5-20251001-v1:0/invoke", Operation.INVOKE_MODEL,
         "eu.anthropic.claude-haiku-4-5-20251001-v1:0"),
        ("POST", "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream",
         Operation.INVOKE_MODEL_STREAM, "anthropic.claude-3-haiku-20240307-v1:0"),
        ("POST", "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2F"
                 "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse", Operation.CONVERSE,
         "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("POST", "/model/us.amazon.nova-micro-v1%3A0/converse-stream", Operation.CONVERSE_STREAM,
         "us.amazon.nova-micro-v1:0"),
        ("POST", "/model/anthropic.claude-sonnet-4-20250514-v1%3A0/count-tokens", Operation.COUNT_TOKENS,
         "anthropic.claude-sonnet-4-20250514-v1:0"),
        ("POST", "/guardrail/abc123/version/1/apply", Operation.APPLY_GUARDRAIL, None),
        ("POST", "/async-invoke", Operation.START_ASYNC_INVOKE, None),
        ("GET", "/async-invoke", Operation.LIST_ASYNC_INVOKES, None),
        ("GET", "/async-invoke/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aasync-invoke%2Fabc", Operation.GET_ASYNC_INVOKE, None),
        ("POST", "/guardrail-checks/invoke", Operation.INVOKE_GUARDRAIL_CHECKS, None),
    ],
)
def test_known_operations(method: str, path: str, operation: Operation, model: str | None) -> None:
    route = parse_route(method, path)
    assert route.operation == operation and route.model_id == model


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/model/x/frobnicate"), ("GET", "/model/x/invoke"), ("POST", "/"), ("POST", "/admin"),
     ("POST", "/model/x/invoke/extra"), ("DELETE", "/async-invoke"), ("POST", "/guardrail/a/version/1/apply/x")],
)
def test_unknown_operations(method: str, path: str) -> None:
    with pytest.raises(UnknownOperationException):
        parse_route(method, path)


@pytest.mark.parametrize(
    "segment",
    ["..%2F..%2Fetc%2Fpasswd", "a%0D%0AX-Injected:%201", "bad%20id", "%FF%FE", "", "a" * 2049, "%2E%2E", "x%00y"],
)
def test_invalid_model_ids(segment: str) -> None:
    with pytest.raises(ValidationException, match="model identifier is invalid"):
        parse_route("POST", f"/model/{segment}/invoke")


# --- the kept model routes, read before the path is split ------------------------------

_METHODS = st.sampled_from(["POST", "GET", "PUT", "DELETE"])
_SEGMENTS = st.sampled_from([
    "amazon.nova-lite-v1%3A0", "amazon.nova-lite-v1:0", "us.anthropic.claude-haiku-4-5-20251001-v1%3A0",
    "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.amazon.nova-micro-v1%3A0",
    "", "bad%20id", "%FF", "..", "a" * 600, "x%00y",
])
_ACTIONS = st.sampled_from(["invoke", "invoke-with-response-stream", "converse", "converse-stream", "count-tokens",
                            "invoke-with-bidirectional-stream", "frobnicate", ""])
_TAILS = st.sampled_from(["", "", "", "/", "/x", "?", "%2F"])
_OTHER_PATHS = st.sampled_from([
    "/async-invoke", "/async-invoke/abc", "/guardrail/g/version/1/apply", "/guardrail-checks/invoke", "/", "",
    "model/amazon.nova-lite-v1%3A0/converse", "/MODEL/amazon.nova-lite-v1%3A0/converse"])
#: A few paths sharing their model ids, actions and tails (so the kept answer for one
#: could be mistaken for another's), and a few other paths.
_PATH_SETS = st.builds(
    lambda models, actions, tails, others: [f"/model/{model}/{action}{tail}" for model in models
                                            for action in actions for tail in tails] + others,
    st.lists(_SEGMENTS, min_size=1, max_size=2, unique=True), st.lists(_ACTIONS, min_size=1, max_size=3, unique=True),
    st.lists(_TAILS, min_size=1, max_size=2, unique=True), st.lists(_OTHER_PATHS, max_size=2))


def _answer(method: str, path: str) -> Route | tuple[type[BedrockError], str]:
    try:
        return parse_route(method, path)
    except BedrockError as exc:
        return type(exc), str(exc)


@settings(max_examples=300, deadline=None)
@example(["/model/amazon.nova-lite-v1%3A0/converse", "/model/amazon.nova-lite-v1%3A0/invoke"],
         [("POST", 0), ("POST", 1), ("GET", 0)], 4)
@given(_PATH_SETS, st.lists(st.tuples(_METHODS, st.integers(min_value=0, max_value=13)), min_size=1, max_size=24),
       st.integers(min_value=1, max_value=4))
def test_a_kept_route_is_the_answer_parsing_would_give(paths: list[str], calls: list[tuple[str, int]],
                                                       kept: int) -> None:
    """The same few paths asked again and again by any method, the kept routes bounded to
    `kept` (so they fill and start again): every answer is the one an empty cache gives."""
    asked = [(method, paths[index % len(paths)]) for method, index in calls]
    with _kept_routes(kept):
        warm = [_answer(method, path) for method, path in asked]
        assert len(routing._MODEL_ROUTES) <= kept
        cold = []
        for method, path in asked:
            routing._MODEL_ROUTES.clear()
            cold.append(_answer(method, path))
    assert warm == cold


def test_a_route_kept_for_post_is_refused_for_another_method() -> None:
    path = "/model/amazon.nova-lite-v1%3A0/converse"
    with _kept_routes(8):
        assert parse_route("POST", path).model_id == "amazon.nova-lite-v1:0"
        assert path in routing._MODEL_ROUTES  # the next answer is read from it
        with pytest.raises(UnknownOperationException):
            parse_route("GET", path)


@contextmanager
def _kept_routes(kept: int) -> Iterator[None]:
    """Kept routes bounded to `kept`, empty at the start and after."""
    bound = routing._MODEL_ROUTES_KEPT
    routing._MODEL_ROUTES.clear()
    routing._MODEL_ROUTES_KEPT = kept
    try:
        yield
    finally:
        routing._MODEL_ROUTES_KEPT = bound
        routing._MODEL_ROUTES.clear()
