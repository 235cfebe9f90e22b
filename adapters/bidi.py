"""InvokeModelWithBidirectionalStream: which models speak it, and the usage its output reports.

The operation is a conversation of event-stream frames both ways (BEDROCK_WIRE.md §1):
each frame an `:event-type chunk` whose payload is `{"bytes": base64(JSON)}`. Nova Sonic,
the models that speak it (speech-to-speech), report their usage in output events
(Amazon Nova user guide, "Output events", read 2026-12-05):

    {"event": {"usageEvent": {"completionId": …, "promptName": …, "sessionId": …,
      "details": {"delta": {"input": {"speechTokens": n, "textTokens": n},
                            "output": {"speechTokens": n, "textTokens": n}},
                  "total": {…the same, for the whole session so far…}},
      "totalInputTokens": n, "totalOutputTokens": n, "totalTokens": n}}}

`total` is cumulative for the session, so the last one seen is the session's usage;
the deltas, summed, are the fallback when no total came. Speech and text tokens are
priced apart (metering/pricing.py `speech_input`, `speech_output`).

Pure: bytes in, `Usage` out. A stream that ended early (a hang-up, a cut) meters what
its usage events reported so far, flagged estimated: input the model had taken and
not yet reported is not in it.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from botocore.eventstream import EventStreamBuffer, ParserError

from adapters.eventstream import FrameSplitter
from adapters.modelid import base_model_id
from adapters.usage import Usage

__all__ = ["BIDI_MODELS", "BidiUsageWatcher", "HTTP2_ONLY", "NOT_BIDI_MODEL", "speaks_bidi"]

#: Base model ids that serve InvokeModelWithBidirectionalStream (Nova Sonic, Nova 2 Sonic;
#: Bedrock model cards, read 2026-12-05). A fallback chain never mixes them with others.
BIDI_MODELS = frozenset({"amazon.nova-sonic-v1:0", "amazon.nova-2-sonic-v1:0"})
_DIRECTIONS = ("input", "output")
#: The refusals of the proxy and the simulator, both ValidationException (400, not retried).
#: Bedrock's own wording is not recorded here: over HTTP/1.1 the AWS SDK for JavaScript's
#: undici test of the operation fails with an unmodelled error (aws/aws-sdk-js-v3#8106,
#: 2026-06-16); these say why.
HTTP2_ONLY = "InvokeModelWithBidirectionalStream is served over HTTP/2 only."
NOT_BIDI_MODEL = "The provided model does not support InvokeModelWithBidirectionalStream."


def speaks_bidi(model_id: str) -> bool:
    """Whether `model_id` (a base id, a profile id, a foundation-model ARN) is a bidirectional model."""
    return base_model_id(model_id) in BIDI_MODELS


class BidiUsageWatcher:
    """Fed the output stream as it is relayed; `usage()` is what it reported so far.

    `feed` returns the bytes of the frames it completed (a partial frame is held back),
    so a relay forwards whole frames only and can end a cut stream with an exception frame."""

    __slots__ = ("_decoder", "_delta", "_splitter", "_total", "events")

    def __init__(self) -> None:
        self._splitter = FrameSplitter()
        self._decoder: EventStreamBuffer | None = EventStreamBuffer()
        self._total: dict[tuple[str, str], int] | None = None
        self._delta: dict[tuple[str, str], int] = {}
        #: Usage events seen.
        self.events = 0

    def feed(self, data: bytes) -> bytes:
        try:
            frames = self._splitter.feed(data)
        except ValueError:
            self._decoder = None  # not framing we understand: relayed as is, metered no further
            return self._splitter.drain()
        if frames and self._decoder is not None:
            self._decoder.add_data(frames)
            try:
                for message in self._decoder:
                    if message.headers.get(":event-type") == "chunk":
                        self._read(message.payload)
            except ParserError:
                self._decoder = None
        return frames

    def _read(self, payload: bytes) -> None:
        try:
            inner = json.loads(base64.b64decode(json.loads(payload)["bytes"], validate=True))
            report = inner["event"]["usageEvent"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            return  # not a usage event
        if not isinstance(report, dict) or not isinstance(report.get("details"), dict):
            return
        self.events += 1
        details = report["details"]
        total = _counts(details.get("total"))
        if total is not None:
            self._total = total
        delta = _counts(details.get("delta"))
        for key, value in (delta or {}).items():
            self._delta[key] = self._delta.get(key, 0) + value

    def usage(self, *, estimated: bool = False) -> Usage:
        counts = self._total if self._total is not None else self._delta

        def count(direction: str, kind: str) -> int:
            return counts.get((direction, kind), 0)

        return Usage(
            input_tokens=count("input", "speechTokens") + count("input", "textTokens"),
            output_tokens=count("output", "speechTokens") + count("output", "textTokens"),
            speech_input_tokens=count("input", "speechTokens"),
            speech_output_tokens=count("output", "speechTokens"),
            estimated=estimated,
        )


def _counts(section: Any) -> dict[tuple[str, str], int] | None:
    """{(direction, kind): tokens} of a `delta` or `total` section; None if it is not one."""
    if not isinstance(section, dict):
        return None
    counts: dict[tuple[str, str], int] = {}
    for direction in _DIRECTIONS:
        part = section.get(direction)
        if not isinstance(part, dict):
            continue
        for kind in ("speechTokens", "textTokens"):
            value = part.get(kind)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                counts[(direction, kind)] = value
    return counts
