"""Which headers cross the proxy, in each direction, and why."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["HOP_BY_HOP", "CLIENT_AUTH", "request_headers_for_upstream", "response_headers_for_client"]

#: RFC 9110 §7.6.1: connection-specific fields are never forwarded, nor are the
#: fields a `Connection` header names. `proxy-*` per RFC 9110 §11.7.
HOP_BY_HOP = frozenset({
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
})

#: The client's credentials and everything tied to its signature: the request is
#: re-signed with the proxy's own credentials (the Host differs anyway).
CLIENT_AUTH = frozenset({
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
})

#: Recomputed for the upstream request: its Host is Bedrock's, its length httpx's.
#: `accept-encoding` is pinned to identity so the proxy can read usage from
#: the bytes it relays (every client accepts identity).
_RECOMPUTED = frozenset({"host", "content-length", "accept-encoding", "expect"})

_DROP_TO_UPSTREAM = HOP_BY_HOP | CLIENT_AUTH | _RECOMPUTED
#: The proxy's own request headers (`x-costkeeper-tag-<key>`, issue #22): meant for
#: Cost Keeper, never for Bedrock.
_OWN_PREFIX = "x-costkeeper-"


def _connection_named(headers: Sequence[tuple[bytes, bytes]]) -> frozenset[str]:
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.decode("latin-1").split(","))
    return frozenset(named)


def request_headers_for_upstream(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The client's headers minus hop-by-hop, auth, recomputed and the proxy's own
    `x-costkeeper-*` ones (lower-case names)."""
    named = _connection_named(raw)
    out: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name = raw_name.decode("latin-1").lower()
        if name in _DROP_TO_UPSTREAM or name in named or name.startswith(_OWN_PREFIX):
            continue
        value = raw_value.decode("latin-1")
        out[name] = f"{out[name]},{value}" if name in out else value
    out["accept-encoding"] = "identity"
    return out


#: Set by the proxy's HTTP server on every response (uvicorn): relayed too, it would be doubled.
_SERVER_SET = frozenset({"date"})
_SERVER_SET_AND_LENGTH = _SERVER_SET | {"content-length"}


def response_headers_for_client(
    raw: Sequence[tuple[bytes, bytes]], *, keep_length: bool = True
) -> list[tuple[bytes, bytes]]:
    """Upstream response headers minus hop-by-hop ones (and `Date`, which the server
    sets); everything else, e.g. the `X-Amzn-Bedrock-*` token counts, reaches the
    client unchanged. `keep_length=False` drops `Content-Length` too, for a body the
    proxy changes (translated, or a stream that may end with its own error frame)."""
    named = _connection_named(raw)
    dropped = _SERVER_SET if keep_length else _SERVER_SET_AND_LENGTH
    return [
        (name, value)
        for name, value in raw
        if (lname := name.lower().decode("latin-1")) not in HOP_BY_HOP and lname not in named
        and lname not in dropped
    ]
