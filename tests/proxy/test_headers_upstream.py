"""What the proxy sends upstream of the client's headers (proxy/headers.py)."""

from __future__ import annotations

from proxy.headers import request_headers_for_upstream


def test_the_proxys_own_headers_never_reach_bedrock() -> None:
    sent = request_headers_for_upstream([
        (b"X-Costkeeper-Tag-Project", b"apollo"), (b"x-costkeeper-tag-job", b"nightly"),
        (b"X-Amzn-Bedrock-Trace", b"ENABLED"), (b"Content-Type", b"application/json"),
        (b"Authorization", b"AWS4-HMAC-SHA256 ..."),
    ])
    assert not [name for name in sent if name.startswith("x-costkeeper-")]
    assert sent["x-amzn-bedrock-trace"] == "ENABLED" and sent["content-type"] == "application/json"
    assert "authorization" not in sent


def test_the_clients_credentials_never_reach_bedrock() -> None:
    """The request is re-signed with the proxy's own credentials: the client's signature,
    its session token and what its signature covers never go on (a client's security
    token would otherwise ride along when the proxy's credentials have none)."""
    sent = request_headers_for_upstream([
        (b"Authorization", b"AWS4-HMAC-SHA256 Credential=CKIA/20261205/us-east-1/bedrock/aws4_request"),
        (b"X-Amz-Security-Token", b"client-session-token"), (b"X-Amz-Date", b"20261205T010203Z"),
        (b"X-Amz-Content-SHA256", b"0" * 64), (b"Proxy-Authorization", b"Basic eDp5"),
        (b"Content-Type", b"application/json"),
    ])
    assert sent == {"content-type": "application/json", "accept-encoding": "identity"}


def test_an_encoded_response_is_never_asked_for() -> None:
    """`accept-encoding` is pinned to identity: the proxy reads usage from the bytes it relays
    and never decompresses anything (upstream.py reads with `auto_decompress=False`)."""
    sent = request_headers_for_upstream([(b"Accept-Encoding", b"gzip, br")])
    assert sent == {"accept-encoding": "identity"}
