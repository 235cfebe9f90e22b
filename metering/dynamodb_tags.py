"""Cost attribution tags in the DynamoDB store (metering/tags.py has the rules).

Two item kinds (README "DynamoDB table"):

* tag counter shard — `pk=TAGGED#<key>#<day>#<shard>`, `sk=<org>#<app>#<model>#<value>`,
  the usage counters of the requests that carried that value, sharded like the
  usage counters and written in the same transactions;
* kept tag values — `pk=TAGVALUES#<org>#<key>`, `sk=<day>`, `values` (a string set
  of at most `max_tag_values`), `ttl`. A value joins with one conditional `ADD`
  (`size(values) < :max OR contains(values, :v)`) before the batch's transaction; a
  refused one is counted as `other`. Joining is idempotent, so a batch retried or
  replayed resolves its values the same way, and a value never leaves the set: once
  the set is full this process (`TagValueCache`) resolves any value without a call.

Usage without the tag is not written twice: a report by `tag:<key>` takes it as
the usage counters minus the tag's counters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from metering.aggregate import Counters, TaggedKey
from metering.dynamodb_schema import QUOTA_TTL_DAYS, error_code, n, s, shard_of
from metering.store import UsageRow, group_order
from metering.tags import OTHER, TagKey, TagValueCache

__all__ = ["TagItems", "tag_rows"]

_DAY = 86_400


def _tagged_pk(key: str, day: str, shard: int) -> str:
    return f"TAGGED#{key}#{day}#{shard:02d}"


class TagItems:
    """A mixin of `DynamoDBStore`: it needs the store's open client (`_api()`), `table`,
    `_shards` and `max_tag_values`."""

    table: str
    _shards: int
    max_tag_values: int
    _api: Callable[[], Any]

    _tag_cache: TagValueCache | None = None
    _tag_cache_max = 0

    async def bounded_tags(self, tagged: dict[TaggedKey, Counters]) -> dict[TaggedKey, Counters]:
        """`tagged` with each value as it is to be counted: kept, or `other`."""
        if self._tag_cache is None or self._tag_cache_max != self.max_tag_values:
            self._tag_cache, self._tag_cache_max = TagValueCache(), self.max_tag_values
        bounded: dict[TaggedKey, Counters] = {}
        for (org, app, model, day, key, value), counters in sorted(tagged.items()):
            kept = await self._kept_value((org, key, day), value)
            bounded.setdefault((org, app, model, day, key, kept), Counters()).add(counters)
        return bounded

    async def _kept_value(self, scope: TagKey, value: str) -> str:
        assert self._tag_cache is not None
        known = self._tag_cache.resolve(scope, value)
        if known is not None:
            return known
        org, key, day = scope
        item_key = {"pk": s(f"TAGVALUES#{org}#{key}"), "sk": s(day)}
        try:
            response = await self._api().update_item(
                TableName=self.table, Key=item_key,
                UpdateExpression="ADD #values :value SET #ttl = if_not_exists(#ttl, :ttl)",
                ConditionExpression="attribute_not_exists(#values) OR size(#values) < :max OR contains(#values, :v)",
                ExpressionAttributeNames={"#values": "values", "#ttl": "ttl"},
                ExpressionAttributeValues={":value": {"SS": [value]}, ":v": s(value), ":max": n(self.max_tag_values),
                                           ":ttl": n(_day_epoch(day) + QUOTA_TTL_DAYS * _DAY)},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            stored = await self._api().get_item(TableName=self.table, Key=item_key, ConsistentRead=True)
            values = stored.get("Item", {}).get("values", {}).get("SS", [])
            self._tag_cache.learn(scope, values, full=True)
            return value if value in values else OTHER
        values = response["Attributes"]["values"]["SS"]
        self._tag_cache.learn(scope, values, full=len(values) >= self.max_tag_values)
        return value

    def tag_counter_updates(self, batch_id: str, tagged: dict[TaggedKey, Counters]
                            ) -> list[tuple[dict[str, Any], dict[str, int], dict[str, Any]]]:
        """(item key, counter deltas, attributes to set) per tag counter, in a fixed order."""
        updates = []
        for (org, app, model, day, key, value), counters in sorted(tagged.items()):
            sort_key = f"{org}#{app}#{model}#{value}"
            shard = shard_of(batch_id, f"{day}#{key}#{sort_key}", self._shards)
            updates.append((
                {"pk": s(_tagged_pk(key, day, shard)), "sk": s(sort_key)},
                counters.as_dict(),
                {"org": s(org), "app": s(app), "model": s(model), "day": s(day), "tag_key": s(key),
                 "value": s(value)},
            ))
        return updates

    def tagged_pks(self, key: str, days: Sequence[str]) -> list[str]:
        """The partitions holding tag `key`'s counters on `days`."""
        return [_tagged_pk(key, day, shard) for day in days for shard in range(self._shards)]


def _day_epoch(day: str) -> int:
    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())


def tag_rows(usage: Sequence[tuple[dict[str, str], Counters]], tagged: Sequence[tuple[dict[str, str], Counters]],
             groups: Sequence[str], tag_group: str) -> list[UsageRow]:
    """Rows grouped by `groups` (one of them `tag_group`): the tag's counters by value,
    and per group of the other fields what the usage counters hold beyond them (the
    usage without the tag, value None). Each input is (item attributes, counters)."""
    others = [name for name in groups if name != tag_group]
    totals: dict[tuple[str | None, ...], Counters] = {}
    untagged: dict[tuple[str, ...], Counters] = {}
    for attributes, counters in usage:
        untagged.setdefault(tuple(attributes[name] for name in others), Counters()).add(counters)
    for attributes, counters in tagged:
        rest = tuple(attributes[name] for name in others)
        key = tuple(attributes["value"] if name == tag_group else attributes[name] for name in groups)
        totals.setdefault(key, Counters()).add(counters)
        untagged.setdefault(rest, Counters()).add(_negated(counters))
    for rest, counters in untagged.items():
        values = iter(rest)
        totals.setdefault(tuple(None if name == tag_group else next(values) for name in groups),
                          Counters()).add(counters)
    return [counters.row(**dict(zip(groups, key, strict=True)))
            for key, counters in sorted(totals.items(), key=group_order) if counters.requests > 0]


def _negated(counters: Counters) -> Counters:
    return Counters(**{name: -value for name, value in counters.as_dict().items()})
