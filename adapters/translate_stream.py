"""Sans-IO translation of an InvokeModelWithResponseStream body to the client's family.

Upstream `chunk` frames (target family) are decoded with botocore's
`EventStreamBuffer`, turned into neutral events by the target's
`StreamDecoder`, into client chunks by the source's `StreamEncoder`, and framed
again with `adapters.eventstream.event_message` (without the `p` padding,
which parsers ignore; BEDROCK_WIRE.md §3.2).

* Top-level `amazon-bedrock-*` keys of an upstream chunk (invocation metrics,
  guardrail action, trace) go onto the last client chunk made from it, or the
  next one made at all: the invocation metrics of the upstream's last chunk end
  up on the client's last chunk, where botocore users and the meter read them.
* Exception frames pass through untouched and end the translation: nothing is
  appended after them.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from types import ModuleType
from typing import Any

from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from adapters import FAMILIES
from adapters.eventstream import event_message
from adapters.neutral import StreamEnded, TranslationError

__all__ = ["StreamTranslator", "TRANSLATION_INTERFACE", "translator_of"]

#: What a family module defines to take part in translation (see `adapters.neutral`).
TRANSLATION_INTERFACE = (
    "request_to_neutral", "request_from_neutral", "response_to_neutral", "response_from_neutral",
    "StreamDecoder", "StreamEncoder",
)


def translator_of(family: str) -> ModuleType:
    """The family's module if it implements `TRANSLATION_INTERFACE`, else `TranslationError`."""
    module = FAMILIES.get(family)
    if module is None or not all(hasattr(module, name) for name in TRANSLATION_INTERFACE):
        raise TranslationError(family, "family", "no translation to or from this family")
    return module


class StreamTranslator:
    """`feed(frames) -> frames` per upstream read, `finish() -> frames` at the end.

    Whole frames are expected, but a partial frame is kept for the next call.
    Same-family streams pass through as they are. Bytes that are not an event
    stream of JSON chunks raise `TranslationError`, and nothing else does.
    """

    def __init__(self, source_family: str, target_family: str, requested_model_id: str):
        self._identity = source_family == target_family
        self._target = target_family
        self._buffer = EventStreamBuffer()
        self._raw = bytearray()
        self._bedrock_fields: dict[str, Any] = {}
        self._started = False
        self._closed = False  # an exception frame went through
        if not self._identity:
            self._decoder = translator_of(target_family).StreamDecoder()
            self._encoder = translator_of(source_family).StreamEncoder(requested_model_id)

    def feed(self, frames: bytes) -> bytes:
        if self._identity:
            return frames
        self._raw += frames
        self._buffer.add_data(frames)
        out = bytearray()
        while (message := self._next_message()) is not None:
            total = message.prelude.total_length
            frame = bytes(self._raw[:total])
            del self._raw[:total]
            out += self._on_frame(frame, message)
        return bytes(out)

    def finish(self) -> bytes:
        """The closing events if the upstream ended without its own (or nothing)."""
        if self._identity or self._closed or not self._started:
            return b""
        return self._framed(self._encoder.encode(StreamEnded()), {})

    def _next_message(self) -> EventStreamMessage | None:
        try:
            return next(self._buffer, None)
        except (ParserError, struct.error, UnicodeDecodeError, KeyError) as exc:
            # Past the CRCs, botocore's header parser fails in its own ways on
            # headers that are cut short, not UTF-8 or of an unknown type.
            raise TranslationError(self._target, "stream", f"invalid event stream: {exc!r}") from exc

    def _on_frame(self, frame: bytes, message: EventStreamMessage) -> bytes:
        headers = message.headers
        if headers.get(":message-type") != "event":
            self._closed = True  # BEDROCK_WIRE.md §2.2: the stream's last frame
            return frame
        if self._closed or headers.get(":event-type") != "chunk":
            return frame
        chunk = self._chunk(message.payload)
        self._started = True
        fields = {key: value for key, value in chunk.items() if key.startswith("amazon-bedrock-")}
        events = self._decoder.decode(chunk)
        return self._framed([out for event in events for out in self._encoder.encode(event)], fields)

    def _chunk(self, payload: bytes) -> dict[str, Any]:
        try:
            chunk = json.loads(base64.b64decode(json.loads(payload)["bytes"], validate=True))
        except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as exc:
            raise TranslationError(self._target, "stream chunk", f"not a JSON chunk: {exc!r}") from exc
        if not isinstance(chunk, dict):
            raise TranslationError(self._target, "stream chunk", "not a JSON object")
        return chunk

    def _framed(self, chunks: list[dict[str, Any]], fields: dict[str, Any]) -> bytes:
        self._bedrock_fields.update(fields)
        if chunks and self._bedrock_fields:
            chunks[-1] = {**chunks[-1], **self._bedrock_fields}
            self._bedrock_fields = {}
        return b"".join(
            event_message("chunk", {"bytes": base64.b64encode(json.dumps(chunk, separators=(",", ":")).encode()).decode()})
            for chunk in chunks
        )
