"""InvokeModelWithBidirectionalStream as Nova Sonic speaks it, over HTTP/2, offline.

    POST /model/{id}/invoke-with-bidirectional-stream   (HTTP/2 only)
      head: SigV4 for `STREAMING-AWS4-HMAC-SHA256-EVENTS` (simulator/auth.py)
      input: signed envelopes, each checked in its chain (proxy/event_signing.py), around
             `chunk` events {"bytes": base64(JSON)}: sessionStart, promptStart,
             contentStart, textInput / audioInput, contentEnd, promptEnd, sessionEnd;
             an empty envelope ends the input
      output: `chunk` events, as the input's come (never after the whole input)

Refused as Bedrock refuses: HTTP/1.1, a model that is not a bidirectional one
(`adapters.bidi`), a bearer key, a bad head signature (403) — each before the 200
head; an input event whose signature does not verify ends the stream with an
exception frame.

The conversation is deterministic so tests can meter exactly: each USER content
(text or audio) that ends (`contentEnd`) is answered with a text content, an audio
content and a `usageEvent` whose `delta` is that turn's tokens and `total` the
session's; `sessionEnd` (or the end of the input) sends `completionEnd` and ends the
stream. Text is one token per 4 characters (rounded up), speech one token per
`AUDIO_BYTES_PER_TOKEN` bytes of 16 kHz 16-bit PCM (25 tokens a second).

Directives in a `textInput`'s content: `[[sim:cut]]` drops the stream after that
turn's usage event (an upstream cut); `[[sim:hold]]` answers that turn and then
sends nothing more until the client ends the session or goes away.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
import uuid
from typing import Any

from botocore.eventstream import EventStreamBuffer
from starlette.types import Receive, Scope, Send

from adapters.bidi import HTTP2_ONLY, NOT_BIDI_MODEL, speaks_bidi
from adapters.eventstream import encode_message
from proxy.errors import BedrockError, ValidationException, stream_error_frame
from proxy.event_signing import EventChainError, envelopes
from simulator.auth import authenticate_stream
from simulator.context import SimState
from simulator.routing import Route
from simulator.wire import SimulatedCut, send_error, stream_headers

__all__ = ["AUDIO_BYTES_PER_TOKEN", "OPERATION", "REPLY_TEXT", "serve"]

OPERATION = "InvokeModelWithBidirectionalStream"
AUDIO_BYTES_PER_TOKEN = 1280
REPLY_TEXT = "Hello from the simulated voice."
#: Bytes of (silent) 24 kHz 16-bit audio in each spoken reply.
_REPLY_AUDIO = 6400
_CHUNK_HEADERS = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}


async def serve(state: SimState, scope: Scope, receive: Receive, send: Send, route: Route, request_id: str,
                record: dict[str, Any]) -> None:
    headers = scope["headers"]
    try:
        if scope.get("http_version") != "2":
            raise ValidationException(HTTP2_ONLY)
        caller = authenticate_stream(state.config, method=scope["method"], raw_path=record["path"],
                                     raw_query=record["query"], headers=headers, record=record)
        if not speaks_bidi(route.model_id or ""):
            raise ValidationException(NOT_BIDI_MODEL)
    except BedrockError as error:
        record["status"], record["error"] = error.status, error.code
        await send_error(send, error, request_id)
        return
    record["status"] = 200
    await send({"type": "http.response.start", "status": 200, "headers": stream_headers(request_id, invoke=False)})
    session = _Session(send, record)
    buffer = EventStreamBuffer()
    try:
        while not session.ended:
            message = await receive()
            if message["type"] == "http.disconnect":
                record["outcome"] = "client gone"
                return
            for envelope in envelopes(buffer, message.get("body", b"")):
                inner = caller.events.open(envelope) if caller.events is not None else bytes(envelope.payload)
                if inner:
                    await session.take(inner)
            if not message.get("more_body", False):
                await session.end()
    except (EventChainError, ValidationException) as exc:
        record["outcome"] = "refused event"
        await send({"type": "http.response.body", "more_body": False,
                    "body": stream_error_frame(ValidationException(str(exc)))})
        return
    finally:
        record["usage"] = session.usage_record()


class _Session:
    """One Nova Sonic session: what the client said, what it was answered, what it used."""

    def __init__(self, send: Send, record: dict[str, Any]) -> None:
        self._send = send
        self._record = record
        self._contents: dict[str, dict[str, Any]] = {}
        self._total = {("input", "speech"): 0, ("input", "text"): 0, ("output", "speech"): 0, ("output", "text"): 0}
        self._ids = {"sessionId": str(uuid.uuid4()), "completionId": str(uuid.uuid4()), "promptName": ""}
        self._started = False
        self._held = False
        self.ended = False

    def usage_record(self) -> dict[str, int]:
        return {f"{direction}_{kind}_tokens": value for (direction, kind), value in self._total.items()}

    async def take(self, message: bytes) -> None:
        event = _event_of(message)
        kind, body = next(iter(event.items()))
        if not isinstance(body, dict):
            body = {}
        if kind == "promptStart":
            self._ids["promptName"] = str(body.get("promptName", ""))
        elif kind == "contentStart":
            self._contents[str(body.get("contentName"))] = {
                "type": body.get("type"), "role": body.get("role"), "text": "", "audio": 0}
        elif kind in ("textInput", "audioInput"):
            content = self._contents.get(str(body.get("contentName")))
            value = body.get("content")
            if content is not None and isinstance(value, str):
                if kind == "textInput":
                    content["text"] += value
                else:
                    try:
                        content["audio"] += len(base64.b64decode(value, validate=True))
                    except binascii.Error:
                        raise ValidationException("audioInput content is not base64.") from None
        elif kind == "contentEnd":
            content = self._contents.pop(str(body.get("contentName")), None)
            if content is not None:
                await self._turn(content)
        elif kind == "sessionEnd":
            await self.end()

    async def _turn(self, content: dict[str, Any]) -> None:
        text_in = _text_tokens(content["text"])
        speech_in = math.ceil(content["audio"] / AUDIO_BYTES_PER_TOKEN)
        delta = {("input", "text"): text_in, ("input", "speech"): speech_in,
                 ("output", "text"): 0, ("output", "speech"): 0}
        if content.get("role") == "USER" and not self._held:
            if not self._started:
                self._started = True
                await self._emit({"completionStart": dict(self._ids)})
            await self._reply()
            delta[("output", "text")] = _text_tokens(REPLY_TEXT)
            delta[("output", "speech")] = math.ceil(_REPLY_AUDIO / AUDIO_BYTES_PER_TOKEN)
        for key, value in delta.items():
            self._total[key] += value
        if any(delta.values()) and not self._held:
            await self._emit({"usageEvent": {**self._ids, "details": {"delta": _nested(delta),
                                                                      "total": _nested(self._total)},
                                             "totalInputTokens": self._sum("input"),
                                             "totalOutputTokens": self._sum("output"),
                                             "totalTokens": self._sum("input") + self._sum("output")}})
        if "[[sim:cut]]" in content["text"]:
            self._record["outcome"] = "cut"
            raise SimulatedCut()
        if "[[sim:hold]]" in content["text"]:
            self._held = True

    async def _reply(self) -> None:
        name = str(uuid.uuid4())
        await self._emit({"contentStart": {**self._ids, "contentId": name, "type": "TEXT", "role": "ASSISTANT",
                                           "additionalModelFields": '{"generationStage":"FINAL"}'}})
        await self._emit({"textOutput": {**self._ids, "contentId": name, "role": "ASSISTANT",
                                         "content": REPLY_TEXT}})
        await self._emit({"contentEnd": {**self._ids, "contentId": name, "type": "TEXT", "stopReason": "PARTIAL_TURN"}})
        name = str(uuid.uuid4())
        await self._emit({"contentStart": {**self._ids, "contentId": name, "type": "AUDIO", "role": "ASSISTANT",
                                           "audioOutputConfiguration": {"mediaType": "audio/lpcm",
                                                                        "sampleRateHertz": 24000, "sampleSizeBits": 16,
                                                                        "channelCount": 1}}})
        await self._emit({"audioOutput": {**self._ids, "contentId": name,
                                          "content": base64.b64encode(bytes(_REPLY_AUDIO)).decode()}})
        await self._emit({"contentEnd": {**self._ids, "contentId": name, "type": "AUDIO", "stopReason": "END_TURN"}})

    async def end(self) -> None:
        """The session is over: `completionEnd`, then the end of the stream."""
        if self.ended:
            return
        self.ended = True
        if self._started:
            await self._emit({"completionEnd": {**self._ids, "stopReason": "END_TURN"}})
        self._record["finished"] = time.time()
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    def _sum(self, direction: str) -> int:
        return sum(value for (side, _), value in self._total.items() if side == direction)

    async def _emit(self, event: dict[str, Any]) -> None:
        data = base64.b64encode(json.dumps({"event": event}, separators=(",", ":")).encode()).decode()
        frame = encode_message(_CHUNK_HEADERS, json.dumps({"bytes": data}, separators=(",", ":")).encode())
        await self._send({"type": "http.response.body", "body": frame, "more_body": True})


def _event_of(message: bytes) -> dict[str, Any]:
    """The input event inside one `chunk` message, or a ValidationException."""
    buffer = EventStreamBuffer()
    buffer.add_data(message)
    try:
        decoded = next(iter(buffer))
        document = json.loads(base64.b64decode(json.loads(decoded.payload)["bytes"], validate=True))
        event = document["event"]
    except (StopIteration, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ValidationException(f"Invalid input event: {type(exc).__name__}") from None
    if not isinstance(event, dict) or len(event) != 1:
        raise ValidationException("Invalid input event: expected one event.")
    return event


def _text_tokens(text: str) -> int:
    return math.ceil(len(text.replace("[[sim:cut]]", "").replace("[[sim:hold]]", "")) / 4)


def _nested(counts: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    return {direction: {"speechTokens": counts[(direction, "speech")], "textTokens": counts[(direction, "text")]}
            for direction in ("input", "output")}
