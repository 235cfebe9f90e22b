"""The bench's HTTP/2 load client: one connection, `concurrency` streams at a time.

What the AWS SDK for JavaScript does by default (HTTP/2 prior knowledge on http://,
issue #19); raw `h2` over asyncio, so the client costs about what bench/client.py's
raw HTTP/1.1 does. The request is bench/client.py's (`build_request`, signed the
same way), its head turned into HTTP/2 fields.
"""

from __future__ import annotations

import asyncio
import time

import h2.config
import h2.connection
import h2.events

from bench.client import Point

__all__ = ["load_h2"]


def _fields(raw: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    request_line, *lines = head.split(b"\r\n")
    method, path, _ = request_line.split(b" ")
    fields = [(b":method", method), (b":path", path), (b":scheme", b"http")]
    for line in lines:
        name, _, value = line.partition(b": ")
        name = name.lower()
        if name == b"host":
            fields.insert(3, (b":authority", value))
        else:
            fields.append((name, value))
    return fields, body


async def load_h2(port: int, raw: bytes, point: Point, duration: float, max_requests: int,
                  warmup: int = 2) -> Point:
    """Closed loop over one HTTP/2 connection: `point.concurrency` requests, at most the
    server's concurrent-stream limit of them in flight (the rest wait, as in an SDK)."""
    fields, body = _fields(raw)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    waiting: dict[int, tuple[asyncio.Future[int], list[float]]] = {}
    statuses: dict[int, int] = {}
    settled = asyncio.Event()  # the server's SETTINGS are in: its stream limit is known

    async def read() -> None:
        while data := await reader.read(1 << 16):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id:
                    statuses[event.stream_id] = int(dict(event.headers or [])[b":status"])
                elif isinstance(event, h2.events.DataReceived) and event.stream_id:
                    conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
                    entry = waiting.get(event.stream_id)
                    if entry is not None and not entry[1]:
                        entry[1].append(time.perf_counter())
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id in waiting:
                    future, _ = waiting.pop(event.stream_id)
                    future.set_result(statuses.pop(event.stream_id, 0))
                elif isinstance(event, h2.events.StreamReset) and event.stream_id in waiting:
                    waiting.pop(event.stream_id)[0].set_result(0)
                elif isinstance(event, h2.events.RemoteSettingsChanged):
                    settled.set()
            writer.write(conn.data_to_send())

    async def one() -> tuple[int, float]:
        async with streams:
            return await _one()

    async def _one() -> tuple[int, float]:
        stream_id = conn.get_next_available_stream_id()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        first: list[float] = []
        waiting[stream_id] = (future, first)
        conn.send_headers(stream_id, fields)
        conn.send_data(stream_id, body, end_stream=True)
        writer.write(conn.data_to_send())
        status = await future
        return status, first[0] if first else time.perf_counter()

    reading = asyncio.create_task(read())
    await asyncio.wait_for(settled.wait(), 10)
    # Beyond the server's SETTINGS_MAX_CONCURRENT_STREAMS a client queues its requests (as
    # Node's http2 does): more streams than that are refused, not served.
    streams = asyncio.Semaphore(min(point.concurrency, conn.remote_settings.max_concurrent_streams))
    left = [max_requests]
    deadline = [0.0]

    async def worker() -> None:
        while left[0] > 0 and time.perf_counter() < deadline[0]:
            left[0] -= 1
            start = time.perf_counter()
            status, first = await one()
            end = time.perf_counter()
            point.errors += status != 200
            point.requests += 1
            point.latencies.append(end - start)
            point.ttfb.append(first - start)

    try:
        for _ in range(warmup):
            await asyncio.wait_for(asyncio.gather(*(one() for _ in range(point.concurrency))), 60)
        started = time.perf_counter()
        deadline[0] = started + duration
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(point.concurrency))), duration + 60)
        point.elapsed = time.perf_counter() - started
    finally:
        reading.cancel()
        writer.close()
    return point
