"""The Helm chart passes the key for issued secrets from a Kubernetes Secret
(COSTKEEPER_SECRET_KEY, and optionally previous keys), in both modes, and warns
when a DynamoDB gateway has no key source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config_load import load_config

helm_chart = pytest.importorskip("helm_python.chart")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

CHART = Path(__file__).resolve().parents[2] / "helm" / "costkeeper"
SECRET = {"secretKey": {"existingSecret": "ck-secret-key"}}


def _render(values: dict[str, Any]) -> dict[str, str]:
    rendered: dict[str, str] = helm_chart.Chart.load(str(CHART)).render(values, name="ck", namespace="team")
    return rendered


def _documents(rendered: dict[str, str]) -> dict[str, dict[str, Any]]:
    documents = [doc for path, text in rendered.items() if path.endswith(".yaml")
                 for doc in yaml.safe_load_all(text) if doc]
    return {doc["kind"]: doc for doc in documents}


def _notes(rendered: dict[str, str]) -> str:
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def _proxy_env(deployment: dict[str, Any]) -> dict[str, Any]:
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] == "costkeeper")
    return {e["name"]: e for e in container["env"]}


def test_gateway_reads_the_key_and_previous_keys_from_a_secret() -> None:
    rendered = _render(SECRET)
    kinds = _documents(rendered)
    env = _proxy_env(kinds["Deployment"])
    assert env["COSTKEEPER_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "ck-secret-key", "key": "secret-key"}
    assert env["COSTKEEPER_SECRET_KEY_PREVIOUS"]["valueFrom"]["secretKeyRef"] == {
        "name": "ck-secret-key", "key": "previous-secret-keys", "optional": True}
    kubernetes_validate.validate(kinds["Deployment"], "1.30.0", strict=True)
    assert "WARNING" not in _notes(rendered)


def test_previous_keys_can_be_left_out_and_the_key_renamed() -> None:
    env = _proxy_env(_documents(_render({"secretKey": {"existingSecret": "s", "key": "k", "previousKey": ""}}))[
        "Deployment"])
    assert env["COSTKEEPER_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "s", "key": "k"}
    assert "COSTKEEPER_SECRET_KEY_PREVIOUS" not in env


def test_a_dynamodb_gateway_without_a_key_is_warned_about() -> None:
    rendered = _render({})
    assert "COSTKEEPER_SECRET_KEY" not in _proxy_env(_documents(rendered)["Deployment"])
    assert "WARNING: no key for issued secrets" in _notes(rendered)
    kms = _render({"config": {"store": {"backend": "dynamodb", "table": "t", "kms_key_id": "alias/ck"}}})
    assert "WARNING" not in _notes(kms)
    trust = _render({"config": {"auth": {"mode": "trust"}}})
    assert "WARNING" not in _notes(trust)


def test_the_kms_key_reaches_the_rendered_config(tmp_path: Path) -> None:
    kinds = _documents(_render({"config": {"store": {"backend": "dynamodb", "table": "t", "kms_key_id": "alias/ck"}}}))
    path = tmp_path / "config.yaml"
    path.write_text(kinds["ConfigMap"]["data"]["config.yaml"])
    assert load_config(str(path), environ={}).store.kms_key_id == "alias/ck"


def test_sidecars_get_the_secret_too() -> None:
    values = {"mode": "sidecar", "sidecar": {"example": {"enabled": True}}, **SECRET}
    env = _proxy_env(_documents(_render(values))["Deployment"])
    assert env["COSTKEEPER_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "ck-secret-key"
