"""Issued secrets at rest, on both backends: what lands in the file or table is
ciphertext; reading decrypts; rows from before encryption still verify and
`encrypt_secrets` converts them; rotation; a wrong key or an altered row is
refused with a message that names keys, never secrets."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from metering.dynamodb_store import DynamoDBStore
from metering.secret_box import (
    SecretDecryptionError,
    SecretKeyError,
    UnknownSecretKey,
    generate_key,
    key_id_of,
)
from metering.secret_keys import KeySource, KeySourceError, NoSecretKey, StaticKeys
from metering.sqlite_store import SQLiteStore
from metering.store import generate_access_key_id, generate_secret
from proxy.config import AuthConfig
from proxy.errors import ServiceUnavailableException
from proxy.identity import Authenticator

pytestmark = pytest.mark.anyio

Store = SQLiteStore | DynamoDBStore
A, B, C = generate_key(), generate_key(), generate_key()


class Backend:
    """One store's raw rows or items, and the same store reopened with other keys."""

    def __init__(self, name: str, tmp_path: Path, factory: Callable[..., DynamoDBStore] | None) -> None:
        self.name, self._path, self._factory = name, tmp_path / "costkeeper.db", factory
        self._table = ""

    @contextlib.asynccontextmanager
    async def open(self, key_source: KeySource) -> AsyncIterator[Store]:
        if self._factory is None:
            async with SQLiteStore(self._path, key_source=key_source) as sqlite:
                yield sqlite
            return
        store = self._factory(key_source=key_source, **({"table": self._table} if self._table else {}))
        async with store:
            if not self._table:
                await store.init()
                self._table = store.table
            yield store

    async def stored_secret(self, store: Store, access_key_id: str) -> str:
        if isinstance(store, SQLiteStore):
            with contextlib.closing(sqlite3.connect(store.path)) as raw:
                row = raw.execute("SELECT secret FROM api_keys WHERE access_key_id = ?", (access_key_id,)).fetchone()
            return str(row[0])
        response = await store._api().get_item(TableName=store.table, Key=_key(access_key_id), ConsistentRead=True)
        return str(response["Item"]["secret"]["S"])

    async def set_secret(self, store: Store, access_key_id: str, stored: str) -> None:
        if isinstance(store, SQLiteStore):
            with contextlib.closing(sqlite3.connect(store.path)) as raw, raw:
                raw.execute("UPDATE api_keys SET secret = ? WHERE access_key_id = ?", (stored, access_key_id))
            return
        await store._api().update_item(TableName=store.table, Key=_key(access_key_id),
                                       UpdateExpression="SET secret = :s", ExpressionAttributeValues={":s": {"S": stored}})

    async def insert_legacy(self, store: Store, access_key_id: str, secret: str) -> None:
        """A key as the version before encryption wrote it: the secret in clear."""
        if isinstance(store, SQLiteStore):
            with contextlib.closing(sqlite3.connect(store.path)) as raw, raw:
                raw.execute("INSERT INTO api_keys (access_key_id, org, app, secret, created_at) VALUES (?, ?, ?, ?, ?)",
                            (access_key_id, "legacy", "app", secret, 1.0))
            return
        await store._api().put_item(TableName=store.table, Item={
            **_key(access_key_id), "access_key_id": {"S": access_key_id}, "org": {"S": "legacy"},
            "app": {"S": "app"}, "secret": {"S": secret}, "created_at": {"N": "1.0"},
            "gsi2pk": {"S": "KEYS"}, "gsi2sk": {"S": f"{1.0:020.6f}#{access_key_id}"}})

    async def everything(self, store: Store) -> str:
        """All that is at rest: the files' bytes, or every item of the table."""
        if isinstance(store, SQLiteStore):
            return _file_text(store.path, f"{store.path}-wal")
        items: list[Any] = []
        async for page in store._api().get_paginator("scan").paginate(TableName=store.table):
            items.extend(page["Items"])
        return repr(items)


def _file_text(*names: str) -> str:
    return "".join(Path(name).read_bytes().decode("latin-1") for name in names if Path(name).exists())


def _mode(name: str) -> int:
    return Path(name).stat().st_mode & 0o777


def _key(access_key_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"KEY#{access_key_id}"}, "sk": {"S": "KEY"}}


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    factory = request.getfixturevalue("dynamodb_factory") if request.param == "dynamodb" else None
    return Backend(request.param, tmp_path, factory)


async def test_only_ciphertext_is_stored_and_reading_decrypts(backend: Backend) -> None:
    async with backend.open(StaticKeys(A)) as store:
        issued = [await store.create_key("acme", f"app{i}") for i in range(3)]
        for key in issued:
            stored = await backend.stored_secret(store, key.access_key_id)
            assert stored.startswith(f"v1:{key_id_of(A)}:") and key.secret not in stored
            record = await store.get_key(key.access_key_id)
            assert record is not None and record.secret == key.secret and record.secret_matches(key.secret)
        assert {r.secret for r in await store.list_keys()} == {k.secret for k in issued}
        at_rest = await backend.everything(store)
        assert not [k for k in issued if k.secret in at_rest or k.bearer_token in at_rest]
        assert await store.revoke_key(issued[0].access_key_id)


async def test_legacy_plaintext_rows_verify_and_migrate(backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    legacy = {generate_access_key_id(): generate_secret() for _ in range(3)}
    async with backend.open(StaticKeys(A)) as store:
        fresh = await store.create_key("acme", "new")
        for access_key_id, secret in legacy.items():
            await backend.insert_legacy(store, access_key_id, secret)
        with caplog.at_level(logging.WARNING):
            for access_key_id, secret in legacy.items():
                record = await store.get_key(access_key_id)
                assert record is not None and record.secret == secret
        assert any("stored in clear" in r.getMessage() for r in caplog.records)
        assert not [s for s in legacy.values() if s in caplog.text]

        result = await store.encrypt_secrets()
        assert (result.encrypted, result.unchanged, result.failed) == (3, 1, ())
        for access_key_id, secret in legacy.items():
            assert (await backend.stored_secret(store, access_key_id)).startswith(f"v1:{key_id_of(A)}:")
            record = await store.get_key(access_key_id)
            assert record is not None and record.secret == secret
        assert (await store.get_key(fresh.access_key_id)).secret == fresh.secret  # type: ignore[union-attr]
        again = await store.encrypt_secrets()
        assert (again.encrypted, again.unchanged) == (0, 4)
        at_rest = await backend.everything(store)
        assert not [s for s in legacy.values() if s in at_rest], "plaintext left behind after the migration"


async def test_rotation_moves_every_secret_to_the_new_key(backend: Backend) -> None:
    async with backend.open(StaticKeys(A)) as store:
        issued = [await store.create_key("acme", f"app{i}") for i in range(2)]
    async with backend.open(StaticKeys(B, [A])) as store:
        assert (await store.get_key(issued[0].access_key_id)).secret == issued[0].secret  # type: ignore[union-attr]
        newer = await store.create_key("acme", "newer")
        assert (await backend.stored_secret(store, newer.access_key_id)).startswith(f"v1:{key_id_of(B)}:")
        result = await store.encrypt_secrets()
        assert (result.encrypted, result.unchanged) == (2, 1)
    async with backend.open(StaticKeys(B)) as store:  # the old key dropped
        assert await store.unlock_secrets()
        for key in (*issued, newer):
            assert (await store.get_key(key.access_key_id)).secret == key.secret  # type: ignore[union-attr]


async def test_a_wrong_key_is_refused_at_unlock_with_the_key_ids(backend: Backend) -> None:
    async with backend.open(StaticKeys(A)) as store:
        issued = await store.create_key("acme", "chatbot")
    async with backend.open(StaticKeys(C)) as store:
        with pytest.raises(KeySourceError) as raised:
            await store.unlock_secrets()
        message = str(raised.value)
        assert key_id_of(A) in message and key_id_of(C) in message and "keys encrypt" in message
        with pytest.raises(KeySourceError):
            await store.get_key(issued.access_key_id)
        assert issued.secret not in message


async def test_an_altered_or_moved_secret_is_refused_and_reported(backend: Backend,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    async with backend.open(StaticKeys(A)) as store:
        first, second = await store.create_key("acme", "one"), await store.create_key("acme", "two")
        # The second key's ciphertext copied into the first key's row: the associated data differs.
        await backend.set_secret(store, first.access_key_id, await backend.stored_secret(store, second.access_key_id))
        with pytest.raises(SecretDecryptionError, match=first.access_key_id):
            await store.get_key(first.access_key_id)
        authenticator = Authenticator(AuthConfig(mode="bearer", key_cache_ttl=0), store)
        with caplog.at_level(logging.ERROR), pytest.raises(ServiceUnavailableException):
            await authenticator.identify(method="POST", raw_path="/", raw_query="", headers=[], host="h", body=b"", secure=True,
                                         authorization=f"Bearer {first.bearer_token}")
        assert first.access_key_id in caplog.text
        assert first.secret not in caplog.text and second.secret not in caplog.text
        assert (await authenticator.identify(method="POST", raw_path="/", raw_query="", headers=[], host="h",
                                             body=b"", secure=True, authorization=f"Bearer {second.bearer_token}")).app == "two"
        # A row under a key that is not configured names the key it needs.
        await backend.set_secret(store, second.access_key_id, "v1:0badbeef:AAAA")
        with pytest.raises(UnknownSecretKey, match="0badbeef"):
            await store.get_key(second.access_key_id)
        result = await store.encrypt_secrets()
        assert result.encrypted == 0 and len(result.failed) == 2
        assert all(isinstance(m, str) and "CKIA" in m for m in result.failed)


async def test_the_bearer_token_of_a_legacy_row_still_authenticates(backend: Backend) -> None:
    access_key_id, secret = generate_access_key_id(), generate_secret()
    async with backend.open(StaticKeys(A)) as store:
        await backend.insert_legacy(store, access_key_id, secret)
        authenticator = Authenticator(AuthConfig(mode="bearer", key_cache_ttl=0), store)
        caller = await authenticator.identify(method="POST", raw_path="/", raw_query="", headers=[], host="h",
                                              body=b"", secure=True, authorization=f"Bearer ck-{access_key_id}-{secret}")
        assert (caller.org, caller.access_key_id) == ("legacy", access_key_id)


async def test_dynamodb_without_a_key_refuses_secrets_but_still_revokes(
    dynamodb_factory: Callable[..., DynamoDBStore],
) -> None:
    async with dynamodb_factory() as keyed:
        await keyed.init()
        issued = await keyed.create_key("acme", "chatbot")
    async with dynamodb_factory(table=keyed.table, key_source=None) as store:
        attempts: list[Callable[[], Awaitable[object]]] = [
            store.unlock_secrets, lambda: store.create_key("acme", "x"), lambda: store.get_key(issued.access_key_id),
            store.encrypt_secrets]
        for attempt in attempts:
            with pytest.raises(NoSecretKey, match="COSTKEEPER_SECRET_KEY"):
                await attempt()
        assert await store.revoke_key(issued.access_key_id)  # an incident needs no key


async def test_sqlite_defaults_to_a_private_key_file_beside_the_database(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    async with SQLiteStore(path) as store:
        issued = await store.create_key("acme", "chatbot")
    assert _mode(f"{path}.key") == 0o600
    # The database alone reveals nothing; with its key file it reads back.
    assert issued.secret not in _file_text(str(path), f"{path}-wal")
    async with SQLiteStore(path) as store:
        assert (await store.get_key(issued.access_key_id)).secret == issued.secret  # type: ignore[union-attr]
    os.unlink(f"{path}.key")  # lost: a new key is made, and refused as not the store's
    async with SQLiteStore(path) as store:
        with pytest.raises(SecretKeyError, match="is not the key"):
            await store.get_key(issued.access_key_id)


async def test_a_memory_store_has_its_own_key() -> None:
    async with SQLiteStore(":memory:") as store:
        issued = await store.create_key("acme", "chatbot")
        assert (await store.get_key(issued.access_key_id)).secret == issued.secret  # type: ignore[union-attr]
