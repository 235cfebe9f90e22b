"""Money as exact integers of pico-USD (10⁻¹² USD), from the price table to the reports.

Why pico: Bedrock prices are USD per 1M tokens with up to five decimals (Nova Micro's
cache read is $0.00875, Titan Text Embeddings v2 $0.02, BEDROCK_WIRE.md §6). Per token
that is 8,750 and 20,000 pico-USD: integers, so `Σ tokens × price` is exact and nothing
is ever rounded. In micro-USD, the unit before issue #16, a request was rounded to a whole
micro-USD: a 24-token Titan Embed v2 call (0.48 µ$) cost $0, and a million of them $0
instead of $0.48, never counting toward a quota.

Limits, where an integer is 64-bit (SQLite INTEGER, Go's int64): 2⁶³ − 1 pico-USD is
$9,223,372.04. A request costs far less, and SQLite keeps one row per request and sums
costs without overflow (`metering/sqlite_store.py`); the one SQLite value that grows over
many requests is a scope's committed spend per model and UTC day, so a daily quota is
capped at `MAX_DAILY_QUOTA_PICO_USD`. DynamoDB numbers have 38 digits. JSON readers whose
numbers are doubles (JavaScript, jq before 1.7) are exact only up to 2⁵³ pico-USD
($9,007.20): they read the `*_usd` number, or parse `*_pico_usd` as a big integer.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = [
    "MAX_DAILY_QUOTA_PICO_USD",
    "PICO_PER_MICRO",
    "PICO_PER_USD",
    "daily_quota_pico",
    "format_usd",
    "micro_from_pico",
    "pico_per_token",
    "usd_fields",
    "usd_to_pico",
]

PICO_PER_USD = 10**12
#: Costs stored before issue #16 are micro-USD: ×10⁶ reads them as pico-USD.
PICO_PER_MICRO = 10**6
#: A price per 1M tokens in USD is this many times a price per token in pico-USD.
_PICO_PER_TOKEN_PER_USD_PER_MILLION = PICO_PER_USD // 1_000_000
#: $9M per scope, model and day: committed spend stays below SQLite's 2⁶³ − 1 even past
#: its quota by a NORMAL-mode overshoot.
MAX_DAILY_QUOTA_PICO_USD = 9_000_000 * PICO_PER_USD


def _exact(value: object, key: str, scale: int, unit: str) -> int:
    """`value` × `scale` as an int, or ValueError naming `key` when it is not a whole number.

    `Decimal(str(value))`, not `Decimal(value)`: YAML's 0.00875 is the float nearest to it,
    whose shortest repr is the decimal the user wrote.
    """
    if not isinstance(value, int | float | Decimal) or isinstance(value, bool):
        raise ValueError(f"{key}: expected a non-negative number, got {value!r}")
    try:
        scaled = Decimal(str(value)) * scale
    except InvalidOperation:
        raise ValueError(f"{key}: expected a non-negative number, got {value!r}") from None
    if not scaled.is_finite() or scaled < 0:
        raise ValueError(f"{key}: expected a non-negative number, got {value!r}")
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{key}: {value!r} is not a whole number of {unit}; "
                         f"costs are exact integers of pico-USD (10^-12 USD), so it cannot be kept exactly")
    return int(scaled)


def pico_per_token(usd_per_million_tokens: object, key: str) -> int:
    """A configured price (USD per 1M tokens) as pico-USD per token: 0.00875 → 8,750."""
    return _exact(usd_per_million_tokens, key, _PICO_PER_TOKEN_PER_USD_PER_MILLION,
                  "pico-USD per token (at most 6 decimals of USD per 1M tokens)")


def usd_to_pico(usd: object, key: str) -> int:
    """A configured amount of USD as pico-USD: 0.5 → 500,000,000,000."""
    return _exact(usd, key, PICO_PER_USD, "pico-USD (at most 12 decimals of USD)")


def daily_quota_pico(usd: object, key: str) -> int:
    """A configured daily quota (USD) as pico-USD, refused above `MAX_DAILY_QUOTA_PICO_USD`."""
    pico = usd_to_pico(usd, key)
    if pico > MAX_DAILY_QUOTA_PICO_USD:
        raise ValueError(f"{key}: {usd!r} USD per day is above the largest daily quota, "
                         f"{MAX_DAILY_QUOTA_PICO_USD // PICO_PER_USD:,} USD per model (64-bit pico-USD)")
    return pico


def format_usd(pico_usd: int) -> str:
    """Exact USD with at least 6 decimals, more only when the amount has them:
    12_345_678_000_000 → `12.345678`, 480_000 → `0.00000048`."""
    sign = "-" if pico_usd < 0 else ""
    whole, fraction = divmod(abs(pico_usd), PICO_PER_USD)
    digits = f"{fraction:012d}"
    return f"{sign}{whole}.{digits[:6]}{digits[6:].rstrip('0')}"


def micro_from_pico(pico_usd: int) -> int:
    """Whole micro-USD, rounded half away from zero: the `*_micro_usd` fields kept for
    readers of earlier versions."""
    whole, rest = divmod(abs(pico_usd), PICO_PER_MICRO)
    rounded = whole + (2 * rest >= PICO_PER_MICRO)
    return -rounded if pico_usd < 0 else rounded


def usd_fields(name: str, pico_usd: int) -> dict[str, int | float]:
    """The JSON fields of an amount: `<name>_pico_usd` (exact), `<name>_usd` (a number,
    for display and doubles) and `<name>_micro_usd` (rounded; kept for earlier readers)."""
    return {f"{name}_pico_usd": pico_usd, f"{name}_usd": pico_usd / PICO_PER_USD,
            f"{name}_micro_usd": micro_from_pico(pico_usd)}
