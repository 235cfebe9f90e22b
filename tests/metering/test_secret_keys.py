"""Where the key for issued secrets comes from: a key file (created 0600 on first
use), the environment, or an AWS KMS-wrapped data key (against moto's server),
and the key-check marker that refuses a wrong key."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from metering.dynamodb_store import DynamoDBStore
from metering.secret_box import SecretBox, encode_key, generate_key, key_id_of
from metering.secret_keys import (
    KEY_CHECK,
    KMS_CONTEXT,
    KMS_DATA_KEY,
    KeyFile,
    KeySourceError,
    KmsDataKey,
    StaticKeys,
    key_source,
    reencrypt_marker,
    unlock,
)
from metering.sqlite_store import SQLiteStore

pytestmark = pytest.mark.anyio
A, B = generate_key(), generate_key()


class Meta:
    """A MetaStore in a dict."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def get_meta(self, name: str) -> str | None:
        return self.values.get(name)

    async def add_meta(self, name: str, value: str) -> bool:
        if name in self.values:
            return False
        self.values[name] = value
        return True

    async def set_meta(self, name: str, value: str) -> None:
        self.values[name] = value


# -- key file -------------------------------------------------------------


async def test_a_key_file_is_created_private_once_with_a_notice(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "store.db.key"
    with caplog.at_level(logging.WARNING):
        first = await KeyFile(str(path), create=True).load(Meta())
        second = await KeyFile(str(path), create=True).load(Meta())
    assert first.key_id == second.key_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1 and str(path) in notices[0] and "back it up" in notices[0]
    key_line = [line for line in path.read_text().splitlines() if not line.startswith("#")][0]
    assert key_line not in caplog.text
    assert os.listdir(tmp_path) == ["store.db.key"]  # no temporary file left


async def test_concurrent_creators_agree_on_one_key(tmp_path: Path) -> None:
    path = str(tmp_path / "race.key")
    boxes = await asyncio.gather(*(KeyFile(path, create=True).load(Meta()) for _ in range(16)))
    assert len({box.key_id for box in boxes}) == 1


async def test_a_key_file_rotates_its_first_line_is_current(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# new key first\n{encode_key(B)}\n\n{encode_key(A)}\n")
    path.chmod(0o600)
    box = await KeyFile(str(path), [generate_key()]).load(Meta())
    assert box.key_id == key_id_of(B) and box.key_ids[:2] == (key_id_of(B), key_id_of(A)) and len(box.key_ids) == 3


@pytest.mark.parametrize(("content", "message"), [
    (None, "No such file"),
    ("# only a comment\n", "holds no key"),
    ("bm90IGEga2V5\n", "key 1: expected 32 bytes"),
    (f"{encode_key(A)}\n!!!\n", "key 2: expected base64"),
])
async def test_key_file_problems_are_named(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "bad.key"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KeySourceError, match=message) as raised:
        await KeyFile(str(path)).load(Meta())  # not created: an explicit file must exist
    assert str(path) in str(raised.value) and encode_key(A) not in str(raised.value)


async def test_a_readable_key_file_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "open.key"
    path.write_text(encode_key(A))
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        await KeyFile(str(path)).load(Meta())
    assert "mode 644" in caplog.text


# -- the key-check marker ---------------------------------------------------


async def test_the_marker_refuses_a_wrong_key_and_follows_a_rotation() -> None:
    meta = Meta()
    await unlock(StaticKeys(A), meta)
    assert meta.values[KEY_CHECK].startswith(f"v1:{key_id_of(A)}:")
    with pytest.raises(KeySourceError) as raised:
        await unlock(StaticKeys(B), meta)
    assert f"expects key {key_id_of(A)}" in str(raised.value) and "COSTKEEPER_SECRET_KEY_PREVIOUS" in str(raised.value)
    rotating = await unlock(StaticKeys(B, [A]), meta)  # the old key as a previous one
    await reencrypt_marker(rotating, meta)  # what `keys encrypt` does at its end
    assert (await unlock(StaticKeys(B), meta)).key_id == key_id_of(B)


def test_key_source_picks_the_configured_one(tmp_path: Path) -> None:
    common: dict[str, Any] = {"previous": [A], "region": "eu-west-1", "create_key_file": False}
    assert isinstance(key_source(secret_key=B, key_file="", kms_key_id=None, **common), StaticKeys)
    assert isinstance(key_source(secret_key=None, key_file="", kms_key_id="alias/ck", **common), KmsDataKey)
    assert isinstance(key_source(secret_key=None, key_file="k", kms_key_id=None, **common), KeyFile)
    assert key_source(secret_key=None, key_file="", kms_key_id=None, **common) is None
    arn = "arn:aws:kms:ap-south-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert KmsDataKey(arn, region="us-east-1")._region == "ap-south-1"  # an ARN names its region
    assert KmsDataKey("alias/ck", region="us-east-1")._region == "us-east-1"


# -- AWS KMS (moto's server) -------------------------------------------------



@pytest.fixture
def kms(kms_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return boto3.client("kms", region_name="us-east-1", endpoint_url=kms_url)


def _new_kms_key(kms: Any) -> str:
    return str(kms.create_key(Description="costkeeper test")["KeyMetadata"]["Arn"])


async def test_kms_generates_the_data_key_once_and_unwraps_it_later(kms: Any, kms_url: str) -> None:
    arn = _new_kms_key(kms)
    meta = Meta()
    box = await KmsDataKey(arn, region="us-east-1", endpoint_url=kms_url).load(meta)
    blob = meta.values[KMS_DATA_KEY]
    # What the store keeps is KMS's ciphertext; only KMS (with the purpose) turns it back into the key.
    unwrapped = kms.decrypt(CiphertextBlob=base64.b64decode(blob), EncryptionContext=KMS_CONTEXT)["Plaintext"]
    assert key_id_of(unwrapped) == box.key_id and base64.b64encode(unwrapped).decode() not in blob
    again = await KmsDataKey(arn, region="us-east-1", endpoint_url=kms_url).load(meta)
    assert again.key_id == box.key_id and meta.values[KMS_DATA_KEY] == blob
    sealed = box.encrypt("CKIAEXAMPLE000000000", "s")
    assert again.decrypt("CKIAEXAMPLE000000000", sealed) == "s"


async def test_replicas_starting_together_share_one_data_key(kms: Any, kms_url: str) -> None:
    arn, meta = _new_kms_key(kms), Meta()
    boxes = await asyncio.gather(*(KmsDataKey(arn, region="us-east-1", endpoint_url=kms_url).load(meta)
                                   for _ in range(4)))
    assert len({box.key_id for box in boxes}) == 1


async def test_kms_refusals_are_clear_errors(kms: Any, kms_url: str) -> None:
    meta = Meta()
    await KmsDataKey(_new_kms_key(kms), region="us-east-1", endpoint_url=kms_url).load(meta)
    with pytest.raises(KeySourceError, match=r"KMS decrypt with .* failed: \w+Exception"):
        await KmsDataKey(_new_kms_key(kms), region="us-east-1", endpoint_url=kms_url).load(meta)
    with pytest.raises(KeySourceError, match="KMS generate_data_key with alias/missing failed: NotFoundException"):
        await KmsDataKey("alias/missing", region="us-east-1", endpoint_url=kms_url).load(Meta())


async def test_previous_keys_work_beside_kms(kms: Any, kms_url: str) -> None:
    old = SecretBox(A).encrypt("CKIAEXAMPLE000000000", "s")
    box = await KmsDataKey(_new_kms_key(kms), [A], region="us-east-1", endpoint_url=kms_url).load(Meta())
    assert box.decrypt("CKIAEXAMPLE000000000", old) == "s" and not box.is_current(old)


async def test_sqlite_store_with_kms_keeps_only_the_wrapped_key(kms: Any, kms_url: str, tmp_path: Path) -> None:
    arn = _new_kms_key(kms)
    path = tmp_path / "kms.db"
    async with SQLiteStore(path, key_source=KmsDataKey(arn, region="us-east-1", endpoint_url=kms_url)) as store:
        issued = await store.create_key("acme", "chatbot")
        assert await store.get_meta(KMS_DATA_KEY)
    assert f"{path.name}.key" not in os.listdir(tmp_path)
    assert issued.secret not in path.read_bytes().decode("latin-1")
    async with SQLiteStore(path, key_source=KmsDataKey(arn, region="us-east-1", endpoint_url=kms_url)) as store:
        assert (await store.get_key(issued.access_key_id)).secret == issued.secret  # type: ignore[union-attr]


async def test_dynamodb_store_with_kms(kms: Any, kms_url: str, dynamodb_factory: Callable[..., DynamoDBStore]) -> None:
    arn = _new_kms_key(kms)
    # dynamodb_factory's aws_env has set other credentials: moto accepts any.
    async with dynamodb_factory(key_source=KmsDataKey(arn, region="us-east-1", endpoint_url=kms_url)) as store:
        await store.init()
        issued = await store.create_key("acme", "chatbot")
        wrapped = await store.get_meta(KMS_DATA_KEY)
        assert wrapped and issued.secret not in str(await store._api().scan(TableName=store.table))
    async with dynamodb_factory(table=store.table,
                                key_source=KmsDataKey(arn, region="us-east-1", endpoint_url=kms_url)) as replica:
        assert (await replica.get_key(issued.access_key_id)).secret == issued.secret  # type: ignore[union-attr]
        assert await replica.get_meta(KMS_DATA_KEY) == wrapped


async def test_a_key_file_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeySourceError, match="No such file or directory"):
        await KeyFile(str(tmp_path / "missing-dir" / "store.db.key"), create=True).load(Meta())
