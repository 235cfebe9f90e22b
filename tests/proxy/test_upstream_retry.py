"""Which failures on a reused upstream connection are sent again (proxy/upstream.py `_stale`):
only those that show the upstream had closed it before any byte of an answer."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from proxy.http1_client import (
    ClientError,
    ConnectionBrokenError,
    MalformedResponseError,
    ReadTimeoutError,
    ServerDisconnectedError,
)
from proxy.upstream import UpstreamUnavailable, _stale
from tests.proxy.raw_upstream import OK, Peer, raw_upstream, upstream_for


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

async def test_the_retry_does_not_take_another_stale_pooled_connection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three pooled connections, each closed by the upstream at its next request: the
    request that finds one of them is sent again on a new connection, not on the next
    pooled one (which would fail the same way)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDUPSTREAM00000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "upstream-secret")

    async def one_answer_per_connection(peer: Peer) -> None:
        """Answers a connection's first request; closes it, unanswered, at the second."""
        if await peer.request() is not None:
            await peer.send(OK)
            await peer.request()
        peer.writer.close()

    retries: list[None] = []
    async with raw_upstream(one_answer_per_connection) as served:
        upstream = upstream_for(tmp_path, served.url, on_retry=lambda: retries.append(None))
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


@pytest.mark.parametrize("second", [b"HTTP/1.1 200 OK\r\n", None], ids=["part-of-a-head", "silence"])
async def test_a_reused_connection_that_had_begun_answering_or_timed_out_is_not_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, second: bytes | None) -> None:
    """Bedrock saw the request (part of an answer came), or may be generating (silence
    until the read timeout): the request fails, it is never sent twice."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDUPSTREAM00000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "upstream-secret")

    async def behave(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(OK)
            if await peer.request() is not None and second is not None:
                await peer.send(second)
                peer.writer.close()

    async with raw_upstream(behave) as served:
        retries: list[None] = []
        upstream = upstream_for(tmp_path, served.url, on_retry=lambda: retries.append(None), read_timeout=3)
        await upstream.start()
        response = await upstream.send("POST", "/model/m/converse", "", {}, b"{}")
        await response.read()
        response.release()
        with pytest.raises(UpstreamUnavailable) as raised:
            await asyncio.wait_for(upstream.send("POST", "/model/m/converse", "", {}, b"{}"), 10)
        assert raised.value.timed_out is (second is None)
        assert retries == [] and len(served.peers) == 1
        await upstream.aclose()
