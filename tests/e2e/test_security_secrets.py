"""No credential ever leaves the proxy: a scan of everything it says.

A simulator and two proxies run with recognisable fake credentials — issued keys
(SigV4 secret and bearer token), upstream AWS credentials with a session token,
the admin token, an alert webhook URL with a secret path — and the main proxy
logs at DEBUG, the level someone turns on while troubleshooting. Traffic of every
kind goes through, failures included: SigV4 and bearer calls, streams, a bad
signature, a revoked key, wrong bearer tokens, an exhausted quota, upstream
throttling, validation errors and cut streams, an unreachable upstream, hostile
heads, admin calls with wrong and right tokens. Then everything is scanned: each
response's status, headers and body, the proxies' stdout and stderr, /metrics,
/healthz, /readyz, the usage API (as the dashboard calls it), the dashboard
page, the webhook payloads, the CLI's `keys list` and `usage`, and what reached
the upstream. None may hold a credential, raw, percent-encoded, hex or base64.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import TEST_PRICING
from tests.e2e.clients import CLAUDE, NOVA, bedrock_client, invoke_body
from tests.processes import Process, Proxy, costkeeper, free_port, start_proxy, start_simulator

UPSTREAM_KEY_ID = "AKIAUPSTREAMFAKE0001"
UPSTREAM_SECRET = "UpstreamSecretFAKE/0123+4567/abcdefghijklmnopqrstu"
UPSTREAM_SESSION_TOKEN = "IQoJUpstreamSessionTokenFAKE" + "Zm9vYmFy/+" * 30
ADMIN_TOKEN = "admin-token-FAKE-8f14e45fceea167a5a36dedd4bea2543"
WRONG_ADMIN_TOKEN = "admin-token-WRONG-c9f0f895fb98ab9159f51fd0297e236d"
WEBHOOK_SECRET = "T0FAKE/B0FAKE/webhookSecretFAKE1234567890"
WRONG_SECRET = "WrongClientSecretFAKE0123456789abcdefghij"
FOREIGN_TOKEN = "ABSKQmVkcm9ja0FQSUtleUZBS0UtZm9yZWlnbi10b2tlbg=="
MICRO = "amazon.nova-micro-v1:0"
CAPPED_ORG = "capped"


@dataclass
class Webhook:
    """A Slack-style incoming webhook on loopback that keeps what it receives."""

    received: list[bytes] = field(default_factory=list)

    def start(self) -> tuple[ThreadingHTTPServer, str]:
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length", 0))
                received.append(str(self.headers).encode() + b"\n" + self.rfile.read(length))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}/services/{WEBHOOK_SECRET}"


@dataclass
class Capture:
    """Every response the clients saw, as text to scan."""

    texts: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    def response(self, label: str, response: httpx.Response) -> httpx.Response:
        self.statuses[label] = response.status_code
        headers = "\n".join(f"{k.decode('latin-1')}: {v.decode('latin-1')}" for k, v in response.headers.raw)
        self.texts.append(f"== {label}\n{response.status_code}\n{headers}\n{response.content.decode('latin-1')}")
        return response

    def text(self, label: str, text: str) -> None:
        self.texts.append(f"== {label}\n{text}")


def forms(secret: str) -> dict[str, str]:
    """The ways a secret could show: raw, percent-encoded, JSON-escaped, hex and base64
    (standard and URL-safe, at each of the three alignments inside a longer encoding)."""
    raw = secret.encode()
    found = {"raw": secret, "percent": urllib.parse.quote(secret, safe=""),
             "json": json.dumps(secret)[1:-1], "hex": raw.hex()}
    for offset in range(3):
        for name, encode in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            encoded = encode(b"\0" * offset + raw).decode()
            # Characters fully determined by the secret: from the first whole sextet after
            # the prefix to the last whole group before any padding.
            start = -(-offset * 8 // 6)
            found[f"{name}+{offset}"] = encoded[start:-4]
    return found


def leaks(haystack: str, secrets: dict[str, str]) -> list[str]:
    return [f"{name} ({form})" for name, secret in secrets.items() for form, text in forms(secret).items()
            if text and text in haystack]


def signed(url: str, key_id: str, secret: str, body: bytes, method: str = "POST") -> httpx.Request:
    request = AWSRequest(method, url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(key_id, secret), "bedrock", "us-east-1").add_auth(request)
    return httpx.Request(method, url, headers=dict(request.headers.items()), content=body)


def raw_exchange(request: httpx.Request, extra_line: bytes) -> bytes:
    """Send `request` plus one raw header line (httpx will not send non-ASCII) and
    return the whole reply."""
    lines = [f"{request.method} {request.url.raw_path.decode()} HTTP/1.1".encode()]
    lines += [name + b": " + value for name, value in request.headers.raw if name.lower() != b"connection"]
    lines += [b"Connection: close", extra_line]
    with socket.create_connection((request.url.host, request.url.port or 80), timeout=15) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + request.content)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def converse_body(prompt: str) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": [{"text": prompt}]}],
                       "inferenceConfig": {"maxTokens": 60}}).encode()


def path(model: str, action: str) -> str:
    return f"/model/{urllib.parse.quote(model, safe='')}/{action}"


@dataclass
class Scene:
    simulator: Process
    proxy: Proxy
    down: Proxy
    webhook: Webhook
    capture: Capture
    secrets: dict[str, str]
    sim_log: str = ""
    #: The command lines of both proxies' processes and their children, while they ran.
    argv: str = ""


def command_lines(root: int) -> str:
    """The command lines of process `root` and every descendant, one a line."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    lines = []
    for pid in sorted(tree):
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("latin-1"))
        except OSError:
            continue
    return "\n".join(lines)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    tmp = tmp_path_factory.mktemp("security-secrets")
    webhook = Webhook()
    server, webhook_url = webhook.start()
    simulator = start_simulator(tmp, "--access-key", UPSTREAM_KEY_ID, "--secret-key", UPSTREAM_SECRET)
    config = {
        "pricing": TEST_PRICING,
        # Bearer calls go over plain HTTP here, as a sidecar on localhost may.
        "auth": {"mode": "sigv4", "key_cache_ttl": 0, "allow_bearer_over_http": True},
        "limits": {"max_body_bytes": 64 * 1024},
        "observability": {"emf": True, "metrics_public": False, "healthz_public": True},
        "models": {"economy": MICRO},
        "fallback": ["economy"],
        # A few requests' worst cases (maxTokens 60): spent past the 50 % alert, then refused.
        "orgs": {CAPPED_ORG: {"daily_quota_usd": {"economy": 0.00005}}},
        "alerts": {"thresholds": [0.5, 1.0], "hourly_cost_usd": 0.000001, "check_interval": 0.2,
                   "timeout": 2, "retries": 0},
    }
    env = {"AWS_SESSION_TOKEN": UPSTREAM_SESSION_TOKEN, "COSTKEEPER_ADMIN_TOKEN": ADMIN_TOKEN,
           "COSTKEEPER_ALERTS_WEBHOOK_URL": webhook_url}
    credentials = (UPSTREAM_KEY_ID, UPSTREAM_SECRET)
    proxy = start_proxy(tmp, simulator.url, config, upstream_credentials=credentials, env=env,
                        extra_args=("--log-level", "debug"))
    down = start_proxy(tmp, f"http://127.0.0.1:{free_port()}", config, upstream_credentials=credentials, env=env)
    scene = Scene(simulator, proxy, down, webhook, Capture(), {
        "upstream secret access key": UPSTREAM_SECRET,
        "upstream session token": UPSTREAM_SESSION_TOKEN,
        "admin token": ADMIN_TOKEN,
        "wrong admin token": WRONG_ADMIN_TOKEN,
        "webhook secret": WEBHOOK_SECRET,
        "wrong client secret": WRONG_SECRET,
        "foreign bearer token": FOREIGN_TOKEN,
    })
    for started in (proxy, down):
        # The key that encrypts issued secrets at rest (SQLite default: a file beside the store).
        key_file = Path(f"{started.store_path}.key")
        lines = key_file.read_text().splitlines() if key_file.exists() else []
        keys = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        for number, line in enumerate(keys):
            scene.secrets[f"store encryption key {started.store_path.name} #{number}"] = line
    try:
        drive(scene)
        scene.argv = "\n".join(command_lines(started.popen.pid) for started in (proxy, down))
        scene.sim_log = httpx.get(f"{simulator.url}/_sim/requests", timeout=5).text
    finally:
        proxy.stop()
        down.stop()
        simulator.stop()
        server.shutdown()
        server.server_close()
    yield scene


def drive(scene: Scene) -> None:
    proxy, capture, secrets = scene.proxy, scene.capture, scene.secrets
    key = proxy.issue_key("acme", "chatbot")
    revoked = proxy.issue_key("acme", "revoked")
    capped = proxy.issue_key(CAPPED_ORG, "app")
    down_key = scene.down.issue_key("acme", "chatbot")
    for name, issued in (("key", key), ("revoked key", revoked), ("capped key", capped), ("down key", down_key)):
        secrets[f"{name} secret"] = issued["AWS_SECRET_ACCESS_KEY"]
        secrets[f"{name} bearer token"] = issued["AWS_BEARER_TOKEN_BEDROCK"]
    key_id, secret, bearer = key["AWS_ACCESS_KEY_ID"], key["AWS_SECRET_ACCESS_KEY"], key["AWS_BEARER_TOKEN_BEDROCK"]

    with httpx.Client(timeout=20) as http:
        def sigv4(label: str, route: str, body: bytes, *, as_key: dict[str, str] | None = None,
                  secret_: str | None = None, target: Proxy = proxy, extra: dict[str, str] | None = None) -> None:
            issued = as_key or key
            request = signed(target.url + route, issued["AWS_ACCESS_KEY_ID"], secret_ or issued["AWS_SECRET_ACCESS_KEY"],
                             body)
            request.headers.update(extra or {})
            try:
                capture.response(label, http.send(request))
            except httpx.TransportError as exc:  # an aborted non-stream response
                capture.text(label, f"aborted: {exc!r}")
                capture.statuses[label] = 0

        def with_bearer(label: str, route: str, body: bytes, token: str) -> None:
            capture.response(label, http.post(proxy.url + route, content=body, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"}))

        sigv4("sigv4 converse", path(NOVA, "converse"), converse_body("hello"))
        sigv4("sigv4 converse-stream", path(NOVA, "converse-stream"), converse_body("hello"))
        sigv4("sigv4 invoke", path(NOVA, "invoke"), invoke_body("nova", "hello"))
        sigv4("sigv4 invoke stream", path(CLAUDE, "invoke-with-response-stream"), invoke_body("anthropic", "hi"))
        sigv4("sigv4 count-tokens", path(CLAUDE, "count-tokens"),
              json.dumps({"input": {"converse": {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}}}).encode())
        with_bearer("bearer converse", path(NOVA, "converse"), converse_body("hello"), bearer)
        with_bearer("bearer converse-stream", path(NOVA, "converse-stream"), converse_body("hello"), bearer)
        # Through boto3 as well: what the SDK hands the application.
        boto3_client: Any = bedrock_client(key, endpoint_url=proxy.url)
        messages = [{"role": "user", "content": [{"text": "hello"}]}]
        capture.text("boto3 converse", repr(boto3_client.converse(modelId=NOVA, messages=messages)))
        streamed = boto3_client.converse_stream(modelId=NOVA, messages=messages)
        capture.text("boto3 converse-stream", repr(streamed["ResponseMetadata"]) + repr(list(streamed["stream"])))
        wrong: Any = bedrock_client({**key, "AWS_SECRET_ACCESS_KEY": WRONG_SECRET}, endpoint_url=proxy.url)
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            wrong.converse(modelId=NOVA, messages=messages)
        capture.text("boto3 bad signature", f"{refused.value}\n{refused.value.response!r}")
        # Refusals.
        sigv4("bad signature", path(NOVA, "converse"), converse_body("hi"), secret_=WRONG_SECRET)
        with_bearer("wrong bearer secret", path(NOVA, "converse"), converse_body("hi"), f"ck-{key_id}-{WRONG_SECRET}")
        with_bearer("foreign bearer token", path(NOVA, "converse"), converse_body("hi"), FOREIGN_TOKEN)
        sigv4("revoked key, before", path(NOVA, "converse"), converse_body("hi"), as_key=revoked)
        proxy.keys("revoke", revoked["AWS_ACCESS_KEY_ID"])
        sigv4("revoked key, sigv4", path(NOVA, "converse"), converse_body("hi"), as_key=revoked)
        with_bearer("revoked key, bearer", path(NOVA, "converse"), converse_body("hi"),
                    revoked["AWS_BEARER_TOKEN_BEDROCK"])
        sigv4("malformed authorization", path(NOVA, "converse"), converse_body("hi"),
              extra={"Authorization": f"AWS4-HMAC-SHA256 Credential={key_id}/{secret}"})
        request = signed(proxy.url + path(NOVA, "converse"), key_id, secret, converse_body("hi"))
        reply = raw_exchange(request, f"X-Debug: {secret}\u00e9".encode())
        capture.text("secret in a non-ASCII header", reply.decode("latin-1"))
        capture.statuses["secret in a non-ASCII header"] = int(reply.split(b" ", 2)[1])
        sigv4("secret in an oversized header", path(NOVA, "converse"), converse_body("hi"),
              extra={"X-Debug": secret * 500})
        sigv4("malformed json", path(NOVA, "converse"), b'{"messages": [')
        sigv4("body over the limit", path(NOVA, "invoke"), invoke_body("nova", "x" * 70_000))
        sigv4("unknown operation", "/model/x/frobnicate", b"{}")
        # Upstream failures.
        sigv4("upstream throttling", path(NOVA, "converse"), converse_body("[[sim:throttle]] hi"))
        sigv4("upstream validation", path(NOVA, "converse"), converse_body("[[sim:validation]] hi"))
        sigv4("upstream cut, stream", path(NOVA, "converse-stream"), converse_body("[[sim:cut]] hi"))
        sigv4("upstream stream error", path(NOVA, "converse-stream"), converse_body("[[sim:stream-error]] hi"))
        sigv4("upstream cut, body", path(NOVA, "converse"), converse_body("[[sim:cut]] hi"))
        sigv4("upstream unreachable", path(NOVA, "converse"), converse_body("hi"), as_key=down_key, target=scene.down)
        # A quota spent: the capped org's one model is refused once a request no longer fits.
        for attempt in range(60):
            sigv4(f"capped {attempt}", path(MICRO, "converse"), converse_body("hi"), as_key=capped)
            if capture.statuses[f"capped {attempt}"] == 400:
                break
            time.sleep(0.25)
        assert capture.statuses[f"capped {attempt}"] == 400, "the quota was never exhausted"

        # The admin port, as a browser, a scraper, an operator and an intruder see it.
        admin, bearer_admin = proxy.admin_url, {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        for route in ("/healthz", "/readyz", "/metrics", "/v1/usage", "/v1/quotas", f"/v1/rates?model={MICRO}"):
            capture.response(f"admin {route}, no token", http.get(admin + route))
            capture.response(f"admin {route}, wrong token", http.get(
                admin + route, headers={"Authorization": f"Bearer {WRONG_ADMIN_TOKEN}"}))
        capture.response("dashboard", http.get(f"{admin}/dashboard?token={ADMIN_TOKEN}"))
        dashboard_calls = ["/v1/quotas", "/v1/usage?days=1&by=org,app", "/v1/usage?days=1&by=model",
                           "/v1/usage?days=7&by=org,app,model,operation,day", "/metrics", "/healthz", "/readyz"]
        quotas = http.get(admin + "/v1/quotas", headers=bearer_admin).json()
        models = {model["model"] for scope in quotas["scopes"] for model in scope["models"]} | {NOVA, MICRO}
        dashboard_calls += [f"/v1/rates?model={urllib.parse.quote(m, safe='')}&minutes=60" for m in sorted(models)]
        for route in dashboard_calls:
            response = capture.response(f"admin {route}", http.get(admin + route, headers=bearer_admin))
            assert response.status_code == 200, (route, response.text)
        for route in ("/healthz", "/readyz", "/metrics"):
            capture.response(f"down admin {route}", http.get(scene.down.admin_url + route, headers=bearer_admin))

    capture.text("keys list", proxy.keys("list").stdout)
    usage = costkeeper("usage", "--config", str(proxy.config_path), "--format", "json", env=proxy.aws_env)
    capture.text("usage report", usage.stdout + usage.stderr)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(b'"kind": "quota"' in p or b'"kind":"quota"' in p
                                                  for p in scene.webhook.received):
        time.sleep(0.2)


def test_the_traffic_happened(scene: Scene) -> None:
    """The scan means something only if every kind of traffic really happened."""
    statuses = scene.capture.statuses
    expected = {
        "sigv4 converse": 200, "sigv4 converse-stream": 200, "sigv4 invoke": 200, "sigv4 invoke stream": 200,
        "sigv4 count-tokens": 200, "bearer converse": 200, "bearer converse-stream": 200,
        "bad signature": 403, "wrong bearer secret": 403, "foreign bearer token": 403,
        "revoked key, before": 200, "revoked key, sigv4": 403, "revoked key, bearer": 403,
        "malformed authorization": 403, "secret in a non-ASCII header": 400, "secret in an oversized header": 400,
        "malformed json": 400, "body over the limit": 400, "unknown operation": 404,
        "upstream throttling": 429, "upstream validation": 400, "upstream cut, stream": 200,
        "upstream stream error": 200, "upstream cut, body": 0, "upstream unreachable": 503,
        "admin /v1/usage, no token": 401, "admin /v1/usage, wrong token": 401, "admin /metrics, wrong token": 401,
        "dashboard": 200,
    }
    assert {label: statuses.get(label) for label in expected} == expected
    everything = "\n".join(scene.capture.texts)
    assert "ServiceQuotaExceededException" in everything and "InvalidSignatureException" in everything
    assert "'contentBlockDelta'" in everything and "'metadata'" in everything  # the boto3 stream's events
    assert "costkeeper_tokens_total" in everything and f'org="{CAPPED_ORG}"' in everything
    assert any(b'"kind": "quota"' in p or b'"kind":"quota"' in p for p in scene.webhook.received), \
        scene.webhook.received
    log = scene.proxy.output()
    assert '"type":"access"' in log and "AIGateway/TokenUsage" in log and '"type":"alert"' in log
    assert "DEBUG" in log  # the main proxy ran at DEBUG


def test_no_response_holds_a_credential(scene: Scene) -> None:
    for text in scene.capture.texts:
        assert not leaks(text, scene.secrets), (leaks(text, scene.secrets), text[:300])


@pytest.mark.parametrize("which", ["proxy", "down"])
def test_no_log_line_holds_a_credential(scene: Scene, which: str) -> None:
    output = (scene.proxy if which == "proxy" else scene.down).output()
    found = leaks(output, scene.secrets)
    lines = [line[:300] for line in output.splitlines() if leaks(line, scene.secrets)]
    assert not found, (found, lines[:5])


def test_no_process_argument_holds_a_credential(scene: Scene) -> None:
    """What `ps` shows any local user: the secrets come from the environment and files."""
    assert "proxy.cli" in scene.argv and "serve" in scene.argv
    assert not leaks(scene.argv, scene.secrets), scene.argv


def test_no_webhook_payload_holds_a_credential(scene: Scene) -> None:
    for payload in scene.webhook.received:
        assert not leaks(payload.decode("latin-1"), scene.secrets), payload


def test_no_client_credential_reaches_the_upstream(scene: Scene) -> None:
    """The upstream legitimately receives the proxy's own session token; never a
    caller's secret, bearer token or the admin token."""
    client_side = {name: value for name, value in scene.secrets.items() if not name.startswith("upstream")}
    assert scene.sim_log.startswith("[") and len(scene.sim_log) > 1000
    assert not leaks(scene.sim_log, client_side)
