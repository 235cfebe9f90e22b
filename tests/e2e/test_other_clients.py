"""The AWS CLI and the Anthropic SDK through the proxy, unchanged but for the endpoint
(and, for bearer tokens, HTTPS)."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from tests.conftest import TEST_PRICING
from tests.e2e.clients import CLAUDE, wait_for_event
from tests.processes import Process, Proxy, base_env, start_proxy
from tests.tls import self_signed


def test_aws_cli_converse(proxy: Proxy, caller_key: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    env = {
        **base_env(),
        "AWS_ACCESS_KEY_ID": caller_key["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": caller_key["AWS_SECRET_ACCESS_KEY"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }
    messages = json.dumps([{"role": "user", "content": [{"text": "What is 2+2?"}]}])
    result = subprocess.run(
        [sys.executable, "-m", "awscli", "bedrock-runtime", "converse", "--endpoint-url", proxy.url,
         "--model-id", "us.amazon.nova-micro-v1:0", "--messages", messages, "--output", "json", "--debug"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout)
    usage = document["usage"]
    assert usage["inputTokens"] > 0 and usage["outputTokens"] > 0
    request_id = next(line.split("'x-amzn-requestid': '", 1)[1].split("'", 1)[0]
                      for line in result.stderr.splitlines() if "'x-amzn-requestid': '" in line)
    event = wait_for_event(proxy, request_id)
    assert (event.input_tokens, event.output_tokens) == (usage["inputTokens"], usage["outputTokens"])


@pytest.fixture
def anthropic_client(proxy: Proxy, caller_key: dict[str, str]) -> anthropic.AnthropicBedrock:
    return anthropic.AnthropicBedrock(
        base_url=proxy.url,
        aws_access_key=caller_key["AWS_ACCESS_KEY_ID"],
        aws_secret_key=caller_key["AWS_SECRET_ACCESS_KEY"],
        aws_region="us-east-1",
        max_retries=0,
    )


def test_anthropic_sdk_create(proxy: Proxy, anthropic_client: anthropic.AnthropicBedrock) -> None:
    raw = anthropic_client.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=30, messages=[{"role": "user", "content": "Say hello."}]
    )
    message = raw.parse()
    assert message.role == "assistant" and message.content[0].type == "text"
    assert raw.headers["x-costkeeper-model-id"] == CLAUDE
    event = wait_for_event(proxy, raw.headers["x-amzn-requestid"])
    assert (event.input_tokens, event.output_tokens) == (message.usage.input_tokens, message.usage.output_tokens)


def test_anthropic_sdk_stream(proxy: Proxy, anthropic_client: anthropic.AnthropicBedrock) -> None:
    with anthropic_client.messages.stream(
        model=CLAUDE, max_tokens=20, messages=[{"role": "user", "content": "Stream a few words."}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-amzn-requestid"]
    assert text and final.stop_reason in ("end_turn", "max_tokens")
    event = wait_for_event(proxy, request_id)
    assert event.operation == "InvokeModelWithResponseStream"
    assert (event.input_tokens, event.output_tokens) == (final.usage.input_tokens, final.usage.output_tokens)


@pytest.fixture(scope="module")
def tls_proxy(tmp_path_factory: pytest.TempPathFactory, simulator: Process) -> Iterator[tuple[Proxy, Path]]:
    """The proxy serving HTTPS (a self-signed certificate for localhost): bearer tokens need it."""
    tmp = tmp_path_factory.mktemp("tls-proxy")
    cert, key = self_signed(tmp)
    proxy = start_proxy(tmp, simulator.url, {"pricing": TEST_PRICING},
                        extra_args=("--tls-cert", str(cert), "--tls-key", str(key)))
    yield proxy, cert
    proxy.stop()


def test_anthropic_sdk_bearer(tls_proxy: tuple[Proxy, Path]) -> None:
    """Bedrock API-key style: `Authorization: Bearer <token>` with the issued bearer token, over TLS."""
    proxy, cert = tls_proxy
    caller_key = proxy.issue_key("acme", "chatbot")
    base_url = proxy.url.replace("127.0.0.1", "localhost")

    def client(api_key: str) -> anthropic.AnthropicBedrock:
        return anthropic.AnthropicBedrock(base_url=base_url, api_key=api_key, aws_region="us-east-1", max_retries=0,
                                          http_client=anthropic.DefaultHttpxClient(verify=ssl.create_default_context(cafile=cert)))

    with client(caller_key["AWS_BEARER_TOKEN_BEDROCK"]) as good:
        raw = good.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert raw.parse().usage.output_tokens > 0
    event = wait_for_event(proxy, raw.headers["x-amzn-requestid"])
    assert (event.org, event.app) == ("acme", "chatbot")
    with client(caller_key["AWS_BEARER_TOKEN_BEDROCK"] + "x") as bad, pytest.raises(anthropic.PermissionDeniedError):
        bad.messages.create(model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "hi"}])


def test_a_bearer_token_over_plain_http_is_refused_naming_the_setting(proxy: Proxy,
                                                                     caller_key: dict[str, str]) -> None:
    """The token carries the SigV4 secret: over plain HTTP it is refused (403
    AccessDeniedException) unless `auth.allow_bearer_over_http`, and the refusal says so."""
    client = anthropic.AnthropicBedrock(
        base_url=proxy.url, api_key=caller_key["AWS_BEARER_TOKEN_BEDROCK"], aws_region="us-east-1", max_retries=0
    )
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        client.messages.create(model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.response.headers["x-amzn-errortype"].startswith("AccessDeniedException")
    assert "auth.allow_bearer_over_http" in refused.value.response.json()["message"]
