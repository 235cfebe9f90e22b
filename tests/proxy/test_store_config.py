from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import ConfigError, load_config


def test_store_defaults_and_journal_location(tmp_path: Path) -> None:
    config = load_config(None, environ={})
    assert (config.store.backend, config.store.path, config.store.journal_path()) == (
        "sqlite", "costkeeper.db", "costkeeper.db.journal")
    assert config.metering.flush_interval <= 1.0 and config.metering.max_backlog > 0


def test_dynamodb_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("store: {backend: dynamodb, table: usage, shards: 16}\n")
    config = load_config(path, environ={"COSTKEEPER_STORE_ENDPOINT_URL": "http://127.0.0.1:8000",
                                        "COSTKEEPER_JOURNAL_DIR": "/var/lib/costkeeper/journal"})
    store = config.store
    assert (store.backend, store.table, store.shards, store.endpoint_url) == (
        "dynamodb", "usage", 16, "http://127.0.0.1:8000")
    assert store.journal_path() == "/var/lib/costkeeper/journal"
    assert load_config(None, environ={"COSTKEEPER_STORE_BACKEND": "dynamodb"}).store.journal_path() == \
        "costkeeper-journal"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("store: {backend: postgres}", "store.backend"),
        ("store: {backend: dynamodb, table: ''}", "store.table"),
        ("store: {shards: 0}", "store.shards"),
        ("store: {retry_base: 0}", "store.retry_base"),
        ("metering: {flush_interval: -1}", "metering.flush_interval"),
        ("metering: {batch_size: 0}", "metering.batch_size"),
        ("store: {bucket: x}", r"store: unknown key\(s\) \['bucket'\]"),
    ],
)
def test_bad_store_settings_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})
