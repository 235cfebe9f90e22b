"""Issued caller credentials and meta values as SQLite rows (tables `api_keys`, `meta`).

A mixin of `SQLiteStore`: it needs the store's connection (`_conn`), its `_run`
(one thread at a time) and `_transaction`, its `_clock`, `_in_memory` and, for
`SecretsMixin`, its `_key_source`. The `secret` column holds the secret encrypted
(`metering/secret_box.py`), or the bare secret in rows written before encryption
existed until `costkeeper keys encrypt` converts them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from metering.secret_box import SecretBox, SecretKeyError
from metering.secret_keys import SecretsMixin, reencrypt_marker
from metering.store import (
    IssuedKey,
    KeyRecord,
    ReencryptResult,
    generate_access_key_id,
)

__all__ = ["KeyRows"]

_KEY_COLUMNS = "access_key_id, org, app, secret, created_at, revoked_at"


def _record(box: SecretBox, row: Sequence[Any]) -> KeyRecord:
    access_key_id, org, app, stored, created_at, revoked_at = row
    return KeyRecord(access_key_id, org, app, box.reveal(access_key_id, stored), created_at, revoked_at)


class KeyRows(SecretsMixin):
    # Provided by SQLiteStore (and `_key_source` for SecretsMixin):
    _conn: sqlite3.Connection
    _clock: Callable[[], float]
    _in_memory: bool
    _run: Callable[..., Awaitable[Any]]
    _transaction: Callable[..., Any]

    # -- KeyStore ----------------------------------------------------------

    async def create_key(self, org: str, app: str) -> IssuedKey:
        box, secret = await self._new_secret(org, app)
        created_at = self._clock()

        def create() -> IssuedKey:
            # A collision in 36**16 ids is next to impossible; retry rather than fail.
            for _ in range(5):
                access_key_id = generate_access_key_id()
                cursor = self._conn.execute(
                    f"INSERT OR IGNORE INTO api_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL)",
                    (access_key_id, org, app, box.encrypt(access_key_id, secret), created_at),
                )
                if cursor.rowcount == 1:
                    return IssuedKey(access_key_id, secret, org, app, created_at)
            raise RuntimeError("could not generate a unique access key id")

        result: IssuedKey = await self._run(create)
        return result

    async def get_key(self, access_key_id: str) -> KeyRecord | None:
        row = await self._run(lambda: self._conn.execute(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE access_key_id = ?", (access_key_id,)
        ).fetchone())
        return None if row is None else _record(await self._secrets(), row)

    async def list_keys(self) -> list[KeyRecord]:
        rows = await self._run(lambda: self._conn.execute(
            f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, access_key_id"
        ).fetchall())
        if not rows:
            return []
        box = await self._secrets()
        return [_record(box, row) for row in rows]

    async def revoke_key(self, access_key_id: str) -> bool:
        now = self._clock()
        cursor = await self._run(lambda: self._conn.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE access_key_id = ? AND revoked_at IS NULL",
            (now, access_key_id),
        ))
        return bool(cursor.rowcount == 1)


    async def encrypt_secrets(self) -> ReencryptResult:
        box = await self._secrets()

        def reencrypt() -> ReencryptResult:
            rows = self._conn.execute("SELECT access_key_id, secret FROM api_keys ORDER BY access_key_id").fetchall()
            encrypted, failed = 0, []
            for access_key_id, stored in rows:
                try:
                    new = box.reencrypted(access_key_id, stored)
                except SecretKeyError as exc:
                    failed.append(str(exc))
                    continue
                if new is None:
                    continue
                self._conn.execute(
                    "UPDATE api_keys SET secret = ? WHERE access_key_id = ? AND secret = ?",
                    (new, access_key_id, stored),
                )
                encrypted += 1
            return ReencryptResult(encrypted, len(rows) - encrypted - len(failed), tuple(failed))

        result: ReencryptResult = await self._run(self._transaction, reencrypt)
        await reencrypt_marker(box, self)
        if result.encrypted and not self._in_memory:
            # The old values' pages leave the WAL file (best effort beside other readers).
            await self._run(lambda: self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        return result

    # -- MetaStore (metering/secret_keys.py) -------------------------------

    async def get_meta(self, name: str) -> str | None:
        row = await self._run(lambda: self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone())
        return None if row is None else str(row[0])

    async def add_meta(self, name: str, value: str) -> bool:
        cursor = await self._run(lambda: self._conn.execute(
            "INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)", (name, value)))
        return bool(cursor.rowcount == 1)

    async def set_meta(self, name: str, value: str) -> None:
        await self._run(lambda: self._conn.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value)))
