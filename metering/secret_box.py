"""Issued secrets at rest: AES-256-GCM, bound to their access key id.

Stored form: `v1:<key id>:<base64(nonce | ciphertext | tag)>`, a 12-byte random
nonce per encryption (NIST SP 800-38D §8.2.2) and the access key id as
associated data, so a ciphertext copied to another key's row does not decrypt.
The key id is a fingerprint of the key (not secret): a row names the key that
encrypted it, and a box holding the current key plus previous ones decrypts
rows of any of them while encrypting only with the current one (rotation).

Why not a hash: SigV4 verification recomputes an HMAC keyed with the secret
itself, so the proxy must be able to recover it; the bearer token carries the
same secret, so hashing it alone would protect nothing.

Rows written before encryption existed hold the bare 40-character secret
(no `:` can occur in it); `reveal` still accepts them, and `costkeeper keys
encrypt` re-encrypts them.

    StoreError
     └── SecretKeyError            issued secrets cannot be encrypted or decrypted
          ├── UnknownSecretKey     encrypted under a key id that is not configured
          └── SecretDecryptionError  the tag does not verify: tampered, moved, or malformed

Messages name access key ids and key ids, never secret material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from metering.store import StoreError

__all__ = [
    "KEY_BYTES",
    "SecretBox",
    "SecretDecryptionError",
    "SecretKeyError",
    "UnknownSecretKey",
    "decode_key",
    "encode_key",
    "generate_key",
    "is_encrypted",
    "key_id_of",
]

logger = logging.getLogger(__name__)

KEY_BYTES = 32  # AES-256
_VERSION = "v1"
_NONCE_BYTES = 12
_KEY_ID_CONTEXT = b"costkeeper issued-secret key id\0"


class SecretKeyError(StoreError):
    """Issued secrets cannot be encrypted or decrypted with the configured keys."""


class UnknownSecretKey(SecretKeyError):
    """A secret was encrypted under a key id that is not configured."""

    def __init__(self, access_key_id: str, key_id: str, configured: Sequence[str]) -> None:
        super().__init__(
            f"the secret of {access_key_id} is encrypted with key {key_id}, which is not configured "
            f"(configured: {', '.join(configured)}); add that key as a previous key"
        )
        self.access_key_id, self.key_id = access_key_id, key_id


class SecretDecryptionError(SecretKeyError):
    """The stored value does not decrypt: tampered, moved to another row, or malformed."""

    def __init__(self, access_key_id: str, key_id: str) -> None:
        super().__init__(
            f"the secret of {access_key_id} does not decrypt with key {key_id}: the stored value "
            "was altered, belongs to another access key, or the key is not the one it was encrypted with"
        )
        self.access_key_id, self.key_id = access_key_id, key_id


def generate_key() -> bytes:
    return os.urandom(KEY_BYTES)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str, name: str) -> bytes:
    """Base64 of 32 bytes → the key. Raises ValueError naming `name` (never the value)."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: expected base64 of {KEY_BYTES} random bytes "
                         f"(e.g. `openssl rand -base64 {KEY_BYTES}`)") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"{name}: expected {KEY_BYTES} bytes once base64-decoded, got {len(key)}")
    return key


def key_id_of(key: bytes) -> str:
    """8 hex digits of a hash of the key: names it in rows and messages, reveals nothing."""
    return hashlib.sha256(_KEY_ID_CONTEXT + key).hexdigest()[:8]


def is_encrypted(stored: str) -> bool:
    return stored.startswith(f"{_VERSION}:")


class SecretBox:
    """Encrypts with `current`; decrypts with `current` or any of `previous`."""

    def __init__(self, current: bytes, previous: Sequence[bytes] = ()) -> None:
        self._ciphers: dict[str, AESGCM] = {}
        for key in (current, *previous):
            if len(key) != KEY_BYTES:
                raise ValueError(f"an issued-secret key must be {KEY_BYTES} bytes, got {len(key)}")
            self._ciphers.setdefault(key_id_of(key), AESGCM(key))
        self.key_id = key_id_of(current)
        self._legacy_seen: set[str] = set()

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self.key_id!r}, key_ids={self.key_ids!r})"

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The current key's id first, then the previous ones'."""
        return tuple(self._ciphers)

    def encrypt(self, access_key_id: str, secret: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[self.key_id].encrypt(nonce, secret.encode(), access_key_id.encode())
        return f"{_VERSION}:{self.key_id}:{base64.b64encode(nonce + sealed).decode('ascii')}"

    def decrypt(self, access_key_id: str, stored: str) -> str:
        """The secret of an encrypted value; raises a SecretKeyError."""
        version, _, rest = stored.partition(":")
        key_id, _, payload = rest.partition(":")
        if version != _VERSION or not payload:
            raise SecretDecryptionError(access_key_id, key_id or "?")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownSecretKey(access_key_id, key_id, self.key_ids)
        try:
            raw = base64.b64decode(payload, validate=True)
            return cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], access_key_id.encode()).decode()
        except (binascii.Error, ValueError, InvalidTag):
            raise SecretDecryptionError(access_key_id, key_id) from None

    def reveal(self, access_key_id: str, stored: str) -> str:
        """The secret of a stored value: decrypted, or a row from before encryption as is
        (warned about once per key: `costkeeper keys encrypt` encrypts it)."""
        if is_encrypted(stored):
            return self.decrypt(access_key_id, stored)
        if access_key_id not in self._legacy_seen:
            self._legacy_seen.add(access_key_id)
            logger.warning("the secret of %s is stored in clear; run `costkeeper keys encrypt`", access_key_id)
        return stored

    def is_current(self, stored: str) -> bool:
        """Encrypted with the current key (nothing for `keys encrypt` to do)."""
        return stored.startswith(f"{_VERSION}:{self.key_id}:")

    def reencrypted(self, access_key_id: str, stored: str) -> str | None:
        """What `keys encrypt` stores instead of `stored`: the secret encrypted with the
        current key, or None if it already is. Current values are decrypted too, so
        the command doubles as a check that every stored secret decrypts (a
        SecretKeyError otherwise)."""
        secret = self.decrypt(access_key_id, stored) if is_encrypted(stored) else stored
        return None if self.is_current(stored) else self.encrypt(access_key_id, secret)
