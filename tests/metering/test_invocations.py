"""Async-invocation owners (metering/invocations.py) on both backends: SQLite and
DynamoDB Local over HTTP (run under tools/isolated)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from metering.dynamodb_store import DynamoDBStore
from metering.invocations import Invocation, InvocationStore
from metering.store import Store

pytestmark = pytest.mark.anyio

REEL = "amazon.nova-reel-v1:1"


def arn(index: int) -> str:
    return f"arn:aws:bedrock:us-east-1:123456789012:async-invoke/{index:012d}"


def job(index: int, org: str = "acme", app: str = "studio") -> Invocation:
    return Invocation(arn(index), org, app, REEL, 1_741_608_000.0 + index)


async def test_implements_the_protocol(store: Store) -> None:
    assert isinstance(store, InvocationStore)


async def test_the_first_record_of_an_arn_stays(store: Store) -> None:
    first = job(1)
    assert await store.record_invocation(first) == (first, True)
    # Bedrock answers a repeated clientRequestToken with the same ARN, whoever asks.
    assert await store.record_invocation(job(1, org="rival", app="r1")) == (first, False)
    assert await store.record_invocation(first) == (first, False)
    assert await store.invocations([arn(1)]) == {arn(1): first}
    assert first.owned_by("acme", "studio") and not first.owned_by("acme", "other")


async def test_lookups_return_only_recorded_arns(store: Store) -> None:
    recorded = [job(i, org="acme" if i % 3 else "rival") for i in range(250)]
    for invocation in recorded:
        await store.record_invocation(invocation)
    asked = [arn(i) for i in range(0, 300, 2)] + [arn(4), arn(4)]  # unknown and repeated ARNs too
    found = await store.invocations(asked)
    assert found == {arn(i): recorded[i] for i in range(0, 250, 2)}  # > 100: several batches on DynamoDB
    assert await store.invocations([]) == {}


async def test_concurrent_starts_of_one_arn_record_one_owner(store: Store) -> None:
    contenders = [job(7, org=f"org{i}") for i in range(8)]
    results = await asyncio.gather(*(store.record_invocation(c) for c in contenders))
    winners = [record for record, new in results if new]
    assert len(winners) == 1
    assert {record for record, _ in results} == {winners[0]}


async def test_every_replica_sees_the_owners(dynamodb_factory: Callable[..., DynamoDBStore]) -> None:
    async with dynamodb_factory() as first:
        await first.init()
        async with dynamodb_factory(table=first.table) as second:
            await first.record_invocation(job(3))
            assert await second.invocations([arn(3)]) == {arn(3): job(3)}
            assert await second.record_invocation(job(3, org="rival")) == (job(3), False)
