"""`make bench`: proxy vs direct on 127.0.0.1, written to bench/RESULTS.md.

Starts the fast upstream (bench/upstream.py), then `costkeeper serve` in trust
mode and in sigv4 mode pointed at it, and drives each with a raw asyncio
HTTP/1.1 keep-alive client (one connection per concurrent worker). Every load
point is bounded by a request count and a wall-clock duration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.processes import REPO, Proxy, base_env, free_port, start_proxy

MODEL = "anthropic.claude-haiku-4-5-20251001-v1:0"
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


# ----------------------------------------------------------------- client
def build_request(port: int, op: str, key: tuple[str, str] | None) -> bytes:
    """The raw request bytes; signed once (SigV4 dates stay valid for minutes)."""
    path = PATHS[op]
    body = INVOKE_BODY if op == "invoke-stream" else BODY
    headers = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json",
               "Accept": "application/json"}
    if key is not None:
        quoted = path.replace(":", "%3A")
        request = AWSRequest(method="POST", url=f"http://127.0.0.1:{port}{quoted}", data=body, headers=headers)
        SigV4Auth(Credentials(*key), "bedrock", "us-east-1").add_auth(request)
        headers = dict(request.headers.items())
        path = quoted
    lines = [f"POST {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, float, int]:
    """(status, time of first body byte, body bytes) for one response."""
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
            await reader.readexactly(n + 2)
            if not first:
                first = time.perf_counter()
            size += n
    else:
        pos = lower.find(b"content-length:")
        n = int(lower[pos + 15: lower.find(b"\r\n", pos)]) if pos >= 0 else 0
        if n:
            await reader.readexactly(1)
            first = time.perf_counter()
            await reader.readexactly(n - 1)
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

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float, values: list[float] | None = None) -> float:
        data = sorted(self.latencies if values is None else values)
        if not data:
            return float("nan")
        return data[min(len(data) - 1, int(q * len(data)))] * 1000


async def load(port: int, raw: bytes, point: Point, duration: float, max_requests: int,
               warmup: int = 2) -> Point:
    deadline_box = [0.0]
    left = [max_requests]

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        try:
            for _ in range(warmup):
                writer.write(raw)
                await _read_response(reader)
        finally:
            warmed[0] += 1
            if warmed[0] == point.concurrency:
                all_warm.set()
        try:
            await ready.wait()
            while left[0] > 0 and time.perf_counter() < deadline_box[0]:
                left[0] -= 1
                start = time.perf_counter()
                writer.write(raw)
                status, first, _ = await _read_response(reader)
                end = time.perf_counter()
                if status != 200:
                    point.errors += 1
                point.requests += 1
                point.latencies.append(end - start)
                point.ttfb.append((first or end) - start)
        finally:
            writer.close()

    ready, all_warm, warmed = asyncio.Event(), asyncio.Event(), [0]
    tasks = [asyncio.create_task(worker()) for _ in range(point.concurrency)]
    await asyncio.wait_for(all_warm.wait(), timeout=60)  # every connection up and warmed
    started = time.perf_counter()
    deadline_box[0] = started + duration
    ready.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=duration + 60)
    point.elapsed = time.perf_counter() - started
    return point


# ----------------------------------------------------------------- processes
def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_upstream(tmp: Path, frames: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    with (tmp / "upstream.log").open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "bench.upstream", "--port", str(port), "--frames", str(frames)],
            env=base_env(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return popen, port
        except OSError:
            time.sleep(0.05)
    popen.kill()
    raise RuntimeError("bench upstream did not start")


def sh(cmd: str) -> str:
    try:
        return subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "n/a"


# ----------------------------------------------------------------- report
def fmt(x: float) -> str:
    return f"{x:.2f}" if x == x else "n/a"


def write_results(path: Path, args: argparse.Namespace, results: dict[str, Any]) -> str:
    points: list[Point] = results["points"]
    streams: list[Point] = results["streams"]
    by = {(p.target, p.op, p.concurrency): p for p in points}
    out = ["# Cost Keeper benchmark results", "",
           f"Generated {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} by:", "",
           "```", results["command"], "```", "",
           "## Machine", "",
           f"- `nproc`: {sh('nproc')}",
           f"- CPU: {results['cpu']}",
           f"- Python: {platform.python_version()} ({platform.python_implementation()})",
           f"- kernel: {platform.release()}", "",
           "```", sh("free -h"), "```", "",
           "Everything (load client, upstream, proxy) runs on this one machine over 127.0.0.1, so",
           "the client and the upstream compete with the proxy for the same cores.", "",
           f"Per point: at most {args.duration:g} s and {args.max_requests} requests, after a warm-up "
           "of 2 requests per connection (1 for streams). One keep-alive connection per concurrent worker.", "",
           "## Non-streamed Converse", "",
           "| target | c | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        direct = by.get(("direct", p.op, p.concurrency))
        added50 = added99 = ""
        if direct is not None and p.target != "direct":
            added50 = fmt(p.pct(0.5) - direct.pct(0.5))
            added99 = fmt(p.pct(0.99) - direct.pct(0.99))
        out.append(f"| {p.target} | {p.concurrency} | {p.rps:,.0f} | {fmt(p.pct(0.5))} | {fmt(p.pct(0.99))} "
                   f"| {added50} | {added99} | {p.errors} |")
    sby = {(p.target, p.op, p.concurrency): p for p in streams}
    out += ["", f"## Streams ({args.frames} frames per response)", "",
            "TTFB = request written → first body byte; TTLB = → last byte. Added = proxy − direct (p50).", "",
            "| target | operation | c | streams/s | TTFB p50 ms | TTFB p99 ms | TTLB p50 ms | TTLB p99 ms "
            "| added TTFB p50 ms | added TTLB p50 ms | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in streams:
        direct = sby.get(("direct", p.op, p.concurrency))
        a1 = a2 = ""
        if direct is not None and p.target != "direct":
            a1 = fmt(p.pct(0.5, p.ttfb) - direct.pct(0.5, direct.ttfb))
            a2 = fmt(p.pct(0.5) - direct.pct(0.5))
        out.append(f"| {p.target} | {p.op} | {p.concurrency} | {p.rps:,.0f} | {fmt(p.pct(0.5, p.ttfb))} "
                   f"| {fmt(p.pct(0.99, p.ttfb))} | {fmt(p.pct(0.5))} | {fmt(p.pct(0.99))} | {a1} | {a2} "
                   f"| {p.errors} |")
    out += ["", "## Proxy memory (RSS from /proc/PID/status)", "",
            "| proxy | RSS after start MiB | RSS after the run MiB | requests served |", "|---|---:|---:|---:|"]
    for name, (before, after, served) in results["rss"].items():
        out.append(f"| {name} | {before / 1024:.1f} | {after / 1024:.1f} | {served:,} |")
    text = "\n".join(out) + "\n"
    if args.reading and Path(args.reading).exists():
        text += "\n" + Path(args.reading).read_text()
    path.write_text(text)
    return text


# ----------------------------------------------------------------- main
async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    upstream, up_port = start_upstream(tmp, args.frames)
    proxies: dict[str, Proxy] = {}
    results: dict[str, Any] = {"points": [], "streams": [], "rss": {}}
    try:
        targets: list[tuple[str, int, tuple[str, str] | None]] = [("direct", up_port, None)]
        url = f"http://127.0.0.1:{up_port}"
        modes = [m for m in args.modes.split(",") if m]
        for mode in modes:
            sub = tmp / mode
            sub.mkdir()
            # metering: {} = the production defaults (start_proxy's test default flushes every 0.1 s).
            config: dict[str, Any] = {"auth": {"mode": mode}, "metering": {}}
            proxy = start_proxy(sub, url, config, upstream_credentials=("AKIDBENCHUPSTREAM001", "bench-secret"))
            proxies[mode] = proxy
            key = None
            if mode == "sigv4":
                issued = proxy.issue_key("bench", "bench")
                key = (issued["AWS_ACCESS_KEY_ID"], issued["AWS_SECRET_ACCESS_KEY"])
            port = int(proxy.url.rsplit(":", 1)[1])
            targets.append((f"proxy-{mode}", port, key))
        rss_start = {name: rss_kib(p.popen.pid) for name, p in proxies.items()}
        served = dict.fromkeys(proxies, 0)
        for c in args.concurrency:
            for name, port, key in targets:
                point = await load(port, build_request(port, "converse", key), Point(name, "converse", c),
                                   args.duration, args.max_requests)
                results["points"].append(point)
                if name.startswith("proxy-"):
                    served[name[6:]] += point.requests
                print(f"converse {name:13} c={c:<4} {point.rps:8,.0f} req/s  p50 {fmt(point.pct(0.5))} ms  "
                      f"p99 {fmt(point.pct(0.99))} ms  errors {point.errors}", flush=True)
        for op in args.stream_ops:
            for c in args.stream_concurrency:
                for name, port, key in targets:
                    point = await load(port, build_request(port, op, key), Point(name, op, c),
                                       args.duration, args.stream_requests, warmup=1)
                    results["streams"].append(point)
                    if name.startswith("proxy-"):
                        served[name[6:]] += point.requests
                    print(f"{op:15} {name:13} c={c:<3} {point.rps:7,.0f}/s  TTFB p50 "
                          f"{fmt(point.pct(0.5, point.ttfb))} ms  TTLB p50 {fmt(point.pct(0.5))} ms  "
                          f"errors {point.errors}", flush=True)
        for name, proxy in proxies.items():
            results["rss"][name] = (rss_start[name], rss_kib(proxy.popen.pid), served[name])
    finally:
        for proxy in proxies.values():
            proxy.stop()
        upstream.terminate()
        upstream.wait(timeout=10)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", default="1,16,64,256")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load point (upper bound)")
    parser.add_argument("--max-requests", type=int, default=50_000, help="requests per load point (upper bound)")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--stream-ops", default="converse-stream,invoke-stream")
    parser.add_argument("--stream-concurrency", default="1,16")
    parser.add_argument("--stream-requests", type=int, default=2_000)
    parser.add_argument("--modes", default="trust,sigv4", help="proxy auth modes to measure")
    parser.add_argument("--out", default=str(REPO / "bench" / "RESULTS.md"))
    parser.add_argument("--reading", default="",
                        help="a hand-written reading (markdown file) appended to the results")
    parser.add_argument("--json", help="also write raw numbers here")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.stream_concurrency = [int(c) for c in args.stream_concurrency.split(",") if c]
    args.stream_ops = [op for op in args.stream_ops.split(",") if op]
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "n/a")
    with tempfile.TemporaryDirectory(prefix="costkeeper-bench-") as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    results["cpu"] = cpu
    results["command"] = "make bench   # = " + shlex.join(
        [os.path.relpath(sys.executable, REPO), "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    print(write_results(Path(args.out), args, results))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "points": [{"target": p.target, "op": p.op, "c": p.concurrency, "rps": p.rps,
                        "p50_ms": p.pct(0.5), "p99_ms": p.pct(0.99), "errors": p.errors,
                        "ttfb_p50_ms": p.pct(0.5, p.ttfb), "requests": p.requests}
                       for p in results["points"] + results["streams"]],
            "rss_kib": results["rss"]}, indent=1))
    bad = sum(p.errors for p in results["points"] + results["streams"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
