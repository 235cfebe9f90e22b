"""Bytes on the wire: JSON responses, errors, and the event-stream driver.

Raw ASGI messages, not Starlette responses: a response must be able to stop
half-way (`[[sim:cut]]`: no chunked terminator, or fewer bytes than the
content-length), which only an exception escaping the app achieves with any
ASGI server.

Stream faults strike after `EARLY_EVENTS` frames — enough for a client to
have seen the message start and some text, as with a real mid-stream failure.
"""

from __future__ import annotations

import asyncio
import logging
from base64 import b64encode
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from adapters.eventstream import encode_message, exception_message
from proxy.errors import BedrockError, error_parts
from simulator.context import Call, elapsed_ms
from simulator.control import NO_DIRECTIVES
from simulator.generate import dumps

__all__ = [
    "SimulatedCut",
    "send_error",
    "send_json",
    "run_stream",
    "chunk_frame",
    "converse_frame",
    "stream_headers",
    "EARLY_EVENTS",
    "install_log_filter",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

EARLY_EVENTS = 3
_JSON = b"application/json"
_EVENT_STREAM = b"application/vnd.amazon.eventstream"
_CHUNK_HEADERS = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
_CONVERSE_HEADERS = {
    kind: {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    for kind in ("messageStart", "contentBlockStart", "contentBlockDelta", "contentBlockStop",
                 "messageStop", "metadata")
}
_MODEL_STREAM_ERROR = "The model encountered an error while streaming its response."


class SimulatedCut(Exception):
    """Raised inside a stream to make the server drop the connection."""


class _QuietCut(logging.Filter):
    """uvicorn logs every exception escaping the app with a traceback; a cut
    we asked for is not a bug, so it gets one line at debug level instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], SimulatedCut):
            logger.debug("stream cut on purpose: %s", record.exc_info[1])
            return False
        return True


def install_log_filter() -> None:
    server_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietCut) for f in server_log.filters):
        server_log.addFilter(_QuietCut())


async def send_json(call: Call, body: dict[str, Any], extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    data = dumps(body).encode()
    headers = [
        (b"content-type", _JSON),
        (b"content-length", str(len(data)).encode()),
        (b"x-amzn-requestid", call.request_id.encode()),
        *extra,
    ]
    call.head_sent = True
    call.record["status"] = 200
    await call.send({"type": "http.response.start", "status": 200, "headers": headers})
    if call.directives.cut:
        # The head promised content-length bytes; half of them arrive, then the connection drops.
        await call.send({"type": "http.response.body", "body": data[: len(data) // 2], "more_body": True})
        call.record["outcome"] = "cut"
        raise SimulatedCut(f"[[sim:cut]] in request {call.request_id}")
    await call.send({"type": "http.response.body", "body": data})


async def send_error(send: Any, error: BedrockError, request_id: str) -> None:
    status, headers, body = error_parts(error, request_id)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def stream_headers(request_id: str, *, invoke: bool) -> list[tuple[bytes, bytes]]:
    """No content-length (the server then sends chunked) and no token counts:
    the head goes out before generation (BEDROCK_WIRE.md §1.1)."""
    headers = [(b"content-type", _EVENT_STREAM), (b"x-amzn-requestid", request_id.encode())]
    if invoke:
        headers.append((b"x-amzn-bedrock-content-type", _JSON))
    return headers


def chunk_frame(event: dict[str, Any], padding: str) -> bytes:
    """An InvokeModelWithResponseStream frame: the model-native event, base64, in `bytes`."""
    data = b64encode(dumps(event).encode()).decode()
    return encode_message(_CHUNK_HEADERS, f'{{"bytes":"{data}","p":"{padding}"}}'.encode())


def converse_frame(event: tuple[str, dict[str, Any]]) -> bytes:
    kind, payload = event
    return encode_message(_CONVERSE_HEADERS[kind], dumps(payload).encode())


async def run_stream(
    call: Call,
    headers: list[tuple[bytes, bytes]],
    events: Sequence[T],
    encode: Callable[[T], bytes],
    finalize: Callable[[T, int, int], None],
) -> None:
    """Send `events` as frames, applying chunk delay and stream directives.

    `finalize(last_event, invocation_latency_ms, first_byte_latency_ms)` fills
    the timing fields of the last event just before it is encoded.
    """
    send, directives, record = call.send, call.directives, call.record
    delay = call.state.config.chunk_delay
    last = len(events) - 1
    fault_at = min(EARLY_EVENTS, last) if directives is not NO_DIRECTIVES else -1
    first_byte = 0
    call.head_sent = True
    record["status"] = 200
    record["outcome"] = "streaming"
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for index, event in enumerate(events):
        if index == fault_at:
            if directives.cut:
                # Half a frame, then the connection drops: what a client sees when
                # a TCP connection dies mid-response.
                frame = encode(event)
                await send({"type": "http.response.body", "body": frame[: len(frame) // 2], "more_body": True})
                record["outcome"] = "cut"
                raise SimulatedCut(f"[[sim:cut]] in request {call.request_id}")
            if directives.stream_error:
                frame = exception_message("modelStreamErrorException", _MODEL_STREAM_ERROR,
                                          originalStatusCode=500, originalMessage="Internal server error")
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                record["outcome"] = "stream-error"
                return
            if directives.hold:
                record["outcome"] = "held"
                released = await call.state.gates.wait(directives.hold)
                record["outcome"] = "streaming" if released else "hold-timeout"
        if index == last and index and directives.hold_last:
            record["outcome"] = "held"
            released = await call.state.gates.wait(directives.hold_last)
            record["outcome"] = "streaming" if released else "hold-timeout"
        if index and delay:
            await asyncio.sleep(delay)
        if index == last:
            finalize(event, elapsed_ms(call.started), first_byte)
        await send({"type": "http.response.body", "body": encode(event), "more_body": True})
        if not index:
            first_byte = elapsed_ms(call.started)
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    if record["outcome"] == "streaming":
        record["outcome"] = "ok"
