"""LangChain unchanged through the proxy. (Async invocations, which the proxy used to
forward as they were, are governed now: tests/e2e/test_governed_operations.py.)"""

from __future__ import annotations

import pytest

from tests.e2e.clients import NOVA, wait_for_event
from tests.processes import Proxy


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
