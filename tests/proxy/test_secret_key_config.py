"""Configuration of the key for issued secrets: environment only for key material,
at most one source, the SQLite default key file, and no key in any repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from metering.secret_box import encode_key, generate_key
from proxy.config import ConfigError
from proxy.config_load import load_config

KEY, OLD1, OLD2 = generate_key(), generate_key(), generate_key()


def test_keys_come_from_the_environment_and_never_show() -> None:
    config = load_config(None, environ={"COSTKEEPER_SECRET_KEY": encode_key(KEY),
                                        "COSTKEEPER_SECRET_KEY_PREVIOUS": f"{encode_key(OLD1)}, {encode_key(OLD2)},"})
    assert config.secret_key == KEY and config.previous_secret_keys == (OLD1, OLD2)
    assert encode_key(KEY) not in repr(config) and repr(KEY) not in repr(config)
    assert load_config(None, environ={}).secret_key is None


@pytest.mark.parametrize(("backend", "path", "explicit", "expected"), [
    ("sqlite", "/var/lib/ck/usage.db", "", "/var/lib/ck/usage.db.key"),
    ("sqlite", ":memory:", "", ""),
    ("sqlite", "usage.db", "/run/secrets/ck.key", "/run/secrets/ck.key"),
    ("dynamodb", "usage.db", "", ""),  # replicas: no default
    ("dynamodb", "usage.db", "/run/secrets/ck.key", "/run/secrets/ck.key"),
])
def test_key_file_location(backend: str, path: str, explicit: str, expected: str) -> None:
    environ = {"COSTKEEPER_STORE_BACKEND": backend, "COSTKEEPER_STORE_PATH": path}
    if explicit:
        environ["COSTKEEPER_SECRET_KEY_FILE"] = explicit
    assert load_config(None, environ=environ).store.secret_key_path() == expected


def test_flag_beats_environment_beats_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("store: {kms_key_id: alias/from-yaml}\n")
    assert load_config(path, environ={}).store.kms_key_id == "alias/from-yaml"
    environ = {"COSTKEEPER_KMS_KEY_ID": "alias/from-env"}
    assert load_config(path, environ=environ).store.kms_key_id == "alias/from-env"
    assert load_config(path, flags={"kms_key_id": "alias/from-flag"}, environ=environ).store.kms_key_id == \
        "alias/from-flag"


@pytest.mark.parametrize(("yaml_text", "environ", "message"), [
    ("store: {kms_key_id: alias/ck}", {"COSTKEEPER_SECRET_KEY": encode_key(KEY)},
     "COSTKEEPER_SECRET_KEY and store.kms_key_id: alternative keys"),
    ("store: {kms_key_id: alias/ck, secret_key_file: k}", {}, "store.kms_key_id and store.secret_key_file"),
    ("store: {}", {"COSTKEEPER_SECRET_KEY": encode_key(KEY), "COSTKEEPER_SECRET_KEY_FILE": "k"},
     "COSTKEEPER_SECRET_KEY and store.secret_key_file"),
    ("store: {secret_key: abc}", {}, r"store: unknown key\(s\) \['secret_key'\]"),  # never in config.yaml
    ("store: {}", {"COSTKEEPER_SECRET_KEY": encode_key(KEY)[:-4]}, "COSTKEEPER_SECRET_KEY: expected"),
])
def test_ambiguous_or_malformed_keys_are_refused(tmp_path: Path, yaml_text: str, environ: dict[str, str],
                                                 message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as raised:
        load_config(path, environ=environ)
    assert encode_key(KEY) not in str(raised.value)
