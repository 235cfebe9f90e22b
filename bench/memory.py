"""Memory points of `make bench`: RSS per open stream, and RSS growth over many requests.

* Open streams: N clients each open a stream against a paced upstream (one
  frame every `interval` seconds, so every stream stays open for the whole
  measurement) and wait for its first body byte; the proxy's RSS is read once
  all N are open. KB per stream = (RSS with N open − RSS before) / N. The
  clients then hang up, which also exercises N upstream cancellations at once.
* Leak check: RSS after a warm-up of `warm` requests, then after `total`;
  growth per 10,000 requests. Python's allocator keeps freed arenas, so a
  one-off rise after the warm-up is not a leak; growth that keeps scaling with
  the request count is.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["OpenStreams", "open_streams", "rss_kib"]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class OpenStreams:
    streams: int
    opened: int
    rss_before_kib: int
    rss_open_kib: int
    seconds_to_open: float
    fds_open: int
    #: Why streams failed to open, one line per distinct error (empty when all opened).
    errors: list[str] = field(default_factory=list)

    @property
    def kib_per_stream(self) -> float:
        return (self.rss_open_kib - self.rss_before_kib) / self.opened if self.opened else float("nan")


async def open_streams(port: int, raw: bytes, count: int, pid: int, hold_seconds: float = 60.0) -> OpenStreams:
    """Open `count` streams at once through the proxy on `port`, measure, hang up."""
    before = rss_kib(pid)
    writers: list[asyncio.StreamWriter] = []
    opened = 0
    all_open = asyncio.Event()

    errors: dict[str, int] = {}  # a failed stream is counted and reported, never waited for
    connecting = asyncio.Semaphore(200)  # don't overflow the listen backlog

    async def one() -> None:
        nonlocal opened
        try:
            async with connecting:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            if not await reader.read(1):  # the first body byte: the stream is flowing through the proxy
                raise RuntimeError("closed before the first body byte")
        except (OSError, RuntimeError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            errors[error] = errors.get(error, 0) + 1
        else:
            opened += 1
        if opened + sum(errors.values()) == count:
            all_open.set()
        await asyncio.sleep(hold_seconds)  # hold the stream open; cancelled after the measurement

    started = time.perf_counter()
    tasks = [asyncio.create_task(one()) for _ in range(count)]
    try:
        await asyncio.wait_for(all_open.wait(), hold_seconds)
    except TimeoutError:
        pass
    seconds = time.perf_counter() - started
    await asyncio.sleep(0.5)  # let the proxy settle with every stream open
    result = OpenStreams(count, opened, before, rss_kib(pid), seconds, len(os.listdir(f"/proc/{pid}/fd")),
                         [f"{n} × {error}" for error, n in errors.items()])
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for writer in writers:
        writer.close()
    return result
