"""Operations the proxy forwards as they are (re-signed), and LangChain unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.clients import NOVA, bedrock_client, wait_for_event
from tests.processes import Proxy


@pytest.fixture
def client(proxy: Proxy, caller_key: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", proxy.url)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    bedrock = bedrock_client(caller_key)
    yield bedrock
    bedrock.close()


def test_async_invoke_operations_are_forwarded(client: Any) -> None:
    """GET paths with a percent-encoded ARN and a query string survive re-signing."""
    started = client.start_async_invoke(
        modelId="amazon.nova-reel-v1:0",
        modelInput={"taskType": "TEXT_VIDEO", "textToVideoParams": {"text": "waves"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://bucket/out"}},
    )
    arn = started["invocationArn"]
    assert arn.startswith("arn:aws:bedrock:")
    fetched = client.get_async_invoke(invocationArn=arn)
    assert fetched["invocationArn"] == arn
    listed = client.list_async_invokes(maxResults=5, sortOrder="Descending")
    assert any(item["invocationArn"] == arn for item in listed["asyncInvokeSummaries"])


def test_langchain_chat_bedrock_converse(proxy: Proxy, caller_key: dict[str, str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_aws import ChatBedrockConverse

    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", proxy.url)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    chat = ChatBedrockConverse(
        model=NOVA,
        region_name="us-east-1",
        aws_access_key_id=caller_key["AWS_ACCESS_KEY_ID"],  # type: ignore[arg-type]
        aws_secret_access_key=caller_key["AWS_SECRET_ACCESS_KEY"],  # type: ignore[arg-type]
        max_tokens=30,
    )
    reply = chat.invoke("What is the capital of France?")
    assert reply.content and reply.usage_metadata is not None
    request_id = reply.response_metadata["ResponseMetadata"]["RequestId"]
    event = wait_for_event(proxy, request_id)
    assert (event.input_tokens, event.output_tokens) == (
        reply.usage_metadata["input_tokens"], reply.usage_metadata["output_tokens"])
    chunks = list(chat.stream("Tell me a short story."))
    streamed = sum((c for c in chunks[1:]), chunks[0])
    assert streamed.content and streamed.usage_metadata is not None
    assert streamed.usage_metadata["output_tokens"] > 0
