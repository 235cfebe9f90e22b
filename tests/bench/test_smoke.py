"""Smoke test of the benchmark harness (`make bench`): it runs end to end and
produces numbers. No timing targets here: those live in bench/RESULTS.md."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

from bench import run, timeline


def test_bench_harness_runs_end_to_end(tmp_path: Path) -> None:
    out, raw = tmp_path / "RESULTS.md", tmp_path / "raw.json"
    code = run.main([
        "--concurrency", "1,4", "--duration", "0.2", "--max-requests", "20",
        "--stream-ops", "converse-stream,invoke-stream", "--stream-concurrency", "2",
        "--stream-requests", "3", "--paced-duration", "0.5", "--cold-rounds", "1", "--timeline-streams", "2", "--frames", "20", "--slope-frames", "40", "--slope-concurrency", "2", "--slope-streams", "3", "--modes", "trust,sigv4",
        "--rates", "200", "--rate-concurrency", "4", "--open-streams", "20", "--leak-requests", "200", "--store-requests", "100", "--profile-seconds", "1",
        "--out", str(out), "--reading", str(tmp_path / "none.md"), "--json", str(raw),
    ])
    assert code == 0, out.read_text()
    points = json.loads(raw.read_text())["points"]
    targets = {(p["target"], p["op"]) for p in points}
    for target in ("direct", "proxy-trust", "proxy-sigv4"):
        for op in ("converse", "converse-stream", "invoke-stream"):
            assert (target, op) in targets
    assert all(p["requests"] > 0 and p["errors"] == 0 and p["rps"] > 0 for p in points)
    assert all(p["p50_ms"] > 0 for p in points)
    text = out.read_text()
    assert "## Non-streamed Converse" in text and "proxy-sigv4" in text and "RSS" in text
    rss = json.loads(raw.read_text())["rss_kib"]
    assert set(rss) == {"trust", "sigv4"} and all(v[0] > 0 and v[1] > 0 for v in rss.values())
    data = json.loads(raw.read_text())
    # CPU is read in clock ticks (10 ms): a 20-request smoke point may not reach one.
    assert any(p["target"] == "floor" and p["requests"] > 0 for p in data["points"])
    assert any(p["paced"] and p["ttfb_p50_ms"] > 0 for p in data["points"])
    assert "0.5 s per point" in text and "spread over one stream's length" in text
    # Started together: the highest stream concurrency only, every target, both operations.
    together = {(p["target"], p["op"], p["c"]) for p in data["points"] if p["together"]}
    assert together == {(target, op, 2) for target in ("direct", "floor", "proxy-trust", "proxy-sigv4")
                        for op in ("converse-stream", "invoke-stream")}
    assert "## Streams, paced, started together" in text
    offered = [p for p in data["points"] if p["offered"]]
    assert {p["target"] for p in offered} == {"direct", "floor", "proxy-trust", "proxy-sigv4"}
    assert "below saturation" in text
    # Its spread: p25, p50, p75 and the mean, in every row (their values are noise's at these counts).
    section = text.split("below saturation", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| target | offered | req/s | p25 ms | p50 ms | p75 ms | mean ms | p99 ms |")
    assert len(rows) == 1 + 4 and all(row.count("|") == rows[0].count("|") for row in rows)
    # How late the sends went out against their schedule (precise_loop): every offered row says.
    assert "| sends late µs |" in rows[0]
    assert all(p["late_p50_us"] == p["late_p50_us"] and p["late_p99_us"] >= p["late_p50_us"] for p in offered)
    assert data["open"]["opened"] == 20, data["open"]["errors"]
    assert data["leak"]["requests"] > 0 and data["leak"]["rss_end"] > 0
    store = data["store"]
    assert store["skipped"] == "" and store["requests"] == 100 and store["flushes"] >= 1
    assert "## Metering writes" in text and "KiB per open stream" in text
    assert all(data["micro"][step] > 0 for step in ("verify", "resign", "journal", "loop", "cold_verify", "cold_resign",
                                                    "cold_loop", "frame_converse", "frame_invoke"))
    assert "own steps, warm and cold" in text
    # bench/timeline.py: the proxy's stamps (bench/timeline_hooks) line up with the client's, every stage.
    assert set(data["timeline"]) == {"direct", "trust", "sigv4"}
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()}
    for _, what in timeline.STAGES:
        cells = rows[what].strip("| ").split(" | ")[1:]
        # A number per mode; its sign is noise's to flip (a stage's median is a difference of
        # two clocks' medians, negative on a busy machine), so only the shape is checked.
        assert len(cells) == 2 and all(math.isfinite(float(cell)) for cell in cells), rows[what]
    # bench/slope.py: a row per measured server and stream operation, both points served without error.
    # Its numbers are noise's at these counts (CPU in 10 ms ticks): only the shape is checked.
    slopes = {(s["target"], s["op"]): s for s in data["slopes"]}
    assert set(slopes) == {(target, op) for target in ("floor", "proxy-trust", "proxy-sigv4")
                           for op in ("converse-stream", "invoke-stream")}
    assert all(s["frames"] == [20, 40] and min(s["streams"]) > 0 and s["errors"] == 0 for s in slopes.values())
    assert "## CPU per frame, the slope between 20- and 40-frame bursts (c=2)" in text
    for (target, op) in slopes:
        row = next(line for line in text.splitlines() if line.startswith(f"| {target} | {op} | ")
                   and line.count("|") == 8)
        assert (row.endswith(" |  |") if target == "floor" else row.endswith("× |") or row.endswith("n/a |")), row
    if data["profile"] is not None:  # py-spy may be refused ptrace in some sandboxes
        assert data["profile"]["samples"] > 0 and data["profile"]["rps"] > 0 and "## Where the CPU goes" in text



def test_timeline_with_background_streams_and_the_floor(tmp_path: Path) -> None:
    """`bench/timeline.py --background N --modes floor,…`: the measured stream's rows only
    (the background's are marked), the floor stamped where it has the same stages, and the
    handler's suspensions counted. Shapes only: every figure is a busy machine's to move."""
    medians = asyncio.run(timeline.measure_timeline("invoke-stream", 3, ["floor", "trust"], tmp_path, background=2))
    assert set(medians) == {"direct", "floor", "trust"}
    for mode in ("floor", "trust"):
        assert medians[mode]["suspensions"] >= 1  # at least the upstream's head is waited for
        assert all(math.isfinite(medians[mode][name]) for name, _ in timeline.STAGES)
    assert medians["floor"]["signed"] == 0  # a stage the floor does not have
    text = timeline.table(medians, detail=True)
    assert "the handler's task suspended" in text and "garbage collection" in text
