"""Smoke test of the benchmark harness (`make bench`): it runs end to end and
produces numbers. No timing targets here: those live in bench/RESULTS.md."""

from __future__ import annotations

import json
from pathlib import Path

from bench import run


def test_bench_harness_runs_end_to_end(tmp_path: Path) -> None:
    out, raw = tmp_path / "RESULTS.md", tmp_path / "raw.json"
    code = run.main([
        "--concurrency", "1,4", "--duration", "0.2", "--max-requests", "20",
        "--stream-ops", "converse-stream,invoke-stream", "--stream-concurrency", "1",
        "--stream-requests", "3", "--frames", "20", "--modes", "trust,sigv4",
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
