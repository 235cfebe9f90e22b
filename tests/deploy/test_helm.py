"""The Helm chart (helm/costkeeper): lints strictly, renders in gateway and sidecar
mode with default and non-default values, and every manifest it renders validates
against the Kubernetes 1.30 schemas offline (helm-python-sdk + kubernetes-validate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config_load import load_config

helm_chart = pytest.importorskip("helm_python.chart")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

CHART = Path(__file__).resolve().parents[2] / "helm" / "costkeeper"
KUBE = "1.30.0"

GATEWAY_CUSTOM: dict[str, Any] = {
    "image": {"repository": "registry.example.com/costkeeper", "tag": "9.9.9"},
    "config": {"region": "eu-west-1", "store": {"backend": "dynamodb", "table": "ck-usage"},
               "observability": {"metrics_public": True}},
    "env": [{"name": "COSTKEEPER_LOG_LEVEL", "value": "debug"}],
    "adminToken": {"existingSecret": "ck-admin", "key": "token"},
    "serviceAccount": {"roleArn": "arn:aws:iam::123456789012:role/costkeeper",
                       "annotations": {"team": "platform"}},
    "service": {"port": 9080, "adminPort": 9081},
    "autoscaling": {"enabled": False},
    "replicaCount": 3,
    "workers": 2,
    "podDisruptionBudget": {"maxUnavailable": 1},
    "networkPolicy": {"adminFrom": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prom"},
                       "bearerTokenSecret": {"name": "ck-admin", "key": "token"}},
    "terminationGracePeriodSeconds": 600,
    "preStopSleepSeconds": 15,
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                   "whenUnsatisfiable": "ScheduleAnyway",
                                   "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "costkeeper"}}}],
}
SIDECAR_CUSTOM: dict[str, Any] = {
    "mode": "sidecar",
    "sidecar": {"port": 5080, "adminPort": 5081, "trustOrg": "acme", "trustApp": "chatbot",
                "native": False, "store": {"backend": "dynamodb", "table": "shared"},
                "example": {"enabled": True}},
    "adminToken": {"existingSecret": "ck-admin"},
}
CASES = {
    "gateway-default": {},
    "gateway-custom": GATEWAY_CUSTOM,
    "sidecar-default": {"mode": "sidecar"},
    "sidecar-example": {"mode": "sidecar", "sidecar": {"example": {"enabled": True}}},
    "sidecar-custom": SIDECAR_CUSTOM,
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = helm_chart.Chart.load(str(CHART)).render(values, name="ck", namespace="team")
    documents = []
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            documents.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return documents


def by_kind(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in documents}


def config_of(documents: list[dict[str, Any]]) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(by_kind(documents)["ConfigMap"]["data"]["config.yaml"])
    return loaded


@pytest.mark.parametrize("case", CASES)
def test_chart_lints_strictly(case: str) -> None:
    report = helm_chart.lint(str(CHART), CASES[case], strict=True, kube_version=f"v{KUBE}")
    assert report["errors"] == [] and report["messages"] == [], report


@pytest.mark.parametrize("case", CASES)
def test_every_rendered_manifest_validates_against_kubernetes_1_30(case: str, tmp_path: Path) -> None:
    documents = render(CASES[case])
    assert documents
    for document in documents:
        if document["apiVersion"].startswith("monitoring.coreos.com/"):
            # A CRD: no schema in kubernetes-validate; check its shape by hand.
            assert document["kind"] == "ServiceMonitor"
            assert document["spec"]["endpoints"][0]["port"] == "admin"
            continue
        kubernetes_validate.validate(document, KUBE, strict=True)


@pytest.mark.parametrize("case", CASES)
def test_rendered_config_is_a_valid_costkeeper_config(case: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_of(render(CASES[case]))))
    config = load_config(str(path), environ={})
    if CASES[case].get("mode") == "sidecar":
        assert config.auth.mode == "trust"
        assert config.server.host == "127.0.0.1"
    else:
        assert config.server.host == "0.0.0.0"
        assert config.store.backend == "dynamodb"


def test_gateway_defaults() -> None:
    kinds = by_kind(render({}))
    assert set(kinds) == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                          "PodDisruptionBudget", "ServiceAccount", "NetworkPolicy"}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["terminationGracePeriodSeconds"] >= 60
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "replicas" not in kinds["Deployment"]["spec"]  # the HPA owns it
    ports = {p["name"]: p["port"] for p in kinds["Service"]["spec"]["ports"]}
    assert ports == {"http": 8080, "admin": 8081}
    # Without a Secret reference there is no admin token, and no IRSA annotation without a role.
    assert all(e["name"] != "COSTKEEPER_ADMIN_TOKEN" for e in container["env"])
    assert "annotations" not in kinds["ServiceAccount"]["metadata"]


def test_gateway_custom_values() -> None:
    kinds = by_kind(render(GATEWAY_CUSTOM))
    assert "HorizontalPodAutoscaler" not in kinds and "ServiceMonitor" in kinds
    deployment = kinds["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example.com/costkeeper:9.9.9"
    assert pod["terminationGracePeriodSeconds"] == 600
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "15"]
    env = {e["name"]: e for e in container["env"]}
    assert env["COSTKEEPER_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "ck-admin", "key": "token"}
    assert env["COSTKEEPER_PORT"]["value"] == "9080" and env["COSTKEEPER_LOG_LEVEL"]["value"] == "debug"
    annotations = kinds["ServiceAccount"]["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/costkeeper"
    assert kinds["PodDisruptionBudget"]["spec"] == {
        "maxUnavailable": 1, "selector": deployment["spec"]["selector"]}
    config = config_of(list(kinds.values()))
    assert config["region"] == "eu-west-1" and config["store"]["table"] == "ck-usage"
    assert config["server"]["port"] == 9080 and config["server"]["workers"] == 2


def test_network_policy_keeps_the_admin_port_internal() -> None:
    for values in ({}, GATEWAY_CUSTOM):
        rules = by_kind(render(values))["NetworkPolicy"]["spec"]["ingress"]
        admin = next(rule for rule in rules if rule["ports"][0]["port"] == "admin")
        # Only pods of the release's namespace (an empty podSelector) and the configured extras.
        assert admin["from"][0] == {"podSelector": {}}
        assert all("namespaceSelector" not in peer or peer["namespaceSelector"].get("matchLabels")
                   for peer in admin["from"])
        data = next(rule for rule in rules if rule["ports"][0]["port"] == "http")
        assert data["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_sidecar_mode_renders_only_the_config_by_default() -> None:
    kinds = by_kind(render({"mode": "sidecar"}))
    assert set(kinds) == {"ConfigMap"}
    config = config_of(list(kinds.values()))
    assert config["auth"]["mode"] == "trust" and config["store"]["backend"] == "sqlite"


@pytest.mark.parametrize("native", [True, False])
def test_sidecar_templates_make_a_working_pod(native: bool) -> None:
    values = {**SIDECAR_CUSTOM, "sidecar": {**SIDECAR_CUSTOM["sidecar"], "native": native}}
    documents = render(values)
    pod = by_kind(documents)["Deployment"]["spec"]["template"]["spec"]
    app = next(c for c in pod["containers"] if c["name"] == "app")
    env = {e["name"]: e.get("value") for e in app["env"]}
    assert env["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] == "http://127.0.0.1:5080"
    sidecars = pod.get("initContainers", []) if native else pod["containers"]
    sidecar = next(c for c in sidecars if c["name"] == "costkeeper")
    assert sidecar.get("restartPolicy") == ("Always" if native else None)
    proxy_env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert proxy_env["COSTKEEPER_HOST"] == "127.0.0.1" and proxy_env["COSTKEEPER_PORT"] == "5080"
    mounted = {m["name"] for m in sidecar["volumeMounts"]}
    assert mounted <= {v["name"] for v in pod["volumes"]}
    config = config_of(documents)
    assert config["auth"] == {"mode": "trust", "trust_org": "acme", "trust_app": "chatbot"}
    assert config["store"]["backend"] == "dynamodb" and config["store"]["table"] == "shared"


def test_config_reload_live_keeps_pods_on_a_config_change() -> None:
    """configReload: live drops the checksum annotation that rolls pods when the config changes."""

    def annotations(values: dict[str, Any]) -> dict[str, str]:
        (deployment,) = [m for m in render(values) if m["kind"] == "Deployment"]
        return dict(deployment["spec"]["template"]["metadata"].get("annotations") or {})

    assert "checksum/config" in annotations({})
    assert "checksum/config" not in annotations({"configReload": "live"})
