"""Which headers cross the proxy, in each direction, and why."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from adapters.memo import remember

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


#: The names a request or response carries a value for, decoded and lower-cased once:
#: a raw header name → (its lower-case name, whether it never goes upstream, whether
#: it never goes to the client; `keep_length=False` is checked on its own). A plain
#: dict read first: `functools.lru_cache`'s call cost 0.17 µs a header, some twenty
#: headers a request (issue #20). Client-chosen names included, so it is bounded: past
#: `_NAMES_KEPT` names it starts again (adapters/memo.py).
_NAMES: dict[bytes, tuple[str, bool, bool]] = {}
_NAMES_KEPT = 1024


def _name(raw: bytes) -> tuple[str, bool, bool]:
    known = _NAMES.get(raw)
    if known is not None:
        return known
    name = raw.decode("latin-1").lower()
    known = (name, name in _DROP_TO_UPSTREAM or name.startswith(_OWN_PREFIX),
             name in HOP_BY_HOP or name in _SERVER_SET)
    return remember(_NAMES, raw, known, _NAMES_KEPT)


@functools.lru_cache(maxsize=64)
def _named_by(value: bytes) -> frozenset[str]:
    """The fields a `Connection` value names, beyond the hop-by-hop ones dropped anyway
    (`Connection: keep-alive`, as Bedrock sends it, names none)."""
    return frozenset(token.strip().lower() for token in value.decode("latin-1").split(",")) - HOP_BY_HOP


def request_headers_for_upstream(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The client's headers minus hop-by-hop, auth, recomputed and the proxy's own
    `x-costkeeper-*` ones (lower-case names)."""
    out: dict[str, str] = {}
    named: frozenset[str] = frozenset()
    names = _NAMES
    for raw_name, raw_value in raw:
        name, dropped, _ = names.get(raw_name) or _name(raw_name)
        if dropped:
            if name == "connection":
                named |= _named_by(raw_value)
            continue
        value = raw_value.decode("latin-1")
        out[name] = f"{out[name]},{value}" if name in out else value
    for name in named:  # and the fields `Connection` names
        out.pop(name, None)
    out["accept-encoding"] = "identity"
    return out


#: Set by the proxy's HTTP server on every response (uvicorn): relayed too, it would be doubled.
_SERVER_SET = frozenset({"date"})


def response_headers_for_client(
    raw: Sequence[tuple[bytes, bytes]], *, keep_length: bool = True
) -> list[tuple[bytes, bytes]]:
    """Upstream response headers minus hop-by-hop ones (and `Date`, which the server
    sets); everything else, e.g. the `X-Amzn-Bedrock-*` token counts, reaches the
    client unchanged. `keep_length=False` drops `Content-Length` too, for a body the
    proxy changes (translated, or a stream that may end with its own error frame)."""
    out = []
    named: frozenset[str] = frozenset()
    names = _NAMES
    for raw_name, value in raw:
        name, _, dropped = names.get(raw_name) or _name(raw_name)
        if dropped:
            if name == "connection":
                named |= _named_by(value)
        elif keep_length or name != "content-length":
            out.append((raw_name, value))
    if named:  # and the fields `Connection` names
        out = [(raw_name, value) for raw_name, value in out if _name(raw_name)[0] not in named]
    return out
