"""Properties of event-stream framing (issue #9): `adapters.eventstream.FrameSplitter`
and botocore's `EventStreamBuffer` as `adapters.watch` uses them.

Contracts: `FrameSplitter.feed` returns whole frames or raises `ValueError` on
a length no frame has; botocore raises its `ParserError`s, and past the CRCs
also `struct.error`, `UnicodeDecodeError` or `KeyError` on headers it cannot
parse (what `StreamTranslator` maps to `TranslationError`, and `watch` logs).
Neither hangs, and valid frames split anywhere decode as they do unsplit.
`test_watch_properties.py` covers the watcher over recorded streams; here the
frames are synthetic, down to valid CRCs around garbage.
"""

from __future__ import annotations

import struct
from binascii import crc32

import pytest
from botocore.eventstream import EventStreamBuffer, ParserError
from hypothesis import example, given
from hypothesis import strategies as st

from adapters.eventstream import MAX_FRAME_BYTES, FrameSplitter, encode_message
from adapters.watch import StreamUsageWatcher
from tests.adapters.cassettes import interaction
from tests.adapters.strategies import assert_usage, fuzz
from tests.adapters.test_watch import STREAMS

PROPERTY = fuzz(80, deadline=5000)
BOTOCORE_ERRORS = (ParserError, struct.error, UnicodeDecodeError, KeyError)
_RECORDED = [interaction(name) for name in sorted(STREAMS)]

# botocore reads header names of up to 255 bytes and string values of up to 64 KiB.
header_names = st.text(min_size=1, max_size=20).filter(lambda name: len(name.encode()) <= 255)
messages = st.tuples(st.dictionaries(header_names, st.text(max_size=30), max_size=4), st.binary(max_size=100))


def prelude_frame(total: int, headers_length: int, rest: bytes) -> bytes:
    """A prelude with a valid CRC for any lengths, then `rest`; from 16 bytes on,
    the message CRC at `total - 4` is valid too."""
    prelude = struct.pack(">II", total, headers_length)
    data = bytearray(prelude + struct.pack(">I", crc32(prelude)) + rest)
    if 16 <= total <= len(data):
        data[total - 4 : total] = struct.pack(">I", crc32(data[: total - 4]))
    return bytes(data)


def garbage_frame(headers: bytes, payload: bytes) -> bytes:
    """Consistent lengths and valid CRCs around header bytes botocore may not parse."""
    prelude = struct.pack(">II", 16 + len(headers) + len(payload), len(headers))
    body = prelude + struct.pack(">I", crc32(prelude)) + headers + payload
    return body + struct.pack(">I", crc32(body))


valid_frames = st.one_of(
    messages.map(lambda message: encode_message(*message)),
    st.sampled_from([item.body for item in _RECORDED]),
)
hostile_frames = st.one_of(
    valid_frames,
    st.builds(garbage_frame, st.binary(max_size=24), st.binary(max_size=24)),
    st.builds(prelude_frame, st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),
              st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)), st.binary(max_size=64)),
    st.binary(max_size=40),
)
cuts = st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=20)


def pieces(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(point % (len(data) + 1) for point in points)})
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _frame_lengths(data: bytes) -> list[int]:
    lengths, pos = [], 0
    while pos < len(data):
        (total,) = struct.unpack_from(">I", data, pos)
        assert 16 <= total <= MAX_FRAME_BYTES
        lengths.append(total)
        pos += total
    assert pos == len(data)
    return lengths


def _decode(reads: list[bytes]) -> list[tuple[dict[str, object], bytes]]:
    buffer = EventStreamBuffer()
    out: list[tuple[dict[str, object], bytes]] = []
    for piece in reads:
        buffer.add_data(piece)
        out.extend((message.headers, message.payload) for message in buffer)
    return out


@PROPERTY
@given(stream=st.lists(valid_frames, max_size=6), points=cuts)
def test_valid_frames_split_anywhere_come_out_whole_and_decode_the_same(stream: list[bytes], points: list[int]) -> None:
    data = b"".join(stream)
    splitter = FrameSplitter()
    fed = forwarded = 0
    outputs = []
    for piece in pieces(data, points):
        out = splitter.feed(piece)
        fed, forwarded = fed + len(piece), forwarded + len(out)
        assert splitter.pending == fed - forwarded
        _frame_lengths(out)  # whole frames only
        outputs.append(out)
    assert b"".join(outputs) == data and splitter.pending == 0
    assert _decode(pieces(data, points)) == _decode([data]) == _decode(outputs)


@PROPERTY
@given(stream=st.lists(hostile_frames, max_size=6), points=cuts)
@example(stream=[b"\x00\x00\x00\x01"], points=[])
@example(stream=[prelude_frame(0, 0, b"")], points=[])  # botocore: struct.error, not a ParserError
def test_hostile_bytes_raise_only_documented_errors_and_never_hang(stream: list[bytes], points: list[int]) -> None:
    data = b"".join(stream)
    splitter, forwarded = FrameSplitter(), bytearray()
    for piece in pieces(data, points):
        try:
            out = splitter.feed(piece)
        except ValueError:
            # What `watch` relies on: the held-back bytes, the failing call's data
            # included, go out unchanged.
            forwarded += splitter.drain()
            break
        _frame_lengths(out)
        forwarded += out
    assert data.startswith(forwarded)
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    try:
        for count, message in enumerate(buffer):
            assert count < len(data)  # botocore advances on every message: no endless loop
            assert message.prelude.total_length > 0
    except BOTOCORE_ERRORS:
        pass


@pytest.mark.parametrize("data", [b"\x00\x00\x00\x01", encode_message({}, b"x") + b"\x00\x00\x00\x01"])
def test_drain_after_a_value_error_includes_the_failing_call(data: bytes) -> None:
    splitter = FrameSplitter()
    with pytest.raises(ValueError):
        splitter.feed(data)
    assert splitter.drain() == data


@PROPERTY
@given(
    operation=st.sampled_from(["InvokeModelWithResponseStream", "ConverseStream"]),
    stream=st.lists(hostile_frames, max_size=6),
    points=cuts,
)
def test_watcher_survives_garbage_inside_valid_frames(operation: str, stream: list[bytes], points: list[int]) -> None:
    watcher = StreamUsageWatcher(operation, "anthropic.claude-3-haiku-20240307-v1:0", b'{"prompt": "hi"}')
    data = b"".join(stream)
    forwarded = b"".join(watcher.feed(piece) for piece in pieces(data, points))
    assert data.startswith(forwarded) and len(forwarded) + watcher.pending == len(data)
    assert_usage(watcher.finish(), optional=False)
