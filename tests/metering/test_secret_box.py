"""AES-256-GCM for issued secrets: round trip, tampering, associated data, rotation."""

from __future__ import annotations

import base64
import logging

import pytest

from metering.secret_box import (
    SecretBox,
    SecretDecryptionError,
    SecretKeyError,
    UnknownSecretKey,
    decode_key,
    encode_key,
    generate_key,
    is_encrypted,
    key_id_of,
)
from metering.store import StoreError, generate_access_key_id, generate_secret

OLD, NEW = generate_key(), generate_key()
ACCESS_KEY_ID = generate_access_key_id()
SECRET = generate_secret()


def test_round_trip_with_a_fresh_nonce_each_time() -> None:
    box = SecretBox(NEW)
    first, second = box.encrypt(ACCESS_KEY_ID, SECRET), box.encrypt(ACCESS_KEY_ID, SECRET)
    assert first != second  # a random nonce per encryption
    for stored in (first, second):
        assert stored.startswith(f"v1:{key_id_of(NEW)}:") and is_encrypted(stored)
        assert SECRET not in stored
        assert box.decrypt(ACCESS_KEY_ID, stored) == SECRET
        assert box.is_current(stored)


def _flip(stored: str, index: int) -> str:
    prefix, _, payload = stored.rpartition(":")
    raw = bytearray(base64.b64decode(payload))
    raw[index] ^= 0x01
    return f"{prefix}:{base64.b64encode(bytes(raw)).decode()}"


@pytest.mark.parametrize("index", [0, 11, 12, 30, -1], ids=["nonce", "nonce-end", "ciphertext", "middle", "tag"])
def test_any_altered_byte_is_refused(index: int) -> None:
    box = SecretBox(NEW)
    with pytest.raises(SecretDecryptionError, match=ACCESS_KEY_ID):
        box.decrypt(ACCESS_KEY_ID, _flip(box.encrypt(ACCESS_KEY_ID, SECRET), index))


@pytest.mark.parametrize("stored", ["v1:", "v1:abcdef01", "v1:abcdef01:", "v1:abcdef01:not base64!", "v1:abcdef01:AAAA",
                                    "v2:abcdef01:AAAA"])
def test_malformed_values_are_refused(stored: str) -> None:
    with pytest.raises(SecretKeyError):
        SecretBox(NEW).decrypt(ACCESS_KEY_ID, stored)


def test_a_ciphertext_moved_to_another_access_key_does_not_decrypt() -> None:
    box = SecretBox(NEW)
    stored = box.encrypt(ACCESS_KEY_ID, SECRET)
    with pytest.raises(SecretDecryptionError) as raised:
        box.decrypt(generate_access_key_id(), stored)
    assert SECRET not in str(raised.value)


def test_rotation_decrypts_with_previous_keys_and_encrypts_with_the_current_one() -> None:
    old_box = SecretBox(OLD)
    stored_old = old_box.encrypt(ACCESS_KEY_ID, SECRET)
    rotated = SecretBox(NEW, [OLD])
    assert rotated.key_ids == (key_id_of(NEW), key_id_of(OLD))
    assert rotated.decrypt(ACCESS_KEY_ID, stored_old) == SECRET
    assert not rotated.is_current(stored_old)
    stored_new = rotated.encrypt(ACCESS_KEY_ID, SECRET)
    assert rotated.is_current(stored_new) and f":{key_id_of(NEW)}:" in stored_new
    # Once the old key is dropped, its rows name the key they need.
    with pytest.raises(UnknownSecretKey, match=key_id_of(OLD)) as raised:
        SecretBox(NEW).decrypt(ACCESS_KEY_ID, stored_old)
    assert isinstance(raised.value, StoreError)


def test_a_different_key_is_refused_whatever_the_key_id_says() -> None:
    stored = SecretBox(OLD).encrypt(ACCESS_KEY_ID, SECRET)
    forged = stored.replace(key_id_of(OLD), key_id_of(NEW))
    with pytest.raises(SecretDecryptionError):
        SecretBox(NEW).decrypt(ACCESS_KEY_ID, forged)


def test_legacy_plaintext_is_revealed_once_warned(caplog: pytest.LogCaptureFixture) -> None:
    box = SecretBox(NEW)
    assert not is_encrypted(SECRET) and not box.is_current(SECRET)
    with caplog.at_level(logging.WARNING):
        assert box.reveal(ACCESS_KEY_ID, SECRET) == SECRET
        assert box.reveal(ACCESS_KEY_ID, SECRET) == SECRET
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and ACCESS_KEY_ID in warnings[0] and "keys encrypt" in warnings[0]
    assert SECRET not in warnings[0]
    assert box.reveal(ACCESS_KEY_ID, box.encrypt(ACCESS_KEY_ID, SECRET)) == SECRET


def test_keys_are_decoded_strictly_and_never_echoed() -> None:
    assert decode_key(encode_key(NEW), "K") == NEW
    assert decode_key(f"  {encode_key(NEW)}\n", "K") == NEW
    short = base64.b64encode(b"x" * 16).decode()
    for bad in ("not-base64!", short, encode_key(NEW) + "AA=="):
        with pytest.raises(ValueError, match="^K: expected") as raised:
            decode_key(bad, "K")
        assert bad not in str(raised.value)
    with pytest.raises(ValueError):
        SecretBox(b"x" * 16)


def test_the_box_shows_key_ids_only() -> None:
    box = SecretBox(NEW, [OLD])
    assert repr(box) == f"SecretBox(key_id={key_id_of(NEW)!r}, key_ids={box.key_ids!r})"
    assert encode_key(NEW) not in repr(box) and len(key_id_of(NEW)) == 8
