"""A bidirectional stream refused before its response head (proxy/bidi_relay.py
`_refuse`) is answered as Bedrock answers: status, `x-amzn-ErrorType`, a JSON message."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from proxy.bidi_relay import _SHUTTING_DOWN, _Stream
from tests.proxy.test_bidi_relay_closes_body import _Exchange, _stream
from tests.proxy.test_relay_closes_body import _finalized


class _Silent(_Exchange):
    """An upstream that never answers with a head."""

    async def response(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        await asyncio.Event().wait()
        raise AssertionError


def test_a_shutdown_before_the_head_answers_a_bedrock_shaped_503() -> None:
    """What a refusal before the response head looks like (`_refuse`): status, headers
    and body as Bedrock's."""
    sent: list[dict[str, Any]] = []

    async def main() -> _Stream:
        async def receive() -> dict[str, Any]:
            await asyncio.Event().wait()
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        stream = _stream(_Silent([]), receive, send)
        asyncio.get_running_loop().call_soon(stream.cut)
        await stream.run([])
        return stream

    stream, _ = _finalized(main)
    start, body = sent
    assert start["status"] == stream.status == 503 and body["more_body"] is False
    headers = dict(start["headers"])
    assert headers[b"x-amzn-errortype"].startswith(b"ServiceUnavailableException")
    assert headers[b"content-type"] == b"application/json" and headers[b"x-amzn-requestid"]
    assert int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"]) == {"message": _SHUTTING_DOWN}
