"""deploy/: the IAM policy grants what the DynamoDB store calls (and no more), and
the CloudFormation table is the one `costkeeper store init` creates."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from metering import dynamodb_schema

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
#: Low-level client calls → the IAM action they need (transactions: per item action).
_ACTIONS = {
    "get_item": {"dynamodb:GetItem"}, "put_item": {"dynamodb:PutItem"}, "delete_item": {"dynamodb:DeleteItem"},
    "update_item": {"dynamodb:UpdateItem"}, "batch_write_item": {"dynamodb:BatchWriteItem"},
    "query": {"dynamodb:Query"}, "transact_write_items": {"dynamodb:PutItem", "dynamodb:UpdateItem"},
    "batch_get_item": {"dynamodb:BatchGetItem"},
}


def _store_calls() -> set[str]:
    # Every module the running proxy calls DynamoDB from (the store, its key, invocation and override items).
    source = "".join((REPO / "metering" / name).read_text()
                     for name in ("dynamodb_store.py", "dynamodb_keys.py", "dynamodb_invocations.py",
                                  "dynamodb_overrides.py"))
    calls = set(re.findall(r"_api\(\)\.(\w+)\(", source))
    calls |= set(re.findall(r'get_paginator\("(\w+)"\)', source))
    calls.discard("get_paginator")
    return calls


def _statement(policy: dict[str, Any], sid: str) -> dict[str, Any]:
    return next(s for s in policy["Statement"] if s["Sid"] == sid)


class _CfnLoader(yaml.SafeLoader):
    pass


_CfnLoader.add_multi_constructor("!", lambda loader, tag, node: {tag: str(node.value)})


def test_iam_policy_grants_exactly_what_the_store_calls() -> None:
    calls = _store_calls()
    assert calls and calls <= set(_ACTIONS), f"map the new DynamoDB call(s): {calls - set(_ACTIONS)}"
    needed = set().union(*(_ACTIONS[call] for call in calls))
    policy = json.loads((DEPLOY / "iam-policy.json").read_text())
    table = _statement(policy, "CostKeeperUsageTable")
    assert set(table["Action"]) == needed
    assert any(r.endswith(f"/index/{dynamodb_schema.GSI}") for r in table["Resource"])
    assert all("*" not in r for r in table["Resource"])
    bedrock = _statement(policy, "BedrockRuntimeInvoke")
    assert set(bedrock["Action"]) == {"bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream",
                                      "bedrock:CountTokens"}
    cfn = yaml.load((DEPLOY / "dynamodb-table.cfn.yaml").read_text(), Loader=_CfnLoader)  # noqa: S506
    cfn_statements = cfn["Resources"]["ProxyPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert set(_statement({"Statement": cfn_statements}, "CostKeeperUsageTable")["Action"]) == needed


def test_cloudformation_table_matches_store_init() -> None:
    cfn = yaml.load((DEPLOY / "dynamodb-table.cfn.yaml").read_text(), Loader=_CfnLoader)  # noqa: S506
    table = cfn["Resources"]["UsageTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"},
                                  {"AttributeName": "sk", "KeyType": "RANGE"}]
    assert props["AttributeDefinitions"] == dynamodb_schema._ATTRIBUTES
    assert props["GlobalSecondaryIndexes"] == [dynamodb_schema._GSI_DEFINITION]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
