"""Cost attribution tags: the rules every part of the pipeline shares (issue #22 item 3).

A tag is a (key, value) pair an application attaches to a request — Converse's
`requestMetadata`, or an `x-costkeeper-tag-<key>` header — for a key the operator
listed (`attribution.request_metadata_keys`). Usage is then also counted per tag value.

Values are the client's choice, so what a store keeps of them is bounded twice:

* a value is at most `MAX_VALUE_CHARS` characters: a longer one is cut to its first
  64 (after trimming surrounding blanks). Not refused: Bedrock itself accepts
  `requestMetadata` values of up to 256 characters, and a proxy that stays
  transparent does not fail a request Bedrock would serve because of a cost label;
* per (org, key, UTC day) at most `max_tag_values` distinct values are kept, the
  first ones the store sees; any further value is counted as `OTHER`. The store
  decides (it sees every replica), so the bound holds across replicas and the
  stored value of a request never changes once written.

A value literally equal to `OTHER` counts with the overflow: it needs no slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = ["MAX_VALUE_CHARS", "OTHER", "TAG_PREFIX", "TagKey", "Tags", "TagValueCache", "clean_value",
           "make_tags", "tag_key_of"]

MAX_VALUE_CHARS = 64
OTHER = "other"
#: A group-by name `tag:<key>` groups usage by the values of tag `<key>`.
TAG_PREFIX = "tag:"
#: A request's tags, sorted by key: hashable, and one JSON shape in the journal.
Tags = tuple[tuple[str, str], ...]
#: (org, tag key, UTC day): the scope of the distinct-values bound.
TagKey = tuple[str, str, str]


def clean_value(value: object) -> str | None:
    """The value as counted: trimmed and cut to `MAX_VALUE_CHARS`; None for a value
    that is not a string or is blank (no tag)."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:MAX_VALUE_CHARS] or None


def make_tags(pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> Tags:
    """`pairs` as `Tags` (sorted by key; a journal's JSON object or list of pairs too)."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return tuple(sorted((str(key), str(value)) for key, value in items))


def tag_key_of(groups: Sequence[str]) -> str | None:
    """The key of the `tag:<key>` name in `groups`, if any."""
    return next((name[len(TAG_PREFIX):] for name in groups if name.startswith(TAG_PREFIX)), None)


class TagValueCache:
    """What a store process knows of the values kept per (org, key, day), so that most
    values are resolved without a round-trip: a value seen kept stays kept, and once
    a day's set is full (its members then never change) any other value is `OTHER`.

    Only the last few days are remembered: bounded by orgs × keys × values.
    """

    _DAYS = 3

    def __init__(self) -> None:
        self._kept: dict[TagKey, set[str]] = {}
        self._full: set[TagKey] = set()

    def resolve(self, scope: TagKey, value: str) -> str | None:
        """The stored value of `value` if known without asking the store, else None."""
        if value == OTHER or value in self._kept.get(scope, ()):
            return value
        return OTHER if scope in self._full else None

    def learn(self, scope: TagKey, kept: Iterable[str], *, full: bool) -> None:
        """Record what the store holds for `scope` (a subset of it, unless `full`)."""
        if scope not in self._kept:
            self._forget_old(scope[2])
        self._kept.setdefault(scope, set()).update(kept)
        if full:
            self._full.add(scope)

    def _forget_old(self, day: str) -> None:
        days = sorted({scope[2] for scope in self._kept} | {day})
        recent = set(days[-self._DAYS:])
        for scope in [scope for scope in self._kept if scope[2] not in recent]:
            del self._kept[scope]
            self._full.discard(scope)
