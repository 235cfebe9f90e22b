from __future__ import annotations

import pytest

from metering.store import (
    IssuedKey,
    generate_access_key_id,
    generate_secret,
    normalize_group_by,
    parse_bearer_token,
)

KEY_ID = "CKIAABCDEFGHIJ234567"
SECRET = "abcdefghijABCDEFGHIJ0123456789abcdefghij"


def test_generated_credentials_parse_back() -> None:
    key = IssuedKey(generate_access_key_id(), generate_secret(), "acme", "chatbot", 0.0)
    assert parse_bearer_token(key.bearer_token) == (key.access_key_id, key.secret)


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (f"ck-{KEY_ID}-{SECRET}", (KEY_ID, SECRET)),
        (f" ck-{KEY_ID}-{SECRET}\n", (KEY_ID, SECRET)),  # header whitespace
        (f"Bearer ck-{KEY_ID}-{SECRET}", None),  # the scheme is the caller's to strip
        (f"ck-{KEY_ID}-{SECRET[:-1]}", None),  # short secret
        (f"ck-{KEY_ID}-{SECRET}x", None),  # long secret
        (f"ck-{KEY_ID}-{SECRET[:-1]}/", None),  # not alphanumeric
        (f"ck-{KEY_ID.lower()}-{SECRET}", None),
        (f"ck-AKIAABCDEFGHIJ234567-{SECRET}", None),  # an AWS key id is not ours
        (f"ck-{KEY_ID}{SECRET}", None),
        (f"{KEY_ID}-{SECRET}", None),
        ("", None),
        ("ck--", None),
    ],
)
def test_parse_bearer_token(token: str, expected: tuple[str, str] | None) -> None:
    assert parse_bearer_token(token) == expected


@pytest.mark.parametrize(
    ("by", "expected"),
    [([], ()), (["day", "org"], ("day", "org")), (("model", "model", "app"), ("model", "app"))],
)
def test_normalize_group_by(by: list[str], expected: tuple[str, ...]) -> None:
    assert normalize_group_by(by) == expected
