"""Reading a request's tags (proxy/tags.py), the `attribution` config, and the tag
headers kept from Bedrock (proxy/headers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metering.tags import MAX_VALUE_CHARS
from proxy.config import Config, ConfigError
from proxy.config_load import load_config
from proxy.headers import request_headers_for_upstream
from proxy.tags import TagReader

READER = TagReader(["project", "Job"])


def test_request_metadata_gives_the_listed_keys_only() -> None:
    document = {"requestMetadata": {"project": " apollo ", "Job": "j1", "owner": "x", "job": "lower-case"}}
    assert READER.read([], document) == (("Job", "j1"), ("project", "apollo"))


def test_headers_match_keys_whatever_their_case_and_win_over_metadata() -> None:
    headers = [(b"x-costkeeper-tag-project", b"from-header"), (b"X-CostKeeper-Tag-JOB", b"j2"),
               (b"x-costkeeper-tag-owner", b"ignored"), (b"x-costkeeper-model-id", b"m")]
    assert READER.read(headers, {"requestMetadata": {"project": "from-body"}}) == (
        ("Job", "j2"), ("project", "from-header"))


def test_long_values_are_cut_and_blank_or_odd_ones_ignored() -> None:
    headers = [(b"x-costkeeper-tag-project", b"p" * 300), (b"x-costkeeper-tag-job", b"   ")]
    assert READER.read(headers) == (("project", "p" * MAX_VALUE_CHARS),)
    assert READER.read([], {"requestMetadata": {"project": 7, "Job": ["x"]}}) == ()
    assert READER.read([], {"requestMetadata": "not a map"}) == ()
    assert TagReader().read([(b"x-costkeeper-tag-project", b"x")], {"requestMetadata": {"project": "y"}}) == ()


@given(st.text(max_size=400))
def test_a_value_is_never_longer_than_the_bound(value: str) -> None:
    tags = READER.read([], {"requestMetadata": {"project": value}})
    assert all(len(v) <= MAX_VALUE_CHARS and v == v.strip() and v for _, v in tags)


def test_tag_headers_never_go_upstream() -> None:
    forwarded = request_headers_for_upstream([(b"X-CostKeeper-Tag-Project", b"apollo"), (b"content-type", b"a/b")])
    assert forwarded == {"content-type": "a/b", "accept-encoding": "identity"}


def _config(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path, environ={})


def test_attribution_config(tmp_path: Path) -> None:
    config = _config(tmp_path, "attribution:\n  request_metadata_keys: [project, job]\n  max_tag_values: 5\n")
    assert config.attribution.request_metadata_keys == ("project", "job")
    assert config.attribution.max_tag_values == 5
    for text, named in (("request_metadata_keys: ['a b']", "request_metadata_keys"),
                        ("request_metadata_keys: [Project, project]", "request_metadata_keys"),
                        ("max_tag_values: 0", "max_tag_values"), ("max_tag_values: 1001", "max_tag_values"),
                        ("keys: [a]", "unknown key")):
        with pytest.raises(ConfigError, match=named):
            _config(tmp_path, f"attribution:\n  {text}\n")
