"""The AWS SDK for JavaScript v3 through the proxy, unchanged: its default request handler
(NodeHttp2Handler) speaks HTTP/2 only — h2c with prior knowledge on http://, ALPN `h2`
over TLS (issue #19). Every operation answers and is metered exactly as the SDK saw it,
InvokeModelWithBidirectionalStream included (a Nova Sonic session whose events the SDK
signs one by one; the proxy verifies and re-signs them).

The SDK is pinned in tools/node-sdk (installed by `make install`); the calls are
tools/node-sdk/calls.mjs, which prints one JSON line per call.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_PRICING
from tests.e2e.clients import CLAUDE, wait_for_event
from tests.processes import Process, Proxy, base_env, start_proxy
from tests.tls import self_signed

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "tools" / "node-sdk"
OPERATIONS = ["Converse", "ConverseStream", "InvokeModel", "InvokeModelWithResponseStream", "CountTokens"]
#: The simulator refuses bare ids of profile-only models: a profile for Claude, a bare id for Nova.
MODELS = [CLAUDE, "amazon.nova-lite-v1:0"]

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (SDK / "node_modules" / "@aws-sdk").is_dir(),
    reason="Node.js and tools/node-sdk (make install) are needed",
)


def run_sdk(endpoint: str, key: dict[str, str], model: str, *operations: str,
            extra_env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    env = {
        **base_env(),
        "AWS_ACCESS_KEY_ID": key["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": key["AWS_SECRET_ACCESS_KEY"],
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "PATH": os.environ.get("PATH", ""),
        **(extra_env or {}),
    }
    result = subprocess.run(["node", str(SDK / "calls.mjs"), model, *operations], cwd=SDK, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def assert_metered(proxy: Proxy, results: list[dict[str, Any]], org: str, app: str) -> None:
    assert [r["operation"] for r in results] == OPERATIONS
    for result in results:
        assert result["ok"], result
        assert result["usage"] is not None and result["usage"]["input"] > 0, result
        event = wait_for_event(proxy, result["requestId"])
        assert (event.org, event.app, event.operation) == (org, app, result["operation"]), result
        assert not event.estimated, result
        if result["operation"] != "CountTokens":
            assert (event.input_tokens, event.output_tokens) == (result["usage"]["input"],
                                                                   result["usage"]["output"]), result


@pytest.mark.parametrize("model", MODELS)
def test_node_sdk_over_h2c(proxy: Proxy, model: str) -> None:
    """http:// endpoint: the SDK opens with the HTTP/2 preface (prior knowledge)."""
    key = proxy.issue_key("acme", "node-h2c")
    assert_metered(proxy, run_sdk(proxy.url, key, model), "acme", "node-h2c")


def test_node_sdk_over_tls_with_alpn(tmp_path: Path, simulator: Process) -> None:
    """https:// endpoint: the proxy's TLS offers `h2` then `http/1.1` by ALPN."""
    cert, key_file = self_signed(tmp_path)
    proxy = start_proxy(tmp_path, simulator.url, {"pricing": TEST_PRICING},
                        extra_args=("--tls-cert", str(cert), "--tls-key", str(key_file)))
    try:
        port = int(proxy.url.rsplit(":", 1)[1])
        for offered, chosen in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
            context = ssl.create_default_context(cafile=str(cert))
            context.set_alpn_protocols(offered)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    context.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.selected_alpn_protocol() == chosen
        issued = proxy.issue_key("acme", "node-tls")
        endpoint = f"https://localhost:{port}"
        results = run_sdk(endpoint, issued, CLAUDE, extra_env={"NODE_EXTRA_CA_CERTS": str(cert)})
        assert_metered(proxy, results, "acme", "node-tls")
    finally:
        proxy.stop()


SONIC = "amazon.nova-sonic-v1:0"
SONIC_RATES = {"input": 0.06, "output": 0.24, "speech_input": 3.4, "speech_output": 13.6}


def test_node_sdk_bidirectional_stream(tmp_path: Path, simulator: Process) -> None:
    """InvokeModelWithBidirectionalStream (HTTP/2 only), its usage exactly as the SDK saw it."""
    proxy = start_proxy(tmp_path, simulator.url, {
        "pricing": {**TEST_PRICING, SONIC: SONIC_RATES},
        "orgs": {"acme": {"allowed_operations": ["InvokeModelWithBidirectionalStream"]}},
    })
    try:
        key = proxy.issue_key("acme", "node-voice")
        [result] = run_sdk(proxy.url, key, SONIC, "InvokeModelWithBidirectionalStream")
        assert result["ok"] and result["spoken"], result
        usage = result["usage"]
        event = wait_for_event(proxy, result["requestId"])
        assert (event.org, event.app, event.operation, event.model) == (
            "acme", "node-voice", "InvokeModelWithBidirectionalStream", SONIC)
        assert not event.estimated and not event.hung_up and event.status == 200
        assert (event.input_tokens, event.output_tokens) == (usage["input"], usage["output"]) and usage["speechInput"]
        text_in, text_out = usage["input"] - usage["speechInput"], usage["output"] - usage["speechOutput"]
        assert event.cost_pico_usd == (usage["speechInput"] * 3_400_000 + text_in * 60_000
                                       + usage["speechOutput"] * 13_600_000 + text_out * 240_000)
    finally:
        proxy.stop()
