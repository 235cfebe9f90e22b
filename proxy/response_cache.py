"""An exact-match cache of non-streamed model responses, per app, opt-in.

Key: org, app, operation, model and the request body in canonical JSON (sorted
keys, no whitespace), so the same question asked twice by the same app is
answered locally until the app's TTL passes. Streams are never cached. Entries
expire individually (`cachetools.TLRUCache`), bounded in count and body size.

A hit is served only when the model that answered it is the one the caller's
chain would choose now (`Admission.current_choice`), and it reports that
choice's fallback and mode. After a quota moves the chain to its fallback (or a
new day moves it back), the entry is not served: the cache saves the call, it
never changes which model answers nor what the headers say about the quota.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cachetools import TLRUCache

__all__ = ["CachedResponse", "ResponseCache"]


@dataclass(frozen=True, slots=True)
class CachedResponse:
    status: int
    #: The upstream's headers as relayed, without the proxy's own `x-costkeeper-*`:
    #: fallback and mode are today's when the entry is served, not the day it was stored.
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    ttl: float
    #: The model that answered; a hit is served only while a fresh request would get it.
    model: str = ""


def _expires(_key: str, value: CachedResponse, now: float) -> float:
    return now + value.ttl


class ResponseCache:
    def __init__(self, maxsize: int = 10_000, max_body_bytes: int = 1024 * 1024) -> None:
        self._entries: TLRUCache[str, CachedResponse] = TLRUCache(maxsize=maxsize, ttu=_expires, timer=time.monotonic)
        self.max_body_bytes = max_body_bytes

    @staticmethod
    def key(org: str, app: str, operation: str, model_id: str, document: Mapping[str, Any]) -> str:
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        material = "\n".join((org, app, operation, model_id, canonical)).encode()
        return hashlib.sha256(material).hexdigest()

    def get(self, key: str) -> CachedResponse | None:
        return self._entries.get(key)

    def put(self, key: str, response: CachedResponse) -> None:
        if len(response.body) <= self.max_body_bytes:
            self._entries[key] = response
