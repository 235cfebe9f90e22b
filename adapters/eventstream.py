"""AWS event-stream framing (`application/vnd.amazon.eventstream`).

Decoding is botocore's job (`botocore.eventstream.EventStreamBuffer` checks
both CRCs; the usage watcher reads the frames that can carry usage with
`adapters.frame_scan`, which checks them the same way, and passes over deltas); this module adds the two things botocore does not have:

* `encode_message` — botocore only decodes, but the simulator and the proxy's
  own in-stream errors must emit frames (layout in BEDROCK_WIRE.md §3.1). Header
  values are strings (type 7, all Bedrock sends), bytes (type 6) or a `datetime`
  (type 8, ms since the epoch): the last two are the `:chunk-signature` and `:date`
  of a signed event-stream envelope (proxy/event_signing.py).
* `FrameSplitter` — cuts a byte stream at frame boundaries, so the proxy
  forwards whole frames only. A stream cut by the upstream can then be ended
  with a well-formed exception frame instead of garbage after a partial frame.
"""

from __future__ import annotations

import json
import struct
from binascii import crc32
from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = [
    "FrameSplitter",
    "encode_header",
    "encode_message",
    "event_message",
    "exception_message",
    "MAX_FRAME_BYTES",
]

_PRELUDE = struct.Struct(">III")
_BYTES_HEADER_TYPE = 6
_STRING_HEADER_TYPE = 7
_TIMESTAMP_HEADER_TYPE = 8
#: botocore's limits: headers ≤ 128 KiB and payload ≤ 24 MiB, plus prelude and CRCs.
MAX_FRAME_BYTES = 128 * 1024 + 24 * 1024 * 1024 + 16


def encode_header(name: str, value: str | bytes | datetime) -> bytes:
    """One header as it is framed: `name_len u8 | name | type u8 | value`."""
    raw_name = name.encode()
    out = struct.pack(">B", len(raw_name)) + raw_name
    if isinstance(value, datetime):
        return out + struct.pack(">Bq", _TIMESTAMP_HEADER_TYPE, round(value.timestamp() * 1000))
    raw_value = value if isinstance(value, bytes) else value.encode()
    kind = _BYTES_HEADER_TYPE if isinstance(value, bytes) else _STRING_HEADER_TYPE
    return out + struct.pack(">BH", kind, len(raw_value)) + raw_value


def encode_message(headers: Mapping[str, str | bytes | datetime], payload: bytes) -> bytes:
    """One event-stream frame (headers in the order given)."""
    raw_headers = b"".join(encode_header(name, value) for name, value in headers.items())
    total = 16 + len(raw_headers) + len(payload)
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", crc32(prelude) & 0xFFFFFFFF)
    body = prelude + raw_headers + payload
    return body + struct.pack(">I", crc32(body) & 0xFFFFFFFF)


def event_message(event_type: str, payload: dict[str, Any] | bytes) -> bytes:
    """An `:message-type event` frame, as Bedrock sends them."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    return encode_message(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        data,
    )


def exception_message(exception_type: str, message: str, **extra: Any) -> bytes:
    """An in-stream error frame; `exception_type` is the lowerCamel union member
    name (e.g. `throttlingException`), which botocore raises as EventStreamError."""
    payload = json.dumps({"message": message, **extra}, separators=(",", ":")).encode()
    return encode_message(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        payload,
    )


class FrameSplitter:
    """Sans-IO: `feed(data)` returns the bytes of every frame completed so far
    and keeps a trailing partial frame for the next call.

    Only the 4-byte total length is read here; checksums and headers are left to
    the decoder (`adapters.frame_scan`, botocore's), which sees exactly the bytes
    this returns.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> bytes:
        if not self._pending:
            try:
                end = self._complete_prefix(data)
            except ValueError:
                self._pending += data  # so that `drain()` returns it: nothing is lost
                raise
            if end == len(data):
                return data
            self._pending += data[end:]
            return data[:end]
        self._pending += data
        end = self._complete_prefix(self._pending)
        out = bytes(self._pending[:end])
        del self._pending[:end]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._pending)

    @property
    def missing(self) -> int:
        """Bytes still to come of the frame held back, once its length is in (else 0)."""
        if len(self._pending) < 4:
            return 0
        return int.from_bytes(self._pending[:4], "big") - len(self._pending)

    def drain(self) -> bytes:
        """Give up splitting: return every byte held back (after a `ValueError`
        from `feed`, that includes the data of the failing call) and empty the buffer."""
        held = bytes(self._pending)
        self._pending.clear()
        return held

    @staticmethod
    def _complete_prefix(data: bytes | bytearray) -> int:
        pos, size = 0, len(data)
        while size - pos >= 4:
            (total,) = struct.unpack_from(">I", data, pos)
            if total < 16 or total > MAX_FRAME_BYTES:
                # Not a frame boundary we understand: stop splitting and let the
                # decoder report the corruption on everything that follows.
                raise ValueError(f"invalid event-stream frame length {total}")
            if size - pos < total:
                break
            pos += total
        return pos
