"""Deterministic token counting and text generation.

Real tokenizers are model-specific and not public for every family; what tests
and benchmarks need instead is a count that is *stable* (the same content always
gives the same number, whichever operation carries it) and *plausible*
(≈ 4 bytes of English per token, a little framing per message). The
"Hello, world!" CountTokens example of BEDROCK_WIRE.md §4.1 (11 tokens) comes
out exactly: 4 (prompt) + 3 (message) + 4 (text).

Every family module feeds its request into one `PromptBuilder` in Bedrock's
cache-prefix order (tools → system → messages), so a Claude body, a Nova body
and a Converse body with the same content count the same and hit the same
cache entries. Output is 1 word = 1 token, seeded by the prompt's digest.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.usage import Usage
from proxy.errors import ValidationException
from simulator.control import Directives

__all__ = [
    "Prompt",
    "PromptBuilder",
    "CachePoint",
    "Completion",
    "complete",
    "malformed",
    "text_tokens",
    "dumps",
    "DEFAULT_MAX_TOKENS",
]

#: Fixed framing every prompt pays (BOS, turn template).
PROMPT_TOKENS = 4
#: Role header of every message.
MESSAGE_TOKENS = 3
#: An image or a document block, whatever its size: sizes are not what tests measure.
MEDIA_TOKENS = 258
#: Output length when the prompt asks for nothing specific.
DEFAULT_WORDS = (50, 100)
#: Converse / Nova without `maxTokens`.
DEFAULT_MAX_TOKENS = 4096

#: One shared encoder: `json.dumps(..., separators=…)` builds a new encoder per call.
dumps = json.JSONEncoder(separators=(",", ":")).encode
_canonical = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode

_VOCABULARY = tuple(
    """the a of and to in is that it for as with on be by this are from at or an
    have not they which one you had but all were we when there can more if will
    each about how up out them then she many some so these would other into has
    two like time see way could people than first water been called who its now
    find long down day did get come made may part over new sound take only little
    work know place years live back give most very after thing our just name good
    sentence man think say great where help through much before line right too
    means old any same tell boy follow came want show also around form three small
    set put end does another well large must big even such because turn here why
    ask went men read need land different home us move try kind hand picture again
    change off play spell air away animal house point page letter mother answer
    found study still learn should world high every near add food between own below
    country plant last school father keep tree never start city earth eyes light
    thought head under story saw left few while along might close something seem
    next hard open example begin life always those both paper together got group
    often run important until children side feet car mile night walk white sea began
    grow took river four carry state once book hear stop without second later miss
    idea enough eat face watch far really almost let above girl sometimes mountains
    cut young talk soon list song being leave family""".split()
)


def text_tokens(text: str) -> int:
    """≈ 4 UTF-8 bytes per token, rounded up."""
    return (len(text.encode()) + 3) // 4


def malformed(reason: str) -> ValidationException:
    """Bedrock's wording for a body its JSON schema rejects (observed 2025)."""
    return ValidationException(f"Malformed input request: #: {reason}, please reformat your input and try again.")


@dataclass(frozen=True, slots=True)
class CachePoint:
    """The prompt up to a cache breakpoint: its digest (the cache key) and size."""

    digest: bytes
    tokens: int
    ttl: str


@dataclass(frozen=True, slots=True)
class Prompt:
    tokens: int
    digest: bytes
    max_tokens: int
    cache_points: tuple[CachePoint, ...]


class PromptBuilder:
    """Accumulates the token count and a digest of the prompt, in prefix order."""

    __slots__ = ("_hash", "_tokens", "_points")

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self._tokens = PROMPT_TOKENS
        self._points: list[CachePoint] = []

    def message(self, role: Any) -> None:
        self._tokens += MESSAGE_TOKENS
        self._hash.update(b"\x00" + str(role).encode())

    def text(self, text: Any) -> None:
        if not isinstance(text, str):
            raise malformed("expected type: String")
        self._tokens += text_tokens(text)
        self._hash.update(b"\x01" + text.encode())

    def media(self, block: Mapping[str, Any]) -> None:
        self._tokens += MEDIA_TOKENS
        self._hash.update(b"\x02" + hashlib.blake2b(_canonical(block).encode(), digest_size=16).digest())

    def structure(self, value: Any) -> None:
        """Tool specs, tool calls and results: counted by the size of their JSON."""
        encoded = _canonical(value)
        self._tokens += text_tokens(encoded)
        self._hash.update(b"\x03" + encoded.encode())

    def cache_point(self, ttl: Any = "5m") -> None:
        self._points.append(CachePoint(self._hash.copy().digest(), self._tokens, str(ttl or "5m")))

    def build(self, max_tokens: Any) -> Prompt:
        if max_tokens is None:
            max_tokens = DEFAULT_MAX_TOKENS
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValidationException("The maximum tokens you requested must be a positive integer.")
        return Prompt(self._tokens, self._hash.digest(), max_tokens, tuple(self._points))


@dataclass(slots=True)
class Completion:
    """What the "model" answered, and the usage Bedrock would bill for it."""

    deltas: tuple[str, ...]
    stop_reason: str
    usage: Usage
    #: TTL of the cache entry written ("5m" or "1h"), for Claude's cache_creation breakdown.
    cache_ttl: str
    has_cache_points: bool
    rng: random.Random

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    def padding(self) -> str:
        """Bedrock's `p` field: a random-length prefix of the alphabet (BEDROCK_WIRE.md §3.2)."""
        return _PADDINGS[self.rng.randrange(len(_PADDINGS))]


_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_PADDINGS = tuple(_ALPHABET[:n] for n in range(1, len(_ALPHABET) + 1))


def complete(prompt: Prompt, directives: Directives, cache_hits: tuple[int, int], seed: int) -> Completion:
    """The deterministic answer to `prompt`; `cache_hits` = (read, write) tokens."""
    rng = random.Random(int.from_bytes(prompt.digest[:8], "big") ^ seed)
    wanted = directives.words if directives.words is not None else rng.randint(*DEFAULT_WORDS)
    count = min(wanted, prompt.max_tokens)
    finished = wanted <= prompt.max_tokens
    read, write = cache_hits
    usage = Usage(
        input_tokens=prompt.tokens - read - write,
        output_tokens=count,
        cache_read_tokens=read,
        cache_write_tokens=write,
    )
    ttl = prompt.cache_points[-1].ttl if prompt.cache_points else "5m"
    return Completion(
        deltas=_words(rng, count, finished),
        stop_reason="end_turn" if finished else "max_tokens",
        usage=usage,
        cache_ttl=ttl,
        has_cache_points=bool(prompt.cache_points),
        rng=rng,
    )


def _words(rng: random.Random, count: int, finished: bool) -> tuple[str, ...]:
    """`count` words, one per delta, with sentence capitals and full stops
    (punctuation rides on a word so the word count stays the token count)."""
    picks = rng.choices(_VOCABULARY, k=count)
    out: list[str] = []
    capital = True
    for index, word in enumerate(picks):
        if capital:
            word = word.capitalize()
        capital = rng.random() < 0.09
        if capital and index != count - 1:
            word += "."
        out.append(word if index == 0 else " " + word)
    if finished and out:
        out[-1] += "."
    return tuple(out)
