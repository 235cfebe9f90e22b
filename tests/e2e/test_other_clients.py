"""The AWS CLI and the Anthropic SDK through the proxy, unchanged but for the endpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import anthropic
import pytest

from tests.e2e.clients import CLAUDE, wait_for_event
from tests.processes import Proxy, base_env


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


def test_anthropic_sdk_bearer(proxy: Proxy, caller_key: dict[str, str]) -> None:
    """Bedrock API-key style: `Authorization: Bearer <token>` with the issued bearer token."""
    client = anthropic.AnthropicBedrock(
        base_url=proxy.url, api_key=caller_key["AWS_BEARER_TOKEN_BEDROCK"], aws_region="us-east-1", max_retries=0
    )
    raw = client.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().usage.output_tokens > 0
    event = wait_for_event(proxy, raw.headers["x-amzn-requestid"])
    assert (event.org, event.app) == ("acme", "chatbot")
    bad = anthropic.AnthropicBedrock(
        base_url=proxy.url, api_key=caller_key["AWS_BEARER_TOKEN_BEDROCK"] + "x", aws_region="us-east-1", max_retries=0
    )
    with pytest.raises(anthropic.PermissionDeniedError):
        bad.messages.create(model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
