"""Stamps for `bench/timeline.py`, loaded by a proxy started with this directory on
PYTHONPATH and `COSTKEEPER_BENCH_TIMELINE` set to the file the stamps go to at exit.

Wraps, never edits: uvicorn's `data_received` (the request's bytes are read),
the handler, identification, the upstream signature and send, the stream watcher's
first feed and the client's first body frame. `time.perf_counter` is
CLOCK_MONOTONIC, so the load client's own stamps line up with these.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from typing import Any

_OUT = os.environ.get("COSTKEEPER_BENCH_TIMELINE")


def _install(out: str) -> None:
    from uvicorn.protocols.http import httptools_impl

    import adapters.watch
    import proxy.forward
    import proxy.identity
    import proxy.upstream

    stamp = time.perf_counter
    rows: list[dict[str, float]] = []
    row: dict[str, float] = {}
    atexit.register(lambda: open(out, "w").write(json.dumps(rows)))

    received = httptools_impl.HttpToolsProtocol.data_received

    def data_received(self: Any, data: bytes) -> None:
        if data[:5] == b"POST ":
            row.clear()
            row["read"] = stamp()
        received(self, data)

    handle = proxy.forward.ProxyHandler.__call__

    async def handler(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await handle(self, scope, receive, send)
        row["handler"] = stamp()

        async def stamped_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                row["head_out"] = stamp()
            first = message["type"] == "http.response.body" and message.get("body") and "frame_out" not in row
            await send(message)
            if first:
                row["frame_out"] = stamp()

        await handle(self, scope, receive, stamped_send)
        rows.append(dict(row))

    verified = proxy.identity.Identified.verified

    def identified(self: Any, body: bytes) -> Any:
        answer = verified(self, body)
        row["identified"] = stamp()
        return answer

    upstream_send = proxy.upstream.Upstream.send

    async def sent(self: Any, *args: Any) -> Any:
        row["admitted"] = stamp()
        response = await upstream_send(self, *args)
        row["upstream_head"] = stamp()
        return response

    sign = proxy.upstream.sign

    def signed(*args: Any, **kwargs: Any) -> Any:
        headers = sign(*args, **kwargs)
        row["signed"] = stamp()
        return headers

    feed = adapters.watch.StreamUsageWatcher.feed

    def fed(self: Any, data: bytes) -> bytes:
        row.setdefault("frame_in", stamp())
        return feed(self, data)

    for owner, name, wrapper in (
        (httptools_impl.HttpToolsProtocol, "data_received", data_received),
        (proxy.forward.ProxyHandler, "__call__", handler),
        (proxy.identity.Identified, "verified", identified),  # the body is in and verified
        (proxy.upstream.Upstream, "send", sent),
        (proxy.upstream, "sign", signed),  # looked up by `Upstream.send` at each call
        (adapters.watch.StreamUsageWatcher, "feed", fed),
    ):
        setattr(owner, name, wrapper)

if _OUT:
    _install(_OUT)
