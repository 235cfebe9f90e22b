"""The one typed configuration object, built once at start-up and passed down.

The shape of the configuration: its sections and defaults, each field's reason.
`proxy/config_load.py` builds one from config.yaml, the environment and flags;
`proxy/config_checks.py` holds what a value is refused for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from metering.pricing import Price
from metering.unit_prices import UnitPrice
from proxy.config_checks import ConfigError
from proxy.policies import Policies

__all__ = [
    "Config",
    "ConfigError",
    "ServerConfig",
    "UpstreamConfig",
    "AuthConfig",
    "StoreConfig",
    "LimitsConfig",
    "MeteringConfig",
    "SimulatorConfig",
    "AlertsConfig",
    "AttributionConfig",
    "ObservabilityConfig",
    "ConfigSource",
]

AuthMode = Literal["sigv4", "bearer", "trust"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    tls_cert: str | None = None
    tls_key: str | None = None
    log_level: str = "info"
    #: Processes serving the data port (proxy/workers.py); 1 → one process, no supervisor.
    workers: int = 1
    #: An idle client connection is kept open this long. Above the 60 s idle timeout
    #: of AWS load balancers, so the balancer always closes first: a request it sends
    #: on a connection the proxy is closing at that moment would fail (uvicorn's
    #: default of 5 s loses that race under steady traffic).
    keepalive_timeout: int = 75
    #: Seconds between two checks of config.yaml for a new content (proxy/admin/reload.py):
    #: a Kubernetes ConfigMap update swaps a symlink and sends no signal. 0 → SIGHUP only.
    config_poll_interval: float = 5.0
    #: Seconds a shutdown (SIGTERM) lets an open stream (a response stream, or an
    #: InvokeModelWithBidirectionalStream conversation) go on before it cuts it with an
    #: exception frame and meters it, estimated (proxy/stream_drain.py): a conversation
    #: lasts up to 8 minutes, a long generation minutes. Keep it, with the preStop sleep
    #: and `metering.drain_timeout`, below the pod's terminationGracePeriodSeconds.
    stream_drain_timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    #: None → https://bedrock-runtime.<region>.amazonaws.com
    endpoint_url: str | None = None
    connect_timeout: float = 10.0
    #: Between two bytes of a response. Long non-streamed generations can take
    #: many minutes before the first byte, hence the generous default. It also bounds a
    #: bidirectional stream's upstream silence (proxy/h2_upstream.py): above Nova Sonic's
    #: 8-minute session, so only an upstream that stopped sending reaches it.
    read_timeout: float = 900.0
    #: Waiting for a free connection when all `max_connections` are busy.
    pool_timeout: float = 30.0
    max_connections: int = 1000
    #: An idle pooled connection is closed after this many seconds (below
    #: Bedrock's own idle timeout, so a reused connection is never a stale one).
    keepalive_timeout: float = 15.0
    #: Regions a client may sign for, each served by that Region's Bedrock Runtime
    #: endpoint (an `eu.` profile can only be called from an EU source Region). Empty →
    #: every request goes to `region`, whatever Region the client signed for.
    regions: tuple[str, ...] = ()
    #: Region → endpoint URL, overriding https://bedrock-runtime.<region>.amazonaws.com
    #: (VPC endpoints, FIPS endpoints, a simulator per Region in tests).
    endpoint_urls: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class AuthConfig:
    #: sigv4: SigV4 or bearer with a key Cost Keeper issued; bearer: bearer only;
    #: trust: no check, every request belongs to `trust_org`/`trust_app` (sidecar).
    mode: AuthMode = "sigv4"
    trust_org: str = "default"
    trust_app: str = "default"
    max_skew_seconds: int = 300
    #: How long a looked-up key (or its absence) is cached; also how long a
    #: revocation takes to reach a running proxy.
    key_cache_ttl: float = 30.0
    #: Accept bearer tokens on a plain-HTTP data port. A token carries the SigV4 secret
    #: too, so one sniffed request gives away both; true only for a sidecar on localhost
    #: or behind a TLS-terminating load balancer on a private hop.
    allow_bearer_over_http: bool = False


@dataclass(frozen=True, slots=True)
class StoreConfig:
    #: sqlite: one file, one machine; dynamodb: shared by every replica.
    backend: Literal["sqlite", "dynamodb"] = "sqlite"
    #: SQLite file.
    path: str = "costkeeper.db"
    #: DynamoDB table (`costkeeper store init` creates it, its GSI and TTL).
    table: str = "costkeeper"
    #: None → DynamoDB's regional endpoint; set for DynamoDB Local or a VPC endpoint.
    endpoint_url: str | None = None
    #: DynamoDB region; None → the top-level `region`.
    region: str | None = None
    #: Usage counters per (org, app, model, day) are spread over this many items.
    shards: int = 8
    #: The local metering journal; "" → `<path>.journal` (sqlite) or
    #: `costkeeper-journal` (dynamodb). Must survive restarts (a volume, not tmpfs).
    journal_dir: str = ""
    #: Seconds between two consolidations of the daily totals (one lease holder).
    consolidation_interval: float = 60.0
    #: Attempts per DynamoDB call (botocore standard retries, backoff + jitter).
    max_attempts: int = 3
    #: Backoff of the metering pipeline between failed flushes: base, cap (seconds).
    retry_base: float = 0.5
    retry_max: float = 30.0
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    #: Days the per-minute model-rate items live (DynamoDB TTL).
    metrics_ttl_days: int = 8
    #: DynamoDB GSI on (`gsi2pk`, `gsi2sk`): per-minute model rates and the key list. The
    #: default is the name existing rate widgets query; `gsi2` before issue #23.
    index_name: str = "MetricTypeIndex"
    #: Days a batch marker lives; a journal older than this must not be replayed.
    marker_ttl_days: int = 30
    #: Key file for issued secrets (base64 keys, one a line, the first current); "" →
    #: `<path>.key` beside a SQLite file, created on first use; none for dynamodb.
    secret_key_file: str = ""
    #: AWS KMS key (id, ARN or alias) wrapping the data key that encrypts issued secrets.
    kms_key_id: str | None = None

    def journal_path(self) -> str:
        if self.journal_dir:
            return self.journal_dir
        return f"{self.path}.journal" if self.backend == "sqlite" else "costkeeper-journal"

    def secret_key_path(self) -> str:
        """The key file for issued secrets, "" for none (DynamoDB: no default)."""
        if self.secret_key_file:
            return self.secret_key_file
        return f"{self.path}.key" if self.backend == "sqlite" and self.path != ":memory:" else ""


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    #: InvokeModel's documented maximum body is 25,000,000 bytes.
    max_body_bytes: int = 25_000_000
    #: Non-streamed response bodies are copied up to this size to read their usage.
    max_usage_body_bytes: int = 32 * 1024 * 1024
    #: Request header lines (`name: value` + CRLF) in all; 16 KiB like Node.js and
    #: h11 (uvicorn's httptools parser has none, proxy/limits.py). SigV4 SDK heads are < 2 KiB.
    max_header_bytes: int = 16 * 1024
    #: Header fields per request; 100 like Apache httpd and Tomcat. SDKs send 10–25.
    max_header_count: int = 100
    #: HTTP/2 streams a client may have open at once on one connection
    #: (SETTINGS_MAX_CONCURRENT_STREAMS, proxy/h2_server.py); 100 as RFC 9113 recommends at least.
    max_concurrent_streams: int = 100
    #: A client that hangs up before the usage arrived (often right after `messageStop`,
    #: before the `metadata` frame) must not choose to be billed an estimate: the proxy
    #: keeps reading the upstream for at most this many seconds and bytes, without
    #: relaying them, to meter Bedrock's own count; then it closes the upstream. While it
    #: reads, the model may keep generating (billed by Bedrock, metered by the proxy), so
    #: the bound is short. 0 → close at once and estimate.
    hangup_tail_seconds: float = 2.0
    hangup_tail_bytes: int = 64 * 1024
    #: Seconds a request head may take, from the connection's opening (or a kept-alive
    #: connection's next request's first byte) to its blank line; then the connection is
    #: closed (proxy/head_timeout.py). SDKs send a head in one packet; 20 s like Apache's
    #: RequestReadTimeout (uvicorn alone never closes a slow-loris connection).
    head_timeout: float = 20.0
    #: Seconds between two chunks of a request body before the request is answered 408
    #: `RequestTimeoutException` and the connection closed (nginx: 60 s between reads).
    body_timeout: float = 30.0
    #: Request-body bytes this process holds at once (declared lengths are reserved
    #: before reading, chunked bodies counted as they arrive, released when the request
    #: ends); beyond, 503 `ServiceUnavailableException`, which SDKs retry.
    max_inflight_body_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ObservabilityConfig:
    #: One JSON access-log line per request on stdout.
    access_log: bool = True
    #: One CloudWatch EMF line per request on stdout (proxy/eventlog.py).
    emf: bool = False
    #: Its CloudWatch namespace.
    emf_namespace: str = "AIGateway/TokenUsage"
    #: Dimensions added to `ModelId` with a fixed value each, e.g. `{Environment: prod}`.
    emf_dimensions: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Distinct model ids labelled in Prometheus metrics; the rest count as "other".
    max_model_labels: int = 200
    #: Serve /metrics without the admin token (scrapers rarely carry one).
    metrics_public: bool = True
    #: Serve /healthz and /readyz without the admin token (probes and HEALTHCHECK carry none).
    healthz_public: bool = True


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """Spend alerts: a Slack-compatible webhook POST and a JSON log line (`proxy/admin/alerts.py`)."""

    #: Incoming-webhook URL (often a secret itself: never logged); None → log lines only.
    #: Env COSTKEEPER_ALERTS_WEBHOOK_URL.
    webhook_url: str | None = field(default=None, repr=False)
    #: Shares of each (scope, model) daily quota that raise an alert once per UTC day.
    thresholds: tuple[float, ...] = (0.8, 1.0)
    #: USD over the last 60 minutes (this process's traffic, all orgs) that raises an alert; None → off.
    hourly_cost_usd: float | None = None
    #: Seconds between two checks of the committed spend (a store read per active scope).
    check_interval: float = 2.0
    #: Seconds per webhook attempt, and attempts after the first.
    timeout: float = 5.0
    retries: int = 2


@dataclass(frozen=True, slots=True)
class AttributionConfig:
    """Cost attribution by tag (metering/tags.py, proxy/tags.py)."""

    #: Keys metered as dimensions: from Converse `requestMetadata`, or any operation's
    #: `x-costkeeper-tag-<key>` header. Other keys are ignored.
    request_metadata_keys: tuple[str, ...] = ()
    #: Distinct values kept per (org, key, UTC day); any further value counts as `other`.
    max_tag_values: int = 100


@dataclass(frozen=True, slots=True)
class MeteringConfig:
    #: Seconds between two flushes of the aggregated usage to the store.
    flush_interval: float = 1.0
    #: Most events in one flushed batch (a backlog drains in several).
    batch_size: int = 10_000
    #: Seconds between two fsyncs of the journal (events survive a killed
    #: process at once; a power loss loses at most this much).
    fsync_interval: float = 0.2
    #: /readyz turns unready when more events than this wait for the store.
    max_backlog: int = 100_000
    #: Seconds a shutdown keeps trying to store the backlog (the rest stays in the journal).
    drain_timeout: float = 10.0
    #: Seconds between two checkpoints of an open bidirectional stream's usage (up to 8
    #: minutes of speech; metering/checkpoints.py): the first usage event is written at
    #: once, later ones at most this often (0: every one, a small file write each). A
    #: killed proxy meters the stream's last checkpoint, flagged estimated; its final
    #: event supersedes them.
    checkpoint_interval: float = 5.0


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Settings of `costkeeper simulate` (a Bedrock Runtime stand-in)."""

    host: str = "127.0.0.1"
    port: int = 8090
    #: Credentials the simulator accepts (it checks every signature like Bedrock).
    access_key: str = "AKIDSIMULATOR"
    secret_key: str = "simulator-secret"
    latency: float = 0.0
    chunk_delay: float = 0.0
    throttle_rate: float = 0.0
    error_rate: float = 0.0
    seed: int = 0
    #: The Region this endpoint stands for: a signature scoped to another is refused, as
    #: Bedrock does. "" → it answers for every Region (one simulator for all tests).
    region: str = ""


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """Where a Config came from, so a reload (proxy/admin/reload.py) reads the same file with
    the same flags, and tells which file content each replica runs (its sha256)."""

    path: str | None = None
    #: The command-line flags given (`config_load.FLAG_KEYS` names), re-applied on every reload.
    flags: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: sha256 of the file's bytes ("" without a file).
    sha256: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    region: str = "us-east-1"
    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    metering: MeteringConfig = field(default_factory=MeteringConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    #: Bearer token for the admin API (`COSTKEEPER_ADMIN_TOKEN`, never in config.yaml).
    admin_token: str | None = field(default=None, repr=False)
    #: The key encrypting issued secrets (`COSTKEEPER_SECRET_KEY`, base64 of 32 bytes) and
    #: previous keys still decrypted (`COSTKEEPER_SECRET_KEY_PREVIOUS`); never in config.yaml.
    secret_key: bytes | None = field(default=None, repr=False)
    previous_secret_keys: tuple[bytes, ...] = field(default=(), repr=False)
    pricing: Mapping[str, Price] = field(default_factory=lambda: MappingProxyType({}))
    #: Entries of `pricing` billed per second, image or guardrail text unit (metering/unit_prices.py).
    unit_pricing: Mapping[str, UnitPrice] = field(default_factory=lambda: MappingProxyType({}))
    #: Labels → model ids, the default chain and per-org settings (used by quotas).
    models: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    fallback: tuple[str, ...] = ()
    orgs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: The above, resolved and validated: chains, quotas and per-app policies.
    policies: Policies = field(default_factory=Policies)
    source: ConfigSource = field(default_factory=ConfigSource, compare=False)

    @property
    def upstream_url(self) -> str:
        return (self.upstream.endpoint_url or f"https://bedrock-runtime.{self.region}.amazonaws.com").rstrip("/")

    def upstream_url_for(self, region: str) -> str:
        """The endpoint serving `region`: its override, `upstream_url` for the home
        Region, else that Region's public Bedrock Runtime endpoint."""
        override = self.upstream.endpoint_urls.get(region)
        if override:
            return override.rstrip("/")
        if region == self.region:
            return self.upstream_url
        return f"https://bedrock-runtime.{region}.amazonaws.com"
