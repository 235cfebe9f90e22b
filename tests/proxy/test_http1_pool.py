"""The upstream client's pool (proxy/http1_pool.py) on real sockets: keep-alive reuse, the
bound on connections and the wait for one, idle expiry, which responses give their
connection back, cancellation, and TLS with the system trust store and SNI."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.http1_client import ConnectError, ConnectTimeoutError
from proxy.http1_pool import Origin, Pool
from proxy.upstream import UpstreamUnavailable
from tests.proxy.raw_upstream import OK, Peer, ok, pool_request, raw_upstream, upstream_for
from tests.tls import self_signed

pytestmark = pytest.mark.anyio

#: An upper bound for what should happen at once: only a hang reaches it.
_BOUND = 10.0


def _pool(max_connections: int = 10, pool_timeout: float = 30.0, keepalive_timeout: float = 30.0) -> Pool:
    return Pool(max_connections=max_connections, pool_timeout=pool_timeout, connect_timeout=5.0, read_timeout=30.0,
                keepalive_timeout=keepalive_timeout)


async def _answer_all(peer: Peer) -> None:
    while await peer.request() is not None:
        await peer.send(OK)


async def _converse(pool: Pool, url: str) -> bytes:
    connection = await pool_request(pool, url)
    body = b""
    while chunk := await connection.next_chunk():
        body += chunk
    connection.release()
    return body


async def test_a_connection_read_to_its_end_is_reused() -> None:
    pool = _pool()
    async with raw_upstream(_answer_all) as served:
        for _ in range(3):
            assert await _converse(pool, served.url) == b"{}"
        assert len(served.peers) == 1 and len(served.peers[0].requests) == 3
        await pool.aclose()


@pytest.mark.parametrize("answer", [
    ok(b"{}", "connection: close"),
    b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}",
    b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\n{}",
], ids=["connection-close", "http/1.0", "http/1.0-keep-alive"])
async def test_a_connection_the_response_ends_is_not_reused(answer: bytes) -> None:
    async def behave(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(answer)

    pool = _pool()
    async with raw_upstream(behave) as served:
        for _ in range(2):
            assert await _converse(pool, served.url) == b"{}"
        assert len(served.peers) == 2
        await asyncio.wait_for(served.peers[0].gone.wait(), _BOUND)
        assert pool.idle == 0
        await pool.aclose()


@pytest.mark.parametrize("end", ["release-unread", "close-read"])
async def test_only_a_response_read_to_its_end_gives_its_connection_back(end: str) -> None:
    """Released before its body was read, or closed (abandoned) after: the connection is
    closed, never handed to the next request."""
    pool = _pool()
    async with raw_upstream(_answer_all) as served:
        connection = await pool_request(pool, served.url)
        if end == "release-unread":
            connection.release()
        else:
            assert await connection.next_chunk() == b"{}"
            connection.close()
        await asyncio.wait_for(served.peers[0].gone.wait(), _BOUND)  # the upstream sees it close
        assert await _converse(pool, served.url) == b"{}"
        assert len(served.peers) == 2
        await pool.aclose()


async def test_at_most_max_connections_then_the_next_request_waits_for_one() -> None:
    held: list[Peer] = []
    two_held = asyncio.Event()
    go = asyncio.Event()

    async def behave(peer: Peer) -> None:
        while await peer.request() is not None:
            held.append(peer)
            if len(held) == 2:
                two_held.set()
            await go.wait()
            await peer.send(OK)

    pool = _pool(max_connections=2)
    async with raw_upstream(behave) as served:
        tasks = [asyncio.create_task(_converse(pool, served.url)) for _ in range(3)]
        await asyncio.wait_for(two_held.wait(), _BOUND)
        # The third waits for a slot (queued at its first step, long before two were held).
        assert len(pool._waiters) == 1
        assert len(served.peers) == 2 and not any(task.done() for task in tasks)
        go.set()
        assert await asyncio.wait_for(asyncio.gather(*tasks), _BOUND) == [b"{}"] * 3
        assert len(served.peers) == 2  # the third went on a connection given back
        await pool.aclose()


async def test_no_free_connection_within_the_pool_timeout_is_a_timeout(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDUPSTREAM00000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "upstream-secret")
    first = asyncio.Event()

    async def behave(peer: Peer) -> None:
        await peer.request()
        first.set()  # and never answers

    async with raw_upstream(behave) as served:
        upstream = upstream_for(tmp_path, served.url, max_connections=1, pool_timeout=0.05, connect_timeout=1)
        await upstream.start()
        held = asyncio.create_task(upstream.send("POST", "/model/m/converse", "", {}, b"{}"))
        await asyncio.wait_for(first.wait(), _BOUND)
        with pytest.raises(UpstreamUnavailable) as raised:
            await asyncio.wait_for(upstream.send("POST", "/model/m/converse", "", {}, b"{}"), _BOUND)
        assert raised.value.timed_out
        assert "timed out before answering (ConnectTimeoutError: no free upstream connection" in caplog.text
        held.cancel()
        await upstream.aclose()


async def test_a_waiter_that_gives_up_passes_its_turn_on() -> None:
    go = asyncio.Event()
    first = asyncio.Event()

    async def behave(peer: Peer) -> None:
        while await peer.request() is not None:
            first.set()
            await go.wait()
            await peer.send(OK)

    pool = _pool(max_connections=1)
    async with raw_upstream(behave) as served:
        holder = asyncio.create_task(_converse(pool, served.url))
        await asyncio.wait_for(first.wait(), _BOUND)
        quitter = asyncio.create_task(_converse(pool, served.url))
        patient = asyncio.create_task(_converse(pool, served.url))
        await asyncio.sleep(0)
        quitter.cancel()
        go.set()
        assert await asyncio.wait_for(asyncio.gather(holder, patient), _BOUND) == [b"{}", b"{}"]
        assert quitter.cancelled()
        assert await asyncio.wait_for(_converse(pool, served.url), _BOUND) == b"{}"
        await pool.aclose()


async def test_an_idle_connection_is_closed_after_the_keepalive_timeout() -> None:
    pool = _pool(keepalive_timeout=0.05)
    async with raw_upstream(_answer_all) as served:
        assert await _converse(pool, served.url) == b"{}"
        await asyncio.wait_for(served.peers[0].gone.wait(), _BOUND)
        assert pool.idle == 0
        assert await _converse(pool, served.url) == b"{}"
        assert len(served.peers) == 2
        await pool.aclose()


@pytest.mark.parametrize("first_answer", [None, b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345"],
                         ids=["before-its-answer", "mid-body"])
async def test_a_cancelled_exchange_closes_its_connection(first_answer: bytes | None) -> None:
    """How a client's hang-up reaches Bedrock: cancelled before the answer, or while its
    body is read (then closed, as proxy/relay.py ends a response it did not finish),
    the connection is closed and its place in the pool is free again."""
    reached = asyncio.Event()

    async def behave(peer: Peer) -> None:
        if peer is not served.peers[0]:
            await _answer_all(peer)
        elif await peer.request() is not None:
            if first_answer is None:
                reached.set()  # and never answers
            else:
                await peer.send(first_answer)  # half the body, and no more

    async def relay() -> None:
        connection = await pool_request(pool, served.url)
        try:
            while await connection.next_chunk():
                reached.set()
            connection.release()
        finally:
            connection.close()

    pool = _pool(max_connections=1)
    async with raw_upstream(behave) as served:
        task = asyncio.create_task(relay())
        await asyncio.wait_for(reached.wait(), _BOUND)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(served.peers[0].gone.wait(), _BOUND)
        assert await asyncio.wait_for(_converse(pool, served.url), _BOUND) == b"{}"
        await pool.aclose()


async def test_fresh_closes_the_idle_connections_and_opens_a_new_one() -> None:
    pool = _pool()
    async with raw_upstream(_answer_all) as served:
        await asyncio.gather(_converse(pool, served.url), _converse(pool, served.url))
        assert pool.idle == 2
        connection = await pool_request(pool, served.url, fresh=True)
        assert await connection.next_chunk() == b"{}"
        connection.release()
        assert len(served.peers) == 3 and pool.idle == 1
        await pool.aclose()


# --- TLS ---------------------------------------------------------------------------------

@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[ssl.SSLContext, Path, list[str | None]]]:
    """A server context with a self-signed certificate for `localhost`, its certificate,
    and the server names (SNI) the clients sent."""
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda _socket, name, _context: names.append(name)  # type: ignore[assignment,func-returns-value]
    yield context, cert, names


async def test_tls_to_an_https_endpoint_with_the_system_trust_store_and_sni(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tls: tuple[ssl.SSLContext, Path, list[str | None]]) -> None:
    """The default context (`ssl.create_default_context()`) trusts what the system does;
    OpenSSL's `SSL_CERT_FILE` stands in for a system store holding the test CA."""
    context, cert, names = tls
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDUPSTREAM00000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "upstream-secret")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    async with raw_upstream(_answer_all, tls=context) as served:
        upstream = upstream_for(tmp_path, served.url)
        await upstream.start()
        for _ in range(2):
            response = await upstream.send("POST", "/model/m/converse", "", {}, b"{}")
            assert response.status == 200 and await response.read() == b"{}"
            response.release()
        await upstream.aclose()
    assert len(served.peers) == 1  # pooled over TLS too
    assert names == ["localhost"]


async def test_tls_refuses_a_certificate_the_trust_store_does_not_hold(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        tls: tuple[ssl.SSLContext, Path, list[str | None]]) -> None:
    context, _, _ = tls
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDUPSTREAM00000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "upstream-secret")
    async with raw_upstream(_answer_all, tls=context) as served:
        upstream = upstream_for(tmp_path, served.url)
        await upstream.start()
        with pytest.raises(UpstreamUnavailable) as raised:
            await upstream.send("POST", "/model/m/converse", "", {}, b"{}")
        assert not raised.value.timed_out
        assert "could not be reached (ConnectError: SSLCertVerificationError" in caplog.text
        await upstream.aclose()


async def test_a_refused_connection_is_a_connect_error() -> None:
    pool = _pool()
    async with raw_upstream(_answer_all) as served:
        url = served.url
    with pytest.raises(ConnectError) as raised:
        await pool_request(pool, url)
    assert not raised.value.reused and not raised.value.answered
    assert not isinstance(raised.value, ConnectTimeoutError)
    await pool.aclose()


async def test_a_connection_not_opened_within_the_connect_timeout_is_a_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """An endpoint that accepts the connection and never answers the TLS handshake:
    `connect_timeout` ends the wait."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDUPSTREAM00000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "upstream-secret")

    async def silent(peer: Peer) -> None:
        await peer.until_closed()  # reads the ClientHello, answers nothing

    async with raw_upstream(silent) as served:
        port = served.url.rsplit(":", 1)[1]
        upstream = upstream_for(tmp_path, f"https://127.0.0.1:{port}", connect_timeout=0.05)
        await upstream.start()
        with pytest.raises(UpstreamUnavailable) as raised:
            await asyncio.wait_for(upstream.send("POST", "/model/m/converse", "", {}, b"{}"), _BOUND)
        assert raised.value.timed_out
        assert ("timed out before answering (ConnectTimeoutError: no connection to "
                f"127.0.0.1:{port} within 0.05 s)") in caplog.text
    await upstream.aclose()


_ORIGINS = st.builds(Origin, st.sampled_from(["a.example", "b.example"]), st.sampled_from([443, 8443]), st.booleans(),
                     st.sampled_from(["", "/prefix"]))


@given(a=_ORIGINS, b=_ORIGINS)
def test_an_origin_s_remembered_hash_keys_the_pool_as_its_fields_do(a: Origin, b: Origin) -> None:
    """Equal origins (made apart, or by `replace`) hash alike and find each other's idle
    connections; different ones do not (the hash is computed once, issue #20)."""
    assert (a == b) == ((a.host, a.port, a.tls, a.prefix) == (b.host, b.port, b.tls, b.prefix))
    if a == b:
        assert hash(a) == hash(b) and {a: 1}.get(b) == 1
    else:
        assert {a: 1}.get(b) is None
    moved = dataclasses.replace(a, port=b.port)
    assert hash(moved) == hash(Origin(a.host, b.port, a.tls, a.prefix)) and moved == Origin(a.host, b.port, a.tls,
                                                                                              a.prefix)
