"""Without translation, the client gets exactly the bytes the upstream sent.

The simulator records a SHA-256 of every response body it sends; the client,
reading raw bytes through the proxy, must hash to the same value — for JSON
bodies and for event streams alike, whatever the model-id encoding in the path.
"""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.processes import Process, Proxy

CASES = [
    ("/model/us.amazon.nova-micro-v1%3A0/converse",
     {"messages": [{"role": "user", "content": [{"text": "fidelity one"}]}]}),
    ("/model/us.amazon.nova-micro-v1%3A0/converse-stream",
     {"messages": [{"role": "user", "content": [{"text": "fidelity two"}]}]}),
    # Claude Haiku 4.5 only through a profile (BEDROCK_WIRE.md §1.2), as a client must call it.
    ("/model/us.anthropic.claude-haiku-4-5-20251001-v1:0/invoke",  # a raw ':' as the Anthropic SDK sends it
     {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 30, "messages": [{"role": "user", "content": "three"}]}),
    ("/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke-with-response-stream",
     {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 30, "messages": [{"role": "user", "content": "four"}]}),
    ("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.amazon.nova-micro-v1%3A0/invoke",
     {"messages": [{"role": "user", "content": [{"text": "five"}]}], "inferenceConfig": {"maxTokens": 20}}),
]


@pytest.mark.parametrize(("path", "document"), CASES, ids=[c[0].rsplit("/", 1)[1] + str(i) for i, c in enumerate(CASES)])
def test_bytes_reach_the_client_unchanged(proxy: Proxy, simulator: Process, caller_key: dict[str, str],
                                          path: str, document: dict[str, object]) -> None:
    body = json.dumps(document).encode()
    request = AWSRequest("POST", proxy.url + path, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(caller_key["AWS_ACCESS_KEY_ID"], caller_key["AWS_SECRET_ACCESS_KEY"]),
              "bedrock", "us-east-1").add_auth(request)
    with httpx.Client(timeout=20) as client:
        response = client.send(httpx.Request("POST", proxy.url + path, headers=dict(request.headers.items()),
                                             content=body))
        received = response.content
    assert response.status_code == 200, received[:300]
    request_id = response.headers["x-amzn-requestid"]
    records = httpx.get(f"{simulator.url}/_sim/requests", timeout=5).json()
    sent = next(r for r in records if r["request_id"] == request_id)
    assert sent["response_bytes"] == len(received)
    assert sent["response_sha256"] == hashlib.sha256(received).hexdigest()
    assert sent["path"] == path  # the path went upstream exactly as the client encoded it
    assert len(response.headers.get_list("date")) == 1  # the server's own, not also the upstream's
