"""The watchers against every recorded Bedrock exchange: the usage must be
exactly what Bedrock reported (tests/fixtures/bedrock/MANIFEST.md)."""

from __future__ import annotations

import httpx
import pytest

from adapters.eventstream import event_message, exception_message
from adapters.usage import Usage
from adapters.watch import BodyUsageWatcher, StreamUsageWatcher
from tests.adapters.cassettes import FIXTURES, Interaction, interaction, load


def U(i: int = 0, o: int = 0, cr: int = 0, cw: int = 0) -> Usage:
    return Usage(input_tokens=i, output_tokens=o, cache_read_tokens=cr, cache_write_tokens=cw)


def replay(item: Interaction) -> Usage:
    """Feed a recorded response to the watcher the proxy would use for it."""
    if item.is_event_stream:
        stream = StreamUsageWatcher(item.operation, item.model_id, item.request_body)
        forwarded = stream.feed(item.body)
        assert forwarded == item.body
        assert stream.error is None
        # Every recorded stream ends with Bedrock's own count, but the guardrail-blocked one.
        assert stream.complete is (item.name != "openllmetry/test_guardrail_invoke_stream.yaml#1")
        stream.end()
        return stream.finish()
    body = BodyUsageWatcher(item.operation, item.model_id, item.request_body)
    body.feed(item.body)
    return body.finish(item.status, item.headers)


STREAMS = {
    "openllmetry/test_anthropic_3_completion_streaming.yaml": U(16, 21),
    "openllmetry/test_nova_invoke_stream.yaml": U(30, 55),
    "openllmetry/test_titan_invoke_stream.yaml": U(28, 188),
    # Guardrail-blocked input: no invocationMetrics, only Titan-native floats
    # 6.0 / 3.0 in the one chunk, final because the stream ended whole.
    "openllmetry/test_guardrail_invoke_stream.yaml": U(6, 3),
    "openllmetry/test_guardrail_converse_stream.yaml": U(17, 16),
    "openllmetry/test_meta_converse_stream.yaml": U(52, 36),
    "openllmetry/test_nova_converse_stream.yaml": U(54, 18),
    "dd-trace-py/anthropic_invoke_stream.yaml": U(25, 4),
    "dd-trace-py/anthropic_message_invoke_stream.yaml": U(21, 22),
    "dd-trace-py/amazon_invoke_stream.yaml": U(18, 51),
    "dd-trace-py/meta_invoke_stream.yaml": U(10, 60),
    "dd-trace-py/cohere_invoke_stream_single_output.yaml": U(20, 10),
    "dd-trace-py/bedrock_converse_stream.yaml": U(259, 64),
    "dd-trace-py/bedrock_converse_stream_prompt_caching.yaml#1": U(11, 236, 0, 1028),
    "dd-trace-py/bedrock_converse_stream_prompt_caching.yaml#2": U(12, 250, 1028, 0),
    "pydantic-ai/test_bedrock_model_stream.yaml": U(13, 82),
}

BODIES = {
    "openllmetry/test_guardrail_invoke.yaml": U(28, 197),
    "openllmetry/test_guardrail_converse.yaml": U(17, 17),
    "openllmetry/test_meta_llama3_completion.yaml": U(8, 35),
    "openllmetry/test_cohere_completion.yaml": U(9, 112),
    "openllmetry/test_titan_completion.yaml": U(30, 29),
    "openllmetry/test_prompt_cache.yaml#1": U(4, 50, 0, 18131),
    "openllmetry/test_prompt_cache.yaml#2": U(4, 50, 18131, 0),
    "openllmetry/test_nova_completion.yaml": U(30, 51, 0, 0),
    "openllmetry/test_nova_cross_region_invoke.yaml": U(7, 53, 0, 0),
    "dd-trace-py/bedrock_converse_prompt_caching.yaml#1": U(11, 264, 0, 1028),
    "dd-trace-py/bedrock_converse_prompt_caching.yaml#2": U(12, 185, 1028, 0),
    "dd-trace-py/amazon_invoke_model_arn.yaml": U(18, 50),
    "dd-trace-py/amazon_embedding.yaml": U(3),
    "pydantic-ai/test_bedrock_cache_write_and_read.yaml#1": U(2, 5, 0, 1322),
    "pydantic-ai/test_bedrock_cache_write_and_read.yaml#2": U(2, 5, 1322, 0),
    "pydantic-ai/test_anthropic_cache_bedrock_real_api.yaml#1": U(3, 1944, 9511, 0),
    "pydantic-ai/test_anthropic_cache_bedrock_real_api.yaml#2": U(3, 44, 9511, 1956),
    "pydantic-ai/test_bedrock_model_guardrail_config.yaml": U(13, 69),
    "pydantic-ai/test_bedrock_media_kind_delivered_in_tool_result[mistral_document].yaml#1": U(64, 17),
    "pydantic-ai/test_bedrock_media_kind_delivered_in_tool_result[mistral_document].yaml#2": U(150, 34),
    "pydantic-ai/TestBedrock.test_titan_v2_with_dimensions.yaml": U(4),
    "pydantic-ai/TestBedrock.test_cohere_v4_with_dimensions.yaml": U(3),
}

#: Metered as zero: errors (403, 400 before a stream started) and CountTokens,
#: which is not billed in tokens (its `inputTokens` 375 is an answer, not usage).
ZERO = [
    "dd-trace-py/bedrock_converse_error.yaml",
    "dd-trace-py/meta_invoke_error.yaml",
    "pydantic-ai/test_bedrock_streaming_error.yaml",
    "pydantic-ai/test_bedrock_count_tokens_tool_config.yaml",
]

@pytest.mark.parametrize(("name", "expected"), [*STREAMS.items(), *BODIES.items()])
def test_recorded_usage(name: str, expected: Usage) -> None:
    usage = replay(interaction(name))
    assert usage == expected
    assert not usage.estimated


@pytest.mark.parametrize("name", ZERO)
def test_errors_and_count_tokens_meter_zero(name: str) -> None:
    assert replay(interaction(name)) == Usage()


def test_every_cassette_is_in_a_table() -> None:
    names = {
        item.name
        for path in FIXTURES.glob("*/*.yaml")
        for item in load(str(path.relative_to(FIXTURES)))
    }
    covered = {n if "#" in n else f"{n}#1" for n in [*STREAMS, *BODIES, *ZERO]}
    assert names == covered


@pytest.mark.parametrize(
    "name",
    [
        "openllmetry/test_prompt_cache.yaml#1",
        "openllmetry/test_nova_cross_region_invoke.yaml",
        "pydantic-ai/test_anthropic_cache_bedrock_real_api.yaml#2",
    ],
)
def test_body_is_the_fallback_when_headers_are_missing(name: str) -> None:
    item = interaction(name)
    watcher = BodyUsageWatcher(item.operation, item.model_id, item.request_body)
    watcher.feed(item.body)
    assert watcher.finish(200, {}) == BODIES[name]


@pytest.mark.parametrize("headers_type", [dict, httpx.Headers])
def test_headers_win_over_the_body(headers_type: type) -> None:
    # Guardrail-masked Nova: the body says only inputTokens 30; headers 30/51.
    item = interaction("openllmetry/test_nova_completion.yaml")
    watcher = BodyUsageWatcher(item.operation, item.model_id, item.request_body)
    watcher.feed(item.body)
    lowered = {k.lower(): v for k, v in item.headers.items()}
    assert watcher.finish(200, headers_type(lowered)) == U(30, 51, 0, 0)


def test_cache_counts_come_from_the_body_when_headers_lack_them() -> None:
    item = interaction("openllmetry/test_prompt_cache.yaml#1")
    watcher = BodyUsageWatcher(item.operation, item.model_id, item.request_body)
    watcher.feed(item.body)
    headers = {"X-Amzn-Bedrock-Input-Token-Count": "4", "X-Amzn-Bedrock-Output-Token-Count": "50"}
    assert watcher.finish(200, headers) == U(4, 50, 0, 18131)


@pytest.mark.parametrize("status", [400, 403, 429, 500, 503])
def test_non_2xx_is_zero_even_with_headers(status: int) -> None:
    watcher = BodyUsageWatcher("InvokeModel", "amazon.nova-lite-v1:0", b"{}")
    watcher.feed(b'{"message":"Too many requests"}')
    assert watcher.finish(status, {"x-amzn-bedrock-input-token-count": "9"}) == Usage()


@pytest.mark.parametrize("operation", ["CountTokens", "ApplyGuardrail", "InvokeGuardrailChecks"])
def test_operations_not_billed_in_tokens(operation: str) -> None:
    watcher = BodyUsageWatcher(operation, "anthropic.claude-sonnet-4-20250514-v1:0", b"{}")
    watcher.feed(b'{"inputTokens": 375, "usage": {"inputTokens": 3}}')
    assert watcher.finish(200, {}) == Usage()


@pytest.mark.parametrize(
    ("body", "max_bytes"),
    [
        (b"", 1024),
        (b"not json", 1024),
        (b"[1, 2]", 1024),
        (b'{"usage": "nope", "output": []}', 1024),
        (b'{"usage": {"input_tokens": -3, "output_tokens": "x"}}', 1024),
        (b"[" * 100_000, 1 << 20),
        (b'{"content": [{"text": "' + b"a" * 400 + b'"}]}', 64),
    ],
)
def test_bad_bodies_are_estimated_never_raised(body: bytes, max_bytes: int) -> None:
    request = b'{"messages": [{"role": "user", "content": "' + b"x" * 40 + b'"}]}'
    watcher = BodyUsageWatcher("InvokeModel", "anthropic.claude-3-haiku-20240307-v1:0", request, max_bytes)
    watcher.feed(body)
    usage = watcher.finish(200, {})
    assert usage.estimated
    assert usage.input_tokens == 10


def test_body_copy_stops_at_max_bytes() -> None:
    watcher = BodyUsageWatcher("InvokeModel", "amazon.nova-lite-v1:0", b"{}", max_bytes=10)
    for _ in range(5):
        watcher.feed(b"0123456")
    assert watcher.truncated
    assert watcher.finish(200, {"x-amzn-bedrock-input-token-count": "2"}) == U(2)


# --- streams cut short or ended by an exception frame ------------------------------------


def _frames(name: str) -> list[bytes]:
    """The raw frames of a recorded stream."""
    body = interaction(name).body
    out, pos = [], 0
    while pos < len(body):
        size = int.from_bytes(body[pos : pos + 4], "big")
        out.append(body[pos : pos + size])
        pos += size
    return out


CLAUDE_STREAM = "openllmetry/test_anthropic_3_completion_streaming.yaml"
CONVERSE_STREAM = "pydantic-ai/test_bedrock_model_stream.yaml"


def test_claude_stream_cut_after_message_start_keeps_real_input() -> None:
    item = interaction(CLAUDE_STREAM)
    frames = _frames(CLAUDE_STREAM)
    watcher = StreamUsageWatcher(item.operation, item.model_id, item.request_body)
    cut = b"".join(frames[:10])
    assert watcher.feed(cut + frames[10][:7]) == cut
    assert watcher.pending == 7
    usage = watcher.finish()
    assert not watcher.complete
    assert usage.estimated
    assert usage.input_tokens == 16  # from message_start, not an estimate
    assert usage.output_tokens >= 1


@pytest.mark.parametrize("name", [CLAUDE_STREAM, CONVERSE_STREAM])
def test_exception_frame_ends_the_watch(name: str) -> None:
    item = interaction(name)
    frames = _frames(name)
    watcher = StreamUsageWatcher(item.operation, item.model_id, item.request_body)
    error = exception_message("modelStreamErrorException", "boom", originalStatusCode=500)
    # Anything after the exception frame is forwarded but no longer read.
    data = b"".join(frames[:5]) + error + frames[-1]
    assert watcher.feed(data) == data
    usage = watcher.finish()
    assert watcher.exception_type == "modelStreamErrorException"
    assert watcher.error is None and not watcher.complete
    assert usage.estimated


def test_converse_stream_cut_before_metadata_is_estimated_from_text() -> None:
    item = interaction(CONVERSE_STREAM)
    frames = _frames(CONVERSE_STREAM)
    watcher = StreamUsageWatcher(item.operation, item.model_id, item.request_body)
    watcher.feed(b"".join(frames[:-1]))
    usage = watcher.finish()
    assert usage.estimated and not watcher.complete
    # Request text: "What is the capital of France?" + "You are a helpful chatbot." = 56 bytes.
    assert usage.input_tokens == 14
    assert 60 <= usage.output_tokens <= 120  # Bedrock billed 82


def test_error_frame_with_error_code_header() -> None:
    from adapters.eventstream import encode_message

    frame = encode_message({":message-type": "error", ":error-code": "InternalFailure"}, b"")
    watcher = StreamUsageWatcher("ConverseStream", "amazon.nova-micro-v1:0", b"{}")
    assert watcher.feed(frame) == frame
    assert watcher.exception_type == "InternalFailure"


def test_unknown_stream_events_and_odd_chunks_are_ignored() -> None:
    data = (
        event_message("chunk", {"bytes": "!!not base64!!"})
        + event_message("chunk", {"bytes": "WzEsMl0\u00e9"})  # not ASCII: base64 refuses it
        + event_message("chunk", {"p": "abc"})
        + event_message("chunk", b"not json")
        + event_message("chunk", {"bytes": "WzEsMl0="})  # [1,2]
        + event_message(
            "chunk",
            {"bytes": "eyJhbWF6b24tYmVkcm9jay1pbnZvY2F0aW9uTWV0cmljcyI6eyJpbnB1dFRva2VuQ291bnQiOjUsIm91dHB1dFRva2VuQ291bnQiOjd9fQ=="},
        )
    )
    watcher = StreamUsageWatcher("InvokeModelWithResponseStream", "mistral.mistral-7b-instruct-v0:2", b"{}")
    assert watcher.feed(data) == data
    assert watcher.complete and watcher.finish() == U(5, 7)


def test_stream_watcher_rejects_non_stream_operations() -> None:
    with pytest.raises(ValueError, match="not a streaming operation"):
        StreamUsageWatcher("InvokeModel", "amazon.nova-lite-v1:0", b"{}")


# --- bytes that are not a valid event stream ---------------------------------------------


def test_crc_mismatch_sets_error_and_passes_everything_through() -> None:
    item = interaction(CONVERSE_STREAM)
    frames = _frames(CONVERSE_STREAM)
    bad = bytearray(frames[-1])  # `metadata`, the frame with the usage
    bad[-10] ^= 0x20
    data = b"".join(frames[:-1]) + bytes(bad)
    watcher = StreamUsageWatcher(item.operation, item.model_id, item.request_body)
    forwarded = watcher.feed(data[:500]) + watcher.feed(data[500:])
    assert forwarded == data
    assert watcher.error is not None and watcher.error.startswith("ChecksumMismatch")
    assert not watcher.complete and watcher.finish().estimated
    assert watcher.feed(b"more") == b"more"


@pytest.mark.parametrize("name", [CLAUDE_STREAM, CONVERSE_STREAM])
def test_a_corrupt_delta_is_relayed_unread_and_the_count_stays_bedrocks(name: str) -> None:
    """Deltas of a kind already seen are passed over without their CRC (issue #20): the
    client's SDK refuses the corrupt frame; Bedrock's count, read from a checked frame,
    is still what Bedrock bills."""
    item = interaction(name)
    frames = _frames(name)
    bad = bytearray(frames[5])  # a delta, after others of its kind (frames 2 to 19 in both)
    bad[-10] ^= 0x20
    data = b"".join(frames[:5]) + bytes(bad) + b"".join(frames[6:])
    watcher = StreamUsageWatcher(item.operation, item.model_id, item.request_body)
    assert watcher.feed(data) == data
    assert watcher.error is None and watcher.complete
    assert watcher.finish() == STREAMS[name]


def test_impossible_frame_length_with_a_partial_frame_held() -> None:
    item = interaction(CLAUDE_STREAM)
    frames = _frames(CLAUDE_STREAM)
    garbage = b"\x00\x00\x00\x03" + b"x" * 20  # a frame cannot be 3 bytes long
    watcher = StreamUsageWatcher(item.operation, item.model_id, item.request_body)
    first = watcher.feed(frames[0] + frames[1][:9])
    assert first == frames[0] and watcher.pending == 9
    rest = frames[1][9:] + garbage
    second = watcher.feed(rest)
    assert first + second == frames[0] + frames[1] + garbage
    assert watcher.error is not None and "invalid event-stream frame length" in watcher.error
    assert watcher.pending == 0
    usage = watcher.finish()
    assert usage.estimated and usage.input_tokens == 16  # message_start was read


def test_garbage_after_the_final_usage_keeps_the_real_usage() -> None:
    item = interaction(CONVERSE_STREAM)
    watcher = StreamUsageWatcher(item.operation, item.model_id, item.request_body)
    assert watcher.feed(item.body + b"\x00\x00\x00\x01") == item.body + b"\x00\x00\x00\x01"
    assert watcher.error is not None and watcher.complete
    assert watcher.finish() == STREAMS[CONVERSE_STREAM]
