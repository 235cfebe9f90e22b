"""A fast, fake Bedrock Runtime upstream for benchmarks only.

Raw asyncio protocol (uvloop when available), HTTP/1.1 keep-alive, no
signature check, precomputed responses:

* ``POST …/converse`` → a fixed Converse JSON body with ``usage``;
* ``POST …/converse-stream`` → N ConverseStream event-stream frames;
* ``POST …/invoke-with-response-stream`` → N ``chunk`` frames (Anthropic
  messages events, base64 in ``bytes``);
* ``GET /health`` → 200.

With ``--frame-interval S`` a stream's frames are written S seconds apart
(a paced stream, like tokens being generated) instead of in one write.

Every response carries ``x-amzn-requestid``. Run: ``python -m bench.upstream --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
from collections import deque
from typing import Any

from adapters.eventstream import event_message

CONVERSE_BODY = json.dumps({
    "output": {"message": {"role": "assistant", "content": [{"text": "Hello from the bench upstream."}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 12, "outputTokens": 7, "totalTokens": 19},
    "metrics": {"latencyMs": 1},
}, separators=(",", ":")).encode()


def converse_stream_frames(frames: int) -> list[bytes]:
    deltas = max(frames - 4, 1)
    events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    events += [("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": f"tok{i} "}})
               for i in range(deltas)]
    events += [("contentBlockStop", {"contentBlockIndex": 0}),
               ("messageStop", {"stopReason": "end_turn"}),
               ("metadata", {"usage": {"inputTokens": 12, "outputTokens": deltas,
                                       "totalTokens": 12 + deltas},
                             "metrics": {"latencyMs": 1}})]
    return [event_message(kind, payload) for kind, payload in events]


def invoke_stream_frames(frames: int) -> list[bytes]:
    deltas = max(frames - 5, 1)
    events: list[dict[str, Any]] = [{
        "type": "message_start",
        "message": {"id": "msg_bench", "type": "message", "role": "assistant", "model": "bench",
                    "content": [], "stop_reason": None, "stop_sequence": None,
                    "usage": {"input_tokens": 12, "output_tokens": 1}},
    }, {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}]
    events += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"tok{i} "}}
               for i in range(deltas)]
    events += [{"type": "content_block_stop", "index": 0},
               {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": deltas}},
               {"type": "message_stop", "amazon-bedrock-invocationMetrics": {
                   "inputTokenCount": 12, "outputTokenCount": deltas,
                   "invocationLatency": 1, "firstByteLatency": 1}}]
    return [
        event_message("chunk", {"bytes": base64.b64encode(json.dumps(e, separators=(",", ":")).encode()).decode()})
        for e in events]


def _response(body: bytes, content_type: str, extra: str = "") -> bytes:
    return b"".join(_paced(_head(len(body), content_type, extra), [body]))


def _head(length: int, content_type: str, extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"
            f"x-amzn-requestid: {_REQUEST_ID.decode()}\r\n{extra}\r\n").encode()


def _paced(head: bytes, frames: list[bytes]) -> list[bytes]:
    """The response as separate writes: head + first frame, then one frame per write."""
    return [head + frames[0], *frames[1:]]


def _stream(frames: list[bytes], extra: str, paced: bool) -> list[bytes]:
    parts = _paced(_head(sum(map(len, frames)), "application/vnd.amazon.eventstream", extra), frames)
    return parts if paced else [b"".join(parts)]


_REQUEST_ID = b"00000000-0000-4000-8000-000000000000"
_served = itertools.count(1)


def _with_request_id(first_write: bytes) -> bytes:
    """A request id of its own for each response, as Bedrock gives: the proxy's
    store keeps one usage row per request id, so a shared one would leave its
    table (and its writes) at one row."""
    return first_write.replace(_REQUEST_ID, b"00000000-0000-4000-8000-%012d" % next(_served), 1)


class Responses:
    """Each response as the list of writes that make it (one write unless paced)."""

    def __init__(self, frames: int, paced: bool = False) -> None:
        self.converse = [_response(CONVERSE_BODY, "application/json")]
        self.converse_stream = _stream(converse_stream_frames(frames), "", paced)
        self.invoke_stream = _stream(invoke_stream_frames(frames),
                                     "X-Amzn-Bedrock-Content-Type: application/json\r\n", paced)
        self.ok = [_response(b"{}", "application/json")]
        self.not_found = [b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 2\r\nx-amzn-requestid: 0\r\n\r\n{}"]

    def pick(self, path: bytes) -> list[bytes]:
        path = path.split(b"?", 1)[0]
        if path.endswith(b"/converse"):
            return self.converse
        if path.endswith(b"/converse-stream"):
            return self.converse_stream
        if path.endswith(b"/invoke-with-response-stream"):
            return self.invoke_stream
        if path == b"/health":
            return self.ok
        return self.not_found


class UpstreamProtocol(asyncio.Protocol):
    """Answers each request with its precomputed writes, in order. With an
    interval, the writes of a paced stream go out `interval` seconds apart
    (frame by frame, like a model generating tokens), so time to first byte
    can be told apart from the cost of the whole stream."""

    def __init__(self, responses: Responses, interval: float = 0.0) -> None:
        self.responses = responses
        self.interval = interval
        self.buffer = b""
        self.transport: Any = None
        self.writes: deque[bytes] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transport is not an asyncio.Transport subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.writes.clear()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buffer[:end]
            length = 0
            lower = head.lower()
            pos = lower.find(b"\r\ncontent-length:")
            if pos >= 0:
                stop = lower.find(b"\r\n", pos + 2)
                length = int(lower[pos + 17: stop if stop >= 0 else len(lower)])
            total = end + 4 + length
            if len(self.buffer) < total:
                break
            path = head.split(b" ", 2)[1]
            self.buffer = self.buffer[total:]
            writes = self.responses.pick(path)
            self.writes.append(_with_request_id(writes[0]))
            self.writes.extend(writes[1:])
        if self.timer is None:
            self._pump()

    def _pump(self) -> None:
        """Write what is due: everything at once unless paced (one write per tick)."""
        self.timer = None
        if not self.writes or self.transport.is_closing():
            return
        if self.interval <= 0:
            self.transport.write(b"".join(self.writes))
            self.writes.clear()
            return
        self.transport.write(self.writes.popleft())
        if self.writes:
            self.timer = asyncio.get_running_loop().call_later(self.interval, self._pump)


async def serve(host: str, port: int, frames: int, interval: float = 0.0) -> None:
    responses = Responses(frames, paced=interval > 0)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: UpstreamProtocol(responses, interval), host, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--frames", type=int, default=200, help="event-stream frames per stream")
    parser.add_argument("--frame-interval", type=float, default=0.0,
                        help="seconds between two frames of a stream (0: the whole stream in one write)")
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port, args.frames, args.frame_interval))


if __name__ == "__main__":
    main()
