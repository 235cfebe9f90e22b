"""A Nova Sonic conversation over InvokeModelWithBidirectionalStream, as an SDK holds it:
HTTP/2, the head signed by botocore's SigV4 for `STREAMING-AWS4-HMAC-SHA256-EVENTS`, each
input event in a signed envelope chained on the head's signature.

The envelopes are made by `proxy.event_signing.ChainSigner`, which tests/proxy/
test_event_signing.py shows byte-identical to the AWS SDK for JavaScript's signer; the
transport is `proxy.h2_upstream.H2Exchange` (an h2 client). The Node SDK test
(tests/e2e/test_node_sdk.py) is the independent client.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer

from adapters.eventstream import encode_message
from proxy.event_signing import ChainSigner, seed_signature
from proxy.h2_upstream import H2Exchange

__all__ = ["Conversation", "Outcome", "chunk", "opened", "speech_turn", "text_turn"]

_CHUNK_HEADERS = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
#: 0.5 s of silent 16 kHz 16-bit mono PCM: 16,000 bytes.
AUDIO = bytes(16000)


def chunk(event: dict[str, Any]) -> bytes:
    """One input message: the event JSON, base64, in a `chunk` frame's `bytes`."""
    data = base64.b64encode(json.dumps({"event": event}).encode()).decode()
    return encode_message(_CHUNK_HEADERS, json.dumps({"bytes": data}).encode())


def _content(prompt: str, kind: str, role: str) -> tuple[str, dict[str, Any]]:
    name = str(uuid.uuid4())
    start: dict[str, Any] = {"promptName": prompt, "contentName": name, "type": kind, "interactive": True,
                             "role": role}
    if kind == "TEXT":
        start["textInputConfiguration"] = {"mediaType": "text/plain"}
    else:
        start["audioInputConfiguration"] = {"mediaType": "audio/lpcm", "sampleRateHertz": 16000,
                                            "sampleSizeBits": 16, "channelCount": 1, "audioType": "SPEECH",
                                            "encoding": "base64"}
    return name, {"contentStart": start}


def text_turn(prompt: str, text: str, role: str = "USER") -> list[bytes]:
    name, start = _content(prompt, "TEXT", role)
    return [chunk(start), chunk({"textInput": {"promptName": prompt, "contentName": name, "content": text}}),
            chunk({"contentEnd": {"promptName": prompt, "contentName": name}})]


def speech_turn(prompt: str, audio: bytes = AUDIO, pieces: int = 2) -> list[bytes]:
    name, start = _content(prompt, "AUDIO", "USER")
    size = -(-len(audio) // pieces)
    parts = [audio[i:i + size] for i in range(0, len(audio), size)]
    return [chunk(start), *(chunk({"audioInput": {"promptName": prompt, "contentName": name,
                                                  "content": base64.b64encode(part).decode()}}) for part in parts),
            chunk({"contentEnd": {"promptName": prompt, "contentName": name}})]


@dataclass
class Outcome:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    #: Output events, `{kind: body}`, in order.
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Exception frames (`:exception-type`, message) and a JSON error body, if any.
    exceptions: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def request_id(self) -> str:
        return self.headers.get("x-amzn-requestid", "")

    def usage_events(self) -> list[dict[str, Any]]:
        return [event["usageEvent"] for event in self.events if "usageEvent" in event]


class Conversation:
    """One stream: `open()`, `say(messages)` then `until(kind)`, `finish()` or `hang_up()`."""

    def __init__(self, url: str, access_key: str, secret: str, model: str, region: str = "us-east-1",
                 extra_headers: dict[str, str] | None = None) -> None:
        self._url = f"{url}/model/{model.replace(':', '%3A')}/invoke-with-bidirectional-stream"
        #: Sent with the head, inside its signature (an `x-costkeeper-tag-*` header, say).
        self._extra_headers = extra_headers or {}
        self._credentials = Credentials(access_key, secret)
        self._region = region
        self._buffer = EventStreamBuffer()
        self.outcome = Outcome()
        self.prompt = str(uuid.uuid4())
        self._exchange: H2Exchange | None = None
        self._signer: ChainSigner | None = None
        self._chunks: Any = None

    async def open(self) -> None:
        request = AWSRequest("POST", self._url, headers={"content-type": "application/vnd.amazon.eventstream",
                                                         "X-Amz-Content-SHA256": "STREAMING-AWS4-HMAC-SHA256-EVENTS",
                                                         **self._extra_headers})
        SigV4Auth(self._credentials, "bedrock", self._region).add_auth(request)
        host = self._url.split("/")[2]
        headers = {"host": host, **{name.lower(): value for name, value in request.headers.items()}}
        self._exchange = await H2Exchange.open(self._url, headers, connect_timeout=10)
        self._signer = ChainSigner(self._credentials, self._region, "bedrock",
                                   seed_signature(request.headers["Authorization"]))
        await self.say([chunk({"sessionStart": {"inferenceConfiguration": {"maxTokens": 1024, "topP": 0.9,
                                                                           "temperature": 0.7}}}),
                        chunk({"promptStart": {"promptName": self.prompt,
                                               "textOutputConfiguration": {"mediaType": "text/plain"}}}),
                        *text_turn(self.prompt, "You are a friendly assistant.", role="SYSTEM")])
        status, raw = await self._exchange.response()
        self.outcome.status = status
        self.outcome.headers = {name.decode(): value.decode() for name, value in raw}
        self._chunks = self._exchange.chunks().__aiter__()

    async def say(self, messages: list[bytes], *, tamper: bool = False) -> None:
        assert self._exchange is not None and self._signer is not None
        for message in messages:
            envelope = self._signer.sign(message)
            if tamper:  # one byte of the payload changed, its CRC recomputed: only the signature tells
                envelope = encode_message({":date": _date_of(envelope), ":chunk-signature": _signature_of(envelope)},
                                          message.replace(b"chunk", b"chonk", 1))
            await self._exchange.send(envelope)

    async def until(self, kind: str) -> dict[str, Any] | None:
        """Read output until an event of `kind` (returned) or the end of the stream (None)."""
        assert self._chunks is not None
        async for data in self._chunks:
            if self.outcome.status != 200:
                self.outcome.body += data
                continue
            self._buffer.add_data(data)
            for message in self._buffer:
                if message.headers.get(":message-type") == "exception":
                    self.outcome.exceptions.append((str(message.headers.get(":exception-type")),
                                                    json.loads(message.payload).get("message", "")))
                    continue
                event = json.loads(base64.b64decode(json.loads(message.payload)["bytes"]))["event"]
                self.outcome.events.append(event)
                if kind in event:
                    return dict(event[kind])
        return None

    async def finish(self) -> Outcome:
        """promptEnd, sessionEnd, the end frame and END_STREAM; then the rest of the output."""
        await self.say([chunk({"promptEnd": {"promptName": self.prompt}}), chunk({"sessionEnd": {}})])
        await self.say([b""])
        assert self._exchange is not None
        await self._exchange.end()
        await self.until("\0")
        self._exchange.close()
        return self.outcome

    def hang_up(self) -> Outcome:
        """Go away mid-stream: the stream is reset (RST_STREAM CANCEL) and the connection closed."""
        assert self._exchange is not None
        self._exchange.close()
        return self.outcome


def _date_of(envelope: bytes) -> Any:
    from datetime import UTC, datetime

    buffer = EventStreamBuffer()
    buffer.add_data(envelope)
    return datetime.fromtimestamp(next(iter(buffer)).headers[":date"] / 1000, UTC)


def _signature_of(envelope: bytes) -> bytes:
    buffer = EventStreamBuffer()
    buffer.add_data(envelope)
    return bytes(next(iter(buffer)).headers[":chunk-signature"])


async def opened(url: str, key: dict[str, str], model: str) -> Outcome:
    """Open a conversation and read what comes before anything is said: a refusal's status
    and body, or a 200 head (the conversation is then finished at once)."""
    conversation = Conversation(url, key["AWS_ACCESS_KEY_ID"], key["AWS_SECRET_ACCESS_KEY"], model)
    await conversation.open()
    if conversation.outcome.status != 200:
        await conversation.until("\0")
        conversation.hang_up()
        return conversation.outcome
    return await conversation.finish()
