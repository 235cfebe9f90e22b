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
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.client import Point, build_request, load, on_precise_loop
from bench.h2load import load_h2
from bench.memory import open_streams, rss_kib
from bench.micro import micro
from bench.processes import cpu_seconds, start_floor, start_upstream
from bench.profile import profile_under_load
from bench.report import fmt, write_results
from bench.rounds import interleaved
from bench.slope import Slope, measure_slopes, slope_rows
from bench.store import measure_store
from bench.timeline import measure_timeline
from tests.processes import REPO, Proxy, start_proxy

__all__ = ["main"]

# ----------------------------------------------------------------- main
@dataclass
class Target:
    name: str
    port: int
    key: tuple[str, str] | None = None
    #: The server process whose CPU is measured (None: the upstream itself).
    pid: int | None = None


async def measure_h2(target: Target, concurrency: int, duration: float, max_requests: int) -> Point:
    """Converse over HTTP/2 (one connection, `concurrency` streams): the proxy's second protocol."""
    before = cpu_seconds(target.pid) if target.pid else 0.0
    point = await load_h2(target.port, build_request(target.port, "converse", target.key),
                          Point(f"{target.name} h2", "converse", concurrency), duration, max_requests)
    if target.pid:
        point.cpu = cpu_seconds(target.pid) - before
    return point


async def measure(target: Target, op: str, concurrency: int, duration: float, max_requests: int,
                  warmup: int = 2, rate: float = 0.0, stop: asyncio.Event | None = None,
                  stagger: float = 0.0) -> Point:
    # An offered load keeps its schedule only on sub-millisecond timers (`precise_loop`),
    # on a loop of its own: `stop`, an event of this loop, cannot end it.
    assert not (rate and stop), "an offered load ends by its duration or request count"
    before = cpu_seconds(target.pid) if target.pid else 0.0
    job = load(target.port, build_request(target.port, op, target.key), Point(target.name, op, concurrency),
               duration, max_requests, warmup, rate, stop, stagger=stagger)
    point = await (on_precise_loop(job) if rate else job)
    if target.pid:
        point.cpu = cpu_seconds(target.pid) - before
    return point


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    steps = micro(tmp, args.cold_rounds)  # first, while nothing else runs
    print(f"steps, warm µs per call: {steps}", flush=True)
    upstream, up_port = start_upstream(tmp, args.frames)
    paced, paced_port = start_upstream(tmp, args.frames, args.frame_interval)
    children: list[subprocess.Popen[bytes]] = [upstream, paced]
    proxies: dict[str, Proxy] = {}
    results: dict[str, Any] = {"points": [], "rated": [], "streams": [], "paced": [], "paced_together": [],
                               "rss": {}, "open": None, "leak": None, "store": None, "profile": None, "micro": steps,
                               "timeline": None, "slopes": []}
    try:
        url = f"http://127.0.0.1:{up_port}"
        targets = [Target("direct", up_port)]
        if args.floor:
            floor, floor_port = start_floor(tmp, url)
            children.append(floor)
            targets.append(Target("floor", floor_port, pid=floor.pid))
        for mode in [m for m in args.modes.split(",") if m]:
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
            targets.append(Target(f"proxy-{mode}", int(proxy.url.rsplit(":", 1)[1]), key, proxy.popen.pid))
        rss_start = {name: rss_kib(p.popen.pid) for name, p in proxies.items()}
        rounds = args.rounds
        for c in args.concurrency:
            async def converse_slice(target: Target, _: int, c: int = c) -> Point:
                return await measure(target, "converse", c, args.duration / rounds,
                                     max(1, args.max_requests // rounds))

            for point in await interleaved(targets, converse_slice, rounds):
                results["points"].append(point)
                print(f"converse {point.target:13} c={c:<4} {point.rps:8,.0f} req/s  p50 {fmt(point.pct(0.5))} ms  "
                      f"p99 {fmt(point.pct(0.99))} ms  cpu/req {fmt(point.cpu_us)} us  errors {point.errors}",
                      flush=True)
            # The same proxies over HTTP/2 (what the AWS SDK for JavaScript speaks), one connection.
            for target in [t for t in targets if t.name.startswith("proxy-")] if args.h2 else []:
                point = await measure_h2(target, c, args.duration, args.max_requests)
                results["points"].append(point)
                print(f"converse {point.target:13} c={c:<4} {point.rps:8,.0f} req/s  p50 {fmt(point.pct(0.5))} ms  "
                      f"p99 {fmt(point.pct(0.99))} ms  cpu/req {fmt(point.cpu_us)} us  errors {point.errors}",
                      flush=True)
        if args.rates:
            await asyncio.sleep(3)  # the closed-loop points' metering backlog is flushed first
        for rate in args.rates:
            async def rated_slice(target: Target, _: int, rate: float = rate) -> Point:
                return await measure(target, "converse", args.rate_concurrency, args.duration / rounds,
                                     max(1, args.max_requests // rounds), rate=rate)

            for point in await interleaved(targets, rated_slice, rounds):
                point.op = f"converse@{rate:g}/s"
                results["rated"].append(point)
                print(f"offered  {point.target:13} c={args.rate_concurrency:<4} {point.rps:8,.0f} req/s  "
                      f"p50 {fmt(point.pct(0.5))} ms  p99 {fmt(point.pct(0.99))} ms  "
                      f"sends late p50 {point.pct(0.5, point.late) * 1000:.0f} us  errors {point.errors}", flush=True)
        stream_targets = targets
        # Paced streams start spread over one stream's length, as independent clients'
        # do (`load`'s `stagger`). Started together, streams that all last as long stay in
        # step: every first byte then waits behind the other connections' requests, which
        # the "together" points show apart, at the highest concurrency.
        stream_length = args.frames * args.frame_interval
        together = [c for c in args.stream_concurrency if c > 1][-1:] if args.paced_together else []
        kinds = (("streams", None, args.stream_concurrency, 0.0),
                 ("paced", paced_port, args.stream_concurrency, stream_length),
                 ("paced_together", paced_port, together, 0.0))
        for kind, port_of, concurrencies, stagger in kinds:
            if kind != "streams" and args.frame_interval <= 0:
                continue
            # The same set-up, in front of the paced upstream.
            these = [t if port_of is None else _paced_target(t, tmp, f"http://127.0.0.1:{port_of}")
                     for t in stream_targets]
            # A paced stream lasts ~0.2 s: its points run longer, or a p50 rests on ~20 streams.
            duration = args.paced_duration if port_of is not None else args.duration
            for op in args.stream_ops:
                for c in concurrencies:
                    async def stream_slice(target: Target, _: int, op: str = op, c: int = c,
                                           duration: float = duration, stagger: float = stagger) -> Point:
                        return await measure(target, op, c, duration / rounds,
                                             max(1, args.stream_requests // rounds), warmup=1, stagger=stagger)

                    for point in await interleaved(these, stream_slice, rounds):
                        results[kind].append(point)
                        print(f"{kind:7} {op:15} {point.target:13} c={c:<3} {point.rps:7,.0f}/s  TTFB p50 "
                              f"{fmt(point.pct(0.5, point.ttfb))} ms  TTLB p50 {fmt(point.pct(0.5))} ms  "
                              f"errors {point.errors}", flush=True)
        if args.slope_frames and args.slope_frames != args.frames:
            results["slopes"] = await _slopes(args, tmp, targets, children)
        if args.timeline_streams:
            results["timeline"] = await measure_timeline("invoke-stream", args.timeline_streams,
                                                         list(proxies), tmp)
        for name, proxy in proxies.items():
            results["rss"][name] = (rss_start[name], rss_kib(proxy.popen.pid))
        trust = next((t for t in targets if t.name == "proxy-trust"), None)
        if trust is not None and trust.pid:
            hold_port = None
            if args.open_streams:  # frames 0.1 s apart: every stream stays open during the measurement
                hold, hold_port = start_upstream(tmp, args.frames, 0.1)
                children.append(hold)
            await _memory_and_profile(args, tmp, trust, hold_port, results)
        if args.store_requests:
            async def drive(port: int, count: int) -> int:
                point = await load(port, build_request(port, "converse", None), Point("store", "converse", 16),
                                   600, count)
                return point.requests
            results["store"] = await measure_store(tmp, url, args.store_requests, drive)
    finally:
        for proxy in [*proxies.values(), *(p for p, _ in _PACED.values())]:
            proxy.stop()
        _PACED.clear()
        children += [popen for popen, _ in _FLOORS.values()]
        _FLOORS.clear()
        for child in children:
            child.terminate()
            child.wait(timeout=10)
    return results


#: Proxies in front of another upstream (paced, held), by (upstream url, auth mode); started on first use.
_PACED: dict[tuple[str, str], tuple[Proxy, tuple[str, str] | None]] = {}
#: Floors in front of another upstream, likewise.
_FLOORS: dict[tuple[str, str], tuple[subprocess.Popen[bytes], int]] = {}


def _paced_target(target: Target, tmp: Path, upstream_url: str) -> Target:
    """`target` (direct or a proxy mode) in front of the upstream at `upstream_url` instead."""
    if target.name == "direct":
        return Target("direct", int(upstream_url.rsplit(":", 1)[1]))
    if target.name == "floor":
        if (upstream_url, "floor") not in _FLOORS:
            _FLOORS[(upstream_url, "floor")] = start_floor(tmp, upstream_url)
        popen, port = _FLOORS[(upstream_url, "floor")]
        return Target("floor", port, pid=popen.pid)
    mode = target.name.removeprefix("proxy-")
    if (upstream_url, mode) not in _PACED:
        sub = tmp / f"paced-{len(_PACED)}"
        sub.mkdir()
        proxy = start_proxy(sub, upstream_url, {"auth": {"mode": mode}, "metering": {}},
                            upstream_credentials=("AKIDBENCHUPSTREAM001", "bench-secret"))
        key = None
        if mode == "sigv4":
            issued = proxy.issue_key("bench", "bench")
            key = (issued["AWS_ACCESS_KEY_ID"], issued["AWS_SECRET_ACCESS_KEY"])
        _PACED[(upstream_url, mode)] = (proxy, key)
    proxy, key = _PACED[(upstream_url, mode)]
    return Target(target.name, int(proxy.url.rsplit(":", 1)[1]), key, proxy.popen.pid)


async def _slopes(args: argparse.Namespace, tmp: Path, targets: list[Target],
                  children: list[subprocess.Popen[bytes]]) -> list[Slope]:
    """CPU per frame as a slope (bench/slope.py): each measured server (floor, proxies) against
    the fast upstream and, the same set-up, against a second one serving `--slope-frames`."""
    large, large_port = start_upstream(tmp, args.slope_frames)
    children.append(large)
    url = f"http://127.0.0.1:{large_port}"
    pairs = [(t, _paced_target(t, tmp, url)) for t in targets if t.pid]

    rounds = max(1, args.rounds)

    async def run_point(target: Target, op: str) -> Point:
        # 4 streams per connection first: a twin is a fresh process, and its first streams'
        # one-off costs would land in the 1,000-frame point only, and in the slope.
        return await measure(target, op, args.slope_concurrency, args.duration / rounds,
                             max(1, args.slope_streams // rounds), warmup=4)

    return await measure_slopes(pairs, args.stream_ops, (args.frames, args.slope_frames), run_point, rounds)


async def _memory_and_profile(args: argparse.Namespace, tmp: Path, trust: Target, hold_port: int | None,
                              results: dict[str, Any]) -> None:
    assert trust.pid is not None
    if args.profile_seconds > 0:
        async def drive(stop: asyncio.Event) -> tuple[int, float, float]:
            point = await measure(trust, "converse", 16, 3600, 10**9, stop=stop)
            return point.requests, point.cpu, point.elapsed

        results["profile"] = await profile_under_load(trust.pid, args.profile_seconds, tmp / "profile.txt", drive)
    if hold_port is not None:
        held = _paced_target(trust, tmp, f"http://127.0.0.1:{hold_port}")
        results["open"] = await open_streams(held.port, build_request(held.port, "converse-stream", None),
                                             args.open_streams, held.pid or 0)
        print(f"open streams: {results['open']}", flush=True)
    if args.leak_requests:
        warm = await measure(trust, "converse", 16, 3600, min(10_000, args.leak_requests // 10))
        rss_warm = rss_kib(trust.pid)
        rest = await measure(trust, "converse", 16, 3600, args.leak_requests - warm.requests)
        results["leak"] = {"warm_requests": warm.requests, "rss_warm": rss_warm, "requests": rest.requests,
                           "rss_end": rss_kib(trust.pid), "rps": rest.rps}
        print(f"leak check: {results['leak']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", default="1,16,64,256")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load point (upper bound)")
    parser.add_argument("--max-requests", type=int, default=50_000, help="requests per load point (upper bound)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="each load point is measured in this many slices, the targets taking turns in "
                             "every round (bench/rounds.py): drift lands on all of them alike")
    parser.add_argument("--rates", default="200,1000",
                        help="offered loads (req/s, total) for the latency-below-saturation table; '' skips it")
    parser.add_argument("--rate-concurrency", type=int, default=16)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--frame-interval", type=float, default=0.001,
                        help="seconds between frames of the paced streams (TTFB table); 0 skips them")
    parser.add_argument("--slope-frames", type=int, default=1_000,
                        help="frames of the second burst count: CPU per frame as the slope from --frames (0: skip)")
    parser.add_argument("--slope-concurrency", type=int, default=16)
    parser.add_argument("--slope-streams", type=int, default=4_000,
                        help="streams per slope point (upper bound; --duration bounds it too)")
    parser.add_argument("--stream-ops", default="converse-stream,invoke-stream")
    parser.add_argument("--stream-concurrency", default="1,16")
    parser.add_argument("--stream-requests", type=int, default=2_000)
    parser.add_argument("--no-paced-together", dest="paced_together", action="store_false",
                        help="skip the paced streams started together (at the highest --stream-concurrency: "
                             "they stay in step, every stream start a burst of c requests)")
    parser.add_argument("--paced-duration", type=float, default=12.0,
                        help="seconds per paced-stream point (≈ 4 streams/s each at c=1)")
    parser.add_argument("--timeline-streams", type=int, default=60,
                        help="paced streams per mode timed stage by stage (bench/timeline.py; 0: skip)")
    parser.add_argument("--cold-rounds", type=int, default=20,
                        help="calls per step measured after 0.2 s of 1 ms naps (bench/micro.py; 0: skip)")
    parser.add_argument("--modes", default="trust,sigv4", help="proxy auth modes to measure")
    parser.add_argument("--no-h2", dest="h2", action="store_false",
                        help="skip the HTTP/2 Converse points (one connection, c streams)")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="skip the floor (bare uvicorn + aiohttp pass-through)")
    parser.add_argument("--open-streams", type=int, default=1_000, help="concurrent open streams for RSS (0: skip)")
    parser.add_argument("--leak-requests", type=int, default=100_000, help="requests of the leak check (0: skip)")
    parser.add_argument("--store-requests", type=int, default=5_000,
                        help="requests of the DynamoDB metering point (0: skip)")
    parser.add_argument("--profile-seconds", type=float, default=8.0, help="py-spy profile length (0: skip)")
    parser.add_argument("--out", default=str(REPO / "bench" / "RESULTS.md"))
    parser.add_argument("--reading", default=str(REPO / "bench" / "READING.md"),
                        help="the hand-written reading (markdown) appended to the results")
    parser.add_argument("--json", help="also write raw numbers here")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.stream_concurrency = [int(c) for c in args.stream_concurrency.split(",") if c]
    args.rates = [float(r) for r in args.rates.split(",") if r]
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
    results["command"] = "make bench   # = tools/isolated " + shlex.join(
        [os.path.relpath(sys.executable, REPO), "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    print(write_results(Path(args.out), args, results))
    all_points = (results["points"] + results["rated"] + results["streams"] + results["paced"]
                  + results["paced_together"])
    if args.json:
        Path(args.json).write_text(json.dumps({
            "points": [{"target": p.target, "op": p.op, "c": p.concurrency, "rps": p.rps,
                        "p50_ms": p.pct(0.5), "p99_ms": p.pct(0.99), "errors": p.errors,
                        "ttfb_p50_ms": p.pct(0.5, p.ttfb), "requests": p.requests, "cpu_us": p.cpu_us,
                        "paced": p in results["paced"], "together": p in results["paced_together"],
                        "offered": p in results["rated"],
                        "late_p50_us": p.pct(0.5, p.late) * 1000, "late_p99_us": p.pct(0.99, p.late) * 1000}
                       for p in all_points],
            "rss_kib": results["rss"],
            "open": vars(results["open"]) if results["open"] else None,
            "leak": results["leak"],
            "store": None if results["store"] is None else {
                **{k: v for k, v in vars(results["store"]).items() if k != "flush_buckets"}},
            "profile": results["profile"], "micro": results["micro"], "timeline": results["timeline"],
            "slopes": slope_rows(results["slopes"])},
            indent=1, default=str))
    bad = sum(p.errors for p in all_points) + sum(s.small.errors + s.large.errors for s in results["slopes"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
