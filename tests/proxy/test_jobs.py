"""Jobs (proxy/jobs.py): the owner checks, records and list filtering behind the
async-invocation operations, store failures included."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.invocations import Invocation
from metering.sqlite_store import SQLiteStore
from metering.unit_prices import UnitPrice, UnitPrices
from proxy.admission import Plan
from proxy.errors import (
    ConflictException,
    InternalServerException,
    ResourceNotFoundException,
    ServiceUnavailableException,
)
from proxy.identity import Caller
from proxy.jobs import Jobs, Started

REEL = "amazon.nova-reel-v1:1"
PRICES = UnitPrices({REEL: UnitPrice.from_mapping(REEL, {"per_second": 0.08})})
STUDIO, RIVAL = Caller("acme", "studio"), Caller("rival", "r1")


def arn(name: str) -> str:
    return f"arn:aws:bedrock:us-east-1:123456789012:async-invoke/{name:0>12}"


def plan(seconds: int = 6) -> Plan:
    body = {"modelId": REEL, "modelInput": {"taskType": "TEXT_VIDEO",
                                            "videoGenerationConfig": {"durationSeconds": seconds}}}
    return Plan("/async-invoke", json.dumps(body).encode(), model=REEL)


class BrokenStore:
    async def record_invocation(self, invocation: Invocation) -> tuple[Invocation, bool]:
        raise ConnectionError("store unreachable")

    async def invocations(self, arns: Sequence[str]) -> dict[str, Invocation]:
        raise ConnectionError("store unreachable")


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@pytest.fixture
def jobs() -> Iterator[Jobs]:
    with SQLiteStore(":memory:") as store:
        yield Jobs(store, PRICES, clock=lambda: 1_741_608_000.0)


def started(jobs: Jobs, caller: Caller, name: str, seconds: int = 6) -> Any:
    the_plan = plan(seconds)
    return run(jobs.started(caller, the_plan, json.dumps({"invocationArn": arn(name)}).encode(),
                            jobs.job_cost(the_plan)))


def test_a_start_is_charged_once_and_a_rivals_token_reuse_is_refused(jobs: Jobs) -> None:
    assert started(jobs, STUDIO, "a").cost == 480_000_000_000
    assert started(jobs, STUDIO, "a") == Started(0)  # the same job again: free
    conflict = started(jobs, RIVAL, "a")
    assert conflict.cost == 0 and isinstance(conflict.error, ConflictException)
    assert "async-invoke" not in conflict.error.message
    assert run(jobs.owned(STUDIO, arn("a"))).model == REEL


@pytest.mark.parametrize("who", [RIVAL, Caller("acme", "other-app")])
def test_get_of_another_callers_or_an_unknown_job_is_not_found(jobs: Jobs, who: Caller) -> None:
    started(jobs, STUDIO, "a")
    for name in ("a", "never-started"):
        with pytest.raises(ResourceNotFoundException) as raised:
            run(jobs.owned(who, arn(name)))
        assert raised.value.status == 404


def test_list_keeps_the_callers_jobs_and_the_token(jobs: Jobs) -> None:
    started(jobs, STUDIO, "a")
    started(jobs, RIVAL, "b")
    page = {"asyncInvokeSummaries": [{"invocationArn": arn("b")}, {"invocationArn": arn("a")},
                                     {"invocationArn": arn("unknown")}, "junk", {"no": "arn"}],
            "nextToken": "page-2"}
    assert json.loads(run(jobs.listed(STUDIO, json.dumps(page).encode()))) == {
        "asyncInvokeSummaries": [{"invocationArn": arn("a")}], "nextToken": "page-2"}
    assert json.loads(run(jobs.listed(Caller("x", "y"), json.dumps(page).encode()))) == {
        "asyncInvokeSummaries": [], "nextToken": "page-2"}
    own = json.dumps({"asyncInvokeSummaries": [{"invocationArn": arn("a")}]}, indent=1).encode()
    assert run(jobs.listed(STUDIO, own)) is own  # nothing removed: the upstream's bytes
    for odd in (b"not json", b"[]", b'{"asyncInvokeSummaries": "x"}'):
        assert json.loads(run(jobs.listed(STUDIO, odd))) == {"asyncInvokeSummaries": []}


def test_a_store_outage_is_a_retryable_error_and_a_started_job_is_still_charged() -> None:
    broken = Jobs(BrokenStore(), PRICES)
    with pytest.raises(ServiceUnavailableException):
        run(broken.owned(STUDIO, arn("a")))
    with pytest.raises(ServiceUnavailableException):
        run(broken.listed(STUDIO, json.dumps({"asyncInvokeSummaries": [{"invocationArn": arn("a")}]}).encode()))
    outcome = started(broken, STUDIO, "a")
    assert outcome.cost == 480_000_000_000 and isinstance(outcome.error, InternalServerException)
    assert outcome.error.status == 500  # SDKs retry it, with the same clientRequestToken
    no_arn = run(broken.started(STUDIO, plan(), b"{}", 1))
    assert (no_arn.cost, no_arn.error) == (1, None)


CALLERS = (STUDIO, RIVAL, Caller("acme", "other-app"))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.sampled_from([*range(len(CALLERS)), None])), max_size=30),
       st.sampled_from(range(len(CALLERS))))
def test_a_listed_page_holds_exactly_the_callers_own_jobs_in_the_upstreams_order(
        page: list[tuple[int, int | None]], asking: int) -> None:
    """Whatever the upstream lists (others' jobs, unknown ones, repeats), a caller sees
    its own and only its own, in the upstream's order."""
    async def check() -> None:
        with SQLiteStore(":memory:") as store:
            jobs = Jobs(store, PRICES)
            owners: dict[str, int] = {}
            for number, owner in page:
                if owner is not None and arn(str(number)) not in owners:
                    caller = CALLERS[owner]
                    await store.record_invocation(Invocation(arn(str(number)), caller.org, caller.app, REEL, 0.0))
                    owners[arn(str(number))] = owner
            listed = [{"invocationArn": arn(str(number))} for number, _ in page]
            answer = json.loads(await jobs.listed(CALLERS[asking], json.dumps({"asyncInvokeSummaries": listed})
                                                  .encode()))
            assert answer["asyncInvokeSummaries"] == [item for item in listed
                                                      if owners.get(item["invocationArn"]) == asking]

    asyncio.run(check())
