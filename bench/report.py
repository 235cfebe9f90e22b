"""bench/RESULTS.md from the numbers of one `make bench` run.

The soak (`make soak`, bench/soak.py) writes its own section between
`<!-- soak:start -->` and `<!-- soak:end -->`; a bench run keeps it as it is.
"""

from __future__ import annotations

import argparse
import platform
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.slope import slope_table
from bench.timeline import table

if TYPE_CHECKING:
    from bench.client import Point

__all__ = ["fmt", "sh", "write_results"]

_SOAK = re.compile(r"<!-- soak:start -->.*?<!-- soak:end -->", re.S)


def fmt(x: float) -> str:
    return f"{x:.2f}" if x == x else "n/a"


def sh(cmd: str) -> str:
    try:
        return subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "n/a"


def _added(p: Point, base: Point | None, q: float, ttfb: bool = False) -> str:
    if base is None or p.target == base.target:
        return ""
    if ttfb:
        return fmt(p.pct(q, p.ttfb) - base.pct(q, base.ttfb))
    return fmt(p.pct(q) - base.pct(q))


def _stream_table(title: str, note: str, points: list[Point]) -> list[str]:
    by = {(p.target, p.op, p.concurrency): p for p in points}
    out = ["", title, "", note, "",
           "| target | operation | c | streams/s | TTFB p50 ms | TTFB p99 ms | TTLB p50 ms | TTLB p99 ms "
           "| added TTFB p50 ms | added TTLB p50 ms | CPU/stream µs | errors |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        direct = by.get(("direct", p.op, p.concurrency))
        cpu = "" if p.target == "direct" else f"{p.cpu_us:,.0f}"
        out.append(f"| {p.target} | {p.op} | {p.concurrency} | {p.rps:,.0f} | {fmt(p.pct(0.5, p.ttfb))} "
                   f"| {fmt(p.pct(0.99, p.ttfb))} | {fmt(p.pct(0.5))} | {fmt(p.pct(0.99))} "
                   f"| {_added(p, direct, 0.5, ttfb=True)} | {_added(p, direct, 0.5)} | {cpu} | {p.errors} |")
    return out


def _frame_walk() -> str:
    """Which delta walk the proxy runs (it imports the same tree): `make bench` builds the
    compiled one first, and a machine without a C compiler runs the interpreter's."""
    from adapters import frame_scan
    if frame_scan.skip_frames is frame_scan.skip_frames_interpreted:
        return "the interpreter's (adapters/frame_walk.py not built here)"
    return "compiled by mypyc (adapters/frame_walk.py)"


def _text_sizing() -> str:
    """How the watcher sizes the deltas' text for a cut stream's estimate: the C module
    `make bench` builds first, or the regular expressions where no compiler is."""
    from adapters import delta_size
    if delta_size.converse_delta_text_bytes is delta_size.converse_delta_text_bytes_interpreted:
        return "the regular expressions (adapters/delta_scan.pyx not built here)"
    return "compiled by Cython (adapters/delta_scan.pyx)"


def write_results(path: Path, args: argparse.Namespace, results: dict[str, Any]) -> str:
    points: list[Point] = results["points"]
    by = {(p.target, p.op, p.concurrency): p for p in points}
    out = ["# Cost Keeper benchmark results", "",
           f"Generated {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} by:", "",
           "```", results["command"], "```", "",
           "## Machine", "",
           f"- `nproc`: {sh('nproc')}",
           f"- CPU: {results['cpu']}",
           f"- Python: {platform.python_version()} ({platform.python_implementation()})",
           f"- kernel: {platform.release()}",
           f"- the usage watcher's delta walk: {_frame_walk()}",
           f"- the usage watcher's sizing of delta text: {_text_sizing()}", "",
           "```", sh("free -h"), "```", "",
           "Everything (load client, upstream, proxy) runs on this one machine over 127.0.0.1, so",
           "the client and the upstream compete with the proxy for the same 2 cores.", "",
           f"Per point: at most {args.duration:g} s and {args.max_requests} requests, after a warm-up "
           "of 2 requests per connection (1 for streams). One keep-alive connection per concurrent worker.",
           f"Each point of the load tables is measured in {getattr(args, 'rounds', 1)} interleaved rounds "
           "(bench/rounds.py): its duration and request bound split into that many slices, the targets "
           "taking turns in every round, the order rotating, and a target's slices pooled: the machine's "
           "drift lands on the floor and the proxies alike.",
           "Targets: `direct` = the bench upstream itself; `floor` = a bare uvicorn + aiohttp pass-through "
           "(bench/floor.py: the least a proxy on this stack can cost); `proxy-trust` / `proxy-sigv4` = "
           "`costkeeper serve` with SigV4 verification off / on. CPU/req = CPU seconds of the server process "
           "during the point ÷ requests.", "",
           "## Non-streamed Converse", "",
           "| target | c | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | CPU/req µs | errors |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        direct = by.get(("direct", p.op, p.concurrency))
        cpu = "" if p.target == "direct" else fmt(p.cpu_us)
        out.append(f"| {p.target} | {p.concurrency} | {p.rps:,.0f} | {fmt(p.pct(0.5))} | {fmt(p.pct(0.99))} "
                   f"| {_added(p, direct, 0.5)} | {_added(p, direct, 0.99)} | {cpu} | {p.errors} |")
    rated: list[Point] = results.get("rated", [])
    if rated:
        by_rated = {(p.target, p.op): p for p in rated}
        out += ["", f"## Non-streamed Converse below saturation ({args.rate_concurrency} connections, "
                "offered load)", "",
                "The table above is closed-loop: each connection sends as soon as it is answered, so past "
                "the proxy's throughput the latency is queueing (c ÷ req/s), whatever the proxy does per "
                "request. Here the load is offered at a fixed rate spread evenly over the connections, "
                "each request sent at its scheduled time (the client waits on sub-millisecond timers: "
                "bench/client.py's `precise_loop`), whatever the answers before it: the latency is what "
                "each server adds to a request. Sends late: how far after its scheduled time each request "
                "went out (p50 / p99), which shows the schedule held.", "",
                "| target | offered | req/s | p25 ms | p50 ms | p75 ms | mean ms | p99 ms | added p50 ms "
                "| added p99 ms | CPU/req µs | sends late µs | errors |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for p in rated:
            direct = by_rated.get(("direct", p.op))
            cpu = "" if p.target == "direct" else fmt(p.cpu_us)
            offered = p.op.split("@", 1)[1]
            mean = fmt(sum(p.latencies) / len(p.latencies) * 1000) if p.latencies else "n/a"
            out.append(f"| {p.target} | {offered} | {p.rps:,.0f} | {fmt(p.pct(0.25))} | {fmt(p.pct(0.5))} "
                       f"| {fmt(p.pct(0.75))} | {mean} | {fmt(p.pct(0.99))} "
                       f"| {_added(p, direct, 0.5)} | {_added(p, direct, 0.99)} | {cpu} "
                       f"| {p.pct(0.5, p.late) * 1000:.0f} / {p.pct(0.99, p.late) * 1000:.0f} | {p.errors} |")
    out += _stream_table(f"## Streams, burst ({args.frames} frames in one upstream write)",
                         "TTFB = request written → first body byte; TTLB = → last byte. Added = proxy − direct "
                         "(p50). The whole stream arrives at once, so this measures per-frame work. CPU/stream = "
                         "CPU seconds of the server process during the point ÷ streams.",
                         results["streams"])
    out += slope_table(results.get("slopes", []), args.slope_concurrency)
    if results["paced"]:
        out += _stream_table(
            f"## Streams, paced ({args.frames} frames, {args.frame_interval * 1000:g} ms apart)",
            "Frames written one by one, like a model generating tokens: added TTFB is the proxy's "
            f"latency on the first frame. {args.paced_duration:g} s per point. The connections start "
            "their first streams spread over one stream's length, as independent clients do.",
            results["paced"])
    if results.get("paced_together"):
        out += _stream_table(
            "## Streams, paced, started together",
            "The same streams, every connection starting at once. Streams that all last as long then stay "
            "in step: each stream's first byte waits behind the other connections' requests, so the added "
            "TTFB here is a burst's queueing (about half the connections' request paths), not the latency "
            "of one first frame.", results["paced_together"])
    if results.get("timeline"):
        out += ["", f"## A paced stream's first byte, stage by stage (bench/timeline.py: invoke-stream, c=1, "
                f"{args.timeline_streams} streams per mode)", "",
                "Client and proxy stamp on one clock (CLOCK_MONOTONIC); each row is the median µs from the "
                "stamp before to this one. A fresh proxy per mode, in front of the paced upstream.", "",
                table(results["timeline"])]
    out += ["", "## Memory (RSS from /proc/PID/status)", "",
            "| proxy | RSS after start MiB | RSS after the load points MiB |", "|---|---:|---:|"]
    for name, (before, after) in results["rss"].items():
        out.append(f"| {name} | {before / 1024:.1f} | {after / 1024:.1f} |")
    held = results["open"]
    if held is not None:
        out += ["", f"Open streams (trust mode, frames 100 ms apart): {held.opened:,} of {held.streams:,} "
                f"streams open at once after {held.seconds_to_open:.1f} s; RSS {held.rss_before_kib / 1024:.1f} "
                f"→ {held.rss_open_kib / 1024:.1f} MiB = **{fmt(held.kib_per_stream)} KiB per open stream** "
                f"({held.fds_open:,} fds open: client and upstream socket per stream)."]
        if held.errors:
            out.append(f"Streams that failed to open: {'; '.join(held.errors)}.")
    leak = results["leak"]
    if leak is not None:
        growth = (leak["rss_end"] - leak["rss_warm"]) / 1024
        per_10k = (leak["rss_end"] - leak["rss_warm"]) / max(leak["requests"], 1) * 10_000
        out += ["", f"Leak check (trust mode, Converse, c=16): RSS {leak['rss_warm'] / 1024:.1f} MiB after a "
                f"warm-up of {leak['warm_requests']:,} requests, {leak['rss_end'] / 1024:.1f} MiB after "
                f"{leak['requests']:,} more ({leak['rps']:,.0f} req/s): **{growth:+.1f} MiB**, "
                f"{per_10k:+.1f} KiB per 10,000 requests."]
    store = results["store"]
    if store is not None:
        out += ["", "## Metering writes (DynamoDB Local, production defaults: one flush per second)", ""]
        if store.skipped:
            out.append(f"Skipped: {store.skipped}. Run `make bench` (it runs under tools/isolated).")
        else:
            calls = ", ".join(f"{op} {count:,.0f}" for op, count in sorted(store.calls.items()))
            leases = ", ".join(f"{kind} {count:,.0f}" for kind, count in sorted(store.lease_writes.items()))
            out += [f"{store.requests:,} Converse requests in {store.seconds:.1f} s (until the backlog was "
                    f"empty), on a daily quota far from reached. Store calls: {calls}; of which budget lease "
                    f"writes: {leases or 'none'}.", "",
                    "| write calls / 1,000 req | lease writes / 1,000 req | items written / 1,000 req | flushes "
                    "| events / flush | flush mean ms | flush p50 ≤ ms | flush max ≤ ms |",
                    "|---:|---:|---:|---:|---:|---:|---:|---:|",
                    f"| {fmt(store.per_thousand(store.writes))} "
                    f"| {fmt(store.per_thousand(sum(store.lease_writes.values())))} "
                    f"| {fmt(store.per_thousand(store.items_written))} "
                    f"| {store.flushes:,.0f} | {fmt(store.requests / store.flushes if store.flushes else float('nan'))} "
                    f"| {fmt(store.flush_seconds_sum / store.flushes * 1000 if store.flushes else float('nan'))} "
                    f"| {fmt(store.flush_quantile(0.5) * 1000)} | {fmt(store.flush_quantile(1.0) * 1000)} |"]
    prof = results["profile"]
    if prof is not None:
        out += ["", f"## Where the CPU goes (py-spy, proxy-trust, Converse c=16, {prof['samples']:,} samples, "
                f"{prof['rps']:,.0f} req/s, {fmt(prof['cpu_us'])} µs CPU per request)", "",
                "| component | share | ≈ µs per request |", "|---|---:|---:|"]
        for name, share in prof["shares"]:
            out.append(f"| {name} | {share * 100:.1f} % | {share * prof['cpu_us']:.0f} |")
    steps = results.get("micro")
    if steps:
        def cold(step: str) -> str:
            value = steps.get(f"cold_{step}")
            return "" if value is None else f"{value:.1f}"

        out += ["", "## The proxy's own steps, warm and cold (bench/micro.py, in this process)", "",
                "Warm: one call repeated. Cold: the median of single calls, each made after 0.2 s of 1 ms "
                "naps, as between the requests of a light load.", "",
                "| step | µs per call, warm | µs per call, cold |", "|---|---:|---:|",
                f"| SigV4 verification of the client's request (sigv4 mode) | {steps['verify']:.1f} "
                f"| {cold('verify')} |",
                f"| SigV4 re-signing for Bedrock (botocore `SigV4Auth`, both modes) | {steps['resign']:.1f} "
                f"| {cold('resign')} |",
                f"| usage event encoded and appended to the journal | {steps['journal']:.1f} | |",
                *(f"| one {name} frame through the usage watcher (per frame, paced) | {steps[step]:.1f} | |"
                  for step, name in (("frame_converse", "ConverseStream"),
                                     ("frame_invoke", "InvokeModelWithResponseStream"))
                  if step in steps),
                f"| control: a pure-Python arithmetic loop (no memory to speak of) | {steps['loop']:.1f} "
                f"| {cold('loop')} |"]
    text = "\n".join(out) + "\n"
    if args.reading and Path(args.reading).exists():
        text += "\n" + Path(args.reading).read_text()
    previous = path.read_text() if path.exists() else ""
    soak = _SOAK.search(previous)
    if soak:
        text += "\n" + soak.group(0) + "\n"
    path.write_text(text)
    return text
