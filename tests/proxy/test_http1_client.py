"""The upstream client's connection (proxy/http1_client.py) on real sockets, through
`Upstream.send` where the error mapping matters: response bodies in every framing,
headers as received, flow control, the read timeout, malformed responses."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.http1_client import HIGH_WATER, MAX_HEAD, Connection, headers_of, request_head
from proxy.http1_pool import Pool
from proxy.upstream import Upstream, UpstreamBroken, UpstreamUnavailable
from tests.proxy.raw_upstream import OK, Peer, ok, pool_request, raw_upstream, upstream_for

pytestmark = pytest.mark.anyio

#: An upper bound for what should happen at once: only a hang reaches it.
_BOUND = 10.0


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDUPSTREAM00000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "upstream-secret")


def _answering(*answers: bytes) -> object:
    """A connection's behaviour: each request gets the next answer, as given."""
    async def behave(peer: Peer) -> None:
        for answer in answers:
            if await peer.request() is None:
                return
            await peer.send(answer)
    return behave


async def _started(tmp_path: Path, url: str, **settings: float) -> Upstream:
    upstream = upstream_for(tmp_path, url, **settings)
    await upstream.start()
    return upstream


async def _send(upstream: Upstream) -> object:
    return await asyncio.wait_for(upstream.send("POST", "/model/m/converse", "", {}, b"{}"), _BOUND)


_GZIPPED = gzip.compress(b'{"output": "compressed"}')


@pytest.mark.parametrize(("answer", "status", "body", "reused"), [
    (ok(b'{"a":1}'), 200, b'{"a":1}', True),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0a\r\n0123456789\r\n0\r\n\r\n",
     200, b"abc0123456789", True),
    (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", True),
    (b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n", 304, b"", True),
    (b"HTTP/1.1 100 Continue\r\n\r\n" + ok(), 200, b"{}", True),
    (b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(_GZIPPED) + _GZIPPED,
     200, _GZIPPED, True),
    (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end", 200, b"until the end", False),
], ids=["content-length", "chunked", "204", "304", "100-continue", "gzip-untouched", "until-close"])
async def test_each_body_framing_reads_to_its_end(tmp_path: Path, answer: bytes, status: int, body: bytes,
                                                  reused: bool) -> None:
    async def behave(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(answer)
            if not reused:
                peer.writer.close()  # the end of the connection is the end of the body
                return

    async with raw_upstream(behave) as served:
        upstream = await _started(tmp_path, served.url)
        for _ in range(2):
            response = await _send(upstream)
            assert response.status == status
            assert await asyncio.wait_for(response.read(), _BOUND) == body
            response.release()
        assert len(served.peers) == (1 if reused else 2)
        await upstream.aclose()


async def test_headers_are_kept_as_received_and_looked_up_in_any_case(tmp_path: Path) -> None:
    answer = (b"HTTP/1.1 200 OK\r\nX-Amzn-RequestId: abc\r\nset-cookie: a=1\r\nContent-Type: application/json\r\n"
              b"Set-Cookie: b=2\r\nX-Amzn-Bedrock-Input-Token-Count: 7\r\nContent-Length: 2\r\n\r\n{}")
    async with raw_upstream(_answering(answer)) as served:
        upstream = await _started(tmp_path, served.url)
        response = await _send(upstream)
        assert response.raw_headers == (
            (b"X-Amzn-RequestId", b"abc"), (b"set-cookie", b"a=1"), (b"Content-Type", b"application/json"),
            (b"Set-Cookie", b"b=2"), (b"X-Amzn-Bedrock-Input-Token-Count", b"7"), (b"Content-Length", b"2"))
        assert response.headers["x-amzn-requestid"] == "abc"
        assert response.headers.get("CONTENT-TYPE") == "application/json"
        assert response.headers.getall("set-cookie") == ["a=1", "b=2"]  # type: ignore[attr-defined]
        assert response.body_in_hand
        response.release()
        await upstream.aclose()


def test_the_request_head_is_what_was_given_and_refuses_line_breaks() -> None:
    head = request_head("POST", "/model/a%3Ab/converse?x=1%2F", {"host": "h:1", "X-Amz-Date": "d"}, 7)
    assert head == b"POST /model/a%3Ab/converse?x=1%2F HTTP/1.1\r\nhost: h:1\r\nX-Amz-Date: d\r\nContent-Length: 7\r\n\r\n"
    for bad in ({"x": "a\r\nInjected: 1"}, {"x": "a\nb"}, {"x\r": "a"}):
        with pytest.raises(ValueError, match="CR or LF"):
            request_head("POST", "/", bad, 0)
    with pytest.raises(ValueError, match="CR or LF"):
        request_head("POST", "/ HTTP/1.1\r\nx: y", {}, 0)


async def test_a_slow_reader_keeps_the_buffered_body_bounded() -> None:
    """Never buffer a stream: 8 MiB sent at once, read slowly; what waits in the
    connection stays under the high-water mark plus one socket read."""
    total = 8 * 1024 * 1024
    piece = b"x" * 65536

    async def behave(peer: Peer) -> None:
        if await peer.request() is not None:
            peer.writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n".encode())
            for _ in range(total // len(piece)):
                await peer.send(piece)

    pool = Pool(max_connections=1, pool_timeout=5, connect_timeout=5, read_timeout=30, keepalive_timeout=30)
    async with raw_upstream(behave) as served:
        connection = await pool_request(pool, served.url)
        received = most = 0
        while True:
            for _ in range(20):  # a slow consumer: the loop turns many times per read
                await asyncio.sleep(0)
            most = max(most, connection._buffered)
            chunk = await asyncio.wait_for(connection.next_chunk(), _BOUND)
            if not chunk:
                break
            received += len(chunk)
        connection.release()
        assert received == total
        assert most <= HIGH_WATER + 256 * 1024
        await pool.aclose()


async def test_silence_before_the_answer_is_a_timeout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def behave(peer: Peer) -> None:
        await peer.request()  # and no answer

    async with raw_upstream(behave) as served:
        upstream = await _started(tmp_path, served.url, read_timeout=0.05)
        with pytest.raises(UpstreamUnavailable) as raised:
            await _send(upstream)
        assert raised.value.timed_out
        assert "timed out before answering (ReadTimeoutError: no byte from the upstream for 0.05 s)" in caplog.text
        await asyncio.wait_for(served.peers[0].gone.wait(), _BOUND)  # and it is closed
        await upstream.aclose()


async def test_silence_within_the_body_breaks_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with raw_upstream(_answering(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345")) as served:
        upstream = await _started(tmp_path, served.url, read_timeout=3)  # the head must come within it
        response = await _send(upstream)
        chunks = []
        with pytest.raises(UpstreamBroken, match="ReadTimeoutError"):
            async for chunk in response.chunks():
                chunks.append(chunk)
        assert chunks == [b"12345"]  # what came before the silence is relayed
        response.close()
        assert "ended before its body did (ReadTimeoutError" in caplog.text
        await upstream.aclose()


async def test_a_paused_slow_reader_is_not_upstream_silence() -> None:
    """Reading pauses for a consumer that does not keep up: that wait is not the
    upstream's silence, however long it is."""
    total = 1024 * 1024
    answered = asyncio.Event()

    async def behave(peer: Peer) -> None:
        if await peer.request() is not None:
            peer.writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n".encode() + b"x" * total)
            answered.set()
            await peer.writer.drain()

    pool = Pool(max_connections=1, pool_timeout=5, connect_timeout=5, read_timeout=1, keepalive_timeout=30)
    async with raw_upstream(behave) as served:
        connection = await pool_request(pool, served.url)
        await asyncio.wait_for(answered.wait(), _BOUND)
        for _ in range(100_000):  # until the high-water mark is reached (the rest waits in the sockets)
            if connection._paused:
                break
            await asyncio.sleep(0)
        assert connection._paused
        await asyncio.sleep(2.2)  # two read timeouts, paused
        received = 0
        while chunk := await asyncio.wait_for(connection.next_chunk(), _BOUND):
            received += len(chunk)
        assert received == total
        connection.release()
        await pool.aclose()


@pytest.mark.parametrize("answer", [
    b"HTTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
    b"HTTP/1.1 2000 OK\r\ncontent-length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-endless: " + b"a" * (MAX_HEAD + 1),
], ids=["bad-protocol", "bad-status", "two-lengths", "bad-header", "endless-head"])
async def test_a_malformed_head_is_unreachable_not_an_error(tmp_path: Path, answer: bytes,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    async with raw_upstream(_answering(answer)) as served:
        upstream = await _started(tmp_path, served.url)
        with pytest.raises(UpstreamUnavailable) as raised:
            await _send(upstream)
        assert not raised.value.timed_out
        assert "could not be reached (MalformedResponseError" in caplog.text
        await upstream.aclose()


async def test_a_malformed_chunk_breaks_the_body(tmp_path: Path) -> None:
    answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\nnot a chunk\r\n"
    async with raw_upstream(_answering(answer)) as served:
        upstream = await _started(tmp_path, served.url)
        response = await _send(upstream)
        with pytest.raises(UpstreamBroken, match="MalformedResponseError"):
            await asyncio.wait_for(response.read(), _BOUND)
        response.close()
        await upstream.aclose()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
], ids=["content-length", "chunked"])
async def test_a_body_cut_short_breaks(tmp_path: Path, answer: bytes) -> None:
    async def behave(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(answer)
            peer.writer.close()

    async with raw_upstream(behave) as served:
        upstream = await _started(tmp_path, served.url)
        response = await _send(upstream)
        with pytest.raises(UpstreamBroken, match="ServerDisconnectedError"):
            await asyncio.wait_for(response.read(), _BOUND)
        response.close()
        await upstream.aclose()


async def test_bytes_nobody_asked_for_retire_an_idle_connection(tmp_path: Path) -> None:
    """A late `408` (or anything) on an idle keep-alive connection: it is not reused."""
    async def behave(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(OK + b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
            await _answering(OK)(peer)  # type: ignore[operator]

    async with raw_upstream(behave) as served:
        upstream = await _started(tmp_path, served.url)
        for _ in range(2):
            response = await _send(upstream)
            assert await response.read() == b"{}"
            response.release()
        assert len(served.peers) == 2
        await upstream.aclose()


async def test_an_endpoint_with_a_path_keeps_it_before_each_request_path(tmp_path: Path) -> None:
    """A VPC or gateway endpoint URL may carry a path: it prefixes every request's, as signed."""
    async with raw_upstream(_answering(OK)) as served:
        upstream = await _started(tmp_path, served.url + "/gateway/bedrock/")
        response = await _send(upstream)
        assert await response.read() == b"{}"
        response.release()
        await upstream.aclose()
    head = served.peers[0].requests[0][0]
    assert head.startswith(b"POST /gateway/bedrock/model/m/converse HTTP/1.1\r\n")


async def test_a_large_request_body_arrives_whole(tmp_path: Path) -> None:
    body = bytes(range(256)) * (5 * 4096)  # 5 MiB, beyond what one socket write takes
    async with raw_upstream(_answering(OK)) as served:
        upstream = await _started(tmp_path, served.url)
        response = await asyncio.wait_for(upstream.send("POST", "/model/m/invoke", "", {}, body), _BOUND)
        assert await response.read() == b"{}"
        response.release()
        await upstream.aclose()
    head, received = served.peers[0].requests[0]
    assert f"Content-Length: {len(body)}\r\n".encode() in head and received == body


@given(st.lists(st.tuples(st.binary(max_size=8), st.binary(max_size=8)), max_size=6))
def test_headers_are_decoded_as_aiohttp_decodes_them_whatever_the_bytes(raw: list[tuple[bytes, bytes]]) -> None:
    """Strict UTF-8 first, undecodable bytes kept (surrogateescape) when it fails (issue #20)."""
    expected = [(name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
                for name, value in raw]
    assert list(headers_of(raw).items()) == expected


class _Transport:
    """Enough of a transport for one exchange driven by hand: what is written, and reading paused."""

    def __init__(self) -> None:
        self.written, self.paused = b"", False

    def write(self, data: bytes) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


@pytest.mark.parametrize("pieces", [1, 3, 64])
async def test_a_body_in_hand_is_taken_at_once_as_the_chunks_would_give_it(pieces: int) -> None:
    """`take` (the relay's read of a whole body in hand, issue #20) gives what `next_chunk`
    would have, resumes a reading paused at the high-water mark, and leaves the connection
    reusable; a second take is empty."""
    body = bytes(range(256)) * (HIGH_WATER // 256 + 1)
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body
    ended: list[bool] = []
    connection = Connection(asyncio.get_running_loop(), _BOUND, lambda c, reusable: ended.append(reusable))
    transport = _Transport()
    connection.connection_made(transport)
    asked = asyncio.ensure_future(connection.request(b"GET / HTTP/1.1\r\n\r\n", b""))
    await asyncio.sleep(0)
    step = -(-len(answer) // pieces)
    for start in range(0, len(answer), step):
        connection.data_received(answer[start:start + step])
    await asked
    assert connection.body_in_hand and transport.paused
    assert connection.take() == body and not transport.paused
    assert connection.take() == b""
    connection.release()
    assert ended == [True]
