"""The AnthropicBedrock SDK: raw `:` in the path, every header signed, its own
event-stream decoding of the `chunk` bytes."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from tests.simulator.harness import ACCESS_KEY, CLAUDE, REGION, SECRET_KEY, SimServer


@pytest.fixture
def client(sim: SimServer) -> Iterator[anthropic.AnthropicBedrock]:
    bedrock = anthropic.AnthropicBedrock(
        base_url=sim.url, aws_access_key=ACCESS_KEY, aws_secret_key=SECRET_KEY, aws_region=REGION, max_retries=0,
    )
    yield bedrock
    bedrock.close()


def test_messages_create(sim: SimServer, client: anthropic.AnthropicBedrock, prompt: str) -> None:
    message = client.messages.create(
        model=CLAUDE, max_tokens=300, system="You are terse.", messages=[{"role": "user", "content": prompt}],
    )
    assert message.id.startswith("msg_bdrk_01") and message.stop_reason == "end_turn"
    block = message.content[0]
    assert block.type == "text" and len(block.text.split()) == message.usage.output_tokens
    record = sim.last_request()
    assert record["path"] == f"/model/{CLAUDE}/invoke"  # the SDK leaves `:` raw
    assert record["access_key"] == ACCESS_KEY and record["status"] == 200
    assert record["usage"]["input_tokens"] == message.usage.input_tokens


def test_messages_stream(sim: SimServer, client: anthropic.AnthropicBedrock, prompt: str) -> None:
    with client.messages.stream(
        model=CLAUDE, max_tokens=8, messages=[{"role": "user", "content": prompt}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 8 == len(text.split())
    assert final.content[0].text == text  # type: ignore[union-attr]
    assert sim.last_request()["path"] == f"/model/{CLAUDE}/invoke-with-response-stream"


def test_cache_control(client: anthropic.AnthropicBedrock, prompt: str) -> None:
    system = [{"type": "text", "text": "A long shared preamble. " * 50 + prompt,
               "cache_control": {"type": "ephemeral"}}]

    def ask(question: str) -> anthropic.types.Usage:
        return client.messages.create(
            model=CLAUDE, max_tokens=5, system=system,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": question}],
        ).usage

    first, second = ask("First?"), ask("Second, longer question?")
    assert first.cache_read_input_tokens == 0 and first.cache_creation_input_tokens
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0
    assert first.cache_creation is not None
    assert first.cache_creation.ephemeral_5m_input_tokens == first.cache_creation_input_tokens
    assert second.input_tokens > first.input_tokens  # only the uncached question


def test_stream_error_surfaces_as_api_error(client: anthropic.AnthropicBedrock, prompt: str) -> None:
    with pytest.raises(anthropic.APIStatusError, match="modelStreamErrorException"), client.messages.stream(
        model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": prompt + " [[sim:stream-error]]"}],
    ) as stream:
        for _ in stream.text_stream:
            pass


def test_throttle_is_rate_limit_error(client: anthropic.AnthropicBedrock, prompt: str) -> None:
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model=CLAUDE, max_tokens=5,
                               messages=[{"role": "user", "content": prompt + " [[sim:throttle]]"}])
