"""deploy/iam-policy.json grants what each Bedrock Runtime operation the proxy
forwards needs, one statement per group of operations, and deploy/README.md says
which statement serves which operation.

What AWS requires, checked 2025-11: the Bedrock API reference ("This operation
requires permission for the bedrock:InvokeModel action" on StartAsyncInvoke,
Converse, ConverseStream), the Service Authorization Reference for the other
actions (InvokeGuardrailChecks has no resource type), and the Nova user guide
("Video generation access and usage": Bedrock writes a job's output with the
caller's role, which needs s3:PutObject on the bucket).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.routing import INFERENCE, Operation

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

NEEDS: dict[str, set[str]] = {
    "InvokeModel": {"bedrock:InvokeModel"},
    "Converse": {"bedrock:InvokeModel"},
    "InvokeModelWithResponseStream": {"bedrock:InvokeModelWithResponseStream"},
    "ConverseStream": {"bedrock:InvokeModelWithResponseStream"},
    "CountTokens": {"bedrock:CountTokens"},
    "StartAsyncInvoke": {"bedrock:InvokeModel", "bedrock:StartAsyncInvoke", "s3:PutObject"},
    "GetAsyncInvoke": {"bedrock:GetAsyncInvoke"},
    "ListAsyncInvokes": {"bedrock:ListAsyncInvokes"},
    "ApplyGuardrail": {"bedrock:ApplyGuardrail"},
    "InvokeGuardrailChecks": {"bedrock:InvokeGuardrailChecks"},
    "InvokeModelWithBidirectionalStream": {"bedrock:InvokeModelWithBidirectionalStream"},
}
#: Statement → the operations it is for (the first one: the default `allowed_operations`).
STATEMENTS: dict[str, set[str]] = {
    "BedrockRuntimeInvoke": set(INFERENCE),
    "BedrockAsyncInvoke": {"StartAsyncInvoke", "GetAsyncInvoke"},
    "BedrockAsyncInvokeList": {"ListAsyncInvokes"},
    "BedrockAsyncInvokeOutput": {"StartAsyncInvoke"},
    "BedrockGuardrails": {"ApplyGuardrail"},
    "BedrockGuardrailChecks": {"InvokeGuardrailChecks"},
    "BedrockBidirectionalStream": {"InvokeModelWithBidirectionalStream"},
}


def _statements() -> dict[str, dict[str, Any]]:
    policy = json.loads((DEPLOY / "iam-policy.json").read_text())
    return {statement["Sid"]: statement for statement in policy["Statement"]
            if statement["Sid"] in STATEMENTS}


def test_every_operation_the_proxy_routes_is_mapped() -> None:
    assert set(NEEDS) == {str(operation) for operation in Operation}
    assert set().union(*STATEMENTS.values()) == set(NEEDS)


@pytest.mark.parametrize("operation", sorted(NEEDS))
def test_each_operation_is_granted_what_it_needs_by_its_statements(operation: str) -> None:
    statements = _statements()
    # StartAsyncInvoke also uses BedrockRuntimeInvoke's bedrock:InvokeModel on the model.
    serving = [sid for sid, operations in STATEMENTS.items() if operation in operations]
    if operation == "StartAsyncInvoke":
        serving.append("BedrockRuntimeInvoke")
    granted = set().union(*(statements[sid]["Action"] for sid in serving))
    assert NEEDS[operation] <= granted


def test_statements_grant_nothing_their_operations_do_not_need() -> None:
    for sid, statement in _statements().items():
        needed = set().union(*(NEEDS[operation] for operation in STATEMENTS[sid]))
        assert set(statement["Action"]) <= needed, sid
        assert statement["Effect"] == "Allow"
    default = _statements()["BedrockRuntimeInvoke"]
    assert set(default["Action"]) == set().union(*(NEEDS[operation] for operation in INFERENCE))
    output = _statements()["BedrockAsyncInvokeOutput"]
    assert all(resource.startswith("arn:aws:s3:::") and resource.endswith("/*") for resource in output["Resource"])


def test_readme_names_each_statement_and_its_operations() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for sid, operations in STATEMENTS.items():
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{sid}`")), None)
        assert row is not None, f"deploy/README.md has no row for {sid}"
        for operation in operations if sid != "BedrockRuntimeInvoke" else ():
            assert operation in row, (sid, operation)


def test_cloudformation_grants_the_default_operations() -> None:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, tag, node: {tag: str(getattr(node, "value", ""))})
    cfn = yaml.load((DEPLOY / "dynamodb-table.cfn.yaml").read_text(), Loader=Loader)  # noqa: S506
    statements = cfn["Resources"]["ProxyPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    invoke = next(s for s in statements if isinstance(s, dict) and s.get("Sid") == "BedrockRuntimeInvoke")
    assert set(invoke["Action"]) == set(_statements()["BedrockRuntimeInvoke"]["Action"])
