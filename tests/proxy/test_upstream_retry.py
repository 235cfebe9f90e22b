"""Which failures on a reused upstream connection are sent again (proxy/upstream.py `_stale`):
only those that show the upstream had closed it before any byte of an answer."""

from __future__ import annotations

import errno

import aiohttp
import pytest

from proxy.upstream import _stale

#: aiohttp passes the partly parsed head (a `RawResponseMessage`) when the peer closed mid-head.
_PARTIAL_HEAD: object = object()


@pytest.mark.parametrize(("exc", "stale"), [
    (aiohttp.ServerDisconnectedError(), True),
    (aiohttp.ClientConnectionResetError("Cannot write to closing transport"), True),
    (aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"), True),
    (aiohttp.ClientOSError(errno.EPIPE, "Broken pipe"), True),
    # Part of an answer had arrived: Bedrock saw the request.
    (aiohttp.ServerDisconnectedError(_PARTIAL_HEAD), False),  # type: ignore[arg-type]
    # Bedrock may be generating: never sent twice.
    (aiohttp.ServerTimeoutError("Timeout on reading data from socket"), False),
    (aiohttp.SocketTimeoutError("Timeout on reading data from socket"), False),
    (aiohttp.ClientOSError(errno.ENOBUFS, "No buffer space"), False),
    (aiohttp.ClientPayloadError("Response payload is not completed"), False),
])
def test_only_a_closed_connection_before_any_answer_is_stale(exc: BaseException, stale: bool) -> None:
    assert _stale(exc) is stale
