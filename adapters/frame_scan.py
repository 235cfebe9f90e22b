"""Read whole event-stream frames for their headers, checking both CRCs, without
decoding what usage does not need.

botocore's `EventStreamBuffer` parses every header of every frame in Python
(about two thirds of a relayed frame's CPU in the proxy, issue #20). Bedrock's
frames of one kind carry the same header bytes (`:event-type`, `:content-type`,
`:message-type`), so the header block is parsed once by botocore's own
`EventStreamHeaderParser` and the result kept by its bytes: the next frame of the
kind costs a dictionary look-up. The prelude and the CRCs are checked as botocore
checks them (same limits, same exceptions), with `binascii.crc32` over the frame in
place: one CRC over a whole frame, prelude included, stands for both (a flipped byte
anywhere fails it); the prelude's own is checked only where botocore would stop on it
first (a limit broken, a partial frame, a frame that fails). The one frame botocore
refuses and this passes is one written with a wrong prelude CRC and a message CRC
computed over it: no corruption on the way makes one, and the client still refuses it. The payload is not copied: the caller gets its offsets and
slices only the frames it reads.

Correctness is pinned against botocore's decoder (tests/adapters/test_frame_scan.py:
the recordings split at every byte, hypothesis-generated and corrupted streams).
"""

from __future__ import annotations

import struct
from binascii import crc32
from collections.abc import Iterator, Mapping
from typing import Any

from botocore.eventstream import (
    ChecksumMismatch,
    EventStreamHeaderParser,
    InvalidHeadersLength,
    InvalidPayloadLength,
)

__all__ = ["scan_frames"]

_PRELUDE = struct.Struct(">III")
_CRC = struct.Struct(">I")
#: botocore's limits (botocore.eventstream `_MAX_HEADERS_LENGTH`, `_MAX_PAYLOAD_LENGTH`).
_MAX_HEADERS = 128 * 1024
_MAX_PAYLOAD = 24 * 1024 * 1024
#: Header blocks kept parsed: Bedrock's streams use a handful; an odd upstream cannot grow it.
_CACHE_ENTRIES = 64
_CACHE_KEY_BYTES = 512
_parsed: dict[bytes, Mapping[str, Any]] = {}


def _headers(raw: bytes) -> Mapping[str, Any]:
    headers = _parsed.get(raw)
    if headers is None:
        headers = EventStreamHeaderParser().parse(raw)
        if len(raw) <= _CACHE_KEY_BYTES and len(_parsed) < _CACHE_ENTRIES:
            _parsed[raw] = headers
    return headers


def scan_frames(data: bytes) -> Iterator[tuple[Mapping[str, Any], int, int]]:
    """For each whole frame in `data`: (its headers, payload start, payload end).

    `data` must be whole frames (adapters.eventstream.FrameSplitter's output); a
    trailing partial frame is ignored. Raises botocore's `ChecksumMismatch`,
    `InvalidHeadersLength` or `InvalidPayloadLength` where its decoder would.
    The headers mapping is shared between frames: read it, do not change it."""
    view = memoryview(data)
    pos, size = 0, len(data)
    try:
        while size - pos >= 12:
            total, headers_length, prelude_crc = _PRELUDE.unpack_from(data, pos)
            if size - pos < total:
                # A partial frame: botocore checks its prelude, then waits for the rest.
                _check_prelude(view, pos, prelude_crc, headers_length, total)
                return
            end = pos + total - 4
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
            yield _parsed.get(raw) or _headers(raw), start, end
            pos += total
    finally:
        view.release()


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
