"""What the upstream client puts on the wire: the path as signed, exactly the headers it
was given plus the signature's and the body's length, and nothing aiohttp would add on
its own (`User-Agent`, `Accept`, `Accept-Encoding`, `Content-Type`)."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest
import yaml

from proxy.config_load import load_config
from proxy.upstream import Upstream

pytestmark = pytest.mark.anyio

_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nx-amzn-requestid: r\r\n\r\n{}"


async def _capture(heads: list[bytes], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            break
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        heads.append(head)
        writer.write(_ANSWER)
        await writer.drain()
    writer.close()


@pytest.mark.parametrize("given", [
    {},
    {"content-type": "application/json", "accept": "application/json", "user-agent": "Boto3/1.35.0",
     "accept-encoding": "identity", "amz-sdk-request": "attempt=1", "x-custom": "a,b"},
], ids=["no-headers", "boto3-like"])
async def test_bedrock_receives_the_given_headers_and_no_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: dict[str, str]) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDUPSTREAM00000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "upstream-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-value")
    heads: list[bytes] = []
    server = await asyncio.start_server(lambda r, w: _capture(heads, r, w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"region": "us-east-1", "upstream": {"endpoint_url": f"http://127.0.0.1:{port}"}}))
    upstream = Upstream(load_config(path, environ={}))
    await upstream.start()
    try:
        for _ in range(2):  # a fresh connection, then a pooled one
            response = await upstream.send("POST", "/model/amazon.nova-lite-v1%3A0/converse", "a=1%2F",
                                           dict(given), b'{"x":1}')
            assert await response.read() == b"{}"
            response.release()
    finally:
        await upstream.aclose()
        server.close()
        await server.wait_closed()
    assert len(heads) == 2
    for head in heads:
        request_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        assert request_line == "POST /model/amazon.nova-lite-v1%3A0/converse?a=1%2F HTTP/1.1"
        received = {}
        for line in lines:
            name, _, value = line.partition(":")
            assert name.lower() not in received, f"{name} sent twice"
            received[name.lower()] = value.strip()
        assert set(received) == {*given, "host", "content-length", "x-amz-date", "x-amz-security-token",
                                 "authorization"}
        assert received["host"] == f"127.0.0.1:{port}" and received["content-length"] == "7"
        assert {name: received[name] for name in given} == given


@pytest.mark.parametrize(("region", "where", "signed_for"), [
    (None, "home", "us-east-1"),
    ("us-east-1", "home", "us-east-1"),
    ("eu-west-1", "eu", "eu-west-1"),
    ("us-west-2", "home", "us-east-1"),  # not an allowed Region: home, signed for home
], ids=["unnamed", "home", "allowed", "not-allowed"])
async def test_each_request_goes_to_its_regions_endpoint_signed_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, region: str | None, where: str, signed_for: str) -> None:
    """With `upstream.regions`, the endpoint (its host, port and path prefix) and the signing
    Region follow the Region the client signed for, when it is an allowed one."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDUPSTREAM00000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "upstream-secret")
    heads: dict[str, list[bytes]] = {"home": [], "eu": []}
    servers = {name: await asyncio.start_server(functools.partial(_capture, got), "127.0.0.1", 0)
               for name, got in heads.items()}
    ports = {name: server.sockets[0].getsockname()[1] for name, server in servers.items()}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"region": "us-east-1", "upstream": {
        "endpoint_url": f"http://127.0.0.1:{ports['home']}", "regions": ["eu-west-1"],
        "endpoint_urls": {"eu-west-1": f"http://127.0.0.1:{ports['eu']}/eu/"}}}))
    upstream = Upstream(load_config(path, environ={}))
    await upstream.start()
    try:
        for _ in range(2):  # a fresh connection, then a pooled one
            response = await upstream.send("POST", "/model/m/converse", "", {}, b"{}", region=region)
            assert await response.read() == b"{}"
            response.release()
    finally:
        await upstream.aclose()
        for server in servers.values():
            server.close()
            await server.wait_closed()
    assert {name: len(got) for name, got in heads.items()} == {name: 2 if name == where else 0 for name in heads}
    for head in heads[where]:
        request_line, *lines = head.decode("latin-1").split("\r\n")
        assert request_line == f"POST {'/eu' if where == 'eu' else ''}/model/m/converse HTTP/1.1"
        received = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines if line)}
        assert received["host"] == f"127.0.0.1:{ports[where]}"
        assert f"/{signed_for}/bedrock/aws4_request," in received["authorization"]
