"""Stream translation fed from real recorded streams, read by the real client parsers."""

from __future__ import annotations

import base64
import json
from functools import cache
from itertools import permutations
from typing import Any

import httpx2
import pytest
from anthropic import AnthropicBedrock, APIStatusError
from anthropic.types import Message as AnthropicMessage
from botocore.eventstream import EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters import FAMILIES
from adapters.eventstream import event_message, exception_message
from adapters.headers import INVOCATION_METRICS_KEY, usage_from_invocation_metrics
from adapters.translate import StreamTranslator, TranslationError
from adapters.usage import Usage
from adapters.watch import StreamUsageWatcher
from tests.adapters.cassettes import interaction, stream_events

CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
MODEL_IDS = {"anthropic": CLAUDE, "nova": "us.amazon.nova-lite-v1:0", "llama": "meta.llama3-70b-instruct-v1:0"}
#: Recorded upstream streams per family, with the neutral stop reason they end with.
RECORDED = {
    "dd-trace-py/anthropic_message_invoke_stream.yaml": ("anthropic", "end_turn"),
    "openllmetry/test_anthropic_3_completion_streaming.yaml": ("anthropic", "end_turn"),
    "openllmetry/test_nova_invoke_stream.yaml": ("nova", "end_turn"),
    "dd-trace-py/meta_invoke_stream.yaml": ("llama", "max_tokens"),
}
CLIENT_STOP_REASONS = {
    "anthropic": {"end_turn": "end_turn", "max_tokens": "max_tokens", "tool_use": "tool_use"},
    "nova": {"end_turn": "end_turn", "max_tokens": "max_tokens", "tool_use": "tool_use"},
    "llama": {"end_turn": "stop", "max_tokens": "length"},
}
CASES = [
    (name, client) for name, (upstream, _) in RECORDED.items()
    for client in ("anthropic", "nova", "llama") if client != upstream
]


def frames_of(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        total = int.from_bytes(data[pos:pos + 4], "big")
        out.append(data[pos:pos + total])
        pos += total
    return out


def client_chunks(data: bytes) -> list[dict[str, Any]]:
    """Decode with botocore, as every client does; every frame must be a `chunk` event."""
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    chunks = []
    for message in buffer:
        assert message.headers == {
            ":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
        chunks.append(json.loads(base64.b64decode(json.loads(message.payload)["bytes"])))
    return chunks


def upstream_frames(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(
        event_message("chunk", {"bytes": base64.b64encode(json.dumps(chunk).encode()).decode()}) for chunk in chunks)


def translate(client: str, upstream: str, data: bytes) -> bytes:
    translator = StreamTranslator(client, upstream, MODEL_IDS[client])
    return translator.feed(data) + translator.finish()


def claude_final_message(data: bytes) -> AnthropicMessage:
    """Run the Anthropic SDK's own Bedrock stream over `data`: AWS event-stream
    decoding, SSE routing and `accumulate_event`, as `messages.stream` does."""
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, content=data,
            headers={"content-type": "application/vnd.amazon.eventstream", "x-amzn-requestid": "r-1"})

    with httpx2.Client(transport=httpx2.MockTransport(handler)) as http_client:
        client = AnthropicBedrock(
            aws_access_key="AKIDEXAMPLE", aws_secret_key="secret", aws_region="us-east-1",
            base_url="http://bedrock.test", http_client=http_client, max_retries=0)
        with client.messages.stream(
            model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
        ) as stream:
            return stream.get_final_message()


@pytest.mark.parametrize(("name", "client"), CASES)
def test_recorded_stream(name: str, client: str) -> None:
    upstream, stop_reason = RECORDED[name]
    item = interaction(name)
    upstream_chunks = [chunk for _, chunk in stream_events(item)]
    text = "".join(FAMILIES[upstream].output_text(chunk) for chunk in upstream_chunks)
    usage = usage_from_invocation_metrics(upstream_chunks[-1])
    assert usage is not None

    out = translate(client, upstream, item.body)
    chunks = client_chunks(out)
    family = FAMILIES[client]
    assert "".join(family.output_text(chunk) for chunk in chunks) == text
    # The meter and botocore users read the upstream's metrics from the last chunk.
    assert chunks[-1][INVOCATION_METRICS_KEY] == upstream_chunks[-1][INVOCATION_METRICS_KEY]
    assert all(INVOCATION_METRICS_KEY not in chunk for chunk in chunks[:-1])
    native = None
    for chunk in chunks:
        native = family.usage_from_chunk(chunk, native)
    assert native == usage
    watcher = StreamUsageWatcher("InvokeModelWithResponseStream", MODEL_IDS[client], b"{}")
    assert watcher.feed(out) == out
    assert watcher.finish() == usage

    expected_stop = CLIENT_STOP_REASONS[client][stop_reason]
    if client == "anthropic":
        message = claude_final_message(out)
        assert [block.type for block in message.content] == ["text"]
        assert message.content[0].text == text  # type: ignore[union-attr]
        assert message.stop_reason == expected_stop
        assert (message.usage.input_tokens, message.usage.output_tokens) == (usage.input_tokens, usage.output_tokens)
        assert message.model == "claude-3-5-haiku-20241022"
    elif client == "nova":
        assert chunks[0] == {"messageStart": {"role": "assistant"}}
        assert chunks[-2] == {"messageStop": {"stopReason": expected_stop}}
        assert chunks[-1]["metadata"]["usage"] == {
            "inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens,
            "cacheReadInputTokenCount": 0, "cacheWriteInputTokenCount": 0}
        opened = {c["contentBlockDelta"]["contentBlockIndex"] for c in chunks if "contentBlockDelta" in c}
        assert [c["contentBlockStop"]["contentBlockIndex"] for c in chunks if "contentBlockStop" in c] == sorted(opened)
    else:
        assert [chunk["stop_reason"] for chunk in chunks] == [None] * (len(chunks) - 1) + [expected_stop]
        counts = [chunk["generation_token_count"] for chunk in chunks]
        assert counts == sorted(counts) and counts[-1] == usage.output_tokens
        # Claude knows the input count at the start, Nova only at the end.
        prompts = [None] * (len(chunks) - 1) + [usage.input_tokens]
        assert [chunk["prompt_token_count"] for chunk in chunks] == (
            prompts[::-1] if upstream == "anthropic" else prompts)


def test_nova_usage_reaches_claude_clients_in_message_delta() -> None:
    out = translate("anthropic", "nova", interaction("openllmetry/test_nova_invoke_stream.yaml").body)
    chunks = client_chunks(out)
    start, delta, stop = chunks[0], chunks[-2], chunks[-1]
    assert start["type"] == "message_start"
    assert start["message"]["usage"] == {
        "input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}
    assert delta == {
        "type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"input_tokens": 30, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 55}}
    assert stop["type"] == "message_stop"
    assert stop["amazon-bedrock-guardrailAction"] == "INTERVENED"
    # Nova split the guardrail-masked answer into 56 blocks; Claude clients get one.
    assert [c["index"] for c in chunks if c["type"] == "content_block_start"] == [0]


CLAUDE_TOOL_STREAM = [
    {"type": "message_start", "message": {
        "id": "msg_bdrk_01", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 50, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 10,
                  "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Weather."}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Checking."}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2,
     "content_block": {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {}}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"city": '}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 40}},
    {"type": "message_stop", INVOCATION_METRICS_KEY: {
        "inputTokenCount": 50, "outputTokenCount": 40, "invocationLatency": 900, "firstByteLatency": 300,
        "cacheReadInputTokenCount": 10, "cacheWriteInputTokenCount": 0}},
]
NOVA_TOOL_STREAM = [
    {"messageStart": {"role": "assistant"}},
    {"contentBlockDelta": {"delta": {"text": "Checking."}, "contentBlockIndex": 0}},
    {"contentBlockStop": {"contentBlockIndex": 0}},
    {"contentBlockStart": {"start": {"toolUse": {"toolUseId": "toolu_01A", "name": "get_weather"}},
                           "contentBlockIndex": 1}},
    {"contentBlockDelta": {"delta": {"toolUse": {"input": '{"city": '}}, "contentBlockIndex": 1}},
    {"contentBlockDelta": {"delta": {"toolUse": {"input": '"Paris"}'}}, "contentBlockIndex": 1}},
    {"contentBlockStop": {"contentBlockIndex": 1}},
    {"messageStop": {"stopReason": "tool_use"}},
    {"metadata": {"usage": {"inputTokens": 50, "outputTokens": 40, "cacheReadInputTokenCount": 10,
                            "cacheWriteInputTokenCount": 0}, "metrics": {}, "trace": {}},
     INVOCATION_METRICS_KEY: CLAUDE_TOOL_STREAM[-1][INVOCATION_METRICS_KEY]},
]


def test_claude_tool_use_stream_to_nova() -> None:
    assert client_chunks(translate("nova", "anthropic", upstream_frames(CLAUDE_TOOL_STREAM))) == NOVA_TOOL_STREAM


def test_nova_tool_use_stream_to_claude_sdk() -> None:
    message = claude_final_message(translate("anthropic", "nova", upstream_frames(NOVA_TOOL_STREAM)))
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.content[1].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert message.content[1].id == "toolu_01A"  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens, message.usage.cache_read_input_tokens) == (
        50, 40, 10)


def test_claude_to_claude_round_trip_through_nova() -> None:
    via_nova = translate("nova", "anthropic", upstream_frames(CLAUDE_TOOL_STREAM))
    message = claude_final_message(translate("anthropic", "nova", via_nova))
    assert [block.type for block in message.content] == ["text", "tool_use"]  # thinking dropped
    assert message.usage.cache_read_input_tokens == 10


def test_exception_frames_pass_through_untouched_and_end_the_stream() -> None:
    frames = frames_of(interaction("openllmetry/test_nova_invoke_stream.yaml").body)
    error = exception_message("modelStreamErrorException", "boom", originalStatusCode=500)
    translator = StreamTranslator("anthropic", "nova", CLAUDE)
    out = translator.feed(b"".join(frames[:5]) + error)
    assert out.endswith(error)
    assert translator.feed(frames[5]) == frames[5]
    assert translator.finish() == b""
    with pytest.raises(APIStatusError, match="modelStreamErrorException"):
        claude_final_message(out)


def test_a_stream_ending_without_its_final_event_is_closed_by_finish() -> None:
    frames = frames_of(interaction("openllmetry/test_nova_invoke_stream.yaml").body)
    translator = StreamTranslator("anthropic", "nova", CLAUDE)
    out = translator.feed(b"".join(frames[:10]))
    closing = translator.finish()
    assert [c["type"] for c in client_chunks(closing)] == ["content_block_stop", "message_delta", "message_stop"]
    message = claude_final_message(out + closing)
    assert message.stop_reason == "end_turn" and message.content[0].text.startswith("On their")  # type: ignore[union-attr]
    assert translator.finish() == b""


def test_nothing_fed_nothing_owed() -> None:
    assert StreamTranslator("anthropic", "nova", CLAUDE).finish() == b""


@pytest.mark.parametrize("family", ["anthropic", "nova", "llama", "titan"])
def test_same_family_passes_bytes_through(family: str) -> None:
    data = interaction("openllmetry/test_nova_invoke_stream.yaml").body
    translator = StreamTranslator(family, family, "m")
    assert translator.feed(data) is data
    assert translator.finish() == b""


@pytest.mark.parametrize(
    "data",
    [
        event_message("chunk", b"not json"),
        event_message("chunk", {"bytes": base64.b64encode(b"[1]").decode()}),
        event_message("chunk", {"other": 1}),
        b"\x00\x00\x00\x10\x00\x00\x00\x00\xde\xad\xbe\xef",  # a bad prelude checksum
    ],
)
def test_undecodable_upstream_raises(data: bytes) -> None:
    with pytest.raises(TranslationError) as caught:
        StreamTranslator("anthropic", "nova", CLAUDE).feed(data)
    assert caught.value.family == "nova"


def test_partial_frames_are_kept_for_the_next_call() -> None:
    data = interaction("dd-trace-py/meta_invoke_stream.yaml").body
    translator = StreamTranslator("nova", "llama", MODEL_IDS["nova"])
    out = b"".join(translator.feed(data[i:i + 50]) for i in range(0, len(data), 50)) + translator.finish()
    assert client_chunks(out) == client_chunks(translate("nova", "llama", data))


def _without_ids(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for chunk in chunks:
        if chunk.get("type") == "message_start":
            chunk["message"].pop("id")
    return chunks


@cache
def _whole_stream(client: str, name: str) -> tuple[list[bytes], list[dict[str, Any]]]:
    frames = frames_of(interaction(name).body)
    return frames, _without_ids(client_chunks(translate(client, RECORDED[name][0], b"".join(frames))))


@pytest.mark.parametrize(
    ("client", "name"),
    [("anthropic", "openllmetry/test_nova_invoke_stream.yaml"), ("llama", "openllmetry/test_nova_invoke_stream.yaml"),
     ("anthropic", "dd-trace-py/meta_invoke_stream.yaml"), ("nova", "dd-trace-py/meta_invoke_stream.yaml"),
     ("nova", "openllmetry/test_anthropic_3_completion_streaming.yaml"),
     ("llama", "openllmetry/test_anthropic_3_completion_streaming.yaml")],
)
@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_any_split_into_whole_frames_gives_the_same_events(client: str, name: str, cuts: list[int]) -> None:
    upstream = RECORDED[name][0]
    frames, expected = _whole_stream(client, name)
    bounds = sorted({0, len(frames), *(cut % (len(frames) + 1) for cut in cuts)})
    translator = StreamTranslator(client, upstream, MODEL_IDS[client])
    out = b"".join(translator.feed(b"".join(frames[a:b])) for a, b in zip(bounds, bounds[1:], strict=False))
    assert _without_ids(client_chunks(out + translator.finish())) == expected


@pytest.mark.parametrize(("client", "upstream"), list(permutations(("anthropic", "nova", "llama"), 2)))
def test_usage_is_carried_for_every_pair(client: str, upstream: str) -> None:
    streams = {
        "anthropic": CLAUDE_TOOL_STREAM[:1] + CLAUDE_TOOL_STREAM[4:7] + [
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
             "usage": {"output_tokens": 40}}, CLAUDE_TOOL_STREAM[-1]],
        "nova": NOVA_TOOL_STREAM[:3] + [{"messageStop": {"stopReason": "end_turn"}}, NOVA_TOOL_STREAM[-1]],
        "llama": [{"generation": "Checking.", "prompt_token_count": 60, "generation_token_count": 1,
                   "stop_reason": None},
                  {"generation": "", "prompt_token_count": None, "generation_token_count": 40, "stop_reason": "stop",
                   INVOCATION_METRICS_KEY: {"inputTokenCount": 60, "outputTokenCount": 40}}],
    }
    expected = Usage(60, 40) if upstream == "llama" else Usage(50, 40, 10, 0)
    if client == "llama":  # no cache in Llama's fields: its prompt count is all input
        expected = Usage(expected.total_tokens - expected.output_tokens, expected.output_tokens)
    chunks = client_chunks(translate(client, upstream, upstream_frames(streams[upstream])))
    usage = None
    for chunk in chunks:
        usage = FAMILIES[client].usage_from_chunk(chunk, usage)
    assert usage == expected
    assert "".join(FAMILIES[client].output_text(chunk) for chunk in chunks) == "Checking."
