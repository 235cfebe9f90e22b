"""The floor: the least a Python proxy on this stack can cost.

An ASGI app on uvicorn (httptools, uvloop) that forwards each request with
aiohttp and relays the body chunk by chunk — no identity, no signing, no
metering, no logging. `make bench` measures it beside the proxy: what the
proxy costs above this line is Cost Keeper's own work; what this line costs is
the HTTP server and client the proxy is built on.
Run: ``python -m bench.floor --upstream http://127.0.0.1:P --port Q``.
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn
from yarl import URL

_HOP = frozenset({b"connection", b"transfer-encoding", b"keep-alive"})


class Floor:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.session = aiohttp.ClientSession(
                        auto_decompress=False, connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0))
                    await send({"type": "lifespan.startup.complete"})
                else:
                    assert self.session is not None
                    await self.session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        assert self.session is not None
        response = await self.session.request(
            scope["method"], URL(self.upstream + scope["raw_path"].decode("latin-1"), encoded=True),
            data=body, headers={"content-type": "application/json"})
        headers = [(k, v) for k, v in response.raw_headers if k.lower() not in _HOP]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        response.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(Floor(args.upstream), host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", server_header=False, proxy_headers=False)


if __name__ == "__main__":
    main()
