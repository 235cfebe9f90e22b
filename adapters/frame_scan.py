"""Read whole event-stream frames for their headers, checking both CRCs, without
decoding what usage does not need.

botocore's `EventStreamBuffer` parses every header of every frame in Python
(about two thirds of a relayed frame's CPU in the proxy, issue #20). Bedrock's
frames of one kind carry the same header bytes (`:event-type`, `:content-type`,
`:message-type`), so the header block is parsed once by botocore's own
`EventStreamHeaderParser` and the result kept by its bytes: the next frame of the
kind costs a dictionary look-up. The prelude and the CRCs are checked as botocore
checks them (same limits, same exceptions), with `binascii.crc32` over the frame (in
place, or for a frame of a few KiB over a copy, cheaper than a memoryview): one CRC over a whole frame, prelude included, stands for both (a flipped byte
anywhere fails it); the prelude's own is checked only where botocore would stop on it
first (a limit broken, a partial frame, a frame that fails). The one frame botocore
refuses and this passes is one written with a wrong prelude CRC and a message CRC
computed over it: no corruption on the way makes one, and the client still refuses it. The payload is not copied: the caller gets its offsets and
slices only the frames it reads.

Correctness is pinned against botocore's decoder (tests/adapters/test_frame_scan.py:
the recordings split at every byte, hypothesis-generated and corrupted streams).

`skip_frames` is the other half (issue #20): most frames of a stream are deltas, which
carry no usage, and all of one kind begin with the same bytes after their prelude (the
header block, and for a Claude delta the start of its payload). It walks a run of them
reading only each prelude's two lengths and comparing those bytes in C: no CRC, no
header parse. Their CRCs are the client's to check (its SDK refuses a corrupt frame);
the proxy checks the frames it reads usage from, so a corrupt byte can hide in a
delta's payload but never change an exact count (a corrupt length sends the walk off
the frame chain, into frames that fail `scan_frames`' checks or a cut stream's estimate).
In a burst that walk was most of the watcher's CPU: `make install` compiles it with
mypyc (adapters/frame_walk.py), and `skip_frames` is that build where it loads
(adapters/compiled.py), else `skip_frames_interpreted`, the same walk tuned for the
interpreter.
"""

from __future__ import annotations

import struct
from binascii import crc32
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from botocore.eventstream import (
    ChecksumMismatch,
    EventStreamHeaderParser,
    InvalidHeadersLength,
    InvalidPayloadLength,
)

from adapters.compiled import load
from adapters.memo import remember

__all__ = ["read_frame", "scan_frames", "skip_frames", "skip_frames_interpreted"]

_PRELUDE = struct.Struct(">III")
_LENGTHS = struct.Struct(">II").unpack_from
_CRC = struct.Struct(">I")
#: botocore's limits (botocore.eventstream `_MAX_HEADERS_LENGTH`, `_MAX_PAYLOAD_LENGTH`).
_MAX_HEADERS = 128 * 1024
_MAX_PAYLOAD = 24 * 1024 * 1024
#: Header blocks kept parsed: Bedrock's streams use a handful; an odd upstream cannot grow it.
_CACHE_ENTRIES = 64
_CACHE_KEY_BYTES = 512
#: Frames up to this size are CRC'd from a copy of their bytes (`read_frame`'s fast path).
_SMALL_FRAME = 4096
_parsed: dict[bytes, Mapping[str, Any]] = {}


def _headers(raw: bytes) -> Mapping[str, Any]:
    headers = _parsed.get(raw)
    if headers is None:
        headers = EventStreamHeaderParser().parse(raw)
        if len(raw) <= _CACHE_KEY_BYTES:
            remember(_parsed, raw, headers, _CACHE_ENTRIES)
    return headers


def scan_frames(data: bytes) -> Iterator[tuple[Mapping[str, Any], int, int]]:
    """For each whole frame in `data`: (its headers, payload start, payload end).

    `data` must be whole frames (adapters.eventstream.FrameSplitter's output); a
    trailing partial frame is ignored. Raises botocore's `ChecksumMismatch`,
    `InvalidHeadersLength` or `InvalidPayloadLength` where its decoder would.
    The headers mapping is shared between frames: read it, do not change it."""
    pos = 0
    while (frame := read_frame(data, pos)) is not None:
        yield frame
        pos = frame[2] + 4


def read_frame(data: bytes, pos: int) -> tuple[Mapping[str, Any], int, int] | None:
    """The frame at `pos` of `data` as `scan_frames` reads it, or None if `data` holds
    only part of it (its prelude checked, as botocore checks it before waiting)."""
    size = len(data)
    if size - pos < 12:
        return None
    total, headers_length, prelude_crc = _PRELUDE.unpack_from(data, pos)
    end = pos + total - 4
    if 16 + headers_length <= total <= _SMALL_FRAME and total <= size - pos:  # (headers in the limit too)
        # The usual frame: whole, in the limits, small enough to CRC a copy of (cheaper than
        # a memoryview's set-up). A CRC that fails is read again below, to raise as botocore.
        if crc32(data[pos:end]) == _CRC.unpack_from(data, end)[0]:
            start = pos + 12 + headers_length
            raw = data[pos + 12 : start]
            return _parsed.get(raw) or _headers(raw), start, end
    with memoryview(data) as view:
        if size - pos < total:
            # A partial frame: botocore checks its prelude, then waits for the rest.
            _check_prelude(view, pos, prelude_crc, headers_length, total)
            return None
        if headers_length > _MAX_HEADERS or total - headers_length - 16 < 0 or total - 16 > _MAX_PAYLOAD:
            _check_prelude(view, pos, prelude_crc, headers_length, total)
        (message_crc,) = _CRC.unpack_from(data, end)
        # One CRC over the whole frame, prelude included, stands for both: a frame
        # whose prelude CRC is wrong fails it too (the prelude's own is checked
        # above where botocore would stop before the message's).
        if crc32(view[pos:end]) != message_crc:  # (unsigned in Python 3)
            _check_prelude(view, pos, prelude_crc, headers_length, total)
            raise ChecksumMismatch(message_crc, crc32(view[pos:end]))
    start = pos + 12 + headers_length
    raw = data[pos + 12 : start]
    return _parsed.get(raw) or _headers(raw), start, end


def skip_frames_interpreted(data: bytes, pos: int, headers_length: int, head: bytes, min_total: int) -> tuple[int, int]:
    """Pass over the whole frames of `data` from `pos` while each has a header block of
    `headers_length` bytes and, after its 12-byte prelude, begins with `head` (at least
    `min_total` bytes long, so that `head` lies inside it). Returns where the walk
    stopped (a frame of another kind, a partial frame, or the end of `data`) and where
    the last frame passed over starts (-1: none). Reads no CRC (see the module's doc)."""
    last, size, starts_with = -1, len(data), data.startswith
    while size - pos >= 12:
        total, length = _LENGTHS(data, pos)
        if length != headers_length or total < min_total or size - pos < total or not starts_with(head, pos + 12):
            break
        last = pos
        pos += total
    return pos, last


_walk = load("adapters.frame_walk")
#: `skip_frames_interpreted`'s walk, compiled where `make install` built it.
skip_frames: Callable[[bytes, int, int, bytes, int], tuple[int, int]] = (
    skip_frames_interpreted if _walk is None else _walk.skip_frames)


def _check_prelude(view: memoryview, pos: int, prelude_crc: int, headers_length: int, total: int) -> None:
    """Raise what botocore raises for the prelude at `pos`, in its order: its CRC, then
    the header and payload limits."""
    computed = crc32(view[pos : pos + 8])
    if computed != prelude_crc:
        raise ChecksumMismatch(prelude_crc, computed)
    if headers_length > _MAX_HEADERS:
        raise InvalidHeadersLength(headers_length)
    payload_length = total - headers_length - 16
    if payload_length > _MAX_PAYLOAD:
        raise InvalidPayloadLength(payload_length)
    if payload_length < 0 and (len(view) - pos) >= total:
        raise InvalidHeadersLength(headers_length)
