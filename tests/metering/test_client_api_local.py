"""The client-driven API (issue #23) in process, where a race or an outage can be
staged exactly (tests/e2e/test_client_api.py covers it end to end on both stores)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from metering.events import UsageEvent, utc_day
from metering.leases import BudgetUnavailable
from metering.sqlite_store import SQLiteStore
from proxy.admin.app import create_admin_app
from proxy.app import CostKeeper
from proxy.config_load import load_config
from tests.conftest import TEST_PRICING

pytestmark = pytest.mark.anyio

MICRO, LITE = "amazon.nova-micro-v1:0", "amazon.nova-lite-v1:0"


async def _started(tmp_path: Path, settings: dict[str, Any], journal: str = "") -> tuple[CostKeeper, httpx.AsyncClient]:
    """A started CostKeeper on SQLite with the test prices and bearer keys over HTTP,
    plus `settings`, and a client of its admin app. `journal`: its own journal
    directory, for a second process on the same file."""
    path = tmp_path / f"config{journal}.yaml"
    store = {"backend": "sqlite", "path": str(tmp_path / "store.db")}
    if journal:
        store["journal_dir"] = str(tmp_path / journal)
    path.write_text(yaml.safe_dump({
        "pricing": TEST_PRICING, "store": store, "auth": {"allow_bearer_over_http": True}, **settings,
    }))
    keeper = CostKeeper(load_config(path, environ={}))
    await keeper.startup()
    return keeper, httpx.AsyncClient(transport=httpx.ASGITransport(app=create_admin_app(keeper)),
                                     base_url="http://admin")


async def test_the_same_report_sent_twice_at_once_is_recorded_once(tmp_path: Path, aws_env: None) -> None:
    """A client that times out and resends while its first report is still being checked
    sends the same id twice at once. On the SQLite store the claim is a transaction on
    the store's thread: both requests must not pass it."""
    keeper, admin = await _started(tmp_path, {})
    recorded: list[UsageEvent] = []
    record = keeper.recorder.record

    def recording(event: UsageEvent) -> None:
        recorded.append(event)
        record(event)

    keeper.recorder.record = recording  # type: ignore[method-assign]

    # The first report's claim waits until the second report is answered (or, when
    # the second claims its id too, until both are claiming): their claims overlap.
    looking, release = asyncio.Event(), asyncio.Event()
    lookups = 0
    claim_report = keeper.store.claim_report

    async def overlapping_claim(report_id: str) -> bool:
        nonlocal lookups
        lookups += 1
        looking.set()
        if lookups >= 2:
            release.set()
        await release.wait()
        return await claim_report(report_id)

    keeper.store.claim_report = overlapping_claim  # type: ignore[method-assign]
    try:
        key = await keeper.store.create_key("acme", "batch")
        document = {"model": MICRO, "input_tokens": 100, "output_tokens": 0, "request_id": "job-1"}

        async def send() -> dict[str, Any]:
            response = await admin.post("/v1/usage-reports", json=document,
                                        headers={"Authorization": f"Bearer {key.bearer_token}"})
            assert response.status_code == 200, response.text
            answer: dict[str, Any] = response.json()
            return answer

        first = asyncio.create_task(send())
        await looking.wait()
        second = await send()
        release.set()
        answers = [await first, second]
        assert sorted(answer["records"][0]["status"] for answer in answers) == ["duplicate", "recorded"]
        assert len(recorded) == 1
    finally:
        release.set()
        await admin.aclose()
        await keeper.shutdown()


async def test_the_same_report_sent_to_two_processes_on_one_file_is_recorded_once(
    tmp_path: Path, aws_env: None,
) -> None:
    """Two proxies on one SQLite file (each its own journal, as `--workers` gives each
    worker): the same report sent to each, before either has flushed it, is recorded by
    one and a duplicate for the other — and the quota counts its cost once: the second
    must not settle it against its budget lease (a settlement the store drops with the
    duplicate row, so the lease would keep it as spend until it expired)."""
    settings = {"models": {"small": MICRO}, "fallback": ["small"],
                "orgs": {"acme": {"daily_quota_usd": {"small": 100.0}}},
                "metering": {"flush_interval": 600}}  # nothing reaches the store before shutdown
    first, first_admin = await _started(tmp_path, settings, journal="journal-0")
    second, second_admin = await _started(tmp_path, settings, journal="journal-1")
    try:
        key = await first.store.create_key("acme", "batch")
        document = {"model": MICRO, "input_tokens": 100_000, "output_tokens": 10, "request_id": "job-1"}
        statuses = []
        for admin in (first_admin, second_admin):
            response = await admin.post("/v1/usage-reports", json=document,
                                        headers={"Authorization": f"Bearer {key.bearer_token}"})
            assert response.status_code == 200, response.text
            statuses.append(response.json()["records"][0]["status"])
        assert statuses == ["recorded", "duplicate"]
    finally:
        for admin, keeper in ((first_admin, first), (second_admin, second)):
            await admin.aclose()
            await keeper.shutdown()
    with SQLiteStore(tmp_path / "store.db") as store:
        [row] = await store.usage_summary(0, None, [])
        budget = await store.read_budget("acme", utc_day(time.time()))
    assert row.requests == 1
    assert sum(model.committed for model in budget.models.values()) == row.cost_pico_usd > 0
    assert sum(model.leased for model in budget.models.values()) == 0


@pytest.mark.parametrize(("fail_closed", "status", "error"), [
    (False, 200, None), (True, 503, "ServiceUnavailableException")])
async def test_select_while_the_quota_state_is_unreadable_answers_as_the_proxy_would(
    tmp_path: Path, aws_env: None, fail_closed: bool, status: int, error: str | None,
) -> None:
    """The store cannot be read: the proxy serves a fail-open org unchecked and answers a
    fail-closed one 503 (retryable). `/v1/select` says the same, not a 400
    ServiceQuotaExceededException (an SDK does not retry it: the job would stop)."""
    keeper, admin = await _started(tmp_path, {
        "models": {"small": MICRO, "medium": LITE},
        "fallback": ["small", "medium"],
        "orgs": {"acme": {"daily_quota_usd": {"small": 1.0}, "fail_closed": fail_closed}},
    })
    try:
        key = await keeper.store.create_key("acme", "batch")

        async def unreadable(scope: str, day: str, max_age: float = 1.0) -> Any:
            raise BudgetUnavailable(f"could not read the quota budget of {scope}: the store is down")

        keeper.selector.leases.look = unreadable  # type: ignore[method-assign]
        response = await admin.get("/v1/select", params={"label": "small"},
                                   headers={"Authorization": f"Bearer {key.bearer_token}"})
        assert response.status_code == status, response.text
        if error is None:
            assert (response.json()["model"], response.json()["fallback"]) == (MICRO, False)
        else:
            assert response.headers["x-amzn-errortype"].startswith(error)
            assert "fails closed" in response.json()["message"]
    finally:
        await admin.aclose()
        await keeper.shutdown()


async def test_select_says_tight_once_little_of_the_quota_is_left(tmp_path: Path, aws_env: None) -> None:
    """`mode` is the proxy's: NORMAL with most of the quota left, TIGHT once under a tenth
    of it is (reported usage spends it here), still the model asked for."""
    keeper, admin = await _started(tmp_path, {
        "models": {"small": MICRO, "medium": LITE},
        "fallback": ["small", "medium"],
        "orgs": {"acme": {"daily_quota_usd": {"small": 1.0}}},
        "metering": {"flush_interval": 0.02},
    })
    try:
        key = await keeper.store.create_key("acme", "batch")
        auth = {"Authorization": f"Bearer {key.bearer_token}"}

        async def mode() -> tuple[str, bool, str]:
            answer = (await admin.get("/v1/select", params={"label": "small"}, headers=auth)).json()
            return answer["model"], answer["fallback"], answer["mode"]

        assert await mode() == (MICRO, False, "NORMAL")
        tokens = 27_500_000  # × $0.035 per 1M = $0.9625 of the $1 quota
        report = {"model": MICRO, "input_tokens": tokens, "output_tokens": 0, "request_id": "big-job"}
        assert (await admin.post("/v1/usage-reports", json=report, headers=auth)).json()["recorded"] == 1
        for _ in range(600):  # the report reaches the store with the next flush (a bound, not a timing)
            if await mode() == (MICRO, False, "TIGHT"):
                break
            await asyncio.sleep(0.05)
        assert await mode() == (MICRO, False, "TIGHT")
    finally:
        await admin.aclose()
        await keeper.shutdown()


async def test_a_claimed_report_is_journaled_before_anything_else_runs(tmp_path: Path, aws_env: None) -> None:
    """A claimed id answers "duplicate" from then on (even after a restart),
    so a crash between the claim and the journal would lose the report for good. The
    claim and the record must have no await between them: whenever anything else runs
    (here, the quota reservation of any record of the batch), every claimed id of the
    batch is already recorded."""
    keeper, admin = await _started(tmp_path, {
        "models": {"small": MICRO},
        "fallback": ["small"],
        "orgs": {"acme": {"daily_quota_usd": {"small": 100.0}}},
    })
    recorded: set[str] = set()
    claimed: set[str] = set()
    record = keeper.recorder.record

    def recording(event: UsageEvent) -> None:
        recorded.add(event.request_id)
        record(event)

    keeper.recorder.record = recording  # type: ignore[method-assign]
    claim_report = keeper.store.claim_report

    async def watched_claim(report_id: str) -> bool:
        new = await claim_report(report_id)
        if new:
            claimed.add(report_id)
        return new

    keeper.store.claim_report = watched_claim  # type: ignore[method-assign]
    unrecorded_at_reserve: list[set[str]] = []
    reserve = keeper.selector.reserve

    async def watching_reserve(*args: Any, **kwargs: Any) -> Any:
        unrecorded_at_reserve.append(claimed - recorded)
        return await reserve(*args, **kwargs)

    keeper.selector.reserve = watching_reserve  # type: ignore[method-assign]
    try:
        key = await keeper.store.create_key("acme", "batch")
        records = [{"model": MICRO, "input_tokens": 1000, "output_tokens": 10, "request_id": f"job-{index}"}
                   for index in range(5)]
        response = await admin.post("/v1/usage-reports", json={"records": records},
                                    headers={"Authorization": f"Bearer {key.bearer_token}"})
        assert response.status_code == 200, response.text
        assert response.json()["recorded"] == 5
        assert len(recorded) == 5 and len(unrecorded_at_reserve) >= 5
        assert all(not unrecorded for unrecorded in unrecorded_at_reserve), unrecorded_at_reserve
        again = await admin.post("/v1/usage-reports", json={"records": records},
                                 headers={"Authorization": f"Bearer {key.bearer_token}"})
        assert again.json()["duplicates"] == 5 and len(recorded) == 5
    finally:
        await admin.aclose()
        await keeper.shutdown()
