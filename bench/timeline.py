"""Where a paced stream's first byte spends its time, stage by stage.

One stream at a time (c=1, closed loop) through a proxy in front of the paced
upstream (frames 1 ms apart), in trust and sigv4 mode: the load client stamps its
write and the first body byte, the proxy stamps each stage (`bench/timeline_hooks`,
loaded only here), and the table gives the median µs between consecutive stamps.
The direct row is the upstream alone. `make bench` runs it after the paced
points (`--timeline-streams`); alone:

    tools/isolated .venv/bin/python -m bench.timeline --streams 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.client import build_request, read_response
from bench.processes import start_upstream
from tests.processes import REPO, start_proxy

__all__ = ["STAGES", "main", "measure_timeline", "table"]

#: (stamp, what happened between the stamp before it and this one).
STAGES = [
    ("read", "the proxy reads the request (kernel, wake-up, uvicorn)"),
    ("handler", "uvicorn parses it and calls the handler"),
    ("identified", "head checks, route, identity from the head, the body read, SigV4 verification"),
    ("admitted", "the body's JSON, admission (policy, quota, rate), upstream headers"),
    ("signed", "credentials, botocore SigV4 re-signing"),
    ("upstream_head", "the upstream client sends it; the upstream answers; the client parses the head"),
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


async def measure_timeline(op: str, streams: int, modes: list[str], tmp: Path | None = None) -> dict[str, dict[str, float]]:
    """Median µs per stage, by mode; "direct": the upstream alone."""
    tmp = Path(tempfile.mkdtemp(prefix="timeline-", dir=tmp))
    upstream, port = start_upstream(tmp, 200, 0.001)
    medians: dict[str, dict[str, float]] = {}
    try:
        direct = await _drive(port, build_request(port, op, None), streams)
        medians["direct"] = {"client": statistics.median(f - s for s, f in direct) * 1e6}
        for mode in modes:
            out = tmp / f"{mode}.json"
            proxy = start_proxy(Path(tempfile.mkdtemp(dir=tmp)), f"http://127.0.0.1:{port}",
                                {"auth": {"mode": mode}, "metering": {}},
                                upstream_credentials=("AKIDBENCHUPSTREAM001", "bench-secret"),
                                env={"PYTHONPATH": f"{REPO / 'bench' / 'timeline_hooks'}:{REPO}",
                                     "COSTKEEPER_BENCH_TIMELINE": str(out)})
            try:
                key = None
                if mode == "sigv4":
                    issued = proxy.issue_key("bench", "bench")
                    key = (issued["AWS_ACCESS_KEY_ID"], issued["AWS_SECRET_ACCESS_KEY"])
                proxy_port = int(proxy.url.rsplit(":", 1)[1])
                client = await _drive(proxy_port, build_request(proxy_port, op, key), streams)
            finally:
                proxy.stop()
            rows = json.loads(out.read_text())[-streams:]  # the warm-up streams came first
            gaps: dict[str, list[float]] = {}
            for (started, first), row in zip(client, rows, strict=True):
                previous = started
                for name, _ in STAGES:
                    now = first if name == "client" else row[name]
                    gaps.setdefault(name, []).append((now - previous) * 1e6)
                    previous = now
                gaps.setdefault("total", []).append((first - started) * 1e6)
            medians[mode] = {name: statistics.median(values) for name, values in gaps.items()}
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
    return medians


def table(medians: dict[str, dict[str, float]]) -> str:
    modes = [m for m in medians if m != "direct"]
    lines = ["| stage, ends when … | " + " | ".join(f"{m} µs" for m in modes) + " |",
             "|---|" + "---:|" * len(modes)]
    for name, what in STAGES:
        lines.append(f"| {what} | " + " | ".join(f"{medians[m][name]:.0f}" for m in modes) + " |")
    lines.append("| **time to first byte** (medians of each stage need not add up) | "
                 + " | ".join(f"**{medians[m]['total']:.0f}**" for m in modes) + " |")
    lines.append(f"| the upstream alone (direct) | {medians['direct']['client']:.0f} |" + " |" * (len(modes) - 1))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", default="invoke-stream", choices=["converse-stream", "invoke-stream"])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--modes", default="trust,sigv4")
    args = parser.parse_args(argv)
    print(table(asyncio.run(measure_timeline(args.op, args.streams, args.modes.split(",")))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
