"""What any metering backend offers: usage in, summaries out, quotas, issued keys.

Four async protocols — `UsageStore`, `LeaseStore` (`metering/budget.py`: daily
budgets and their leases), `KeyStore` and `InvocationStore` (metering/invocations.py) — that both
backends implement: `SQLiteStore` (embedded, WAL; its sync calls run in
`asyncio.to_thread`) doubles as the test double, and `DynamoDBStore`
(aiobotocore) serves many replicas. One parametrized test suite runs against
both. Usage arrives in batches from the metering pipeline (`recorder.py`); a
batch applies once per id, so replaying the journal counts nothing twice.

Errors: backends raise their own (sqlite3, botocore) for failures a retry may
fix; `StoreError` for those it will not, with `UnsupportedQuery` (also a
ValueError) when a backend does not keep what a query needs.

Caller credentials look like AWS's so that every SDK accepts them unchanged:
an access key id of 20 uppercase characters (prefix `CKIA`, as AWS uses `AKIA`)
and a 40-character secret. For `Authorization: Bearer` clients the same pair
is packed into one token, `ck-<access_key_id>-<secret>`. Stores keep the secret
encrypted (`metering/secret_box.py`, keys from `metering/secret_keys.py`) and
hand it out decrypted in `KeyRecord`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, cast, get_args, runtime_checkable

from metering.budget import LeaseStore
from metering.events import UsageEvent
from metering.invocations import InvocationStore
from metering.tags import TAG_PREFIX

__all__ = [
    "ACCESS_KEY_PREFIX",
    "GroupBy",
    "GROUP_BY_FIELDS",
    "IssuedKey",
    "KeyRecord",
    "KeyStore",
    "ModelRate",
    "ReencryptResult",
    "LeaseStore",
    "Store",
    "StoreError",
    "UnsupportedQuery",
    "UsageRow",
    "UsageStore",
    "events_batch_id",
    "generate_access_key_id",
    "generate_secret",
    "group_order",
    "normalize_group_by",
    "parse_bearer_token",
    "parse_scope",
]

#: `base_model` is derived from `model`: the model id without its geo or global prefix
#: or ARN (`adapters.modelid.base_model_id`), so `us.` and `global.` traffic of one model sum together.
GroupBy = Literal["org", "app", "model", "base_model", "day", "operation"]
GROUP_BY_FIELDS: tuple[str, ...] = get_args(GroupBy)

ACCESS_KEY_PREFIX = "CKIA"
_ACCESS_KEY_ALPHABET = string.ascii_uppercase + string.digits
# Alphanumeric only (AWS secrets may contain `/` and `+`): the secret then
# survives shells, env files, URLs and the `-`-separated bearer token as is.
_SECRET_ALPHABET = string.ascii_letters + string.digits
_SECRET_LENGTH = 40
_BEARER = re.compile(rf"ck-({ACCESS_KEY_PREFIX}[A-Z0-9]{{16}})-([A-Za-z0-9]{{{_SECRET_LENGTH}}})")


def generate_access_key_id() -> str:
    """`CKIA` + 16 random uppercase letters/digits: 20 characters, as AWS's."""
    return ACCESS_KEY_PREFIX + "".join(secrets.choice(_ACCESS_KEY_ALPHABET) for _ in range(16))


def generate_secret() -> str:
    """40 random alphanumerics (~238 bits)."""
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(_SECRET_LENGTH))


def parse_bearer_token(token: str) -> tuple[str, str] | None:
    """`ck-<access_key_id>-<secret>` → `(access_key_id, secret)`, else None.

    Takes the token without the `Bearer ` scheme. Only checks the shape; the
    caller still looks the key up and compares the secret (`KeyRecord.secret_matches`).
    """
    match = _BEARER.fullmatch(token.strip())
    return (match.group(1), match.group(2)) if match else None


def normalize_group_by(by: Sequence[str]) -> tuple[GroupBy, ...]:
    """Validate and de-duplicate `by`, keeping its order. Raises ValueError.

    Besides `GROUP_BY_FIELDS`, one `tag:<key>` groups by the values of a cost
    attribution tag (metering/tags.py); rows without that tag have the value None.
    One only: stores count each tag apart, not their combinations."""
    if isinstance(by, str):
        raise ValueError(f"group-by must be a sequence of names, not the string {by!r}")
    unknown = [name for name in by if name not in GROUP_BY_FIELDS and not _is_tag_group(name)]
    if unknown:
        raise ValueError(f"cannot group by {unknown}; expected a subset of {list(GROUP_BY_FIELDS)} "
                         f"and at most one {TAG_PREFIX}<key>")
    names = tuple(dict.fromkeys(by))
    if len([name for name in names if name.startswith(TAG_PREFIX)]) > 1:
        raise ValueError(f"cannot group by more than one tag at once, got {list(names)}")
    return cast(tuple[GroupBy, ...], names)


def _is_tag_group(name: str) -> bool:
    return name.startswith(TAG_PREFIX) and bool(name[len(TAG_PREFIX):].strip())


def group_order(item: tuple[tuple[str | None, ...], object]) -> tuple[tuple[bool, str], ...]:
    """Sort key of a (group values, …) pair: by value, a missing (None) tag value last."""
    return tuple((value is None, value or "") for value in item[0])


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly created credential; the only time the secret is handed out."""

    access_key_id: str
    secret: str = field(repr=False)
    org: str
    app: str
    created_at: float

    @property
    def bearer_token(self) -> str:
        """`ck-<access_key_id>-<secret>`, for `Authorization: Bearer <token>` clients."""
        return f"ck-{self.access_key_id}-{self.secret}"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    access_key_id: str
    org: str
    app: str
    #: Decrypted: SigV4 verification needs the secret itself (an HMAC key), so it is
    #: stored encrypted, not hashed (`metering/secret_box.py`).
    secret: str = field(repr=False)
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def secret_matches(self, secret: str) -> bool:
        """Constant-time comparison, so response timing leaks nothing of the secret."""
        return hmac.compare_digest(self.secret.encode(), secret.encode())


@dataclass(frozen=True, slots=True)
class ReencryptResult:
    """What `KeyStore.encrypt_secrets` did."""

    #: Secrets stored in clear or under a previous key, now under the current key.
    encrypted: int
    #: Already under the current key.
    unchanged: int
    #: One message per secret that could not be decrypted (it names the access key id).
    failed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageRow:
    """One group of a usage summary. Group fields not in `by` are None."""

    org: str | None = None
    app: str | None = None
    #: The model actually used.
    model: str | None = None
    #: `model` without its geo/global prefix or ARN (`adapters.modelid.base_model_id`).
    base_model: str | None = None
    #: UTC `YYYY-MM-DD`.
    day: str | None = None
    operation: str | None = None
    #: The value of the `tag:<key>` grouped by; None for usage without that tag.
    tag: str | None = None
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    #: Exact, in pico-USD (10⁻¹² USD).
    cost_pico_usd: int = 0
    #: Requests whose usage the proxy estimated (Bedrock reported none).
    estimated_requests: int = 0
    #: Requests to a model with no price: their cost is counted as 0.
    unpriced_requests: int = 0

    def group(self, by: Sequence[str]) -> tuple[str | None, ...]:
        return tuple(self.value(name) for name in by)

    def value(self, name: str) -> str | None:
        """The group field `name` (`tag:<key>` → `tag`)."""
        value: str | None = self.tag if name.startswith(TAG_PREFIX) else getattr(self, name)
        return value

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens


@dataclass(frozen=True, slots=True)
class ModelRate:
    """Tokens and requests of one model in one UTC minute, summed over every replica."""

    model: str
    #: UTC `YYYY-MM-DD`.
    day: str
    #: UTC `HH:MM`.
    minute: str
    #: Tokens per minute: input + output + cache read + cache write.
    tpm: int
    #: Requests per minute.
    rpm: int


class StoreError(Exception):
    """A store operation failed for a reason a retry will not fix."""


class UnsupportedQuery(StoreError, ValueError):
    """The backend does not keep what the query needs (e.g. per-request records
    or the `operation` dimension on DynamoDB)."""


@runtime_checkable
class UsageStore(Protocol):
    async def write_batch(self, batch_id: str, events: Sequence[UsageEvent]) -> bool:
        """Apply `events` once per `batch_id`, atomically: usage counters,
        per-minute model rates and, for events with a `quota_scope`, committed
        spend (`cost - reserved`) and their leases' settlements (`- reserved`,
        metering/budget.py) — with the batch marker in one transaction.
        True if applied now; False if `batch_id` had been applied before (so a
        replay after a crash or a lost acknowledgement counts nothing twice).
        Raises on failure, having applied nothing."""
        ...

    async def write_events(self, events: Sequence[UsageEvent]) -> None:
        """`write_batch` under an id derived from the events' request ids."""
        ...

    async def claim_report(self, report_id: str) -> bool:
        """Claim the id of a client-reported usage (`POST /v1/usage-reports`) for this
        caller: True once per id, across every process and replica on the store;
        False for an id claimed (or, on SQLite, stored) before (`metering/sqlite_reports.py`,
        `metering/dynamodb_reports.py`)."""
        ...

    async def get_event(self, request_id: str) -> UsageEvent | None:
        """The stored event of a request, where the backend keeps per-request
        records (SQLite); DynamoDB keeps only counters and raises UnsupportedQuery."""
        ...

    async def usage_summary(
        self, since: float, until: float | None, by: Sequence[str]
    ) -> list[UsageRow]:
        """Totals of events with `since <= timestamp < until` (no upper bound if
        None), one row per distinct value of the `by` fields (a subset of
        `GROUP_BY_FIELDS`; `regroup_by_base_model` derives `base_model`),
        sorted by those values; `by=()` gives one total row.
        No matching events → `[]`. Unknown `by` names raise ValueError.
        Counter-only backends (DynamoDB) resolve the window to whole UTC days."""
        ...

    async def model_rates(self, model: str, since: float, until: float) -> list[ModelRate]:
        """Per-minute rates of `model` for the minutes in `[since, until)`, oldest first."""
        ...

    async def scope_totals(self, scope: str, day: str) -> dict[str, UsageRow]:
        """Usage of a quota scope (`org` or `org/app`) on a UTC day, by model.
        On DynamoDB one item read of the consolidated total (up to a
        consolidation interval old); exact on SQLite."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class KeyStore(Protocol):
    """Issued credentials. Methods that write or read a secret raise `SecretKeyError`
    (`metering/secret_box.py`) when no key is configured or it does not fit."""

    async def create_key(self, org: str, app: str) -> IssuedKey: ...

    async def get_key(self, access_key_id: str) -> KeyRecord | None:
        """The key, revoked or not (check `KeyRecord.active`); None if unknown."""
        ...

    async def list_keys(self) -> list[KeyRecord]:
        """All keys, revoked ones included, oldest first."""
        ...

    async def revoke_key(self, access_key_id: str) -> bool:
        """True if an active key was revoked now; False if unknown or already
        revoked (the first revocation time is kept). Needs no key for secrets."""
        ...

    async def unlock_secrets(self) -> str:
        """Load and check the key for issued secrets now rather than on first use;
        a description for the log. Raises `SecretKeyError` (none configured, wrong key)."""
        ...

    async def encrypt_secrets(self) -> ReencryptResult:
        """`costkeeper keys encrypt`: every secret stored in clear or under a previous
        key, encrypted with the current key. Idempotent; safe beside running proxies."""
        ...


class Store(UsageStore, LeaseStore, KeyStore, InvocationStore, Protocol):
    """Everything the proxy needs from one backend."""

    async def open(self) -> None:
        """Connect (DynamoDB: create the client); call before any other method."""
        ...

    async def init(self) -> str:
        """`costkeeper store init`: create tables (and GSI, TTL), idempotently; a summary."""
        ...


def events_batch_id(events: Sequence[UsageEvent]) -> str:
    """A batch id that depends only on the set of request ids: the same events
    written twice through `write_events` are one batch."""
    digest = hashlib.sha256()
    for request_id in sorted({event.request_id for event in events}):
        digest.update(request_id.encode())
        digest.update(b"\0")
    return "events-" + digest.hexdigest()[:32]


def parse_scope(scope: str) -> tuple[str, str | None]:
    """`acme` → (acme, None); `acme/chatbot` → (acme, chatbot)."""
    org, _, app = scope.partition("/")
    return org, (app or None)
