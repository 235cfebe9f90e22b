"""`adapters.frame_scan` (issue #20: frames read for their headers, payloads sliced only
where usage is) against botocore's `EventStreamBuffer`, which it replaces in the watcher.

* The recorded streams split at every byte boundary: feeding any frame in two pieces
  leaves the watcher exactly as feeding it whole (so, frame by frame, the whole stream
  split anywhere meters what it meters whole), and fed one byte at a time each stream
  still meters exactly what Bedrock reported.
* Hypothesis-generated frame streams, with headers of every type and corrupted bytes:
  the same messages as botocore's decoder, and an error where it raises one.

The tests that walk deltas run with each implementation of the walk (tests/adapters/walks.py):
the interpreter's and the compiled one (or its source, where it is not built).
"""

from __future__ import annotations

import copy
import json
import struct
import uuid
from binascii import crc32
from typing import Any
from unittest.mock import patch

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import assume, example, given
from hypothesis import strategies as st

from adapters import frame_scan
from adapters.frame_scan import scan_frames
from adapters.watch import StreamUsageWatcher, _json_object
from tests.adapters.cassettes import Interaction, interaction
from tests.adapters.strategies import fuzz
from tests.adapters.test_watch import STREAMS
from tests.adapters.walks import WALKS, Walk

PROPERTY = fuzz(200, deadline=5000)
_RECORDED = sorted(STREAMS)


def _frames(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        out.append(data[pos : pos + size])
        pos += size
    return out


def _watcher(item: Interaction) -> StreamUsageWatcher:
    return StreamUsageWatcher(item.operation, item.model_id, item.request_body)


def _state(watcher: StreamUsageWatcher) -> tuple[Any, ...]:
    """Everything a watcher carries from one frame to the next."""
    return tuple(getattr(watcher, name) for name in (
        "_final", "_native", "_output_chars", "_held", "_watching", "_whole", "complete", "error", "exception_type",
        "pending"))


def _clone(watcher: StreamUsageWatcher) -> StreamUsageWatcher:
    return copy.deepcopy(watcher, {id(watcher._family): watcher._family})


@pytest.fixture(params=sorted(WALKS))
def walk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Walk:
    """The watcher walks deltas with each implementation in turn."""
    monkeypatch.setattr("adapters.watch.skip_frames", WALKS[request.param])
    return WALKS[request.param]


@pytest.mark.parametrize("name", _RECORDED)
def test_every_frame_split_at_every_byte_leaves_the_watcher_as_whole(name: str, walk: Walk) -> None:
    item = interaction(name)
    watcher = _watcher(item)
    for frame in _frames(item.body):
        whole = _clone(watcher)
        assert whole.feed(frame) == frame
        for cut in range(1, len(frame)):
            split = _clone(watcher)
            assert split.feed(frame[:cut]) + split.feed(frame[cut:]) == frame
            assert _state(split) == _state(whole), cut
        watcher = whole
    watcher.end()
    assert watcher.finish() == STREAMS[name]


@pytest.mark.parametrize("name", _RECORDED)
def test_a_recorded_stream_fed_byte_by_byte_meters_what_bedrock_reported(name: str, walk: Walk) -> None:
    item = interaction(name)
    watcher = _watcher(item)
    forwarded = b"".join(watcher.feed(item.body[i : i + 1]) for i in range(len(item.body)))
    assert forwarded == item.body and watcher.error is None
    watcher.end()
    assert watcher.finish() == STREAMS[name]


# --- generated frames against botocore's decoder ----------------------------------------

def _header(name: str, kind: int, value: Any) -> bytes:
    """One header in the wire layout of every type botocore reads (BEDROCK_WIRE.md §3.1)."""
    raw = bytes([len(name.encode())]) + name.encode() + bytes([kind])
    if kind in (0, 1):  # true, false
        return raw
    fixed = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}
    if kind in fixed:
        return raw + struct.pack(fixed[kind], value)
    if kind == 9:
        return raw + value
    data = value if kind == 6 else value.encode()
    return raw + struct.pack(">H", len(data)) + data


_names = st.text(min_size=1, max_size=12).filter(lambda name: len(name.encode()) <= 255)
_headers = st.one_of(
    st.tuples(_names, st.sampled_from([0, 1]), st.none()),
    st.tuples(_names, st.just(2), st.integers(-(2**7), 2**7 - 1)),
    st.tuples(_names, st.just(3), st.integers(-(2**15), 2**15 - 1)),
    st.tuples(_names, st.just(4), st.integers(-(2**31), 2**31 - 1)),
    st.tuples(_names, st.sampled_from([5, 8]), st.integers(-(2**63), 2**63 - 1)),
    st.tuples(_names, st.just(6), st.binary(max_size=20)),
    st.tuples(_names, st.just(7), st.text(max_size=20)),
    st.tuples(_names, st.just(9), st.builds(lambda: uuid.uuid4().bytes)),
    st.tuples(st.sampled_from([":message-type", ":event-type", ":content-type"]), st.just(7),
              st.sampled_from(["event", "exception", "chunk", "metadata", "application/json"])),
)


def _frame(headers: list[tuple[str, int, Any]], payload: bytes) -> bytes:
    raw = b"".join(_header(*header) for header in headers)
    prelude = struct.pack(">II", 16 + len(raw) + len(payload), len(raw))
    body = prelude + struct.pack(">I", crc32(prelude)) + raw + payload
    return body + struct.pack(">I", crc32(body))


_streams = st.lists(st.builds(_frame, st.lists(_headers, max_size=4), st.binary(max_size=60)), max_size=5).map(
    b"".join)


def _botocore(data: bytes) -> tuple[list[tuple[dict[str, Any], bytes]], str | None]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    out: list[tuple[dict[str, Any], bytes]] = []
    try:
        out.extend((message.headers, message.payload) for message in buffer)
    except Exception as exc:
        return out, type(exc).__name__
    return out, None


def _scanned(data: bytes) -> tuple[list[tuple[dict[str, Any], bytes]], str | None]:
    out: list[tuple[dict[str, Any], bytes]] = []
    try:
        out.extend((dict(headers), data[start:end]) for headers, start, end in scan_frames(data))
    except Exception as exc:
        return out, type(exc).__name__
    return out, None


#: `read_frame` CRCs a small frame from a copy of its bytes, a larger one in place: each
#: property runs with every frame on either path.
_FRAME_PATHS = pytest.mark.parametrize("small_frame", [0, 1 << 20], ids=["in place", "copied"])


@_FRAME_PATHS
@PROPERTY
@given(data=_streams)
def test_generated_streams_decode_as_botocore_decodes_them(data: bytes, small_frame: int) -> None:
    with patch.object(frame_scan, "_SMALL_FRAME", small_frame):
        assert _scanned(data) == _botocore(data)


@_FRAME_PATHS
@PROPERTY
@given(data=_streams.filter(bool), where=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
@example(data=_frame([(":message-type", 7, "event")], b"{}"), where=0, flip=0x80)  # an impossible length
@example(data=_frame([(":message-type", 7, "event")], b"{}"), where=5, flip=0x01)  # headers past the frame
@example(data=_frame([(":message-type", 7, "event")], b"{}"), where=8, flip=0x01)  # the prelude's CRC
def test_a_corrupted_byte_fails_as_botocore_fails(data: bytes, where: int, flip: int, small_frame: int) -> None:
    corrupt = bytearray(data)
    corrupt[where % len(data)] ^= flip
    with patch.object(frame_scan, "_SMALL_FRAME", small_frame):
        scanned = _scanned(bytes(corrupt))
    botocore = _botocore(bytes(corrupt))
    assert scanned[0] == botocore[0]
    assert (scanned[1] is None) == (botocore[1] is None), (scanned, botocore)


# --- the payload's JSON ------------------------------------------------------------------

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                     lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children,
                                                                                       max_size=3), max_leaves=8)


def _reference(data: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


@PROPERTY
@given(document=_json, before=st.sampled_from(["", " ", "\n"]), after=st.sampled_from(["", " \r\n", "x", "}", "\x00"]))
@example(document={}, before="\ufeff", after="")
def test_json_object_reads_what_json_loads_reads(document: Any, before: str, after: str) -> None:
    for data in ((before + json.dumps(document) + after).encode(), json.dumps(document).encode("utf-16")):
        assert _json_object(data) == _reference(data)


@PROPERTY
@given(data=st.binary(max_size=40))
def test_json_object_on_any_bytes_is_json_loads(data: bytes) -> None:
    assert _json_object(data) == _reference(data)


# --- runs of frames passed over unread ---------------------------------------------------

_kinds = st.lists(st.tuples(st.lists(_headers, max_size=3), st.binary(max_size=6)), min_size=1, max_size=3)


@pytest.mark.parametrize("skip_frames", WALKS.values(), ids=list(WALKS))
@PROPERTY
@given(kinds=_kinds, picks=st.lists(st.tuples(st.integers(0, 2), st.binary(max_size=20)), min_size=1, max_size=8),
       cut=st.integers(min_value=0))
def test_skip_frames_passes_over_the_run_of_one_kind_as_botocore_reads_it(
    skip_frames: Walk, kinds: list[tuple[list[tuple[str, int, Any]], bytes]], picks: list[tuple[int, bytes]], cut: int
) -> None:
    """Frames of the first frame's kind (its header bytes, its payload's first bytes) are
    passed over up to the first of another kind or a partial frame; botocore reads each
    frame passed over with the first's headers and payload start."""
    chosen = [(kinds[index % len(kinds)], tail) for index, tail in picks]
    frames = [_frame(headers, prefix + tail) for (headers, prefix), tail in chosen]
    data = b"".join(frames)
    data = data[: len(data) - cut % (len(frames[-1]) + 1)]  # perhaps a partial last frame
    assume(_botocore(frames[0])[1] is None)  # a kind is learned from a frame botocore reads
    (_, prefix), _ = chosen[0]
    headers_length = int.from_bytes(frames[0][4:8], "big")
    head = frames[0][12 : 12 + headers_length] + prefix
    after, last = skip_frames(data, 0, headers_length, head, 16 + len(head))
    reference, reference_last, passed = 0, -1, 0
    for frame in frames:
        if (reference + len(frame) > len(data) or len(frame) < 16 + len(head) or frame[4:8] != frames[0][4:8]
                or not frame[12:].startswith(head)):
            break
        reference_last, reference, passed = reference, reference + len(frame), passed + 1
    assert (after, last) == (reference, reference_last)
    decoded, error = _botocore(data[:after])
    assert error is None and len(decoded) == passed
    assert all(message == decoded[0][0] and payload.startswith(prefix) for message, payload in decoded)
