"""The bench's load client: raw HTTP/1.1 over asyncio, one keep-alive connection per
concurrent worker, request bytes built (and SigV4-signed with botocore) once per point.

Shared by `make bench` (bench/run.py), the first-byte timeline (bench/timeline.py)
and the metering point (bench/store.py).
"""

from __future__ import annotations

import asyncio
import json
import selectors
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

__all__ = ["MODEL", "PATHS", "Point", "build_request", "load", "on_precise_loop", "precise_loop", "read_response"]

T = TypeVar("T")

#: An inference profile: Claude Haiku 4.5 has no on-demand route (BEDROCK_WIRE.md §1.2).
MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
BODY = json.dumps({"messages": [{"role": "user", "content": [{"text": "Say hello."}]}],
                   "inferenceConfig": {"maxTokens": 64}}, separators=(",", ":")).encode()
INVOKE_BODY = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
                          "messages": [{"role": "user", "content": "Say hello."}]},
                         separators=(",", ":")).encode()
PATHS = {
    "converse": f"/model/{MODEL}/converse",
    "converse-stream": f"/model/{MODEL}/converse-stream",
    "invoke-stream": f"/model/{MODEL}/invoke-with-response-stream",
}


#: The key a target that verifies nothing (the upstream, the floor, a trust-mode proxy)
#: sees requests signed with: every SDK signs, whatever the proxy does with it.
UNVERIFIED_KEY = ("AKIDBENCHCLIENT00001", "bench-client-secret")


def build_request(port: int, op: str, key: tuple[str, str] | None) -> bytes:
    """The raw request bytes, SigV4-signed once (dates stay valid for minutes) as an SDK
    signs them: with `key`, or `UNVERIFIED_KEY` for a target that checks no signature.
    Every target parses the same head (the escaped path, `Authorization`, `X-Amz-Date`):
    an unsigned request, lighter than any client's, made the floor and trust mode cheaper
    than real traffic and sigv4 mode's gap to them wider (issue #20)."""
    path = PATHS[op].replace(":", "%3A")
    body = INVOKE_BODY if op == "invoke-stream" else BODY
    headers = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json",
               "Accept": "application/json"}
    request = AWSRequest(method="POST", url=f"http://127.0.0.1:{port}{path}", data=body, headers=headers)
    SigV4Auth(Credentials(*(key or UNVERIFIED_KEY)), "bedrock", "us-east-1").add_auth(request)
    headers = dict(request.headers.items())
    lines = [f"POST {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader, keep: bytearray | None = None) -> tuple[int, float, int]:
    """(status, time of first body byte, body bytes) for one response; with `keep`, the
    body is also appended to it."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    first = 0.0
    size = 0
    if b"transfer-encoding: chunked" in lower:
        while True:
            line = await reader.readuntil(b"\r\n")
            n = int(line.split(b";", 1)[0], 16)
            if n == 0:
                await reader.readuntil(b"\r\n")
                break
            chunk = await reader.readexactly(n + 2)
            if keep is not None:
                keep += chunk[:-2]
            if not first:
                first = time.perf_counter()
            size += n
    else:
        pos = lower.find(b"content-length:")
        n = int(lower[pos + 15: lower.find(b"\r\n", pos)]) if pos >= 0 else 0
        if n:
            head_byte = await reader.readexactly(1)
            first = time.perf_counter()
            rest = await reader.readexactly(n - 1)
            if keep is not None:
                keep += head_byte + rest
        size = n
    return status, first, size


@dataclass
class Point:
    target: str
    op: str
    concurrency: int
    requests: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    #: CPU seconds the server process (proxy or floor) used during the point.
    cpu: float = 0.0
    #: An offered load's sends: seconds each went out after its scheduled time.
    late: list[float] = field(default_factory=list)

    @property
    def cpu_us(self) -> float:
        return self.cpu * 1e6 / self.requests if self.requests and self.cpu else float("nan")

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float, values: list[float] | None = None) -> float:
        data = sorted(self.latencies if values is None else values)
        if not data:
            return float("nan")
        return data[min(len(data) - 1, int(q * len(data)))] * 1000


async def load(port: int, raw: bytes, point: Point, duration: float, max_requests: int,
               warmup: int = 2, rate: float = 0.0, stop: asyncio.Event | None = None,
               expect: bytes | None = None, stagger: float = 0.0) -> Point:
    """Closed loop (each connection sends its next request as soon as the last one is
    answered), or with `rate` > 0 an offered load of `rate` requests/s spread evenly over
    the connections — below saturation, latency is then the servers' own, not queueing.
    Ends after `duration`, `max_requests` or once `stop` is set. With `expect`, a response
    whose body is not exactly those bytes is an error too, as a status other than 200 is.

    `stagger` (closed loop): the connections' first requests are spread evenly over that
    many seconds. Paced streams all last as long: started together, the connections
    would start every later stream together too, and each stream's first byte would
    wait behind the others' requests (a burst of `concurrency` at once, all the time)."""
    deadline_box = [0.0]
    left = [max_requests]
    interval = point.concurrency / rate if rate > 0 else 0.0

    async def worker(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        try:
            for _ in range(warmup):
                writer.write(raw)
                await read_response(reader)
        finally:
            warmed[0] += 1
            if warmed[0] == point.concurrency:
                all_warm.set()
        try:
            await ready.wait()
            if stagger and not interval:
                await asyncio.sleep(stagger * index / point.concurrency)
            next_at = time.perf_counter() + interval * index / point.concurrency
            while left[0] > 0 and time.perf_counter() < deadline_box[0] and not (stop and stop.is_set()):
                due = next_at
                if interval:
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                        if left[0] <= 0:  # another connection sent the last one meanwhile
                            break
                    next_at += interval
                left[0] -= 1
                start = time.perf_counter()
                if interval:
                    point.late.append(start - due)
                writer.write(raw)
                body = None if expect is None else bytearray()
                status, first, _ = await read_response(reader, body)
                end = time.perf_counter()
                if status != 200 or body is not None and body != expect:
                    point.errors += 1
                point.requests += 1
                point.latencies.append(end - start)
                point.ttfb.append((first or end) - start)
        finally:
            writer.close()

    ready, all_warm, warmed = asyncio.Event(), asyncio.Event(), [0]
    tasks = [asyncio.create_task(worker(index)) for index in range(point.concurrency)]
    await asyncio.wait_for(all_warm.wait(), timeout=60)  # every connection up and warmed
    started = time.perf_counter()
    deadline_box[0] = started + duration
    ready.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=duration + 60)
    point.elapsed = time.perf_counter() - started
    return point


def precise_loop() -> asyncio.AbstractEventLoop:
    """An event loop whose timers keep sub-millisecond time, for an offered load (`load`'s
    `rate`): asyncio on `select(2)`, which waits in microseconds.

    uvloop's timers (libuv's) and asyncio's epoll selector count in whole milliseconds. A
    send due 0.3 ms from now then waits for the next millisecond, or for whatever wakes
    the loop first: most often the answer to the request before it. At 1,000 req/s over
    16 connections that sent half the requests in pairs, the second one as the first's
    answer arrived (gaps of 20 µs and 1.7 ms instead of 1 ms), so it waited behind the
    server's work on the first: a second mode of latencies that grows with the server's
    CPU per request, which is no property of independent clients (issue #20).
    `select(2)` is limited to descriptors below 1,024: one connection per worker is far
    below it."""
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


async def on_precise_loop(job: Coroutine[Any, Any, T]) -> T:
    """Run `job` to its end on a `precise_loop` of its own, in a thread; the caller's loop
    waits without running (nothing else of the bench's runs meanwhile)."""
    def run() -> T:
        with asyncio.Runner(loop_factory=precise_loop) as runner:
            return runner.run(job)

    return await asyncio.to_thread(run)
