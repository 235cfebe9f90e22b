"""`costkeeper quota set | list | unset`: runtime quota overrides from the command line.

    costkeeper quota set --org O [--app A] --label L|--model M --usd X [--day YYYY-MM-DD]
    costkeeper quota list
    costkeeper quota unset --org O [--app A] --label L|--model M [--day YYYY-MM-DD]

The override goes to the store the config names (shared by every replica, which
apply it within `quotas.overrides_refresh`); the change is printed as a `quota_override`
event-log line naming the user (`cli:<login>`). The store is opened through the
`with_store` the CLI passes in (proxy/cli.py), so this module imports nothing of it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from metering.money import format_usd
from metering.overrides import QuotaOverride
from metering.pricing import PriceTable
from proxy.admin.overrides import OverrideError, new_override
from proxy.config import Config
from proxy.eventlog import quota_change_record

__all__ = ["add_quota_commands"]

WithStore = Callable[[Config, Callable[[Any], Awaitable[Any]]], Any]


def add_quota_commands(commands: Any, common: argparse.ArgumentParser, with_store: WithStore) -> None:
    quota = commands.add_parser("quota", help="runtime quota overrides").add_subparsers(metavar="action")
    setting = quota.add_parser("set", parents=[common], help="override a daily quota (wins over config.yaml)")
    _target(setting)
    setting.add_argument("--usd", required=True, type=float, help="USD per UTC day")
    setting.set_defaults(run=lambda config, args: _set(config, args, with_store))
    listing = quota.add_parser("list", parents=[common], help="list the stored overrides")
    listing.set_defaults(run=lambda config, args: _list(config, with_store))
    unset = quota.add_parser("unset", parents=[common], help="remove an override (config.yaml's quota applies again)")
    _target(unset)
    unset.set_defaults(run=lambda config, args: _unset(config, args, with_store))


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--org", required=True)
    parser.add_argument("--app", help="an app of an org whose quota_scope is APP")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--label", help="a label of `models`")
    which.add_argument("--model", help="a model id")
    parser.add_argument("--day", help="YYYY-MM-DD (UTC): that day only; else until unset")


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name (a container's uid): still the CLI
        return "cli"


def _set(config: Config, args: argparse.Namespace, with_store: WithStore) -> int:
    prices = PriceTable(config.pricing, config.policies.profiles)
    try:
        override = new_override(config.policies, prices, org=args.org, app=args.app, model=args.label or args.model,
                                usd=args.usd, day=args.day, set_by=_who(), now=time.time())
    except OverrideError as exc:
        print(f"costkeeper: {exc}", file=sys.stderr)
        return 2
    old = with_store(config, lambda store: store.put_quota_override(override))
    _audit("set", override, old, override)
    return 0


def _unset(config: Config, args: argparse.Namespace, with_store: WithStore) -> int:
    model = config.policies.resolve_model(args.label or args.model)
    old = with_store(config, lambda store: store.delete_quota_override(args.org, args.app or "", model,
                                                                        args.day or ""))
    if old is None:
        print(f"costkeeper: no override for org {args.org}, app {args.app or '-'}, model {model}, "
              f"day {args.day or '-'}", file=sys.stderr)
        return 1
    _audit("unset", old, old, None)
    return 0


def _list(config: Config, with_store: WithStore) -> int:
    overrides: list[QuotaOverride] = with_store(config, lambda store: store.quota_overrides())
    print(f"{'ORG':<16} {'APP':<16} {'MODEL':<44} {'DAY':<11} {'USD/DAY':>14}  SET BY")
    for o in overrides:
        print(f"{o.org:<16} {o.app or '-':<16} {o.model:<44} {o.day or '-':<11} "
              f"{format_usd(o.quota_pico_usd):>14}  {o.set_by}")
    return 0


def _audit(action: str, what: QuotaOverride, old: QuotaOverride | None, new: QuotaOverride | None) -> None:
    record = quota_change_record(action=action, who=_who(), org=what.org, app=what.app, model=what.model,
                                 day=what.day, old=None if old is None else old.quota_pico_usd,
                                 new=None if new is None else new.quota_pico_usd, at=time.time())
    print(json.dumps(record, separators=(",", ":")))
