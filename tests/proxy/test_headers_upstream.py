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
