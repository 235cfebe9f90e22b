from __future__ import annotations

from pathlib import Path

import pytest

from metering.dynamodb_store import DynamoDBStore
from proxy.app import create_store
from proxy.config import ConfigError
from proxy.config_load import load_config


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
        ("store: {backend: dynamodb, index_name: ''}", "store.index_name"),
        ("store: {backend: dynamodb, index_name: 'Metric Type Index'}", "store.index_name"),
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


def test_the_rate_index_name_defaults_to_the_widgets_and_reaches_the_store(tmp_path: Path) -> None:
    """`store.index_name` (issue #23): `MetricTypeIndex`, the name existing rate widgets
    query, unless configured; the DynamoDB store queries and creates the one configured."""
    assert load_config(None, environ={}).store.index_name == "MetricTypeIndex"
    path = tmp_path / "c.yaml"
    path.write_text("store: {backend: dynamodb, table: usage, index_name: RatesByModel}\n")
    store = create_store(load_config(path, environ={}))
    assert isinstance(store, DynamoDBStore) and store.index_name == "RatesByModel"
