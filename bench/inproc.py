"""CPU per request of the proxy's handler in one process, without the HTTP server or the
load client: a steadier figure than `make bench` on a shared machine, for before/after.

The data port's ASGI handler (`CostKeeper.serve`, trust mode or, with `--auth sigv4`,
SigV4 verification of a key issued in the store; SQLite store, the production
defaults otherwise) is called directly, `concurrency` requests at a time,
against `bench/upstream.py` served on the same event loop through the real upstream
client (proxy/http1_client.py, SigV4 re-signing). The figure is this process's CPU time divided by
the requests, so it includes the stand-in upstream's share (the same for every
version of the proxy) and leaves out uvicorn's. Streams are the bench's 200-frame
bursts. Under `py-spy record --format raw -- python -m bench.inproc …` it gives a
profile of the proxy's own code that `bench/profile.py` sorts into components.

    python -m bench.inproc --op converse-stream --requests 2000
    python -m bench.inproc --op converse --auth sigv4

In sigv4 mode every request carries the same signature, made with botocore's
`SigV4Auth` once per run (its date stays within the proxy's skew): the proxy
verifies each one in full all the same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import yaml
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from bench.upstream import serve as serve_upstream
from proxy.app import CostKeeper
from proxy.config_load import load_config
from tests.processes import free_port

__all__ = ["AUTH_MODES", "OPERATIONS", "cpu_per_request", "padded_body"]

AUTH_MODES = ("trust", "sigv4")

_MODEL = "anthropic.claude-3-haiku-20240307-v1%3A0"
_CONVERSE = json.dumps({"messages": [{"role": "user", "content": [{"text": "Say hello in one word."}]}],
                        "inferenceConfig": {"maxTokens": 64}}).encode()
_INVOKE = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
                      "messages": [{"role": "user", "content": "Say hello in one word."}]}).encode()
#: operation → (path, body)
OPERATIONS = {
    "converse": (f"/model/{_MODEL}/converse", _CONVERSE),
    "converse-stream": (f"/model/{_MODEL}/converse-stream", _CONVERSE),
    "invoke-stream": (f"/model/{_MODEL}/invoke-with-response-stream", _INVOKE),
}


def _signed(scope: dict[str, Any], body: bytes, access_key_id: str, secret: str) -> dict[str, Any]:
    """`scope` with botocore's SigV4 headers for `body`, signed now (as an SDK signs)."""
    host = dict(scope["headers"])[b"host"].decode()
    request = AWSRequest(method=scope["method"], url=f"http://{host}{scope['raw_path'].decode()}", data=body,
                         headers={name.decode(): value.decode() for name, value in scope["headers"]})
    SigV4Auth(Credentials(access_key_id, secret), "bedrock", "us-east-1").add_auth(request)
    added = [(name.lower().encode(), value.encode()) for name, value in request.headers.items()
             if name.lower() in ("x-amz-date", "authorization", "x-amz-content-sha256")]
    return {**scope, "headers": [*scope["headers"], *added]}


def _scope(path: str, body: bytes) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), (b"user-agent", b"Boto3/1.35.0 md/Botocore#1.35.0"),
               (b"amz-sdk-invocation-id", b"0b2d4c64-62a1-4a56-9f39-6d7f1a0e0f3b"), (b"amz-sdk-request", b"attempt=1")]
    return {"type": "http", "method": "POST", "path": path.replace("%3A", ":"), "raw_path": path.encode(),
            "query_string": b"", "headers": headers, "http_version": "1.1", "scheme": "http",
            "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 5555)}


def padded_body(body: bytes, size: int) -> bytes:
    """`body` grown to about `size` bytes by a longer first message, as a coding agent's
    request carries a long conversation (Claude Code's are 50–200 KB): the payload every
    signature hashes."""
    document = json.loads(body)
    grow = max(size - len(body), 0)
    if grow:
        content = document["messages"][0]["content"]
        if isinstance(content, str):
            document["messages"][0]["content"] = content + " " + "x" * grow
        else:
            content[0]["text"] += " " + "x" * grow
    return json.dumps(document).encode()


async def cpu_per_request(op: str, requests: int, concurrency: int = 16, warm: int = 320,
                          auth: str = "trust", body_bytes: int = 0) -> float:
    """µs of this process's CPU per request of `op`, after `warm` requests. The proxy's
    AWS credentials come from the environment (`main` sets the bench's). `auth`: the
    proxy's `auth.mode`, trust or sigv4 (`AUTH_MODES`); `body_bytes`: the request body's
    size, if larger than the operation's own."""
    path, body = OPERATIONS[op]
    body = padded_body(body, body_bytes)
    scope = _scope(path, body)
    port = free_port()
    upstream = asyncio.create_task(serve_upstream("127.0.0.1", port, 200, 0.0))
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.yaml"
        config_path.write_text(yaml.safe_dump({
            "region": "us-east-1", "auth": {"mode": auth},
            "upstream": {"endpoint_url": f"http://127.0.0.1:{port}"},
            "store": {"backend": "sqlite", "path": str(Path(tmp) / "store.db")},
        }))
        keeper = CostKeeper(load_config(config_path, environ={}))
        for _ in range(100):  # the upstream's listening socket
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.02)
        await keeper.startup()
        if auth == "sigv4":
            issued = await keeper.store.create_key("bench", "bench")
            scope = _signed(scope, body, issued.access_key_id, issued.secret)
        statuses: list[int] = []

        async def one() -> None:
            messages: list[MutableMapping[str, Any]] = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive() -> MutableMapping[str, Any]:
                if messages:
                    return messages.pop()
                await asyncio.Event().wait()
                return {"type": "http.disconnect"}

            async def send(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await keeper.serve(dict(scope), receive, send)

        async def run(total: int) -> None:
            async def worker(count: int) -> None:
                for _ in range(count):
                    await one()

            await asyncio.gather(*(worker(total // concurrency) for _ in range(concurrency)))

        try:
            await run(warm)
            statuses.clear()
            started = time.process_time()
            await run(requests)
            cpu = time.process_time() - started
        finally:
            await keeper.shutdown()
            upstream.cancel()
        if not statuses or any(status != 200 for status in statuses):
            raise RuntimeError(f"{op}: not every request was answered 200: {sorted(set(statuses))}")
        return cpu / len(statuses) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--op", choices=sorted(OPERATIONS), default="converse")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--auth", choices=AUTH_MODES, default="trust")
    parser.add_argument("--body-bytes", type=int, default=0,
                        help="grow the request body to about this size (e.g. 100000, a coding agent's)")
    args = parser.parse_args(argv)
    os.environ.update(AWS_ACCESS_KEY_ID="AKIDBENCHUPSTREAM001", AWS_SECRET_ACCESS_KEY="bench-secret")
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # the access log
        cpu = asyncio.run(cpu_per_request(args.op, args.requests, args.concurrency, auth=args.auth,
                                            body_bytes=args.body_bytes))
    size = f", {args.body_bytes} B body" if args.body_bytes else ""
    print(f"{args.op} ({args.auth}{size}): {cpu:.0f} µs of CPU per request (handler in process, stand-in upstream included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
