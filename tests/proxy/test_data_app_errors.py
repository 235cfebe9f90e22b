"""What the data port answers when the handler fails in a way it did not foresee
(proxy/data_app.py): a Bedrock-shaped 500 if the response has not started, nothing
more if it has (the server drops the connection)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from proxy.data_app import DataApp


async def _nothing() -> None:
    pass


def _serve(handler: Any, send: Any) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    app = DataApp(handler, _nothing, _nothing)
    asyncio.run(app({"type": "http", "path": "/model/m/converse"}, receive, send))


def test_a_failure_before_the_response_is_a_bedrock_shaped_500(caplog: pytest.LogCaptureFixture) -> None:
    sent: list[dict[str, Any]] = []

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError("a bug")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with caplog.at_level(logging.ERROR, logger="proxy.data_app"):
        _serve(handler, send)
    start, body = sent
    assert start["status"] == 500 and body["more_body"] is False
    headers = dict(start["headers"])
    assert headers[b"x-amzn-errortype"].startswith(b"InternalServerException")
    assert headers[b"content-type"] == b"application/json" and headers[b"x-amzn-requestid"]
    assert int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"]) == {"message": "Internal server error."}
    assert "unexpected error while proxying /model/m/converse" in caplog.text


def test_a_failure_after_the_response_started_sends_nothing_more() -> None:
    """The server refuses a second head (RuntimeError): nothing well-formed can follow."""
    sent: list[dict[str, Any]] = []

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise KeyError("a bug")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and sent:
            raise RuntimeError("http.response.start sent twice")
        sent.append(message)

    _serve(handler, send)
    assert [message["type"] for message in sent] == ["http.response.start"]
