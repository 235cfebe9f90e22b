"""Where a paced stream's first byte spends its time, stage by stage.

One stream at a time (c=1, closed loop) through a proxy in front of the paced
upstream (frames 1 ms apart), in trust and sigv4 mode: the load client stamps its
write and the first body byte, the proxy stamps each stage (`bench/timeline_hooks`,
loaded only here), and the table gives the median µs between consecutive stamps.
The direct row is the upstream alone. `make bench` runs it after the paced
points (`--timeline-streams`); alone:

    tools/isolated .venv/bin/python -m bench.timeline --streams 100

With `--background N`, N more paced streams run through the same target (proxy or
upstream) from a separate process while the measured stream is timed, as at c=N+1
in `make bench`: the stage that grows under concurrent streams shows. The rows
below the stages count, per measured stream, how often the handler's task
suspended (gave the loop to the other streams' ready callbacks) before its first
frame was out, how long it stayed suspended, and the garbage collector's pauses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.client import build_request, read_response
from bench.processes import start_floor, start_upstream
from tests.processes import REPO, start_proxy

__all__ = ["STAGES", "main", "measure_timeline", "table"]

#: (stamp, what happened between the stamp before it and this one).
STAGES = [
    ("read", "the proxy reads the request (kernel, wake-up, uvicorn)"),
    ("handler", "uvicorn parses it and calls the handler"),
    ("identified", "head checks, route, identity from the head, the body read, SigV4 verification"),
    ("admitted", "the body's JSON, admission (policy, quota, rate), upstream headers"),
    ("signed", "credentials, botocore SigV4 re-signing"),
    ("upstream_in", "the upstream client sends it; the upstream answers; the proxy's loop reads the head"),
    ("upstream_head", "the request's task wakes with the head (behind the loop's ready callbacks)"),
    ("head_out", "watchers, response headers; uvicorn writes the head"),
    ("frame_in", "the upstream client delivers the first frame"),
    ("frame_out", "the watcher splits and decodes it; uvicorn writes it"),
    ("client", "the client reads it (kernel, wake-up)"),
]


async def _drive(port: int, raw: bytes, streams: int) -> list[tuple[float, float]]:
    """(write, first body byte) per stream, after three warm-up streams."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    for _ in range(3):
        writer.write(raw)
        await read_response(reader)
    stamps = []
    for _ in range(streams):
        started = time.perf_counter()
        writer.write(raw)
        _, first, _ = await read_response(reader)
        stamps.append((started, first))
    writer.close()
    return stamps


async def _loop_streams(raw: bytes, port: int, count: int) -> None:
    """`count` connections, each running paced streams back to back until killed."""
    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        while True:
            writer.write(raw)
            await read_response(reader)
    await asyncio.gather(*(one() for _ in range(count)))


#: The header the background streams carry (botocore never signs X-Amzn-Trace-Id).
BACKGROUND = b"X-Amzn-Trace-Id: Root=bench-background"


class _Background:
    """N paced streams through `port` from another process (the measuring client's
    loop is not the one that reads their frames), for the duration of a `with`."""

    def __init__(self, tmp: Path, port: int, raw: bytes, count: int) -> None:
        self._args = (tmp, port, raw, count)
        self._process: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> None:
        if self._args[3]:
            self._process = self._spawn()
            await asyncio.sleep(1.0)  # connected, past their first streams

    def _spawn(self) -> subprocess.Popen[bytes]:
        tmp, port, raw, count = self._args
        request = tmp / f"background-{port}.raw"
        # Marked for the stamps (which count only the measured stream); never signed by an SDK.
        line, rest = raw.split(b"\r\n", 1)
        request.write_bytes(line + b"\r\n" + BACKGROUND + b"\r\n" + rest)
        return subprocess.Popen([sys.executable, "-m", "bench.timeline", "--serve-background",
                                 f"{request}:{port}:{count}"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})

    async def __aexit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)


async def measure_timeline(op: str, streams: int, modes: list[str], tmp: Path | None = None,
                           background: int = 0) -> dict[str, dict[str, float]]:
    """Median µs per stage, by mode; "direct": the upstream alone. `background`: paced
    streams run through the same target while each is measured."""
    tmp = Path(tempfile.mkdtemp(prefix="timeline-", dir=tmp))
    upstream, port = start_upstream(tmp, 200, 0.001)
    medians: dict[str, dict[str, float]] = {}
    try:
        raw = build_request(port, op, None)
        async with _Background(tmp, port, raw, background):
            direct = await _drive(port, raw, streams)
        medians["direct"] = {"client": statistics.median(f - s for s, f in direct) * 1e6}
        for mode in modes:
            out = tmp / f"{mode}.json"
            hooks = {"PYTHONPATH": f"{REPO / 'bench' / 'timeline_hooks'}:{REPO}", "COSTKEEPER_BENCH_TIMELINE": str(out)}
            if mode == "floor":  # the same stamps where the floor has the same stages (uvicorn's, the handler's)
                floor, floor_port = start_floor(tmp, f"http://127.0.0.1:{port}", env=hooks)
                try:
                    raw = build_request(floor_port, op, None)
                    async with _Background(tmp, floor_port, raw, background):
                        client = await _drive(floor_port, raw, streams)
                finally:  # uvicorn.run re-raises SIGTERM after its shutdown: at-exit hooks never run
                    floor.send_signal(signal.SIGINT)
                    floor.wait(timeout=10)
            else:
                proxy = start_proxy(Path(tempfile.mkdtemp(dir=tmp)), f"http://127.0.0.1:{port}",
                                    {"auth": {"mode": mode}, "metering": {}},
                                    upstream_credentials=("AKIDBENCHUPSTREAM001", "bench-secret"), env=hooks)
                try:
                    key = None
                    if mode == "sigv4":
                        issued = proxy.issue_key("bench", "bench")
                        key = (issued["AWS_ACCESS_KEY_ID"], issued["AWS_SECRET_ACCESS_KEY"])
                    proxy_port = int(proxy.url.rsplit(":", 1)[1])
                    raw = build_request(proxy_port, op, key)
                    async with _Background(tmp, proxy_port, raw, background):
                        client = await _drive(proxy_port, raw, streams)
                finally:
                    proxy.stop()
            # Only the measured connection's streams (the background's are stamped too),
            # and the warm-up streams came first.
            written = json.loads(out.read_text())
            rows = [row for row in written if row.get("measured")][-streams:]
            gaps: dict[str, list[float]] = {}
            for (started, first), row in zip(client, rows, strict=True):
                previous = started
                for name, _ in STAGES:
                    now = first if name == "client" else row.get(name, previous)  # the floor has fewer
                    gaps.setdefault(name, []).append((now - previous) * 1e6)
                    previous = now
                gaps.setdefault("total", []).append((first - started) * 1e6)
            for name in ("suspensions", "suspended", "gc"):
                gaps[name] = [row.get(name, 0.0) for row in rows]
            gaps["turn"] = written[-1]["turns"][1:] or [0.0]
            medians[mode] = {name: statistics.median(values) for name, values in gaps.items()}
            medians[mode]["turn_p90"] = statistics.quantiles(gaps["turn"], n=10)[-1] if len(gaps["turn"]) > 1 else 0.0
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
    return medians


def table(medians: dict[str, dict[str, float]], detail: bool = False) -> str:
    modes = [m for m in medians if m != "direct"]
    lines = ["| stage, ends when … | " + " | ".join(f"{m} µs" for m in modes) + " |",
             "|---|" + "---:|" * len(modes)]
    for name, what in STAGES:
        lines.append(f"| {what} | " + " | ".join(f"{medians[m][name]:.0f}" for m in modes) + " |")
    lines.append("| **time to first byte** (medians of each stage need not add up) | "
                 + " | ".join(f"**{medians[m]['total']:.0f}**" for m in modes) + " |")
    lines.append(f"| the upstream alone (direct) | {medians['direct']['client']:.0f} |" + " |" * (len(modes) - 1))
    if detail:
        for name, what in (("suspensions", "the handler's task suspended, times before the first frame is out"),
                           ("suspended", "… µs in all, waiting (upstream included)"),
                           ("gc", "garbage collection before the first frame is out, µs"),
                           ("turn", "a callback made ready waits for its turn (every 5 ms), p50 µs"),
                           ("turn_p90", "… p90 µs")):
            lines.append(f"| {what} | " + " | ".join(f"{medians[m][name]:.0f}" for m in modes) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", default="invoke-stream", choices=["converse-stream", "invoke-stream"])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--modes", default="trust,sigv4", help="of trust, sigv4, floor (bench/floor.py)")
    parser.add_argument("--background", type=int, default=0,
                        help="paced streams run through the same target while each stream is measured")
    parser.add_argument("--serve-background", help=argparse.SUPPRESS)  # REQUEST_FILE:PORT:COUNT, the child
    args = parser.parse_args(argv)
    if args.serve_background:
        request, port, count = args.serve_background.rsplit(":", 2)
        asyncio.run(_loop_streams(Path(request).read_bytes(), int(port), int(count)))
        return 0
    medians = asyncio.run(measure_timeline(args.op, args.streams, args.modes.split(","), background=args.background))
    print(table(medians, detail=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
