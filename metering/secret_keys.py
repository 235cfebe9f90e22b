"""Where the key for issued secrets comes from, and the check that it is the right one.

Three sources, one per deployment (`proxy/config_load.py` refuses two at once):

* `StaticKeys` — a key given in the environment (`COSTKEEPER_SECRET_KEY`).
* `KeyFile` — base64 keys in a file, the first one current; the SQLite default
  `<db>.key` is created (mode 0600) on first use, so a copied database alone
  reveals nothing.
* `KmsDataKey` — envelope encryption: a data key generated once by AWS KMS
  (GenerateDataKey), its wrapped form kept in the store itself, unwrapped by
  KMS Decrypt when the store unlocks.

Each adds the previous keys (`COSTKEEPER_SECRET_KEY_PREVIOUS`) for decryption
only. `unlock` then checks the box against a marker encrypted when the store
first met a key: a wrong key stops start-up with a message instead of turning
every signature check into a failure.

Errors: `NoSecretKey` (nothing configured) and `KeySourceError` (unreadable
file, KMS refusal, wrong key), both `SecretKeyError`s. A store or KMS that
cannot be reached raises botocore's or sqlite3's own errors (a retry may fix them).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import stat
from collections.abc import Sequence
from typing import Any, Protocol

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from metering.secret_box import SecretBox, SecretKeyError, decode_key, encode_key, generate_key
from metering.store import generate_secret

__all__ = [
    "KEY_CHECK",
    "KMS_DATA_KEY",
    "KeyFile",
    "KeySource",
    "KeySourceError",
    "KmsDataKey",
    "MetaStore",
    "NO_SOURCE_MESSAGE",
    "NoSecretKey",
    "SecretsMixin",
    "StaticKeys",
    "key_source",
    "reencrypt_marker",
    "unlock",
]

logger = logging.getLogger(__name__)

#: Meta records in the store: the key-check marker, and the KMS-wrapped data key.
KEY_CHECK = "secret-key-check"
KMS_DATA_KEY = "kms-data-key"
#: Bound into every KMS call: a wrapped key is only ever unwrapped for this purpose,
#: and an IAM condition (`kms:EncryptionContext:purpose`) can require it.
KMS_CONTEXT = {"purpose": "costkeeper-issued-secrets"}
_CHECK_TEXT = "costkeeper"

NO_SOURCE_MESSAGE = (
    "no key for issued secrets: set COSTKEEPER_SECRET_KEY (base64 of 32 random bytes), "
    "store.secret_key_file (the same file on every replica) or store.kms_key_id (AWS KMS); "
    "the DynamoDB store has no default, since a key made up by each replica would encrypt "
    "secrets the others cannot read"
)


class NoSecretKey(SecretKeyError):
    """No source of the key for issued secrets is configured."""

    def __init__(self) -> None:
        super().__init__(NO_SOURCE_MESSAGE)


class KeySourceError(SecretKeyError):
    """The key cannot be had from its source, or it is not the store's key."""


class MetaStore(Protocol):
    """Named values a store keeps beside its data (both backends implement it)."""

    async def get_meta(self, name: str) -> str | None: ...

    async def add_meta(self, name: str, value: str) -> bool:
        """Store `value` unless `name` exists; True if stored now."""
        ...

    async def set_meta(self, name: str, value: str) -> None: ...


class KeySource(Protocol):
    def describe(self) -> str: ...

    async def load(self, meta: MetaStore) -> SecretBox: ...


class StaticKeys:
    def __init__(self, current: bytes, previous: Sequence[bytes] = (), *, name: str = "COSTKEEPER_SECRET_KEY") -> None:
        self._box = SecretBox(current, previous)
        self._name = name

    def describe(self) -> str:
        return f"{self._name} (key {self._box.key_id})"

    async def load(self, meta: MetaStore) -> SecretBox:
        return self._box


class KeyFile:
    """One base64 key per line (`#` comments allowed): the first current, the rest previous."""

    def __init__(self, path: str, previous: Sequence[bytes] = (), *, create: bool = False) -> None:
        self.path = path
        self._previous = tuple(previous)
        self._create = create

    def describe(self) -> str:
        return f"key file {self.path}"

    async def load(self, meta: MetaStore) -> SecretBox:
        return await asyncio.to_thread(self._read)

    def _read(self) -> SecretBox:
        try:
            if self._create and not os.path.exists(self.path):
                _create_key_file(self.path)
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
            with open(self.path) as handle:
                lines = [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]
        except OSError as exc:
            raise KeySourceError(f"key file {self.path}: {exc.strerror}") from None
        if mode & 0o077:
            logger.warning("%s holds the key for issued secrets but has mode %03o; consider chmod 600",
                           self.path, mode)
        if not lines:
            raise KeySourceError(f"key file {self.path} holds no key")
        try:
            keys = [decode_key(line, f"key file {self.path}, key {index + 1}") for index, line in enumerate(lines)]
        except ValueError as exc:
            raise KeySourceError(str(exc)) from None
        return SecretBox(keys[0], [*keys[1:], *self._previous])


def _create_key_file(path: str) -> None:
    """A new random key in `path`, mode 0600; written aside then linked into place,
    so a concurrent reader never sees a half-written file and two creators agree."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("# Cost Keeper: the key that encrypts issued secrets in the store next to it.\n"
                         "# Back it up apart from the database; later lines are previous keys.\n"
                         f"{encode_key(generate_key())}\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return  # another process created it first: use theirs
        logger.warning("created %s (mode 0600): the key that encrypts issued secrets; "
                       "keep it, and back it up apart from the database", path)
    finally:
        os.unlink(temporary)


class KmsDataKey:
    """Envelope encryption with AWS KMS: the data key is generated once, stored wrapped."""

    def __init__(self, kms_key_id: str, previous: Sequence[bytes] = (), *, region: str,
                 endpoint_url: str | None = None) -> None:
        self.kms_key_id = kms_key_id
        self._previous = tuple(previous)
        # A key ARN names its region (arn:aws:kms:<region>:<account>:key/<id>).
        parts = kms_key_id.split(":")
        self._region = parts[3] if kms_key_id.startswith("arn:") and len(parts) > 4 and parts[3] else region
        self._endpoint_url = endpoint_url

    def describe(self) -> str:
        return f"KMS key {self.kms_key_id}"

    async def load(self, meta: MetaStore) -> SecretBox:
        config = AioConfig(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10)
        async with get_session().create_client(
            "kms", region_name=self._region, endpoint_url=self._endpoint_url, config=config,
        ) as kms:
            wrapped = await meta.get_meta(KMS_DATA_KEY)
            if wrapped is None:
                generated = await self._call(kms, "generate_data_key", KeyId=self.kms_key_id, KeySpec="AES_256",
                                             EncryptionContext=KMS_CONTEXT)
                blob = base64.b64encode(generated["CiphertextBlob"]).decode("ascii")
                if await meta.add_meta(KMS_DATA_KEY, blob):
                    logger.info("generated the data key for issued secrets with %s", self.describe())
                    return SecretBox(bytes(generated["Plaintext"]), self._previous)
                wrapped = await meta.get_meta(KMS_DATA_KEY)  # another replica stored one first
                if wrapped is None:
                    raise KeySourceError("the store lost its KMS-wrapped data key while it was being created")
            try:
                blob_bytes = base64.b64decode(wrapped, validate=True)
            except (binascii.Error, ValueError):
                raise KeySourceError(f"the store's {KMS_DATA_KEY} record is not base64") from None
            plain = await self._call(kms, "decrypt", CiphertextBlob=blob_bytes, KeyId=self.kms_key_id,
                                     EncryptionContext=KMS_CONTEXT)
            return SecretBox(bytes(plain["Plaintext"]), self._previous)

    async def _call(self, kms: Any, operation: str, **params: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = await getattr(kms, operation)(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in ("ThrottlingException", "KMSInternalException", "DependencyTimeoutException"):
                raise  # a retry may fix it
            raise KeySourceError(f"KMS {operation} with {self.kms_key_id} failed: "
                                 f"{code}: {error.get('Message', '')}") from None
        return response


def key_source(
    *,
    secret_key: bytes | None,
    previous: Sequence[bytes],
    key_file: str,
    kms_key_id: str | None,
    region: str,
    create_key_file: bool,
) -> KeySource | None:
    """The configured source (at most one is set, see `proxy/config_load.py`), or None."""
    if secret_key is not None:
        return StaticKeys(secret_key, previous)
    if kms_key_id:
        return KmsDataKey(kms_key_id, previous, region=region)
    if key_file:
        return KeyFile(key_file, previous, create=create_key_file)
    return None


async def unlock(source: KeySource, meta: MetaStore) -> SecretBox:
    """The box of `source`, checked against the store's key-check marker (written
    with the first key the store meets). Raises KeySourceError for a wrong key."""
    box = await source.load(meta)
    marker = await meta.get_meta(KEY_CHECK)
    if marker is None:
        if await meta.add_meta(KEY_CHECK, box.encrypt(KEY_CHECK, _CHECK_TEXT)):
            return box
        marker = await meta.get_meta(KEY_CHECK) or ""
    try:
        box.decrypt(KEY_CHECK, marker)
    except SecretKeyError:
        store_key = marker.split(":")[1] if marker.count(":") >= 2 else "?"
        raise KeySourceError(
            f"{source.describe()} is not the key this store's issued secrets are encrypted with: the store "
            f"expects key {store_key}, configured are {', '.join(box.key_ids)}. Configure that key "
            "(as COSTKEEPER_SECRET_KEY_PREVIOUS while rotating), then run `costkeeper keys encrypt`"
        ) from None
    if not box.is_current(marker):
        logger.warning("issued secrets are still encrypted with previous key %s; "
                       "run `costkeeper keys encrypt` to move them to key %s", marker.split(":")[1], box.key_id)
    return box


async def reencrypt_marker(box: SecretBox, meta: MetaStore) -> None:
    """After `keys encrypt`: the marker follows the secrets to the current key."""
    marker = await meta.get_meta(KEY_CHECK)
    if marker is None or not box.is_current(marker):
        await meta.set_meta(KEY_CHECK, box.encrypt(KEY_CHECK, _CHECK_TEXT))


class SecretsMixin:
    """Both stores: the box, unlocked on first need or by `unlock_secrets` at start-up.
    The store provides `MetaStore`'s methods and sets `_key_source` (None: no key)."""

    _key_source: KeySource | None
    _box: SecretBox | None = None

    async def unlock_secrets(self) -> str:
        """Load and check the key now; what it is, for the start-up log. Raises SecretKeyError."""
        box = await self._secrets()
        assert self._key_source is not None
        return f"{self._key_source.describe()}, current key {box.key_id}"

    async def _new_secret(self, org: str, app: str) -> tuple[SecretBox, str]:
        """A new key's secret and the box that encrypts it; a key without org or app is refused."""
        if not org or not app:
            raise ValueError("a key needs a non-empty org and app")
        return await self._secrets(), generate_secret()

    async def _secrets(self) -> SecretBox:
        if self._box is None:
            if self._key_source is None:
                raise NoSecretKey()
            meta: MetaStore = self  # type: ignore[assignment]
            # Two tasks may unlock at once: both get equal boxes (the store's
            # conditional writes pick one data key and one marker).
            self._box = await unlock(self._key_source, meta)
        return self._box
