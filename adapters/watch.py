"""Sans-IO usage watchers on the response path: bytes in, `Usage` out.

The proxy creates one watcher per response, feeds it every chunk it relays,
and calls `finish()` once the response is over (or the client or upstream is
gone). A watcher never raises on what Bedrock sends.

Which figure wins, highest first:

1. a stream's own final count — `amazon-bedrock-invocationMetrics` in the last
   InvokeModelWithResponseStream chunk, the ConverseStream `metadata` event;
2. the `X-Amzn-Bedrock-*-Token-Count` headers (non-streamed InvokeModel);
3. the body or the model-native stream events (the family adapter).

A lower source only fills counts the higher one left at zero (e.g. cache
tokens). Nothing at all → an estimate, flagged `estimated=True`.

Only (1) ends a stream's watch. A family's own counts may come in every chunk
(the AWS chunk schema of Titan lists `totalOutputTextTokenCount` in each; Llama's
`generation_token_count` and Claude's `message_delta` counts are running totals),
so they are final only once the stream has ended whole without (1) — which
Bedrock does when a guardrail blocks the input (openllmetry
`test_guardrail_invoke_stream.yaml`, 2025-02). The proxy says so with `end()`.
A Titan stream metered at its first chunk's running count (4 output tokens of
31) is why (issue #16).

A stream is mostly deltas, and a delta carries no usage, so only the frames that can
are decoded (issue #20): ConverseStream's `metadata`, and a chunk unless it is a
Claude `content_block_delta`, `content_block_start` or `content_block_stop` (told by
their base64's first characters; none has usage or, for an estimate, text Bedrock
sends other than a delta's). A delta (or block start or stop) passed
over is kept until the next chunk and decoded at `finish()` should it be the last —
the chunk that carries `amazon-bedrock-invocationMetrics`. Other families' chunks are
all decoded (Titan's and Llama's carry running counts in every one). The deltas' text,
for an estimate, is sized from their bytes (adapters.delta_size), and not at all once
Bedrock's count is in. A run of frames like the last one passed over (the same header
block, and for Claude the same payload start) is walked unread, CRCs unchecked
(adapters.frame_scan.skip_frames): in a burst, one prelude read per delta.
"""

from __future__ import annotations

import binascii
import functools
import json
import logging
import struct
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from adapters import FAMILIES, converse, family_of
from adapters.delta_size import (
    CLAUDE_PASSED_BASE64,
    claude_delta_text_bytes,
    converse_delta_text_bytes,
)
from adapters.estimate import estimate_output_tokens, estimate_usage, response_text_chars
from adapters.eventstream import MAX_FRAME_BYTES, FrameSplitter
from adapters.frame_scan import read_frame, skip_frames
from adapters.headers import (
    INVOCATION_METRICS_KEY,
    usage_from_headers,
    usage_from_invocation_metrics,
)
from adapters.usage import Usage

__all__ = ["BodyUsageWatcher", "StreamUsageWatcher", "STREAM_OPERATIONS"]

logger = logging.getLogger(__name__)

#: Operations whose non-streamed 2xx body is billed in tokens. CountTokens and
#: ApplyGuardrail (billed per text unit) and every other operation meter zero.
_TOKEN_BILLED_BODIES = frozenset({"InvokeModel", "Converse"})
STREAM_OPERATIONS = frozenset({"InvokeModelWithResponseStream", "ConverseStream"})
#: family → (how the chunk payloads without usage begin, the text bytes of the deltas
#: among them in `frames[:end]`) (adapters.delta_size). Other families' chunks are
#: decoded: Titan's and Llama's carry running counts in every one.
_DELTA_CHUNKS: dict[str, tuple[tuple[bytes, ...], Callable[[bytes, int], int]]] = {
    "anthropic": (CLAUDE_PASSED_BASE64, claude_delta_text_bytes),
}


#: The longest header block a skipped frame kind is kept by (Bedrock's are ~90 bytes).
_SKIP_HEAD_BYTES = 512
#: Frames kept to size their text together (`_size_text`): bytes and runs, at most. An
#: open stream's whole budget is 50 KiB (issue #20; ~30 KiB measured before this).
_UNSIZED_BYTES = 4096
_UNSIZED_RUNS = 32


#: `family_of`, remembered: it runs for every stream (the model ids are the configured ones).
_family_of = functools.lru_cache(maxsize=1024)(family_of)


def _prefer(primary: Usage | None, secondary: Usage | None) -> Usage | None:
    """`primary`, with the counts it left at zero taken from `secondary`."""
    if primary is None or secondary is None:
        return primary or secondary
    if ((primary.input_tokens or not secondary.input_tokens)
            and (primary.output_tokens or not secondary.output_tokens)
            and (primary.cache_read_tokens or not secondary.cache_read_tokens)
            and (primary.cache_write_tokens or not secondary.cache_write_tokens)
            and (primary.estimated or not secondary.estimated)
            and (primary.service_tier is not None or secondary.service_tier is None)
            and (primary.latency is not None or secondary.latency is None)
            and not primary.speech_input_tokens and not primary.speech_output_tokens):
        return primary  # `secondary` fills nothing: the copy below would equal it (a stream's usual end)
    return Usage(
        input_tokens=primary.input_tokens or secondary.input_tokens,
        output_tokens=primary.output_tokens or secondary.output_tokens,
        cache_read_tokens=primary.cache_read_tokens or secondary.cache_read_tokens,
        cache_write_tokens=primary.cache_write_tokens or secondary.cache_write_tokens,
        estimated=primary.estimated or secondary.estimated,
        service_tier=primary.service_tier if primary.service_tier is not None else secondary.service_tier,
        latency=primary.latency if primary.latency is not None else secondary.latency,
    )


#: A frame's first field, its length.
_LENGTH = struct.Struct(">I").unpack_from


def _whole_frames(data: bytes) -> int:
    """Length of the prefix of `data` made of whole frames of a plausible size."""
    pos, size = 0, len(data)
    while size - pos >= 4:
        total = int.from_bytes(data[pos : pos + 4], "big")
        if total < 16 or total > MAX_FRAME_BYTES or size - pos < total:
            break
        pos += total
    return pos


#: The C scanner under `json.loads`: a frame's payload is small, and `json.loads`'
#: own steps around it (encoding detection, the whitespace regex) cost as much again.
_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_WHITESPACE = " \t\n\r"


def _json_object(data: bytes) -> dict[str, Any] | None:
    """`json.loads(data)` if it is an object, else None (what `json.loads` would refuse)."""
    try:
        text = data.decode()
        parsed, end = _scan_json(text, 0)
        if end != len(text) and text[end:].strip(_WHITESPACE):
            parsed = json.loads(data)  # it raises, as it would have
    except (ValueError, StopIteration):
        try:  # leading whitespace, another encoding, an error: `json.loads` says what it is
            parsed = json.loads(data)
        except (ValueError, RecursionError):
            return None
    except RecursionError:
        return None
    return parsed if isinstance(parsed, dict) else None


class BodyUsageWatcher:
    """Non-streamed responses: InvokeModel, Converse, CountTokens, ApplyGuardrail,
    and any error response (a stream operation that failed before streaming)."""

    __slots__ = ("operation", "model_id", "_request_body", "_max_bytes", "_body", "_size")

    def __init__(self, operation: str, model_id: str, request_body: bytes, max_bytes: int = 32 * 1024 * 1024):
        self.operation = operation
        self.model_id = model_id
        self._request_body = request_body
        self._max_bytes = max_bytes
        self._body = bytearray()
        self._size = 0

    def feed(self, data: bytes) -> None:
        """Keep a copy of the body up to `max_bytes`; past that, only its size."""
        self._size += len(data)
        room = self._max_bytes - len(self._body)
        if room > 0:
            self._body += data[:room]

    @property
    def truncated(self) -> bool:
        return self._size > self._max_bytes

    def finish(self, status: int, headers: Mapping[str, str]) -> Usage:
        if not 200 <= status < 300 or self.operation not in _TOKEN_BILLED_BODIES:
            return Usage()
        usage = _prefer(usage_from_headers(headers), self._usage_from_body())
        if usage is not None:
            return usage
        output_chars = self._size if self.truncated else response_text_chars(self._body)
        return estimate_usage(self._request_body, output_chars, self.model_id)

    def _usage_from_body(self) -> Usage | None:
        if self.truncated:
            return None
        body = _json_object(bytes(self._body))
        if body is None:
            return None
        try:
            if self.operation == "Converse":
                return converse.usage_from_response(body)
            return FAMILIES[_family_of(self.model_id)].usage_from_body(body)
        except Exception as exc:  # a meter must not fail the response over an odd body
            logger.warning("could not read usage from a %s body: %r", self.operation, exc)
            return None


class StreamUsageWatcher:
    """InvokeModelWithResponseStream and ConverseStream (2xx event streams).

    `feed` returns the complete frames to forward now and keeps a partial frame
    for the next call, so the proxy only ever sends whole frames. After an
    exception frame the watch ends (frames are still split and returned). If
    the bytes are not a valid event stream, `error` is set and every byte is
    passed through unchanged from then on.

    Only for 2xx `application/vnd.amazon.eventstream` responses: a stream
    operation that fails before streaming answers with a JSON error body, which
    goes to `BodyUsageWatcher` (and meters zero).
    """

    __slots__ = (
        "operation", "model_id", "_request_body", "_family", "_delta_head", "_delta_text_bytes", "_splitter",
        "_final", "_native", "_sized", "_unsized", "_unsized_bytes", "_held", "_watching", "_whole", "complete", "error", "exception_type",
        "_skip", "_hold",
    )

    def __init__(self, operation: str, model_id: str, request_body: bytes):
        if operation not in STREAM_OPERATIONS:
            raise ValueError(f"{operation!r} is not a streaming operation; use BodyUsageWatcher")
        self.operation = operation
        self.model_id = model_id
        self._request_body = request_body
        family = None if operation == "ConverseStream" else _family_of(model_id)
        self._family = None if family is None else FAMILIES[family]
        #: How a chunk that is a delta without usage begins (None: every chunk is decoded),
        #: and the text bytes of those chunks in a run of frames.
        self._delta_head: tuple[bytes, ...] | None = None
        self._delta_text_bytes: Callable[[bytes, int], int] | None = None
        if family is None:
            self._delta_text_bytes = converse_delta_text_bytes
        elif family in _DELTA_CHUNKS:
            self._delta_head, self._delta_text_bytes = _DELTA_CHUNKS[family]
        self._splitter = FrameSplitter()
        #: (header block length, the bytes after the prelude, least frame length) of the
        #: frames last passed over as carrying no usage (`skip_frames`); None: none yet.
        self._skip: tuple[int, bytes, int] | None = None
        #: Whether a delta passed over is held for `finish()` (a family's chunks).
        self._hold = family is not None
        #: The stream's own final count (invocation metrics / `metadata`).
        self._final: Usage | None = None
        #: What the model-native chunks said so far (InvokeModel streams).
        self._native: Usage | None = None
        #: Bytes of generated text seen (characters, for ASCII), for an estimate: those
        #: sized, and the runs of frames not yet sized (`_size_text`).
        self._sized = 0
        self._unsized: list[bytes] = []
        self._unsized_bytes = 0
        #: The last chunk read so far, if it was a delta not decoded: decoded at the end,
        #: should it be the stream's last (the one with the invocation metrics).
        self._held: bytes | None = None
        self._watching = True
        #: The upstream ended the stream cleanly (`end()`): nothing more will come.
        self._whole = False
        #: True once Bedrock's own final count (invocation metrics, `metadata`) was seen.
        self.complete = False
        #: Why the bytes are not a valid event stream, if they are not.
        self.error: str | None = None
        #: `:exception-type` (or `:error-code`) of an in-stream error frame.
        self.exception_type: str | None = None

    @property
    def pending(self) -> int:
        """Bytes of a partial frame held back (never forwarded if the stream ends here)."""
        return self._splitter.pending

    def feed(self, data: bytes) -> bytes:
        if self.error is not None:
            return data
        if not self._watching:
            return self._feed_split(data)
        if self._splitter.pending:
            # The frame the last chunk cut: completed on its own, so the rest is read below.
            need = self._splitter.missing
            if not 0 < need < len(data):
                return self._feed_split(data)
            return self._feed_split(data[:need]) + self.feed(data[need:])
        # The usual chunk: read in place, up to a partial frame (or an impossible length,
        # or the end of the watch), which the splitter takes from there.
        stop = self._decode(data)
        if self.error is not None or stop == len(data):
            return data
        return data[:stop] + self._feed_split(data[stop:])

    def _feed_split(self, data: bytes) -> bytes:
        """Split `data` into whole frames (keeping a partial one) and read them."""
        try:
            frames = self._splitter.feed(data)
        except ValueError as exc:
            # Everything held back, including `data`, goes out unchanged; the
            # whole frames before the bad one may still hold the final usage.
            held = self._splitter.drain()
            if self._watching:
                self._decode(held[: _whole_frames(held)])
            if self.error is None:
                self.error = str(exc)
                logger.warning("stopped reading usage from a %s stream: %s", self.operation, self.error)
            self._watching = False
            return held
        if frames and self._watching:
            self._decode(frames)
            if self.error is not None:
                return frames + self._splitter.drain()
        return frames

    def end(self) -> None:
        """The upstream sent its last byte. If the stream is whole (no partial frame,
        no exception frame, valid framing), the family's own last counts are final
        when Bedrock sent no metrics; a stream not ended this way is estimated."""
        self._whole = self.error is None and self.exception_type is None and self.pending == 0

    def finish(self) -> Usage:
        """Real usage if the stream reported it, else the best estimate (flagged)."""
        if self._held is not None and self._family is not None:
            held, self._held = self._held, None
            self._on_chunk(self._family, held, count_text=False)
        if self.complete and self._final is not None:
            return _prefer(self._final, self._native) or self._final
        seen = self._native
        if self._whole and seen is not None:
            return seen
        if seen is not None and (seen.input_tokens or seen.cache_read_tokens or seen.cache_write_tokens):
            # Cut after Claude's message_start: real input and cache counts,
            # output is at least what was generated before the cut.
            output = max(seen.output_tokens, estimate_output_tokens(self._output_chars))
            return seen.merged(output_tokens=output, estimated=True)
        return estimate_usage(self._request_body, self._output_chars, self.model_id)

    def _decode(self, frames: bytes) -> int:
        """Read the frames of `frames` up to the first partial one or one of an impossible
        length (left to the splitter), the end of the watch, or the end; return where
        it stopped. Only the frames that can carry usage are decoded; a delta is passed
        over (a run of those of the kind last seen by `skip_frames`, unread), and the
        text of all of them is sized in one pass once the loop is done
        (adapters.delta_size), up to `read`, the end of the last frame the watch read."""
        pos, size, read = 0, len(frames), 0
        held: tuple[int, int] | None = None
        try:
            while pos < size:
                skip = self._skip
                if skip is not None:
                    after, last = skip_frames(frames, pos, *skip)
                    if last >= 0:
                        if not self.complete:
                            read = after - 4
                            if self._hold:
                                held = (last + 12 + skip[0], after - 4)
                        # Where the run stopped: the end, a partial frame, or one of another kind,
                        # which the walk would not pass over either (read below, not walked again).
                        pos = after
                if size - pos < 16:  # (no frame is shorter; nor is anything left at the end)
                    break
                (total,) = _LENGTH(frames, pos)
                if not 16 <= total <= MAX_FRAME_BYTES or size - pos < total:
                    break
                frame = read_frame(frames, pos)
                if frame is None:  # (a whole frame: not reached)
                    break
                headers, start, end = frame
                at, pos = pos, end + 4
                message_type = headers.get(":message-type")
                if message_type != "event":
                    # BEDROCK_WIRE.md §2.2: an exception/error frame is the stream's last.
                    self.exception_type = str(
                        headers.get(":exception-type") or headers.get(":error-code") or message_type
                    )
                    self._watching = False
                    break
                if self.complete:
                    continue
                read = end
                if self._family is None:
                    if headers.get(":event-type") == "metadata":  # of the six event types, only it has usage
                        self._on_metadata(frames[start:end])
                    else:
                        self._learn(frames, at, start, b"")
                    continue
                if self._delta_head is not None and frames.startswith(self._delta_head, start, end):
                    held = (start, end)
                    for head in self._delta_head:
                        if frames.startswith(head, start, end):
                            self._learn(frames, at, start, head)
                            break
                    continue
                held = self._held = None
                self._on_chunk(self._family, frames[start:end])
        except Exception as exc:  # botocore: ChecksumMismatch, InvalidHeadersLength, …
            self.error = f"{type(exc).__name__}: {exc}"
            self._watching = False
            logger.warning("stopped reading usage from a %s stream: %s", self.operation, self.error)
        if held is not None:
            self._held = frames[held[0] : held[1]]
        if not self.complete:  # once Bedrock's count is in, text sizes are moot
            self._size_text(frames, read)
        elif self._unsized:
            self._unsized.clear()
            self._unsized_bytes = 0
        return pos

    def _learn(self, frames: bytes, at: int, start: int, payload_head: bytes) -> None:
        """The frame at `at` (payload at `start`) carries no usage: frames that begin with
        the same bytes are passed over unread (`skip_frames`) until one of another kind."""
        headers_length = start - at - 12
        if headers_length <= _SKIP_HEAD_BYTES:
            self._skip = (headers_length, frames[at + 12 : start] + payload_head, 16 + headers_length + len(payload_head))

    @property
    def _output_chars(self) -> int:
        """Bytes of generated text seen (characters, for ASCII), for an estimate."""
        if self._unsized:
            self._size_unsized()
        return self._sized

    def _size_text(self, frames: bytes, end: int) -> None:
        """Count the delta text in `frames[:end]`, whole frames. Small runs (a stream
        paced a frame or a few to a chunk) are kept, a few KiB at most, and sized
        together in one pass: should Bedrock's count come first, never."""
        if not end or self._delta_text_bytes is None:
            return
        if end > _UNSIZED_BYTES:
            self._sized += self._delta_text_bytes(frames, end)
            return
        self._unsized.append(frames[:end] if end < len(frames) else frames)
        self._unsized_bytes += end
        if self._unsized_bytes > _UNSIZED_BYTES or len(self._unsized) >= _UNSIZED_RUNS:
            self._size_unsized()

    def _size_unsized(self) -> None:
        runs = b"".join(self._unsized)
        self._unsized.clear()
        self._unsized_bytes = 0
        if self._delta_text_bytes is not None:
            self._sized += self._delta_text_bytes(runs, len(runs))

    def _on_metadata(self, payload: bytes) -> None:
        event = _json_object(payload)
        usage = converse.usage_from_event("metadata", event) if event is not None else None
        if usage is not None:
            self._final = usage
            self.complete = True

    def _on_chunk(self, family: ModuleType, payload: bytes, count_text: bool = True) -> None:
        outer = _json_object(payload)
        raw = outer.get("bytes") if outer is not None else None
        if not isinstance(raw, str):
            return
        try:  # `base64.b64decode(raw, validate=True)` without its wrapper: a non-ASCII str is a ValueError
            chunk = _json_object(binascii.a2b_base64(raw, strict_mode=True))
        except (binascii.Error, ValueError):
            return
        if chunk is None:
            return
        if count_text:
            self._sized += len(family.output_text(chunk))
        self._native = family.usage_from_chunk(chunk, self._native)
        # (Only the stream's last chunk has them: a look-up, not a read, for the others.)
        metrics = usage_from_invocation_metrics(chunk) if INVOCATION_METRICS_KEY in chunk else None
        if metrics is not None:
            self._final = metrics
            self.complete = True
