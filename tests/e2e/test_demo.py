"""`make demo-serve` as a newcomer runs it: the story it tells, in its order, then a
dashboard that stays up until Ctrl-C. Facts, not figures: the costs and token
counts are the simulator's and the price table's to change."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.processes import REPO, base_env, refuses_connections, wait_for

NOVA_US, CLAUDE = "us.amazon.nova-lite-v1:0", "us.anthropic.claude-haiku-4-5-20251001-v1:0"
NOVA = "amazon.nova-lite-v1:0"
#: What the demo must say, in this order (one regular expression per line of its output).
STORY = [
    r"^boto3 Converse us\.amazon\.nova-micro-v1:0: usage \{'inputTokens': \d+, 'outputTokens': [1-9]",
    r"x-costkeeper-model-id: us\.amazon\.nova-micro-v1:0  x-costkeeper-fallback: false",
    r"^boto3 ConverseStream .*'outputTokens': [1-9]",
    rf"^Anthropic SDK messages\.create {re.escape(CLAUDE)}: message, \d+ in / [1-9]\d* out",
    rf"x-costkeeper-model-id: {re.escape(CLAUDE)}  x-costkeeper-fallback: false",
    r"^LangChain ChatBedrockConverse .*'output_tokens': [1-9]",
    rf"^Anthropic SDK request +1: x-costkeeper-model-id: {re.escape(CLAUDE)}  x-costkeeper-fallback: false",
    rf"^Anthropic SDK request +\d+: x-costkeeper-model-id: {re.escape(NOVA_US)}  x-costkeeper-fallback: true",
    rf"^Served by {re.escape(NOVA_US)}, translated back: the Anthropic SDK parsed a Claude Messages message "
    r"\(role assistant, stop_reason \w+, [1-9]\d* output tokens\)",
    r"^premium is spent \(\d+\.\d% of its quota\): scope 'demo' falls back to standard",
    rf"^boto3 Converse .* request +1: x-costkeeper-model-id: {re.escape(NOVA_US)}  x-costkeeper-fallback: true",
    r"^boto3 raised ServiceQuotaExceededException \(HTTP 400, not retried\): Daily quota exhausted for scope 'demo'",
    rf"^demo +notebook +{re.escape(NOVA_US)} +\d+ ",
    rf"^demo +notebook +{re.escape(CLAUDE)} +\d+ ",
    r"^TOTAL ",
    r'^costkeeper_tokens_total\{.*model="us\.amazon\.nova-lite-v1:0".*\} [1-9]',
    r"^(http://127\.0\.0\.1:\d+/dashboard\?token=\S+)$",
    r"Ctrl-C stops them",
    r"^Stopped the simulator and the proxy\.$",
]


def _in_order(lines: list[str]) -> list[re.Match[str]]:
    """The match of each STORY line, each after the previous; AssertionError names the first missing."""
    found, start = [], 0
    for pattern in STORY:
        index = next((i for i in range(start, len(lines)) if re.search(pattern, lines[i])), None)
        assert index is not None, f"the demo did not say {pattern!r} after line {start}:\n" + "\n".join(lines)
        match = re.search(pattern, lines[index])
        assert match is not None
        found.append(match)
        start = index + 1
    return found


def test_demo_tells_the_story_and_serves_until_ctrl_c(tmp_path: Path) -> None:
    log = tmp_path / "demo.out"
    with log.open("wb") as out:
        demo = subprocess.Popen([sys.executable, "scripts/demo.py", "--keep", "--work", str(tmp_path / "work")],
                                cwd=REPO, env=base_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Ctrl-C stops them" in log.read_text() or demo.poll() is not None, 120, "the demo")
        assert demo.poll() is None, log.read_text()
        url = next(line for line in log.read_text().splitlines() if "/dashboard?token=" in line)
        admin, token = url.split("/dashboard?token=")
        assert httpx.get(url, timeout=5).status_code == 200
        quotas = httpx.get(f"{admin}/v1/quotas", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
        (scope,) = quotas["scopes"]
        # The chain is spent, each model to its last percent (budget leases mark a model
        # exhausted at 99 %): the dashboard shows premium → standard, then standard → none.
        assert scope["scope"] == "demo" and all(model["exhausted"] for model in scope["models"])
        assert [(event["from"], event["to"]) for event in scope["fallbacks"]] == [(CLAUDE, NOVA), (NOVA, None)]
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    lines = log.read_text().splitlines()
    _in_order(lines)
    assert "Traceback" not in log.read_text()
    assert refuses_connections(admin)  # the proxy is gone with the demo
