"""The soak's traffic (bench/soak.py): the proxy's config, the weighted scenarios
of real boto3 calls with the errors they provoke, and the tally of what came back."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import boto3
import botocore.config
import botocore.exceptions
import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.processes import Process, Proxy
from tests.simulator.test_families import EMBEDDING_MODELS, TEXT_MODELS

#: Idle seconds after which a boto3 connection may meet the proxy closing it (the soak
#: sets `server.keepalive_timeout` to 5 s, counted from the end of the previous response).
KEEPALIVE_RACE = 4.5
KEEPALIVE = "keep-alive race"
ORG = "soak"
PRO, LITE, MICRO = "amazon.nova-pro-v1:0", "amazon.nova-lite-v1:0", "amazon.nova-micro-v1:0"
#: Claude Haiku/Sonnet 4.5 are served only through inference profiles (BEDROCK_WIRE.md
#: §1.2): requests name a profile, CountTokens and prices the base model.
HAIKU_BASE = "anthropic.claude-haiku-4-5-20251001-v1:0"
SONNET_BASE = "anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU, SONNET = f"us.{HAIKU_BASE}", f"global.{SONNET_BASE}"
#: Converse works for any model id: one of each family, profiles included.
CONVERSE_MODELS = ("us.amazon.nova-micro-v1:0", LITE, HAIKU,
                   SONNET, "meta.llama3-70b-instruct-v1:0", "mistral.mistral-large-2407-v1:0",
                   "cohere.command-r-plus-v1:0", "openai.gpt-oss-20b-1:0")
PRICING = {  # USD per 1M tokens
    MICRO: {"input": 0.035, "output": 0.14, "cache_read": 0.00875},
    LITE: {"input": 0.06, "output": 0.24, "cache_read": 0.015},
    PRO: {"input": 0.8, "output": 3.2, "cache_read": 0.2},
    HAIKU_BASE: {"input": 1.0, "output": 5.0, "cache_read": 0.1, "cache_write": 1.25},
    SONNET_BASE: {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75},
    "meta.llama3-70b-instruct-v1:0": {"input": 2.65, "output": 3.5},
    "mistral.mistral-large-2407-v1:0": {"input": 2.0, "output": 6.0},
}
MAX_TOKENS = 48
WORDS = ("alpha", "bravo", "delta", "echo", "kilo", "lima", "oscar", "sierra", "tango", "zulu")


def proxy_config() -> dict[str, Any]:
    """Quota scope APP: each app its own chain, quotas and policies.

    Quotas and leases on their defaults (metering/leases.py): premium's and standard's
    quotas are a few requests' worst cases, so their slices are one request each (TIGHT
    mode, a lease claim per request) until the requests no longer fit and fall back; the
    $10 economy quotas are never reached (large NORMAL slices); `broke` is refused outright.
    """
    return {
        "auth": {"mode": "sigv4"},
        "metering": {},  # production defaults (flush every second)
        # uvicorn's 5 s rather than the proxy's 75 s default (which outlasts load balancers'
        # idle timeouts): the idle check below sees every keep-alive connection closed.
        "server": {"keepalive_timeout": 5},
        "pricing": PRICING,
        "models": {"premium": PRO, "standard": LITE, "economy": MICRO},
        "fallback": ["premium", "standard", "economy"],
        "orgs": {ORG: {"quota_scope": "APP", "apps": {
            "mixed": {},
            "quota": {"daily_quota_usd": {"premium": 0.0005, "standard": 0.002, "economy": 10}},
            "xfamily": {"fallback": [HAIKU, "economy"], "daily_quota_usd": {HAIKU: 0.002, "economy": 10}},
            "limited": {"fallback": ["economy"], "daily_quota_usd": {"economy": 10},
                        "rate_limits": {"economy": {"rpm": 60}}},
            "broke": {"fallback": ["economy"], "daily_quota_usd": {"economy": 0}},
            "cached": {"response_cache": {"ttl": 3}},
            "faults": {},
        }}},
    }


APPS = ("mixed", "quota", "xfamily", "limited", "broke", "cached", "faults")


# ----------------------------------------------------------------- tally
@dataclass
class Tally:
    """Everything the workers count; one lock, touched once per request."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    by_scenario: Counter[tuple[str, str]] = field(default_factory=Counter)  # (scenario, outcome)
    by_operation: Counter[str] = field(default_factory=Counter)
    expected: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    unexpected_samples: list[str] = field(default_factory=list)
    #: (app, operation) → [requests the proxy should meter, input tokens, output tokens]
    client_usage: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    #: (app, operation) groups whose tokens are not compared (zero or estimated by the proxy).
    no_tokens: set[tuple[str, str]] = field(default_factory=set)
    served: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (app, model, mode)
    cache_hits: int = 0

    def unexpected_error(self, scenario: str, detail: str) -> None:
        with self.lock:
            self.unexpected[scenario] += 1
            self.by_scenario[(scenario, "unexpected")] += 1
            if len(self.unexpected_samples) < 20:
                self.unexpected_samples.append(f"{scenario}: {detail}"[:400])


@dataclass
class Result:
    """What a scenario saw when it succeeded (or failed as it should)."""

    input_tokens: int = 0
    output_tokens: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    #: Answered from the proxy's response cache: metered at zero tokens.
    cache_hit: bool = False


class Unexpected(Exception):
    """A scenario's outcome is not the one it provokes."""


def _prompt(rng: random.Random, directive: str = "") -> str:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 20)))
    return f"{directive} Tell me about {words}.".strip()


def _headers(response: dict[str, Any]) -> dict[str, str]:
    return dict(response["ResponseMetadata"]["HTTPHeaders"])


def _converse_args(prompt: str) -> dict[str, Any]:
    return {"system": [{"text": "You are terse."}],
            "messages": [{"role": "user", "content": [{"text": prompt}]}],
            "inferenceConfig": {"maxTokens": MAX_TOKENS}}


def _claude_body(prompt: str) -> bytes:
    return json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": MAX_TOKENS,
                       "system": "You are terse.", "messages": [{"role": "user", "content": prompt}]}).encode()


# ----------------------------------------------------------------- worker
class SoakRun(Protocol):
    """What a worker uses of the soak running it (bench/soak.py's `Soak`, which imports
    this module: named by its fields here, so the two do not import each other)."""

    args: argparse.Namespace
    keys: dict[str, dict[str, str]]
    session: boto3.session.Session
    proxy: Proxy
    simulator: Process
    stop: threading.Event

    def run_one(self, worker: Worker, scenario: Scenario) -> None: ...


class Worker(threading.Thread):
    def __init__(self, index: int, soak: SoakRun) -> None:
        super().__init__(name=f"soak-worker-{index}", daemon=True)
        self.index = index
        self.soak = soak
        self.rng = random.Random(soak.args.seed * 1000 + index)
        #: The operation of the call in flight (set by the call helpers).
        self.op = ""
        #: The boto3 client of the call in flight, how long it had been idle, and when each
        #: client's last call ended.
        self.app = ""
        self.idle = 0.0
        self.last_used: dict[str, float] = {}
        config = botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                        read_timeout=30, connect_timeout=5, max_pool_connections=4)
        self.clients: dict[str, Any] = {}
        for app, key in soak.keys.items():
            secret = key["AWS_SECRET_ACCESS_KEY"]
            if app == "bad-signature":
                secret = "not-the-secret-" + secret[:8]
            # One client per app (its key), all from the soak's session: built in the main
            # thread, then used by this worker only.
            self.clients[app] = soak.session.client(
                "bedrock-runtime", endpoint_url=soak.proxy.url, config=config, region_name="us-east-1",
                aws_access_key_id=key["AWS_ACCESS_KEY_ID"], aws_secret_access_key=secret)

    def client(self, app: str) -> Any:
        self.app = app
        self.idle = time.monotonic() - self.last_used.get(app, time.monotonic())
        return self.clients[app]

    def run(self) -> None:
        # One pass over every scenario first (each worker from its own offset), so even a
        # short run covers them all; then the weighted random mix.
        offset = self.index % len(SCENARIOS)
        first_pass = list(SCENARIOS[offset:] + SCENARIOS[:offset])
        weights = [s.weight for s in SCENARIOS]
        try:
            while not self.soak.stop.is_set():
                scenario = first_pass.pop(0) if first_pass else self.rng.choices(SCENARIOS, weights)[0]
                self.soak.run_one(self, scenario)
        finally:
            for client in self.clients.values():
                client.close()


@dataclass(frozen=True)
class Scenario:
    name: str
    operation: str
    app: str
    weight: float
    call: Callable[[Worker], Result]
    #: The error code this scenario provokes (None: it must succeed).
    expect: str | None = None


# -- successful calls: usage as the simulator reported it, read the way a client can
def _converse(w: Worker, app: str, model: str, prompt: str) -> Result:
    w.op = "Converse"
    response = w.client(app).converse(modelId=model, **_converse_args(prompt))
    usage = response["usage"]
    return Result(usage["inputTokens"], usage["outputTokens"], _headers(response))


def _converse_stream(w: Worker, app: str, model: str, prompt: str) -> Result:
    w.op = "ConverseStream"
    response = w.client(app).converse_stream(modelId=model, **_converse_args(prompt))
    result = Result(headers=_headers(response))
    seen_metadata = False
    with contextlib.closing(response["stream"]) as stream:  # closed even when it raises mid-way
        for event in stream:
            if "metadata" in event:
                usage = event["metadata"]["usage"]
                result.input_tokens, result.output_tokens = usage["inputTokens"], usage["outputTokens"]
                seen_metadata = True
    if not seen_metadata:
        raise Unexpected("ConverseStream ended without a metadata event")
    return result


def _invoke(w: Worker, app: str, model: str, body: bytes) -> Result:
    w.op = "InvokeModel"
    response = w.client(app).invoke_model(modelId=model, body=body, contentType="application/json",
                                           accept="application/json")
    payload = response["body"].read()
    headers = _headers(response)
    if "x-amzn-bedrock-input-token-count" in headers:
        return Result(int(headers["x-amzn-bedrock-input-token-count"]),
                      int(headers.get("x-amzn-bedrock-output-token-count", 0)), headers)
    usage = json.loads(payload).get("usage") or {}  # a translated Anthropic body
    return Result(int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0)), headers)


def _invoke_stream(w: Worker, app: str, model: str, body: bytes) -> Result:
    w.op = "InvokeModelWithResponseStream"
    response = w.client(app).invoke_model_with_response_stream(modelId=model, body=body,
                                                                contentType="application/json")
    result = Result(headers=_headers(response))
    seen_metrics = False
    with contextlib.closing(response["body"]) as stream:
        for event in stream:
            chunk = json.loads(event["chunk"]["bytes"])
            metrics = chunk.get("amazon-bedrock-invocationMetrics")
            if metrics:
                result.input_tokens, result.output_tokens = metrics["inputTokenCount"], metrics["outputTokenCount"]
                seen_metrics = True
    if not seen_metrics:
        raise Unexpected("InvokeModelWithResponseStream ended without invocation metrics")
    return result


def mixed_converse(w: Worker) -> Result:
    return _converse(w, "mixed", w.rng.choice(CONVERSE_MODELS), _prompt(w.rng))


def mixed_converse_stream(w: Worker) -> Result:
    return _converse_stream(w, "mixed", w.rng.choice(CONVERSE_MODELS), _prompt(w.rng))


def mixed_invoke(w: Worker) -> Result:
    if w.rng.random() < 0.2:
        model, document = EMBEDDING_MODELS[w.rng.choice(sorted(EMBEDDING_MODELS))]
        return _invoke(w, "mixed", model, json.dumps(document).encode())
    model, body = TEXT_MODELS[w.rng.choice(sorted(TEXT_MODELS))]
    return _invoke(w, "mixed", model, json.dumps(body(_prompt(w.rng), MAX_TOKENS)).encode())


def mixed_invoke_stream(w: Worker) -> Result:
    model, body = TEXT_MODELS[w.rng.choice(sorted(TEXT_MODELS))]
    return _invoke_stream(w, "mixed", model, json.dumps(body(_prompt(w.rng), MAX_TOKENS)).encode())


def mixed_count_tokens(w: Worker) -> Result:
    w.op = "CountTokens"
    response = w.client("mixed").count_tokens(
        modelId=HAIKU_BASE, input={"converse": {"messages": _converse_args(_prompt(w.rng))["messages"]}})
    if response["inputTokens"] <= 0:
        raise Unexpected(f"CountTokens answered {response['inputTokens']}")
    return Result(headers=_headers(response))  # CountTokens is metered at zero tokens


def quota_converse(w: Worker) -> Result:
    return _converse(w, "quota", "premium", _prompt(w.rng))


def quota_converse_stream(w: Worker) -> Result:
    return _converse_stream(w, "quota", "premium", _prompt(w.rng))


def xfamily_invoke(w: Worker) -> Result:
    return _invoke(w, "xfamily", HAIKU, _claude_body(_prompt(w.rng)))


def xfamily_invoke_stream(w: Worker) -> Result:
    return _invoke_stream(w, "xfamily", HAIKU, _claude_body(_prompt(w.rng)))


def cached_converse(w: Worker) -> Result:
    # A small pool of repeated questions (hits within the 3 s TTL) and some unique ones.
    prompt = _prompt(w.rng) if w.rng.random() < 0.3 else f"Repeat question {w.rng.randint(1, 8)}."
    result = _converse(w, "cached", MICRO, prompt)
    if result.headers.get("x-costkeeper-cache") == "hit":
        result.cache_hit = True
        result.input_tokens = result.output_tokens = 0
    return result


def limited_converse(w: Worker) -> Result:
    return _converse(w, "limited", "economy", _prompt(w.rng))


def broke_converse(w: Worker) -> Result:
    return _converse(w, "broke", "economy", _prompt(w.rng))


# -- expected errors
def fault_throttle(w: Worker) -> Result:
    if w.rng.random() < 0.5:
        return _converse(w, "faults", MICRO, _prompt(w.rng, "[[sim:throttle]]"))
    return _invoke(w, "faults", HAIKU, _claude_body(_prompt(w.rng, "[[sim:throttle]]")))


def fault_validation(w: Worker) -> Result:
    if w.rng.random() < 0.5:
        return _invoke(w, "faults", MICRO, json.dumps(TEXT_MODELS["nova"][1](
            _prompt(w.rng, "[[sim:validation]]"), MAX_TOKENS)).encode())
    return _converse_stream(w, "faults", HAIKU, _prompt(w.rng, "[[sim:validation]]"))


def fault_stream_cut(w: Worker) -> Result:
    if w.rng.random() < 0.5:
        return _converse_stream(w, "faults", MICRO, _prompt(w.rng, "[[sim:cut]]"))
    return _invoke_stream(w, "faults", HAIKU, _claude_body(_prompt(w.rng, "[[sim:cut]]")))


def fault_stream_error(w: Worker) -> Result:
    if w.rng.random() < 0.5:
        return _converse_stream(w, "faults", MICRO, _prompt(w.rng, "[[sim:stream-error]]"))
    return _invoke_stream(w, "faults", HAIKU, _claude_body(_prompt(w.rng, "[[sim:stream-error]]")))


def _raw(w: Worker, action: str, body: bytes) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """A SigV4-signed request for nova-micro on a plain socket, as the `faults` app: for
    what boto3 hides (it parses a truncated JSON body as an empty answer) or cannot do
    (hang up mid-stream)."""
    soak = w.soak
    host, port = soak.proxy.url.removeprefix("http://").split(":")
    path = f"/model/{quote(MICRO, safe='')}/{action}"
    request = AWSRequest(method="POST", url=f"{soak.proxy.url}{path}", data=body,
                         headers={"Content-Type": "application/json"})
    key = soak.keys["faults"]
    SigV4Auth(Credentials(key["AWS_ACCESS_KEY_ID"], key["AWS_SECRET_ACCESS_KEY"]), "bedrock",
              "us-east-1").add_auth(request)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", path, body, headers=dict(request.headers.items()))
        return connection, connection.getresponse()
    except BaseException:
        connection.close()
        raise


def fault_body_cut(w: Worker) -> Result:
    """The simulator drops the connection after half a Converse body: the client must see
    a body shorter than its Content-Length (the proxy aborts the connection)."""
    w.op = "Converse"
    connection, response = _raw(w, "converse", json.dumps(_converse_args(_prompt(w.rng, "[[sim:cut]]"))).encode())
    try:
        if response.status != 200:
            raise Unexpected(f"cut body answered {response.status}: {response.read()[:200]!r}")
        data = response.read()  # raises IncompleteRead
        raise Unexpected(f"cut body arrived whole ({len(data)} bytes)")
    finally:
        response.close()
        connection.close()


def fault_bad_signature(w: Worker) -> Result:
    return _converse(w, "bad-signature", MICRO, _prompt(w.rng))


def fault_hang_up(w: Worker) -> Result:
    """A ConverseStream read for its first bytes, then the socket closed. The simulator
    holds the stream after a few events until released."""
    w.op = "ConverseStream"
    hold = f"soak-{uuid.uuid4().hex}"
    body = json.dumps(_converse_args(_prompt(w.rng, f"[[sim:hold={hold}]]"))).encode()
    try:
        connection, response = _raw(w, "converse-stream", body)
        try:
            if response.status != 200:
                raise Unexpected(f"hang-up stream answered {response.status}: {response.read()[:200]!r}")
            if not response.read(16):
                raise Unexpected("hang-up stream sent no bytes")
        finally:
            response.close()
            connection.close()
    finally:
        try:
            httpx.post(f"{w.soak.simulator.url}/_sim/release/{hold}", timeout=5)
        except httpx.HTTPError:
            pass
    raise _HungUp()


class _HungUp(Exception):
    """The client hung up as planned."""


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("converse", "Converse", "mixed", 14, mixed_converse),
    Scenario("converse-stream", "ConverseStream", "mixed", 12, mixed_converse_stream),
    Scenario("invoke", "InvokeModel", "mixed", 14, mixed_invoke),
    Scenario("invoke-stream", "InvokeModelWithResponseStream", "mixed", 12, mixed_invoke_stream),
    Scenario("count-tokens", "CountTokens", "mixed", 3, mixed_count_tokens),
    Scenario("quota-fallback", "Converse", "quota", 5, quota_converse),
    Scenario("quota-fallback-stream", "ConverseStream", "quota", 4, quota_converse_stream),
    Scenario("cross-family", "InvokeModel", "xfamily", 4, xfamily_invoke),
    Scenario("cross-family-stream", "InvokeModelWithResponseStream", "xfamily", 4, xfamily_invoke_stream),
    Scenario("response-cache", "Converse", "cached", 6, cached_converse),
    Scenario("rate-limited", "Converse", "limited", 4, limited_converse, "ThrottlingException?"),
    Scenario("quota-refused", "Converse", "broke", 2, broke_converse, "ServiceQuotaExceededException"),
    Scenario("throttle", "Converse|InvokeModel", "faults", 2, fault_throttle, "ThrottlingException"),
    Scenario("validation", "InvokeModel|ConverseStream", "faults", 2, fault_validation, "ValidationException"),
    Scenario("stream-cut", "ConverseStream|InvokeModelWithResponseStream", "faults", 2, fault_stream_cut,
             "serviceUnavailableException"),
    Scenario("stream-error", "ConverseStream|InvokeModelWithResponseStream", "faults", 2, fault_stream_error,
             "modelStreamErrorException"),
    Scenario("body-cut", "Converse", "faults", 1, fault_body_cut, "IncompleteRead"),
    Scenario("client-hang-up", "ConverseStream", "faults", 2, fault_hang_up, "hang-up"),
    Scenario("bad-signature", "Converse", "faults", 2, fault_bad_signature, "InvalidSignatureException"),
)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, _HungUp):
        return "hang-up"
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__
