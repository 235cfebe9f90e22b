"""Stamps for `bench/timeline.py`, loaded by a proxy started with this directory on
PYTHONPATH and `COSTKEEPER_BENCH_TIMELINE` set to the file the stamps go to at exit.

Wraps, never edits: uvicorn's `data_received` (the request's bytes are read),
the handler, identification, the upstream signature and send, the stream watcher's
first feed and the client's first body frame. `time.perf_counter` is
CLOCK_MONOTONIC, so the load client's own stamps line up with these.

Each request's stamps go to its own row (a context variable set when its bytes
arrive: uvicorn's task for the request copies it), so the background streams of
`--background` do not mix with the measured one; their requests carry
`bench.timeline.BACKGROUND` and their rows are not marked `measured`. The handler's
coroutine is driven through `_Counted`, which counts the times it suspends before
the first frame is out and the time it stays suspended; `gc.callbacks` add the
collector's pauses in the measured stream's window.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import gc
import json
import os
import time
from collections.abc import Coroutine, Generator
from typing import Any

_OUT = os.environ.get("COSTKEEPER_BENCH_TIMELINE")
_SKIP_FEED = os.environ.get("TIMELINE_SKIP_FEED") == "1"


class _Counted:
    """Awaits a coroutine step by step, counting in `row` the suspensions (and the
    time suspended) until `row` has its first frame out."""

    def __init__(self, coro: Coroutine[Any, Any, Any], row: dict[str, Any]) -> None:
        self._coro = coro
        self._row = row

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, row = self._coro, self._row
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = coro.throw(error) if error is not None else coro.send(value)
            except StopIteration as stop:
                return stop.value
            counting = "frame_out" not in row
            suspended = time.perf_counter()
            try:
                value, error = (yield yielded), None
            except BaseException as exc:  # cancellation: passed on to the coroutine
                value, error = None, exc
            if counting:
                row["suspensions"] = row.get("suspensions", 0) + 1
                row["suspended"] = row.get("suspended", 0.0) + (time.perf_counter() - suspended) * 1e6


def _install(out: str) -> None:
    from uvicorn.protocols.http import httptools_impl

    import adapters.watch
    import proxy.forward
    import proxy.http1_client
    import proxy.identity
    import proxy.upstream
    from bench.timeline import BACKGROUND

    stamp = time.perf_counter
    rows: list[dict[str, Any]] = []
    current: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("timeline_row")
    measured: list[dict[str, Any]] = [{}]  # the measured stream's row, for the collector's pauses
    turns: list[float] = []
    atexit.register(lambda: open(out, "w").write(json.dumps([*rows, {"turns": turns}])))

    def probe_turn() -> None:
        """Every 5 ms: how long a callback just made ready waits for its turn (what a task
        started or woken waits), the loop's own lag behind the streams' callbacks."""
        loop = asyncio.get_running_loop()
        queued = stamp()
        loop.call_soon(lambda: turns.append((stamp() - queued) * 1e6))
        loop.call_later(0.005, probe_turn)

    def collected(phase: str, info: dict[str, Any], started: list[float] = [0.0]) -> None:  # noqa: B006
        if phase == "start":
            started[0] = stamp()
        elif "read" in measured[0] and "frame_out" not in measured[0]:
            measured[0]["gc"] = measured[0].get("gc", 0.0) + (stamp() - started[0]) * 1e6

    gc.callbacks.append(collected)

    class _Row:
        """What the stamps below write to: the current request's row."""

        def __setitem__(self, name: str, value: float) -> None:
            current.get({})[name] = value


    row = _Row()
    received = httptools_impl.HttpToolsProtocol.data_received

    def data_received(self: Any, data: bytes) -> None:
        if data[:5] == b"POST ":
            new = {"read": stamp(), "measured": BACKGROUND not in data}
            current.set(new)
            if new["measured"]:
                measured[0] = new
        received(self, data)

    proxy_handle = proxy.forward.ProxyHandler.__call__

    async def handler(self: Any, scope: Any, receive: Any, send: Any, handle: Any = proxy_handle) -> None:
        if scope["type"] != "http":
            return await handle(self, scope, receive, send)
        if not turns:
            turns.append(0.0)
            probe_turn()
        mine = current.get({})
        row["handler"] = stamp()

        async def stamped_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                row["head_out"] = stamp()
            first = message["type"] == "http.response.body" and message.get("body") and "frame_out" not in mine
            await send(message)
            if first:
                row["frame_out"] = stamp()

        await _Counted(handle(self, scope, receive, stamped_send), mine)
        rows.append(dict(mine))

    cycle_run = httptools_impl.RequestResponseCycle.run_asgi

    async def run_asgi(self: Any, app: Any) -> None:
        """The floor (`bench/floor.py`, run as __main__): its app, stamped as the handler is."""
        if type(app).__name__ == "Floor":
            floor = app

            async def app(scope: Any, receive: Any, send: Any) -> None:
                await handler(floor, scope, receive, send, type(floor).__call__)
        await cycle_run(self, app)

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
        mine = current.get({})
        if "frame_in" not in mine:
            mine["frame_in"] = stamp()
        if _SKIP_FEED:  # an experiment's: the relay without the watcher's per-frame work
            return data
        return feed(self, data)

    connection_received = proxy.http1_client.Connection.data_received

    def upstream_received(self: Any, data: bytes) -> None:
        head = self._head  # per upstream read: kept cheap, the background streams' frames pass here
        if head is None or head.done():
            return connection_received(self, data)
        connection_received(self, data)
        if head.done():
            self.timeline_in = stamp()  # the request's task reads it when it wakes

    connection_request = proxy.http1_client.Connection.request

    async def upstream_request(self: Any, *args: Any) -> None:
        await connection_request(self, *args)
        row["upstream_in"] = getattr(self, "timeline_in", stamp())

    for owner, name, wrapper in (
        (proxy.http1_client.Connection, "data_received", upstream_received),
        (proxy.http1_client.Connection, "request", upstream_request),
        (httptools_impl.HttpToolsProtocol, "data_received", data_received),
        (proxy.forward.ProxyHandler, "__call__", handler),
        (httptools_impl.RequestResponseCycle, "run_asgi", run_asgi),
        (proxy.identity.Identified, "verified", identified),  # the body is in and verified
        (proxy.upstream.Upstream, "send", sent),
        (proxy.upstream, "sign", signed),  # looked up by `Upstream.send` at each call
        (adapters.watch.StreamUsageWatcher, "feed", fed),
    ):
        setattr(owner, name, wrapper)

if _OUT:
    _install(_OUT)
