"""deploy/: the KMS statement grants exactly what `metering/secret_keys.py` calls,
bound to its encryption context, in the policy file and the CloudFormation template."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from metering.secret_keys import KMS_CONTEXT

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
_ACTIONS = {"generate_data_key": "kms:GenerateDataKey", "decrypt": "kms:Decrypt"}
_CONDITION = {"StringEquals": {f"kms:EncryptionContext:{k}": v for k, v in KMS_CONTEXT.items()}}


def _kms_actions() -> set[str]:
    calls = set(re.findall(r'_call\(kms, "(\w+)"', (REPO / "metering" / "secret_keys.py").read_text()))
    assert calls and calls <= set(_ACTIONS), f"map the new KMS call(s): {calls - set(_ACTIONS)}"
    return {_ACTIONS[call] for call in calls}


class _Loader(yaml.SafeLoader):
    """CloudFormation's short tags (`!If`), kept as `{"If": value}` with their structure."""


def _tagged(loader: yaml.SafeLoader, tag: str, node: yaml.Node) -> dict[str, Any]:
    # `tag` is what follows the "!" prefix.
    if isinstance(node, yaml.SequenceNode):
        return {tag: loader.construct_sequence(node, deep=True)}
    if isinstance(node, yaml.MappingNode):
        return {tag: loader.construct_mapping(node, deep=True)}
    return {tag: loader.construct_scalar(node)}  # type: ignore[arg-type]


_Loader.add_multi_constructor("!", _tagged)


def test_iam_policy_kms_statement_matches_the_code() -> None:
    policy = json.loads((DEPLOY / "iam-policy.json").read_text())
    statement = next(s for s in policy["Statement"] if s["Sid"] == "CostKeeperSecretsKey")
    assert set(statement["Action"]) == _kms_actions()
    assert statement["Condition"] == _CONDITION
    assert all(r.startswith("arn:aws:kms:") and "*" not in r for r in statement["Resource"])


def test_cloudformation_adds_the_kms_statement_only_with_a_key() -> None:
    cfn = yaml.load((DEPLOY / "dynamodb-table.cfn.yaml").read_text(), Loader=_Loader)  # noqa: S506
    assert cfn["Parameters"]["SecretsKmsKeyArn"]["Default"] == ""
    assert cfn["Conditions"]["UsesKms"] == {"Not": [{"Equals": [{"Ref": "SecretsKmsKeyArn"}, ""]}]}
    statements = cfn["Resources"]["ProxyPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    [conditional] = [s["If"] for s in statements if "If" in s]
    condition, statement, otherwise = conditional
    assert condition == "UsesKms" and otherwise == {"Ref": "AWS::NoValue"}
    assert statement["Sid"] == "CostKeeperSecretsKey" and set(statement["Action"]) == _kms_actions()
    assert statement["Condition"] == _CONDITION and statement["Resource"] == [{"Ref": "SecretsKmsKeyArn"}]
