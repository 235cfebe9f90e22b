"""Config reload of a real `costkeeper serve` under traffic (issue 22 item 1), on both stores.

SIGHUP, then a ConfigMap-style symlink swap (no signal: the proxy polls the file),
change a quota and a price from the next request, while a stream opened before
them finishes on the configuration it started with. A broken file changes
nothing, is counted, and the proxy stays ready.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from metering.pricing import Price
from tests.conftest import TEST_PRICING
from tests.dynamodb_local import start_dynamodb_local
from tests.e2e.clients import bedrock_client
from tests.processes import Process, Proxy, start_proxy, wait_for

pytestmark = pytest.mark.slow

PRO, LITE = "amazon.nova-pro-v1:0", "amazon.nova-lite-v1:0"
ADMIN_TOKEN = "reload-admin-token"


def _cost(model: str, prices: dict[str, Any], usage: dict[str, int]) -> int:
    price = Price.from_mapping(model, prices[model])
    return int(usage["inputTokens"] * price.input + usage["outputTokens"] * price.output)


def _access_line(proxy: Proxy, request_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def logged() -> bool:
        for line in proxy.output().splitlines():
            if line.startswith('{"type":"access"') and request_id in line:
                found.append(json.loads(line))
                return True
        return False

    wait_for(logged, 15, f"the access-log line of {request_id}")
    return found[0]


def _admin(proxy: Proxy, path: str) -> httpx.Response:
    return httpx.get(f"{proxy.admin_url}{path}", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=5)


def _metric(proxy: Proxy, name: str) -> float:
    for line in httpx.get(f"{proxy.admin_url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if request.param == "sqlite":
        yield {"backend": "sqlite", "path": str(tmp_path / "store.db")}
        return
    dynamodb = start_dynamodb_local(tmp_path)
    try:
        yield {"backend": "dynamodb", "table": f"reload-{uuid.uuid4().hex[:8]}",
               "endpoint_url": dynamodb.endpoint_url, "journal_dir": str(tmp_path / "journal")}
    finally:
        dynamodb.stop()


def _document(store: dict[str, Any], pricing: dict[str, Any], premium_usd: float) -> dict[str, Any]:
    return {
        "pricing": pricing,
        "models": {"premium": PRO, "standard": LITE},
        "fallback": ["premium", "standard"],
        "orgs": {"acme": {"daily_quota_usd": {"premium": premium_usd}}},
        "store": store,
        "server": {"config_poll_interval": 0.2},
    }


def test_sighup_and_a_file_swap_change_quota_and_price_while_a_stream_stays_open(
    tmp_path: Path, simulator: Process, store: dict[str, Any]
) -> None:
    pricing = {**TEST_PRICING, PRO: {"input": 0.8, "output": 3.2}}
    proxy = start_proxy(tmp_path, simulator.url, _document(store, pricing, 10.0),
                        env={"COSTKEEPER_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        key = proxy.issue_key("acme", "live")
        client = bedrock_client(key, endpoint_url=proxy.url, read_timeout=30)
        first_sha = _admin(proxy, "/v1/config").json()["sha256"]

        # A stream opened on the first configuration, held open upstream across both reloads.
        hold = uuid.uuid4().hex
        stream = client.converse_stream(modelId="premium", messages=[
            {"role": "user", "content": [{"text": f"[[sim:hold={hold}]] a long story"}]}])
        stream_id = stream["ResponseMetadata"]["RequestId"]
        events = iter(stream["stream"])
        assert "messageStart" in next(events)

        def ask() -> dict[str, Any]:
            answer: dict[str, Any] = client.converse(modelId="premium", inferenceConfig={"maxTokens": 30},
                                                     messages=[{"role": "user", "content": [{"text": "hi"}]}])
            return answer

        before = ask()
        assert before["ResponseMetadata"]["HTTPHeaders"]["x-costkeeper-model-id"] == PRO

        # 1. SIGHUP: premium's price doubles and its quota drops to nothing.
        doubled = {**pricing, PRO: {"input": 1.6, "output": 6.4}}
        proxy.config_path.write_text(yaml.safe_dump(_with_ports(proxy, _document(store, doubled, 0.0))))
        proxy.popen.send_signal(signal.SIGHUP)
        wait_for(lambda: _admin(proxy, "/v1/config").json()["sha256"] != first_sha, 15, "the SIGHUP reload")
        after = ask()
        assert after["ResponseMetadata"]["HTTPHeaders"]["x-costkeeper-model-id"] == LITE  # lowered: at once

        # 2. A ConfigMap-style swap (a symlink renamed over the file; no signal): LITE's price changes.
        second_sha = _admin(proxy, "/v1/config").json()["sha256"]
        cheaper = {**doubled, LITE: {"input": 0.03, "output": 0.12}}
        data = tmp_path / "..data-2"
        data.mkdir()
        (data / "config.yaml").write_text(yaml.safe_dump(_with_ports(proxy, _document(store, cheaper, 0.0))))
        link = tmp_path / "swap.tmp"
        link.symlink_to(data / "config.yaml")
        os.replace(link, proxy.config_path)
        wait_for(lambda: _admin(proxy, "/v1/config").json()["sha256"] != second_sha, 15, "the polled reload")
        swapped = ask()
        assert swapped["ResponseMetadata"]["HTTPHeaders"]["x-costkeeper-model-id"] == LITE

        # The open stream finishes whole, priced as when it started.
        threading.Timer(0.2, lambda: httpx.post(f"{simulator.url}/_sim/release/{hold}", timeout=5)).start()
        rest = [next(iter(event)) for event in events]
        assert rest[-1] == "metadata" and "messageStop" in rest

        for response, model, prices in ((before, PRO, pricing), (after, LITE, doubled), (swapped, LITE, cheaper)):
            line = _access_line(proxy, response["ResponseMetadata"]["RequestId"])
            assert line["model"] == model
            assert line["cost_pico_usd"] == _cost(model, prices, response["usage"])
        streamed = _access_line(proxy, stream_id)
        assert streamed["model"] == PRO and streamed["output_tokens"] > 0
        assert streamed["cost_pico_usd"] == _cost(PRO, pricing, {"inputTokens": streamed["input_tokens"],
                                                                 "outputTokens": streamed["output_tokens"]})
        client.close()
        assert "Traceback" not in proxy.output()
    finally:
        proxy.stop()


def test_a_broken_file_changes_nothing_and_the_proxy_stays_ready(
    tmp_path: Path, simulator: Process, store: dict[str, Any]
) -> None:
    pricing = {**TEST_PRICING, PRO: {"input": 0.8, "output": 3.2}}
    proxy = start_proxy(tmp_path, simulator.url, _document(store, pricing, 10.0),
                        env={"COSTKEEPER_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        running = _admin(proxy, "/v1/config").json()
        key = proxy.issue_key("acme", "steady")
        broken = _with_ports(proxy, _document(store, pricing, 10.0))
        broken["orgs"]["acme"]["daily_quota_usd"] = {"premium": -5}
        proxy.config_path.write_text(yaml.safe_dump(broken))
        proxy.popen.send_signal(signal.SIGHUP)
        wait_for(lambda: _metric(proxy, "costkeeper_config_reload_errors_total") >= 1, 15, "the refused reload")
        assert "orgs.acme.daily_quota_usd.premium" in proxy.output()
        assert httpx.get(f"{proxy.admin_url}/readyz", timeout=5).status_code == 200
        assert _admin(proxy, "/v1/config").json() == running
        # Polling sees the same broken content: refused once, not logged again and again.
        time.sleep(0.5)
        assert _metric(proxy, "costkeeper_config_reload_errors_total") == 1
        client = bedrock_client(key, endpoint_url=proxy.url)
        answer = client.converse(modelId="premium", messages=[{"role": "user", "content": [{"text": "hi"}]}])
        assert answer["ResponseMetadata"]["HTTPHeaders"]["x-costkeeper-model-id"] == PRO
        client.close()
        assert f'costkeeper_config_info{{sha256="{running["sha256"]}"}} 1.0' in httpx.get(
            f"{proxy.admin_url}/metrics", timeout=5).text
    finally:
        proxy.stop()


def _with_ports(proxy: Proxy, document: dict[str, Any]) -> dict[str, Any]:
    """The running file's server, upstream and metering settings, with `document`'s others."""
    running = yaml.safe_load(Path(proxy.config_path).read_text())
    return {**running, **document, "server": running["server"]}


def test_sighup_to_the_supervisor_reloads_every_worker(tmp_path: Path, simulator: Process) -> None:
    """With polling off, only the signal the supervisor passes on can reload a worker."""
    pricing = {**TEST_PRICING, PRO: {"input": 0.8, "output": 3.2}}
    document = _document({"backend": "sqlite", "path": str(tmp_path / "store.db")}, pricing, 10.0)
    document["server"] = {"workers": 2, "config_poll_interval": 0}
    proxy = start_proxy(tmp_path, simulator.url, document, env={"COSTKEEPER_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        def running(sha: str) -> int:
            text = httpx.get(f"{proxy.admin_url}/metrics", timeout=5).text
            return sum(1 for line in text.splitlines()
                       if line.startswith("costkeeper_config_info{") and f'sha256="{sha}"' in line
                       and line.endswith(" 1.0"))

        first = _admin(proxy, "/v1/config").json()["sha256"]
        wait_for(lambda: running(first) == 2, 15, "both workers to report their configuration")
        changed = _with_ports(proxy, _document(document["store"], {**pricing, PRO: {"input": 1, "output": 4}}, 5.0))
        proxy.config_path.write_text(yaml.safe_dump(changed))
        proxy.popen.send_signal(signal.SIGHUP)
        new = hashlib.sha256(proxy.config_path.read_bytes()).hexdigest()
        wait_for(lambda: running(new) == 2, 15, "both workers to reload")
        assert running(first) == 0 and _admin(proxy, "/v1/config").json()["sha256"] == new
        assert proxy.popen.poll() is None and "Traceback" not in proxy.output()
    finally:
        proxy.stop()
