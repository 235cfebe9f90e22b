from __future__ import annotations

import pytest

from proxy.errors import UnknownOperationException, ValidationException
from proxy.routing import Operation, parse_route


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
