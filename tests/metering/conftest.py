"""Shared fixtures: real stores (a SQLite file, a table in DynamoDB Local), one event template.

Helpers are handed out as fixtures, not imported: `conftest` is not a unique
module name once other test directories have their own. Async tests run on
asyncio through anyio's pytest plugin (`pytestmark = pytest.mark.anyio`).
"""

from __future__ import annotations

import calendar
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from metering.dynamodb_store import DynamoDBStore
from metering.events import UsageEvent
from metering.secret_box import decode_key
from metering.secret_keys import StaticKeys
from metering.sqlite_store import SQLiteStore
from tests.dynamodb_local import (
    CREDENTIALS,
    DynamoDBLocal,
    DynamoDBLocalUnavailable,
    new_table_name,
    start_dynamodb_local,
)
from tests.processes import TEST_SECRET_KEY, free_port

#: 2025-03-10 12:00:00 UTC (the template's timestamp).
T0 = float(calendar.timegm((2025, 3, 10, 12, 0, 0)))

_TEMPLATE = UsageEvent(
    request_id="req-0",
    timestamp=T0,
    org="acme",
    app="chatbot",
    operation="Converse",
    requested_model="premium",
    model="amazon.nova-pro-v1:0",
    input_tokens=100,
    output_tokens=50,
    cache_read_tokens=0,
    cache_write_tokens=0,
    cost_pico_usd=1_000_000_000,  # $0.001
    priced=True,
    latency_ms=120.5,
    first_byte_ms=None,
    status=200,
    estimated=False,
)


def _make_event(request_id: str = "req-0", **overrides: Any) -> UsageEvent:
    return replace(_TEMPLATE, request_id=request_id, **overrides)


@pytest.fixture
def make_event() -> Callable[..., UsageEvent]:
    """`make_event("req-1", org="other", ...)`: the template event with overrides."""
    return _make_event


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def dynamodb_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynamoDBLocal]:
    """One DynamoDB Local for the session; each test uses its own table."""
    try:
        server = start_dynamodb_local(tmp_path_factory.mktemp("dynamodb"))
    except DynamoDBLocalUnavailable as exc:
        pytest.fail(f"DynamoDB Local is required for these tests: {exc}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials DynamoDB Local accepts, and none of the developer's AWS settings."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def dynamodb_factory(dynamodb_local: DynamoDBLocal, aws_env: None) -> Callable[..., DynamoDBStore]:
    """`dynamodb_factory(table=…, shards=…)`: an unopened store on DynamoDB Local
    (a fresh table name unless one is given)."""

    def make(**overrides: Any) -> DynamoDBStore:
        settings: dict[str, Any] = {
            "table": new_table_name(), "region": "us-east-1", "endpoint_url": dynamodb_local.endpoint_url,
            "shards": 4, "key_source": StaticKeys(decode_key(TEST_SECRET_KEY, "TEST_SECRET_KEY")), **overrides,
        }
        return DynamoDBStore(**settings)

    return make


@pytest.fixture
async def dynamodb_store(dynamodb_factory: Callable[..., DynamoDBStore]) -> AsyncIterator[DynamoDBStore]:
    async with dynamodb_factory() as store:
        await store.init()
        yield store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "costkeeper.db") as opened:
        yield opened


@contextlib.asynccontextmanager
async def opened_store(backend: str, request: pytest.FixtureRequest,
                       tmp_path: Path) -> AsyncIterator[SQLiteStore | DynamoDBStore]:
    """`backend` ("sqlite" or "dynamodb") opened and initialized, closed after use."""
    if backend == "sqlite":
        async with SQLiteStore(tmp_path / "costkeeper.db") as sqlite:
            yield sqlite
    else:
        factory: Callable[..., DynamoDBStore] = request.getfixturevalue("dynamodb_factory")
        async with factory() as dynamodb:
            await dynamodb.init()
            yield dynamodb


@pytest.fixture(params=["sqlite", "dynamodb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLiteStore | DynamoDBStore]:
    """Each backend in turn, opened and initialized: the shared contract."""
    async with opened_store(request.param, request, tmp_path) as opened:
        yield opened


@pytest.fixture(scope="module")
def kms_url() -> Iterator[str]:
    """Amazon KMS as moto's server on 127.0.0.1 (one per test module)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
