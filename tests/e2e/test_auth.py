"""Caller identity: the proxy recomputes SigV4 signatures and refuses what AWS would."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import botocore.auth
import botocore.exceptions
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.e2e.clients import NOVA, bedrock_client
from tests.processes import Proxy

PATH = "/model/us.amazon.nova-micro-v1%3A0/converse"
BODY = json.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}).encode()


def signed_request(proxy: Proxy, access_key: str, secret: str, *, body: bytes = BODY,
                   when: dt.datetime | None = None, monkeypatch: pytest.MonkeyPatch | None = None) -> httpx.Request:
    request = AWSRequest("POST", proxy.url + PATH, data=body, headers={"Content-Type": "application/json"})
    if when is not None and monkeypatch is not None:
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: when)
    SigV4Auth(Credentials(access_key, secret), "bedrock", "us-east-1").add_auth(request)
    return httpx.Request("POST", proxy.url + PATH, headers=dict(request.headers.items()), content=body)


def send(request: httpx.Request) -> httpx.Response:
    with httpx.Client(timeout=10) as client:
        return client.send(request)


def assert_bedrock_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["x-amzn-errortype"].split(":", 1)[0] == code
    assert response.headers["x-amzn-requestid"]
    body: dict[str, Any] = response.json()
    assert body["message"]
    return body


def test_valid_signature_is_accepted(proxy: Proxy, caller_key: dict[str, str]) -> None:
    response = send(signed_request(proxy, caller_key["AWS_ACCESS_KEY_ID"], caller_key["AWS_SECRET_ACCESS_KEY"]))
    assert response.status_code == 200, response.text


def test_wrong_secret_is_refused_by_boto3(proxy: Proxy, caller_key: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", proxy.url)
    client = bedrock_client({**caller_key, "AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        client.converse(modelId=NOVA, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert raised.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_unknown_key_is_refused(proxy: Proxy) -> None:
    body = assert_bedrock_error(send(signed_request(proxy, "CKIAUNKNOWNKEY000000", "x" * 40)),
                                403, "UnrecognizedClientException")
    assert "x" * 40 not in json.dumps(body)


def test_revoked_key_is_refused(proxy: Proxy) -> None:
    key = proxy.issue_key("acme", "revoked-app")
    request = signed_request(proxy, key["AWS_ACCESS_KEY_ID"], key["AWS_SECRET_ACCESS_KEY"])
    assert send(request).status_code == 200
    assert key["AWS_ACCESS_KEY_ID"] in proxy.keys("list").stdout
    proxy.keys("revoke", key["AWS_ACCESS_KEY_ID"])
    again = signed_request(proxy, key["AWS_ACCESS_KEY_ID"], key["AWS_SECRET_ACCESS_KEY"])
    assert_bedrock_error(send(again), 403, "UnrecognizedClientException")


@pytest.mark.parametrize(("offset", "phrase"), [(-6, "Signature expired"), (6, "Signature not yet current")])
def test_stale_or_future_date_is_refused(proxy: Proxy, caller_key: dict[str, str],
                                         monkeypatch: pytest.MonkeyPatch, offset: int, phrase: str) -> None:
    when = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=offset)
    request = signed_request(proxy, caller_key["AWS_ACCESS_KEY_ID"], caller_key["AWS_SECRET_ACCESS_KEY"],
                             when=when, monkeypatch=monkeypatch)
    body = assert_bedrock_error(send(request), 403, "InvalidSignatureException")
    assert phrase in body["message"]


def test_tampered_body_is_refused(proxy: Proxy, caller_key: dict[str, str]) -> None:
    request = signed_request(proxy, caller_key["AWS_ACCESS_KEY_ID"], caller_key["AWS_SECRET_ACCESS_KEY"])
    tampered = BODY.replace(b"hi", b"ho")
    forged = httpx.Request("POST", request.url, headers={k: v for k, v in request.headers.items()
                                                          if k.lower() != "content-length"}, content=tampered)
    assert_bedrock_error(send(forged), 403, "InvalidSignatureException")


def test_missing_authentication_is_refused(proxy: Proxy) -> None:
    response = send(httpx.Request("POST", proxy.url + PATH, content=BODY))
    assert_bedrock_error(response, 403, "MissingAuthenticationTokenException")
