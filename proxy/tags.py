"""Read a request's cost attribution tags (metering/tags.py has the rules).

Two sources, for the keys `attribution.request_metadata_keys` lists (others are ignored):

* Converse and ConverseStream: `requestMetadata`, the string map applications already
  set for Bedrock's invocation logging. It stays in the forwarded body: Bedrock logs it.
* Any operation: `x-costkeeper-tag-<key>: <value>` headers, for clients that cannot
  change the body (InvokeModel's is the model's own). `proxy/headers.py` keeps every
  `x-costkeeper-*` header from Bedrock; the client's signature covered them as sent,
  and the upstream request is signed anew without them.

A key given both ways takes the header's value: the header is meant for Cost Keeper alone.
Header names arrive lower-case, so a key matches its header whatever the case; in
`requestMetadata` it matches exactly, as Bedrock's keys do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from metering.tags import Tags, clean_value, make_tags

__all__ = ["TAG_HEADER_PREFIX", "TagReader"]

TAG_HEADER_PREFIX = b"x-costkeeper-tag-"


class TagReader:
    def __init__(self, keys: Sequence[str] = ()) -> None:
        self._keys = tuple(keys)
        #: header suffix (lower-case) → the key as configured
        self._by_header = {key.lower().encode("latin-1"): key for key in keys}

    def read(self, headers: Iterable[tuple[bytes, bytes]], metadata_document: Any = None) -> Tags:
        """The tags of a request: its `x-costkeeper-tag-*` headers and, when given (Converse
        operations only), the `requestMetadata` of its JSON body."""
        if not self._keys:
            return ()
        tags: dict[str, str] = {}
        metadata = metadata_document.get("requestMetadata") if isinstance(metadata_document, dict) else None
        if isinstance(metadata, dict):
            for key in self._keys:
                value = clean_value(metadata.get(key))
                if value is not None:
                    tags[key] = value
        for name, raw in headers:
            if name[:len(TAG_HEADER_PREFIX)].lower() != TAG_HEADER_PREFIX:
                continue
            named = self._by_header.get(name[len(TAG_HEADER_PREFIX):].lower())
            value = clean_value(raw.decode("utf-8", "replace")) if named is not None else None
            if named is not None and value is not None:
                tags[named] = value
        return make_tags(tags)
