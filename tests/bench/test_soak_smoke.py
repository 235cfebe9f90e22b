"""Smoke test of the soak harness (`make soak`): a short run end to end, every
scenario, nothing unexpected, nothing lost. The 10-minute figures live in
bench/RESULTS.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import soak, soak_traffic, soak_verdict

pytestmark = pytest.mark.slow


def test_soak_harness_passes_a_short_run(tmp_path: Path) -> None:
    raw, out = tmp_path / "soak.json", tmp_path / "RESULTS.md"
    out.write_text("# results\n\nkept\n")
    code = soak.main([
        "--duration", "10", "--workers", "3", "--sample-interval", "0.5", "--idle-wait", "3",
        "--progress", "0", "--out", str(out), "--json", str(raw),
        # 10 s is all warm-up (caches, pools and allocator arenas filling up): the RSS
        # slope is judged by the 10-minute run only.
        "--rss-slope-limit", "1000000",
    ])
    result = json.loads(raw.read_text())
    assert code == 0, json.dumps(result["checks"], indent=1)
    assert result["passed"] and not result["unexpected"]
    ran = {key.split(":", 1)[0] for key in result["scenarios"]}
    assert ran == {s.name for s in soak_traffic.SCENARIOS}
    assert set(result["operations"]) >= {"Converse", "ConverseStream", "InvokeModel",
                                         "InvokeModelWithResponseStream", "CountTokens"}
    assert {"ThrottlingException", "ValidationException", "serviceUnavailableException",
            "modelStreamErrorException", "IncompleteRead", "hang-up", "InvalidSignatureException",
            "ServiceQuotaExceededException"} <= set(result["expected"])
    assert all(row[-1] for row in result["accounting"])  # metered = client-counted
    assert len(result["samples"]) > 10 and all(rss > 0 and fds > 0 for _, rss, fds in result["samples"])
    text = out.read_text()
    assert text.startswith("# results\n\nkept\n")  # only the soak section is touched
    assert text.count(soak_verdict.START) == 1 and text.count(soak_verdict.END) == 1 and "## Soak" in text


def test_write_section_replaces_only_between_the_markers(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    soak_verdict.write_section(path, "first\n")
    assert path.read_text() == f"{soak_verdict.START}\nfirst\n{soak_verdict.END}\n"
    path.write_text(f"head\n\n{soak_verdict.START}\nold\n{soak_verdict.END}\n\ntail\n")
    soak_verdict.write_section(path, "new\n")
    assert path.read_text() == f"head\n\n{soak_verdict.START}\nnew\n{soak_verdict.END}\n\ntail\n"
