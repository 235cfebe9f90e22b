"""`costkeeper keys …` and `serve` with encrypted issued secrets (real CLI processes):
the default key file, `keys encrypt` migrating rows from before encryption and
rotating keys, KMS through the standard endpoint variable, and clear errors —
no traceback, no key or secret — for a wrong or a missing key."""

from __future__ import annotations

import base64
import contextlib
import sqlite3
import stat
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from metering.secret_box import encode_key, generate_key, key_id_of
from metering.store import generate_access_key_id, generate_secret
from tests.processes import costkeeper, free_port

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, **store: Any) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"store": {"backend": "sqlite", "path": str(tmp_path / "usage.db"), **store},
                                    "server": {"port": free_port(), "admin_port": free_port()}}))
    return path


def _keys(config: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> Any:
    return costkeeper("keys", *args, "--config", str(config), env=env, check=check)


def _created(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if line and not line.startswith("#"))


def _rows(db: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(db)) as raw:
        return dict(raw.execute("SELECT access_key_id, secret FROM api_keys").fetchall())


def _clean(result: Any, *never: str) -> None:
    """A refusal a person can act on: one line of ours, no traceback, nothing secret."""
    assert "Traceback" not in result.stderr and "costkeeper: " in result.stderr
    for value in never:
        assert value not in result.stderr and value not in result.stdout


def test_keys_on_sqlite_default_key_file_and_migration(tmp_path: Path) -> None:
    config = _config(tmp_path)
    db, key_file = tmp_path / "usage.db", tmp_path / "usage.db.key"
    created = _keys(config, "create", "--org", "acme", "--app", "chatbot")
    issued = _created(created.stdout)
    assert f"created {key_file}" in created.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert issued["AWS_SECRET_ACCESS_KEY"] not in _rows(db)[issued["AWS_ACCESS_KEY_ID"]]

    # A key issued by the version before encryption, stored in clear.
    legacy_id, legacy_secret = generate_access_key_id(), generate_secret()
    with contextlib.closing(sqlite3.connect(db)) as raw, raw:
        raw.execute("INSERT INTO api_keys (access_key_id, org, app, secret, created_at) VALUES (?, 'old', 'app', ?, 1)",
                    (legacy_id, legacy_secret))
    assert legacy_id in _keys(config, "list").stdout
    migrated = _keys(config, "encrypt")
    assert "encrypted 1 issued secret(s) with key file" in migrated.stdout and "1 already were" in migrated.stdout
    assert _rows(db)[legacy_id].startswith("v1:")
    assert legacy_secret not in db.read_bytes().decode("latin-1")
    assert "encrypted 0 issued secret(s)" in _keys(config, "encrypt").stdout

    # From the key file to a key in the environment: the file's key becomes a previous one.
    file_key = next(line for line in key_file.read_text().splitlines() if not line.startswith("#"))
    new_key = encode_key(generate_key())
    rotating = {"COSTKEEPER_SECRET_KEY": new_key, "COSTKEEPER_SECRET_KEY_PREVIOUS": file_key}
    assert "encrypted 2 issued secret(s) with COSTKEEPER_SECRET_KEY" in _keys(config, "encrypt", env=rotating).stdout
    listed = _keys(config, "list", env={"COSTKEEPER_SECRET_KEY": new_key})
    assert legacy_id in listed.stdout and issued["AWS_ACCESS_KEY_ID"] in listed.stdout

    # The file's key alone no longer fits.
    refused = _keys(config, "list", check=False)
    assert refused.returncode == 1 and "is not the key this store's issued secrets are encrypted with" in refused.stderr
    _clean(refused, file_key, new_key, legacy_secret)


def test_serve_refuses_a_wrong_key_before_listening(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _keys(config, "create", "--org", "acme", "--app", "chatbot")
    wrong = encode_key(generate_key())
    result = costkeeper("serve", "--config", str(config), env={"COSTKEEPER_SECRET_KEY": wrong}, check=False)
    assert result.returncode == 2
    assert f"configured are {key_id_of(base64.b64decode(wrong))}" in result.stderr
    _clean(result, wrong)


def test_dynamodb_without_a_key_source_refuses_to_serve_keys(tmp_path: Path) -> None:
    # No call reaches DynamoDB: the missing key is found first.
    config = _config(tmp_path, backend="dynamodb", table="t", endpoint_url=f"http://127.0.0.1:{free_port()}")
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    served = costkeeper("serve", "--config", str(config), env=env, check=False)
    assert served.returncode == 2 and "no key for issued secrets: set COSTKEEPER_SECRET_KEY" in served.stderr
    _clean(served)
    created = _keys(config, "create", "--org", "a", "--app", "b", env=env, check=False)
    assert created.returncode == 1 and "store.kms_key_id" in created.stderr
    _clean(created)


@pytest.mark.parametrize(("env", "extra", "message"), [
    ({"COSTKEEPER_SECRET_KEY": "hunter2-not-a-key"}, {}, "COSTKEEPER_SECRET_KEY: expected base64"),
    ({"COSTKEEPER_SECRET_KEY_PREVIOUS": "c2hvcnQ="}, {}, "COSTKEEPER_SECRET_KEY_PREVIOUS (key 1): expected 32 bytes"),
    ({"COSTKEEPER_SECRET_KEY": encode_key(b"k" * 32)}, {"kms_key_id": "alias/ck"},
     "COSTKEEPER_SECRET_KEY and store.kms_key_id: alternative keys"),
])
def test_bad_key_settings_are_configuration_errors(tmp_path: Path, env: dict[str, str], extra: dict[str, str],
                                                   message: str) -> None:
    result = _keys(_config(tmp_path, **extra), "list", env=env, check=False)
    assert result.returncode == 2 and message in result.stderr
    _clean(result, *env.values())



def test_keys_with_kms_through_the_standard_endpoint_variable(tmp_path: Path, kms_url: str) -> None:
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL_KMS": kms_url}
    kms = boto3.client("kms", region_name="us-east-1", endpoint_url=kms_url,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    config = _config(tmp_path)
    issued = _created(_keys(config, "create", "--org", "acme", "--app", "kms", "--kms-key-id", arn, env=env).stdout)
    assert not (tmp_path / "usage.db.key").exists()
    with contextlib.closing(sqlite3.connect(tmp_path / "usage.db")) as raw:
        assert raw.execute("SELECT value FROM meta WHERE name = 'kms-data-key'").fetchone()
    listed = _keys(config, "list", env={**env, "COSTKEEPER_KMS_KEY_ID": arn})
    assert issued["AWS_ACCESS_KEY_ID"] in listed.stdout
    other = kms.create_key()["KeyMetadata"]["Arn"]
    refused = _keys(config, "list", "--kms-key-id", other, env=env, check=False)
    assert refused.returncode == 1 and "KMS decrypt with" in refused.stderr
    _clean(refused, issued["AWS_SECRET_ACCESS_KEY"])
