"""`adapters.delta_size` (issue #20: a delta's text sized from its bytes, not decoded)
against the decoded text the watcher counted before.

* Generated deltas of every kind the old reader counted, with any text: the size is
  the text's UTF-8 bytes, which for ASCII text is exactly the character count the old
  estimate used (a `\\uXXXX` escape, which Bedrock's recordings never carry, is the one
  spelling that counts more: five bytes).
* Each recorded stream cut after every frame: the watcher's estimate is exactly the old
  text-based one (the recordings' text is ASCII).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import example, given
from hypothesis import strategies as st

from adapters import FAMILIES, converse, family_of
from adapters.delta_size import claude_delta_text_bytes, converse_delta_text_bytes
from adapters.eventstream import event_message
from adapters.watch import StreamUsageWatcher
from bench.upstream import converse_stream_frames, invoke_stream_frames
from tests.adapters.cassettes import interaction
from tests.adapters.strategies import fuzz
from tests.adapters.test_watch import STREAMS

PROPERTY = fuzz(200, deadline=5000)
_COMPACT = {"separators": (",", ":")}


def _converse(delta: dict[str, Any], padding: str | None) -> bytes:
    event: dict[str, Any] = {"contentBlockIndex": 3, "delta": delta}
    if padding is not None:
        event["p"] = padding
    return event_message("contentBlockDelta", json.dumps(event, **_COMPACT).encode())


def _claude(delta: dict[str, Any], index: int, padding: str | None) -> bytes:
    event = {"type": "content_block_delta", "index": index, "delta": delta}
    chunk = {"bytes": base64.b64encode(json.dumps(event, **_COMPACT).encode()).decode()}
    if padding is not None:
        chunk["p"] = padding
    return event_message("chunk", json.dumps(chunk, **_COMPACT).encode())


_paddings = st.none() | st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", max_size=40)
_converse_deltas = st.one_of(
    st.builds(lambda text: {"text": text}, st.text()),
    st.builds(lambda text: {"toolUse": {"input": text}}, st.text()),
    st.builds(lambda text: {"reasoningContent": {"text": text}}, st.text()),
    st.builds(lambda text: {"reasoningContent": {"signature": text}}, st.text()),  # not text: 0
)
_claude_deltas = st.one_of(
    st.builds(lambda text: {"type": "text_delta", "text": text}, st.text()),
    st.builds(lambda text: {"type": "input_json_delta", "partial_json": text}, st.text()),
    st.builds(lambda text: {"type": "thinking_delta", "thinking": text}, st.text()),
    st.builds(lambda text: {"type": "signature_delta", "signature": text}, st.text()),  # not text: 0
)


def _expected(text: str) -> int:
    """One per printable ASCII character or short escape; json.dumps spells the others
    `\\uXXXX` (per UTF-16 unit), five each."""
    return sum(1 if " " <= char <= "~" or char in "\n\r\t\b\f" else 5 * len(char.encode("utf-16-le")) // 2
               for char in text)


def _text(delta: dict[str, Any]) -> str:
    return converse.delta_text(delta)


@PROPERTY
@given(deltas=st.lists(st.tuples(_converse_deltas, _paddings), max_size=5))
@example(deltas=[({"text": 'a "quoted" \\ back\\\\slash\n'}, "abc")])
def test_converse_deltas_are_sized_as_their_text(deltas: list[tuple[dict[str, Any], str | None]]) -> None:
    frames = b"".join(_converse(delta, padding) for delta, padding in deltas)
    assert converse_delta_text_bytes(frames, len(frames)) == sum(_expected(_text(delta)) for delta, _ in deltas)


@PROPERTY
@given(deltas=st.lists(st.tuples(_claude_deltas, st.integers(0, 10**5), _paddings), max_size=5))
def test_claude_deltas_are_sized_as_their_text(deltas: list[tuple[dict[str, Any], int, str | None]]) -> None:
    frames = b"".join(_claude(delta, index, padding) for delta, index, padding in deltas)
    anthropic = FAMILIES["anthropic"]
    expected = sum(_expected(anthropic.output_text({"type": "content_block_delta", "delta": delta}))
                   for delta, _, _ in deltas)
    assert claude_delta_text_bytes(frames, len(frames)) == expected


@PROPERTY
@given(text=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("\n\t\r")))
def test_ascii_text_is_sized_as_its_characters(text: str) -> None:
    """For ASCII the figure is the old one exactly: characters of the decoded text."""
    frames = _converse({"text": text}, "abcdef") + _converse({"text": text}, None)
    assert converse_delta_text_bytes(frames, len(frames)) == 2 * len(text)


def _old_output_chars(name: str, frame_count: int) -> int:
    """What the watcher counted before: the decoded text of the first `frame_count` frames."""
    item = interaction(name)
    buffer = EventStreamBuffer()
    buffer.add_data(item.body)
    family = FAMILIES[family_of(item.model_id)]
    chars = 0
    for _, message in zip(range(frame_count), buffer, strict=False):
        event = json.loads(message.payload)
        if item.operation == "ConverseStream":
            chars += len(converse.output_text(message.headers[":event-type"], event))
        else:
            chars += len(family.output_text(json.loads(base64.b64decode(event["bytes"]))))
    return chars


def _frame_ends(body: bytes) -> list[int]:
    ends, pos = [], 0
    while pos < len(body):
        pos += int.from_bytes(body[pos : pos + 4], "big")
        ends.append(pos)
    return ends


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_a_recorded_stream_cut_after_any_frame_counts_the_old_text(name: str) -> None:
    item = interaction(name)
    for count, end in enumerate(_frame_ends(item.body), start=1):
        watcher = StreamUsageWatcher(item.operation, item.model_id, item.request_body)
        watcher.feed(item.body[:end])
        if watcher.complete:
            break  # Bedrock's own count: nothing is estimated from here on
        assert watcher._output_chars == _old_output_chars(name, count), count


def test_raw_utf8_text_counts_its_bytes() -> None:
    """Text sent as UTF-8 (not escaped) counts its bytes, the estimate's unit: more than
    the characters the old figure counted, which rated "東京" at half a token."""
    event = json.dumps({"contentBlockIndex": 0, "delta": {"text": "東京 é"}, "p": "abc"}, ensure_ascii=False, **_COMPACT)
    frame = event_message("contentBlockDelta", event.encode())
    assert converse_delta_text_bytes(frame, len(frame)) == len("東京 é".encode()) == 9


def test_a_delta_that_is_the_last_chunk_is_decoded_at_the_end() -> None:
    """Deltas are passed over, but the last chunk carries the invocation metrics: should
    an upstream merge them into a delta, the watcher still meters them."""
    metrics = {"inputTokenCount": 7, "outputTokenCount": 9}
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}
    frames = [_claude(delta["delta"], 0, "abc"),
              event_message("chunk", json.dumps({"bytes": base64.b64encode(json.dumps(
                  {**delta, "amazon-bedrock-invocationMetrics": metrics}, **_COMPACT).encode()).decode()}, **_COMPACT).encode())]
    watcher = StreamUsageWatcher("InvokeModelWithResponseStream", "anthropic.claude-3-haiku-20240307-v1:0", b"{}")
    for frame in frames:
        assert watcher.feed(frame) == frame
    watcher.end()
    usage = watcher.finish()
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (7, 9, False)


@pytest.mark.parametrize("operation", ["ConverseStream", "InvokeModelWithResponseStream"])
@pytest.mark.parametrize("per_chunk", [1, 3, 40])
def test_text_sized_in_batches_counts_what_one_pass_counts(operation: str, per_chunk: int) -> None:
    """The watcher keeps small runs of frames (a paced stream's) and sizes them together:
    a 200-frame stream cut before its usage, fed a few frames at a time, counts the text
    of the same stream fed whole."""
    frames = (converse_stream_frames if operation == "ConverseStream" else invoke_stream_frames)(200)[:-3]
    model = "anthropic.claude-3-haiku-20240307-v1:0"
    whole = StreamUsageWatcher(operation, model, b"{}")
    whole.feed(b"".join(frames))
    paced = StreamUsageWatcher(operation, model, b"{}")
    for start in range(0, len(frames), per_chunk):
        paced.feed(b"".join(frames[start : start + per_chunk]))
    assert paced._unsized_bytes <= 4096 and len(paced._unsized) < 32
    assert paced._output_chars == whole._output_chars > 1000
    assert paced.finish() == whole.finish()
