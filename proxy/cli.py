"""`costkeeper` — the command line.

    costkeeper serve      run the proxy (data port + admin port)
    costkeeper simulate   run a Bedrock Runtime simulator
    costkeeper keys       create | list | revoke | encrypt caller credentials
    costkeeper usage      usage and cost report from the store
    costkeeper store init create the store's tables
    costkeeper quota      set | list | unset runtime quota overrides (shared by every replica)
    costkeeper reconcile  metered tokens vs Bedrock's CloudWatch metrics, per model and hour

Every flag has an environment twin COSTKEEPER_<FLAG> (see `proxy.config_load.FLAG_KEYS`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import uvicorn

from proxy.config import Config, ConfigError
from proxy.config_load import load_config
from proxy.quota_cli import add_quota_commands
from proxy.serve import configure_logging, loop_factory, serve_async

__all__ = ["main"]

logger = logging.getLogger("costkeeper")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        config = load_config(args.config, flags=vars(args))
    except ConfigError as exc:
        print(f"costkeeper: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config)
    result: int = args.run(config, args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="costkeeper", description="A transparent, cost-capping Amazon Bedrock proxy.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="path to config.yaml (env COSTKEEPER_CONFIG)")
    common.add_argument("--store-path", help="SQLite store file (env COSTKEEPER_STORE_PATH)")
    common.add_argument("--log-level", help="debug, info, warning, error (env COSTKEEPER_LOG_LEVEL)")
    common.add_argument("--secret-key-file", help="key file for issued secrets (env COSTKEEPER_SECRET_KEY_FILE)")
    common.add_argument("--kms-key-id", help="KMS key wrapping the key for issued secrets (env COSTKEEPER_KMS_KEY_ID)")
    commands = parser.add_subparsers(metavar="command")

    serve = commands.add_parser("serve", parents=[common], help="run the proxy")
    serve.add_argument("--host", help="data-port address (env COSTKEEPER_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="data port (env COSTKEEPER_PORT, default 8080)")
    serve.add_argument("--admin-host", help="admin-port address (env COSTKEEPER_ADMIN_HOST)")
    serve.add_argument("--admin-port", type=int, help="admin port: /healthz, /readyz (env COSTKEEPER_ADMIN_PORT, default 8081)")
    serve.add_argument("--tls-cert", help="PEM certificate: serve HTTPS (env COSTKEEPER_TLS_CERT)")
    serve.add_argument("--tls-key", help="PEM private key (env COSTKEEPER_TLS_KEY)")
    serve.add_argument("--region", help="upstream Bedrock region (env COSTKEEPER_REGION)")
    serve.add_argument("--upstream-endpoint-url", help="upstream endpoint (env COSTKEEPER_UPSTREAM_ENDPOINT_URL)")
    serve.add_argument("--auth-mode", choices=["sigv4", "bearer", "trust"], help="env COSTKEEPER_AUTH_MODE")
    serve.add_argument("--workers", type=int,
                       help="processes serving the data port (env COSTKEEPER_WORKERS, default 1)")
    serve.set_defaults(run=_serve)

    simulate = commands.add_parser("simulate", parents=[common], help="run a Bedrock Runtime simulator")
    simulate.add_argument("--host", dest="sim_host", help="env COSTKEEPER_SIM_HOST (default 127.0.0.1)")
    simulate.add_argument("--port", dest="sim_port", type=int, help="env COSTKEEPER_SIM_PORT (default 8090)")
    simulate.add_argument("--access-key", dest="sim_access_key", help="access key id it accepts (env COSTKEEPER_SIM_ACCESS_KEY)")
    simulate.add_argument("--secret-key", dest="sim_secret_key", help="its secret (env COSTKEEPER_SIM_SECRET_KEY)")
    simulate.add_argument("--latency", type=float, help="seconds before each response head (env COSTKEEPER_LATENCY)")
    simulate.add_argument("--chunk-delay", type=float, help="seconds between stream events (env COSTKEEPER_CHUNK_DELAY)")
    simulate.add_argument("--throttle-rate", type=float, help="share of requests answered 429 (env COSTKEEPER_THROTTLE_RATE)")
    simulate.add_argument("--error-rate", type=float, help="share of requests answered 500 (env COSTKEEPER_ERROR_RATE)")
    simulate.add_argument("--seed", type=int, help="random seed for injected faults (env COSTKEEPER_SEED)")
    simulate.add_argument("--sim-region", dest="sim_region",
                          help="the Region it stands for: signatures for others are refused (env COSTKEEPER_SIM_REGION; "
                               "default: any Region)")
    simulate.set_defaults(run=_simulate)

    keys = commands.add_parser("keys", help="caller credentials").add_subparsers(metavar="action")
    create = keys.add_parser("create", parents=[common], help="issue an access key for an org/app")
    create.add_argument("--org", required=True)
    create.add_argument("--app", required=True)
    create.set_defaults(run=_keys_create)
    listing = keys.add_parser("list", parents=[common], help="list issued keys (never their secrets)")
    listing.set_defaults(run=_keys_list)
    revoke = keys.add_parser("revoke", parents=[common], help="revoke an access key")
    revoke.add_argument("access_key_id")
    revoke.set_defaults(run=_keys_revoke)
    encrypt = keys.add_parser("encrypt", parents=[common],
                              help="encrypt secrets stored in clear or under a previous key (idempotent)")
    encrypt.set_defaults(run=_keys_encrypt)

    usage = commands.add_parser("usage", parents=[common], help="usage and cost report")
    usage.add_argument("--days", type=int, default=1, help="the last N UTC days, today included (default 1)")
    usage.add_argument("--by", default="org,app,model", help="comma-separated: org, app, model, base_model, operation, day, "
                       "and one tag:<key> (an attribution.request_metadata_keys key)")
    usage.add_argument("--format", default="table", choices=["table", "json", "csv"])
    usage.set_defaults(run=_usage)

    reconcile = commands.add_parser("reconcile", parents=[common],
                                    help="compare metered tokens with Bedrock's CloudWatch metrics")
    reconcile.add_argument("--days", type=int, default=1, help="the last N UTC days, today included (default 1)")
    reconcile.add_argument("--region", help="CloudWatch region (env COSTKEEPER_REGION)")
    reconcile.add_argument("--endpoint-url", dest="cloudwatch_endpoint_url", help="CloudWatch endpoint")
    reconcile.add_argument("--tolerance", type=float, default=0.01,
                           help="allowed difference as a share of Bedrock's count (default 0.01); exit 1 beyond it")
    reconcile.add_argument("--format", default="table", choices=["table", "json"])
    reconcile.set_defaults(run=_reconcile)

    add_quota_commands(commands, common, _with_store)

    store = commands.add_parser("store", help="the usage store").add_subparsers(metavar="action")
    init = store.add_parser("init", parents=[common], help="create the store's tables (idempotent)")
    init.set_defaults(run=_store_init)
    return parser


def _serve(config: Config, _args: argparse.Namespace) -> int:
    if config.server.workers > 1:
        from proxy.workers import supervise

        return supervise(config)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(serve_async(config))


def _simulate(config: Config, _args: argparse.Namespace) -> int:
    from proxy.h2_server import H2Settings
    from proxy.protocol_sniff import data_port_protocol
    from simulator.app import create_simulator

    sim = config.simulator
    limits = config.limits
    # HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one port, as Bedrock's endpoint speaks
    # both: InvokeModelWithBidirectionalStream is HTTP/2 only (simulator/bidi.py).
    uvicorn.run(
        create_simulator(sim),
        http=data_port_protocol(limits.head_timeout, H2Settings(
            max_concurrent_streams=limits.max_concurrent_streams, max_header_bytes=limits.max_header_bytes,
            max_header_count=limits.max_header_count, idle_timeout=config.server.keepalive_timeout)),
        host=sim.host,
        port=sim.port,
        access_log=False,
        log_config=None,
        server_header=False,
    )
    return 0


def _store(config: Config) -> Any:
    """The configured store, not yet opened (see `_with_store`)."""
    from proxy.app import create_store

    return create_store(config)


def _with_store(config: Config, action: Callable[[Any], Awaitable[Any]]) -> Any:
    """Open the store, run `action(store)`, close the store; all in one event loop.
    A store that cannot be reached ends the command with its error, not a traceback."""
    from botocore.exceptions import BotoCoreError, ClientError

    from metering.secret_box import SecretKeyError

    async def run() -> Any:
        store = _store(config)
        await store.open()
        try:
            return await action(store)
        finally:
            await store.aclose()

    try:
        return asyncio.run(run())
    except (BotoCoreError, ClientError) as exc:
        print(f"costkeeper: {config.store.backend} store {config.store.table}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except SecretKeyError as exc:
        print(f"costkeeper: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _keys_create(config: Config, args: argparse.Namespace) -> int:
    issued = _with_store(config, lambda store: store.create_key(args.org, args.app))
    print(f"AWS_ACCESS_KEY_ID={issued.access_key_id}")
    print(f"AWS_SECRET_ACCESS_KEY={issued.secret}")
    # A comment, so pasting all lines keeps SigV4: boto3 prefers a bearer token
    # when one is set, and the proxy takes it only over HTTPS (auth.allow_bearer_over_http).
    print(f"# Bedrock API-key style (Claude Code, AnthropicBedrock; over HTTPS only): "
          f"AWS_BEARER_TOKEN_BEDROCK={issued.bearer_token}")
    return 0


def _keys_list(config: Config, _args: argparse.Namespace) -> int:
    records = _with_store(config, lambda store: store.list_keys())
    print(f"{'ACCESS KEY ID':<22} {'ORG':<16} {'APP':<16} {'CREATED (UTC)':<20} REVOKED (UTC)")
    for record in records:
        print(f"{record.access_key_id:<22} {record.org:<16} {record.app:<16} "
              f"{_stamp(record.created_at):<20} {_stamp(record.revoked_at)}")
    return 0


def _keys_revoke(config: Config, args: argparse.Namespace) -> int:
    revoked = _with_store(config, lambda store: store.revoke_key(args.access_key_id))
    if not revoked:
        print(f"costkeeper: no active key {args.access_key_id}", file=sys.stderr)
        return 1
    print(f"revoked {args.access_key_id} (running proxies refuse it within auth.key_cache_ttl, "
          f"{config.auth.key_cache_ttl:g} s)")
    return 0


def _keys_encrypt(config: Config, _args: argparse.Namespace) -> int:
    async def encrypt(store: Any) -> tuple[str, Any]:
        return await store.unlock_secrets(), await store.encrypt_secrets()

    key, result = _with_store(config, encrypt)
    print(f"encrypted {result.encrypted} issued secret(s) with {key}; {result.unchanged} already were")
    for message in result.failed:
        print(f"costkeeper: {message}", file=sys.stderr)
    return 1 if result.failed else 0


def _usage(config: Config, args: argparse.Namespace) -> int:
    from metering.report import usage_report

    by = [part.strip() for part in args.by.split(",") if part.strip()]
    try:
        print(_with_store(config, lambda store: usage_report(store, days=args.days, by=by, fmt=args.format)))
    except ValueError as exc:
        print(f"costkeeper: {exc}", file=sys.stderr)
        return 2
    return 0


def _reconcile(config: Config, args: argparse.Namespace) -> int:
    import time

    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from metering.reconcile import (
        HOUR,
        cloudwatch_hourly_tokens,
        compare,
        format_diffs,
        sqlite_hourly_tokens,
    )
    from metering.store import UnsupportedQuery

    if config.store.backend != "sqlite":
        print("costkeeper: reconcile needs the SQLite store's per-request rows; DynamoDB keeps per-minute "
              "totals without the input/output split", file=sys.stderr)
        return 2
    now = time.time()
    since = (now // 86_400 - max(args.days, 1) + 1) * 86_400
    until = (now // HOUR + 1) * HOUR
    try:
        metered = sqlite_hourly_tokens(config.store.path, since, until)
        client = boto3.client("cloudwatch", region_name=config.region, endpoint_url=args.cloudwatch_endpoint_url)
        bedrock = cloudwatch_hourly_tokens(client, {model for model, _ in metered}, since, until)
    except UnsupportedQuery as exc:
        print(f"costkeeper: {exc}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as exc:
        print(f"costkeeper: CloudWatch: {exc}", file=sys.stderr)
        return 2
    diffs = compare(metered, bedrock, args.tolerance)
    print(format_diffs(diffs, args.format))
    return 0 if all(d.ok for d in diffs) else 1


def _store_init(config: Config, _args: argparse.Namespace) -> int:
    print(_with_store(config, lambda store: store.init()))
    return 0


def _stamp(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


if __name__ == "__main__":
    sys.exit(main())
