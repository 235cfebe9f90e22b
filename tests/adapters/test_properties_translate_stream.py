"""Properties of stream translation (issue #9) on hostile upstream streams.

`StreamTranslator.feed` refuses what it cannot read with `TranslationError`
and nothing else; whatever it returns is well-formed event-stream frames of
JSON chunks, the same however the upstream bytes were split. Underneath, each
family's `StreamDecoder` turns any chunk into valid neutral events, and each
`StreamEncoder` turns any neutral events into chunks that carry the usage on.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from botocore.eventstream import EventStreamBuffer
from hypothesis import example, given
from hypothesis import strategies as st

from adapters import FAMILIES
from adapters.eventstream import event_message, exception_message
from adapters.neutral import (
    STOP_REASONS,
    BlockStopped,
    MessageStarted,
    MessageStopped,
    StreamEnded,
    StreamEvent,
    TextDelta,
    ToolInputDelta,
    ToolUseStarted,
    UsageReported,
)
from adapters.translate import StreamTranslator, TranslationError
from adapters.usage import Usage
from tests.adapters.strategies import assert_usage, chunk_seeds, documents, fuzz, sometimes
from tests.adapters.test_properties_eventstream import garbage_frame, pieces
from tests.adapters.test_translate_stream import CLAUDE_TOOL_STREAM, MODEL_IDS, NOVA_TOOL_STREAM

TRANSLATING = ("anthropic", "nova", "llama")
PAIRS = [(client, upstream) for client in TRANSLATING for upstream in TRANSLATING if client != upstream]
chunks = documents([*chunk_seeds(), *CLAUDE_TOOL_STREAM, *NOVA_TOOL_STREAM])
counts = st.one_of(st.none(), st.integers(min_value=0, max_value=10**9))


def assert_event(event: StreamEvent) -> None:
    if isinstance(event, MessageStarted):
        assert_usage(event.usage)
    elif isinstance(event, TextDelta | ToolInputDelta | ToolUseStarted | BlockStopped):
        assert isinstance(event.block, int)
        for text in (getattr(event, name, "") for name in ("text", "partial_json", "id", "name")):
            assert isinstance(text, str)
    elif isinstance(event, MessageStopped):
        assert event.stop_reason in STOP_REASONS and isinstance(event.stop_sequence, str | None)
    elif isinstance(event, UsageReported):
        for count in (event.input_tokens, event.output_tokens, event.cache_read_tokens, event.cache_write_tokens):
            assert count is None or (type(count) is int and count >= 0)
    else:
        assert isinstance(event, StreamEnded)


@fuzz(60)
@given(family=st.sampled_from(TRANSLATING), stream=st.lists(chunks, max_size=5))
def test_decoders_make_valid_events_of_any_chunks(family: str, stream: list[dict[str, Any]]) -> None:
    decoder = FAMILIES[family].StreamDecoder()
    for chunk in stream:
        for event in decoder.decode(chunk):
            assert_event(event)


usages = st.builds(Usage, *[st.integers(min_value=0, max_value=10**9)] * 4)
blocks = st.integers(min_value=-2, max_value=4)
middle_events = st.one_of(
    st.builds(TextDelta, blocks, st.text(max_size=10)),
    st.builds(ToolUseStarted, blocks, st.text(max_size=5), st.text(max_size=5)),
    st.builds(ToolInputDelta, blocks, st.text(max_size=10)),
    st.builds(BlockStopped, blocks),
    st.builds(MessageStopped, st.sampled_from(sorted(STOP_REASONS)), st.one_of(st.none(), st.text(max_size=5))),
    st.builds(UsageReported, counts, counts, counts, counts),
)


@fuzz(120)
@given(
    family=st.sampled_from(TRANSLATING),
    start=st.one_of(st.none(), st.builds(MessageStarted, st.one_of(st.none(), usages))),
    middle=st.lists(middle_events, max_size=12),
    ended=st.booleans(),
)
def test_encoders_carry_the_usage(
    family: str, start: MessageStarted | None, middle: list[StreamEvent], ended: bool
) -> None:
    events = [*([start] if start else []), *middle, *([StreamEnded()] if ended else [])]
    encoder = FAMILIES[family].StreamEncoder(MODEL_IDS[family])
    out = [chunk for event in events for chunk in encoder.encode(event)]
    json.dumps(out)
    if ended:
        assert encoder.encode(StreamEnded()) == []  # nothing after the end
    usage = None
    for chunk in out:
        usage = FAMILIES[family].usage_from_chunk(chunk, usage)
        assert_usage(usage)
    if ended and family != "llama":  # Llama's fields have no cache counts
        expected = (start.usage if start else None) or Usage()
        for event in middle:
            if isinstance(event, UsageReported):
                expected = event.applied_to(expected)
        assert usage == expected


# --- StreamTranslator over bytes ---------------------------------------------------------


def _chunk_frame(chunk: dict[str, Any]) -> bytes:
    return event_message("chunk", {"bytes": base64.b64encode(json.dumps(chunk).encode()).decode()})


odd_frames = st.one_of(
    st.builds(exception_message, st.sampled_from(["throttlingException", "modelStreamErrorException"]), st.text()),
    st.builds(event_message, st.sampled_from(["chunk", "metadata", ""]), st.binary(max_size=40)),
    st.builds(lambda text: event_message("chunk", {"bytes": base64.b64encode(text).decode()}), st.binary(max_size=40)),
    st.builds(garbage_frame, st.binary(max_size=30), st.binary(max_size=30)),
)
frames = sometimes(chunks.map(_chunk_frame), odd_frames, 3)


def _translate(client: str, upstream: str, pieces: list[bytes]) -> bytes | TranslationError:
    translator = StreamTranslator(client, upstream, MODEL_IDS[client])
    try:
        return b"".join(translator.feed(piece) for piece in pieces) + translator.finish()
    except TranslationError as exc:
        assert exc.family == upstream
        return exc


def _frames(data: bytes) -> list[tuple[dict[str, Any], Any]]:
    """Each frame's headers and payload (a chunk's JSON); ids made equal."""
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    out: list[tuple[dict[str, Any], Any]] = []
    for message in buffer:
        payload: Any = message.payload
        try:  # frames after an exception frame pass through as they came
            payload = json.loads(base64.b64decode(json.loads(payload)["bytes"]))
        except (ValueError, KeyError, TypeError, RecursionError):
            pass
        if isinstance(payload, dict) and isinstance(payload.get("message"), dict) and "id" in payload["message"]:
            payload["message"]["id"] = "msg"
        out.append((message.headers, payload))
    return out


_DEEP_CHUNK = event_message("chunk", {"bytes": base64.b64encode(b"[" * 100_000).decode()})


@fuzz(80, deadline=5000)
@given(pair=st.sampled_from(PAIRS), stream=st.lists(frames, max_size=8),
       cuts=st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=10))
@example(pair=("anthropic", "nova"), stream=[_DEEP_CHUNK], cuts=[])  # RecursionError from json.loads
@example(pair=("anthropic", "nova"), stream=[garbage_frame(b"\x01\xff\x07\x00\x00", b"")], cuts=[])  # not UTF-8
@example(pair=("anthropic", "nova"), stream=[garbage_frame(b"\x01a\x0a", b"")], cuts=[])  # header type 10
@example(pair=("anthropic", "nova"), stream=[garbage_frame(b"\x01a\x07\x00", b"")], cuts=[])  # cut header
def test_translator_refuses_with_translation_error_only(
    pair: tuple[str, str], stream: list[bytes], cuts: list[int]
) -> None:
    client, upstream = pair
    data = b"".join(stream)
    whole = _translate(client, upstream, [data])
    split = _translate(client, upstream, pieces(data, cuts))
    if isinstance(whole, bytes):
        assert isinstance(split, bytes)
        assert _frames(split) == _frames(whole)  # however the upstream bytes were cut
    else:
        assert isinstance(split, TranslationError)


@fuzz(100, deadline=5000)
@given(pair=st.sampled_from(PAIRS), noise=st.binary(max_size=300))
def test_translator_on_arbitrary_bytes(pair: tuple[str, str], noise: bytes) -> None:
    out = _translate(*pair, [noise])
    if isinstance(out, bytes):
        _frames(out)
