"""Which failures on a reused upstream connection are sent again (proxy/upstream.py `_stale`):
only those that show the upstream had closed it before any byte of an answer."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest
import yaml

from proxy.config import load_config
from proxy.http1_client import (
    ClientError,
    ConnectionBrokenError,
    MalformedResponseError,
    ReadTimeoutError,
    ServerDisconnectedError,
)
from proxy.upstream import Upstream, UpstreamUnavailable, _stale
from tests.proxy.raw_upstream import Peer, raw_upstream, upstream_for


def _answered(exc: ClientError) -> ClientError:
    exc.answered = True
    return exc


@pytest.mark.parametrize(("exc", "stale"), [
    (ServerDisconnectedError("the upstream closed the connection before answering"), True),
    (ConnectionBrokenError(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")), True),
    (ConnectionBrokenError(BrokenPipeError(errno.EPIPE, "Broken pipe")), True),
    # Part of an answer had arrived: Bedrock saw the request.
    (_answered(ServerDisconnectedError("the upstream closed the connection")), False),
    (_answered(ConnectionBrokenError(ConnectionResetError(errno.ECONNRESET, "reset"))), False),
    (_answered(MalformedResponseError("bad status line")), False),
    # Bedrock may be generating: never sent twice.
    (ReadTimeoutError("no byte from the upstream for 900 s"), False),
    (ConnectionBrokenError(OSError(errno.ENOBUFS, "No buffer space")), False),
])
def test_only_a_closed_connection_before_any_answer_is_stale(exc: ClientError, stale: bool) -> None:
    assert _stale(exc) is stale


# --- the retry goes to a fresh connection ------------------------------------------------

pytestmark = pytest.mark.anyio

_ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n"
           b"x-amzn-requestid: r\r\n\r\n{}")


async def _read_request(reader: asyncio.StreamReader) -> bool:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    await reader.readexactly(length)
    return True


async def _one_answer_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers a connection's first request; closes it, unanswered, at the second."""
    if await _read_request(reader):
        writer.write(_ANSWER)
        await writer.drain()
        await _read_request(reader)
    writer.close()


async def test_the_retry_does_not_take_another_stale_pooled_connection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three pooled connections, each closed by the upstream at its next request: the
    request that finds one of them is sent again on a new connection, not on the next
    pooled one (which would fail the same way)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDUPSTREAM00000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "upstream-secret")
    server = await asyncio.start_server(_one_answer_per_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"region": "us-east-1",
                                    "upstream": {"endpoint_url": f"http://127.0.0.1:{port}"}}))
    retries: list[None] = []
    upstream = Upstream(load_config(path, environ={}), on_retry=lambda: retries.append(None))
    await upstream.start()

    async def converse() -> int:
        response = await upstream.send("POST", "/model/amazon.nova-lite-v1%3A0/converse", "",
                                       {"content-type": "application/json"}, b"{}")
        await response.read()
        response.release()
        return response.status

    try:
        assert await asyncio.gather(converse(), converse(), converse()) == [200, 200, 200]
        assert await converse() == 200
        assert len(retries) == 1
    finally:
        await upstream.aclose()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("second", [b"HTTP/1.1 200 OK\r\n", None], ids=["part-of-a-head", "silence"])
async def test_a_reused_connection_that_had_begun_answering_or_timed_out_is_not_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, second: bytes | None) -> None:
    """Bedrock saw the request (part of an answer came), or may be generating (silence
    until the read timeout): the request fails, it is never sent twice."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDUPSTREAM00000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "upstream-secret")

    async def behave(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(_ANSWER)
            if await peer.request() is not None and second is not None:
                await peer.send(second)
                peer.writer.close()

    async with raw_upstream(behave) as served:
        retries: list[None] = []
        upstream = upstream_for(tmp_path, served.url, on_retry=lambda: retries.append(None), read_timeout=1)
        await upstream.start()
        response = await upstream.send("POST", "/model/m/converse", "", {}, b"{}")
        await response.read()
        response.release()
        with pytest.raises(UpstreamUnavailable) as raised:
            await asyncio.wait_for(upstream.send("POST", "/model/m/converse", "", {}, b"{}"), 10)
        assert raised.value.timed_out is (second is None)
        assert retries == [] and len(served.peers) == 1
        await upstream.aclose()
