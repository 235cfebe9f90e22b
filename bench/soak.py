"""`make soak`: a bounded soak of the proxy, on 127.0.0.1 only.

Starts the real simulator (`costkeeper simulate`) and a real proxy
(`costkeeper serve`: SQLite store, SigV4 with issued keys, fallback chains,
quotas in TIGHT mode, a rate limit and a response cache), then drives a
weighted mix of real boto3 bedrock-runtime calls from a few worker threads for
`--duration` seconds: Converse, ConverseStream, InvokeModel (every text
family and the embedding models), InvokeModelWithResponseStream, CountTokens,
and expected-error traffic (simulator throttling and validation, an upstream
cut mid-stream and mid-body, an in-stream model error, a client hanging up
mid-stream, a bad signature, a refused quota, the proxy's own rate limit).

Every few seconds it samples the proxy's RSS (`/proc/PID/status` VmRSS) and
open file descriptors (`/proc/PID/fd`). After the warm-up it judges:

* zero unexpected errors (anything but the error a scenario provokes; ERROR
  lines or tracebacks in the proxy's log; an unclean shutdown);
* open fds at the end ≤ after the warm-up + `--fd-slack` (medians of a few samples),
  and once idle ≤ before the first request + `--fd-slack`;
* the least-squares slope of RSS below `--rss-slope-limit` % of RSS per 10 min;
* nothing lost: per app and operation, the requests and tokens the proxy
  metered (`costkeeper usage --by app,operation`, after a clean SIGTERM) equal
  what the clients counted from the simulator's responses.

Figures go to bench/RESULTS.md between `<!-- soak:start -->` and
`<!-- soak:end -->` (`--no-write` to skip, `--out` elsewhere, `--json` raw).
Exit code 1 when a criterion fails.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import random
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import botocore.config
import botocore.exceptions
import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from bench.run import rss_kib, sh
from tests.processes import REPO, Process, Proxy, base_env, costkeeper, start_proxy, start_simulator
from tests.simulator.test_families import EMBEDDING_MODELS, TEXT_MODELS

START, END = "<!-- soak:start -->", "<!-- soak:end -->"
#: Samples whose median is "open fds after the warm-up" and "at the end".
FD_WINDOW = 5
#: Idle seconds after which every keep-alive connection has closed (uvicorn closes an
#: idle one after 5 s, on the proxy's data port and on the simulator's side of its pool).
IDLE_KEEPALIVE = 6.0
#: Idle seconds after which a boto3 connection may meet the proxy closing it (the soak
#: sets `server.keepalive_timeout` to 5 s, counted from the end of the previous response).
KEEPALIVE_RACE = 4.5
KEEPALIVE = "keep-alive race"
ORG = "soak"
PRO, LITE, MICRO = "amazon.nova-pro-v1:0", "amazon.nova-lite-v1:0", "amazon.nova-micro-v1:0"
HAIKU = "anthropic.claude-haiku-4-5-20251001-v1:0"
SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
#: Converse works for any model id: one of each family, profiles included.
CONVERSE_MODELS = ("us.amazon.nova-micro-v1:0", LITE, "us.anthropic.claude-haiku-4-5-20251001-v1:0",
                   SONNET, "meta.llama3-70b-instruct-v1:0", "mistral.mistral-large-2407-v1:0",
                   "cohere.command-r-plus-v1:0", "openai.gpt-oss-20b-1:0")
PRICING = {  # USD per 1M tokens
    MICRO: {"input": 0.035, "output": 0.14, "cache_read": 0.00875},
    LITE: {"input": 0.06, "output": 0.24, "cache_read": 0.015},
    PRO: {"input": 0.8, "output": 3.2, "cache_read": 0.2},
    HAIKU: {"input": 1.0, "output": 5.0, "cache_read": 0.1, "cache_write": 1.25},
    SONNET: {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75},
    "meta.llama3-70b-instruct-v1:0": {"input": 2.65, "output": 3.5},
    "mistral.mistral-large-2407-v1:0": {"input": 2.0, "output": 6.0},
}
MAX_TOKENS = 48
WORDS = ("alpha", "bravo", "delta", "echo", "kilo", "lima", "oscar", "sierra", "tango", "zulu")


def proxy_config() -> dict[str, Any]:
    """Quota scope APP: each app its own chain, quotas and policies.

    `tight_threshold` is tiny so every quota'd scope is in TIGHT mode (a worst-case
    reservation in the store before each request, settled by its flush) for almost
    the whole run, while the $10 economy quotas are never reached: premium is
    exhausted after a few requests (sticky fallback), `broke` is refused outright.
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
        "quotas": {"tight_threshold": 0.0001, "normal_ttl": 1.0, "tight_ttl": 0.25},
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
class Worker(threading.Thread):
    def __init__(self, index: int, soak: Soak) -> None:
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
        modelId=HAIKU, input={"converse": {"messages": _converse_args(_prompt(w.rng))["messages"]}})
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


def _error_code(exc: BaseException) -> str:
    if isinstance(exc, _HungUp):
        return "hang-up"
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


# ----------------------------------------------------------------- soak
@dataclass
class Sample:
    t: float
    rss_kib: int
    fds: int


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Soak:
    def __init__(self, args: argparse.Namespace, simulator: Process, proxy: Proxy, keys: dict[str, dict[str, str]]):
        self.args = args
        self.simulator = simulator
        self.proxy = proxy
        self.keys = keys
        self.stop = threading.Event()
        self.tally = Tally()
        self.samples: list[Sample] = []
        self.started = 0.0
        #: Shared by every worker's clients (one loaded service model instead of one per client).
        self.session = boto3.session.Session()

    def run_one(self, worker: Worker, scenario: Scenario) -> None:
        tally = self.tally
        outcome = "ok"
        result: Result | None = None
        worker.op = worker.app = ""
        worker.idle = 0.0
        try:
            result = scenario.call(worker)
        except Unexpected as exc:
            tally.unexpected_error(scenario.name, str(exc))
            return
        except Exception as exc:  # classified below: expected or not
            code = _error_code(exc)
            expect = (scenario.expect or "").rstrip("?")
            if code == "ConnectionClosedError" and worker.idle >= KEEPALIVE_RACE:
                # The pooled connection was reused just as the proxy closed it for being
                # idle: the request never reached the proxy. SDK retries hide this.
                code = KEEPALIVE
            elif code != expect:
                idle = f" (client idle {worker.idle:.1f} s)" if worker.app else ""
                tally.unexpected_error(scenario.name, f"{code}{idle}: {exc}")
                return
            outcome = code
        else:
            if scenario.expect and not scenario.expect.endswith("?"):
                tally.unexpected_error(scenario.name, f"expected {scenario.expect}, the call succeeded")
                return
        finally:
            if worker.app:
                worker.last_used[worker.app] = time.monotonic()
        with tally.lock:
            tally.by_scenario[(scenario.name, outcome)] += 1
            if outcome != "ok":
                tally.expected[outcome] += 1
            tally.by_operation[worker.op] += 1
            if result is not None:
                key = (scenario.app, worker.op)
                usage = tally.client_usage[key]
                usage[0] += 1
                usage[1] += result.input_tokens
                usage[2] += result.output_tokens
                if result.cache_hit:
                    tally.cache_hits += 1
                served = result.headers.get("x-costkeeper-model-id")
                if served:
                    tally.served[(scenario.app, served, result.headers.get("x-costkeeper-mode", ""))] += 1
            else:
                # Errors that reached the simulator are metered (zero or estimated tokens);
                # refusals by the proxy itself (signature, quota, rate limit) are not.
                if scenario.app == "faults" and outcome not in ("InvalidSignatureException", KEEPALIVE):
                    tally.client_usage[("faults", "*")][0] += 1
                    tally.no_tokens.add(("faults", "*"))

    def sample(self) -> Sample:
        pid = self.proxy.popen.pid
        sample = Sample(time.monotonic() - self.started, rss_kib(pid), fd_count(pid))
        self.samples.append(sample)
        return sample

    def sampler(self) -> None:
        while not self.stop.wait(self.args.sample_interval):
            self.sample()


def _by_minute(samples: list[Sample]) -> list[tuple[float, int]]:
    """(t, RSS KiB) of the samples nearest to each whole minute, and of the last one."""
    if not samples:
        return []
    picked = [min(samples, key=lambda s: abs(s.t - minute * 60)) for minute in range(int(samples[-1].t // 60) + 1)]
    if samples[-1].t - picked[-1].t > 5:
        picked.append(samples[-1])
    return [(s.t, s.rss_kib) for s in picked]


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (x in seconds), per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx * 60


_ISSUE_KEYS = '''
import sys
from proxy.cli import main
config, org, *apps = sys.argv[1:]
for app in apps:
    print("### " + app, flush=True)
    if main(["keys", "create", "--org", org, "--app", app, "--config", config]) != 0:
        sys.exit(1)
'''


def issue_keys(proxy: Proxy) -> dict[str, dict[str, str]]:
    """`costkeeper keys create` for each app, run by the CLI's own `main` in one process
    (seven `costkeeper` processes would spend seconds just importing)."""
    done = subprocess.run([sys.executable, "-c", _ISSUE_KEYS, str(proxy.config_path), ORG, *APPS],
                          env={**base_env(), **proxy.aws_env}, cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=True)
    keys: dict[str, dict[str, str]] = {}
    for block in done.stdout.split("### ")[1:]:
        app, _, text = block.partition("\n")
        keys[app] = dict(line.split("=", 1) for line in text.splitlines() if line.startswith("AWS_"))
    if set(keys) != set(APPS) or not all("AWS_SECRET_ACCESS_KEY" in key for key in keys.values()):
        raise RuntimeError(f"keys create: {done.stdout}\n{done.stderr}")
    keys["bad-signature"] = keys["faults"]
    return keys


def metered_usage(proxy: Proxy) -> dict[tuple[str, str], dict[str, int]]:
    out = costkeeper("usage", "--days", "2", "--by", "app,operation", "--format", "json",
                     "--config", str(proxy.config_path)).stdout
    return {(row["app"], row["operation"]): row for row in json.loads(out)["rows"]}


_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) (\S+) ")
#: The ERROR record an upstream cut of a non-streamed body leaves in the proxy's log:
#: nothing well-formed can follow a started JSON body, so the proxy logs a warning (no
#: traceback) and ends the request, and uvicorn notes the unfinished response as it drops
#: the connection. Expected (at most one per `body-cut`), but reported.
CUT_RECORDS = {
    "response not completed": re.compile(r"ASGI callable returned without completing response"),
}


def proxy_log_problems(text: str) -> tuple[list[str], Counter[str]]:
    """Log records at ERROR or above, or carrying a traceback: (unexpected ones, each as its
    first line and its last exception line; counts of the expected `CUT_RECORDS`)."""
    records: list[list[str]] = []
    for line in text.splitlines():
        if not records or _LOG_RECORD.match(line) or line.startswith("{"):
            records.append([line])
        else:
            records[-1].append(line)
    unexpected: list[str] = []
    expected: Counter[str] = Counter()
    for record in records:
        match = _LOG_RECORD.match(record[0])
        level = match.group(1) if match else ""
        whole = "\n".join(record)
        if level not in ("ERROR", "CRITICAL") and "Traceback" not in whole:
            continue
        kind = next((name for name, pattern in CUT_RECORDS.items() if pattern.search(whole)), None)
        if kind is not None:
            expected[kind] += 1
            continue
        causes = [line.strip(" |") for line in record[1:]
                  if re.match(r"^[\s|]*[\w.]+(Error|Exception|Broken)\b", line)]
        unexpected.append(f"{record[0][:200]} … {causes[-1][:200] if causes else ''}")
    return unexpected, expected


def _log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    simulator = start_simulator(tmp)
    proxy: Proxy | None = None
    try:
        proxy = start_proxy(tmp, simulator.url, proxy_config())
        _log(f"simulator {simulator.url}, proxy {proxy.url} (pid {proxy.popen.pid}), work dir {tmp}")
        keys = issue_keys(proxy)
        _log(f"{len(APPS)} keys issued; {args.workers} workers for {args.duration:g} s")
        soak = Soak(args, simulator, proxy, keys)
        workers = [Worker(i, soak) for i in range(args.workers)]
        soak.started = time.monotonic()
        first = soak.sample()
        sampler = threading.Thread(target=soak.sampler, name="soak-sampler", daemon=True)
        sampler.start()
        for worker in workers:
            worker.start()
        deadline = soak.started + args.duration
        next_report = soak.started + args.progress
        while (now := time.monotonic()) < deadline:
            time.sleep(min(1.0, deadline - now))
            if args.progress and time.monotonic() >= next_report:
                next_report += args.progress
                last = soak.samples[-1]
                with soak.tally.lock:
                    done = sum(soak.tally.by_scenario.values())
                    unexpected = sum(soak.tally.unexpected.values())
                _log(f"{last.t:5.0f} s: requests {done:,}  RSS {last.rss_kib / 1024:.1f} MiB  "
                     f"fds {last.fds}  unexpected {unexpected}")
        end = soak.sample()  # under load, like the warm-up sample
        soak.stop.set()
        for worker in workers:
            worker.join(timeout=60)
        sampler.join(timeout=10)
        elapsed = time.monotonic() - soak.started
        alive = [w.name for w in workers if w.is_alive()]
        _log(f"load stopped after {elapsed:.1f} s; idle {args.idle_wait:g} s, then SIGTERM")
        time.sleep(args.idle_wait)  # past every keep-alive timeout
        idle = soak.sample()
        try:
            ready = httpx.get(f"{proxy.admin_url}/readyz", timeout=5).json()
        except (httpx.HTTPError, ValueError) as exc:
            ready = {"error": str(exc)}
        exit_code = proxy.stop(sig_timeout=30)
        log_errors, log_cut_records = proxy_log_problems(proxy.output())
        metered = metered_usage(proxy)
        _log(f"proxy exited {exit_code}; usage read")
        return {"soak": soak, "first": first, "end": end, "idle": idle, "elapsed": elapsed,
                "alive_workers": alive, "ready": ready, "exit_code": exit_code, "log_errors": log_errors,
                "log_cut_records": log_cut_records,
                "metered": metered}
    finally:
        if proxy is not None:
            proxy.stop()
        simulator.stop()


# ----------------------------------------------------------------- verdict
@dataclass
class Verdict:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.checks)


def judge(args: argparse.Namespace, results: dict[str, Any]) -> tuple[Verdict, dict[str, Any]]:
    soak: Soak = results["soak"]
    tally = soak.tally
    samples = sorted(soak.samples, key=lambda s: s.t)
    warm = args.duration * args.warmup
    steady = [s for s in samples if warm <= s.t <= results["end"].t]
    if len(steady) < 2:
        steady = [s for s in samples if s.t <= results["end"].t][-2:]
    after_warmup, end = steady[0], results["end"]
    # Open fds move with the keep-alive connections of the moment: compare the medians
    # of the first and the last few steady samples rather than two single readings.
    window = max(1, min(FD_WINDOW, len(steady) // 2))
    fds_after_warmup = int(statistics.median(s.fds for s in steady[:window]))
    fds_end = int(statistics.median(s.fds for s in steady[-window:]))
    rss_slope = slope_per_minute([(s.t, s.rss_kib) for s in steady])
    fd_slope = slope_per_minute([(s.t, s.fds) for s in steady])
    rss_limit = after_warmup.rss_kib * args.rss_slope_limit / 100 / 10  # KiB per minute
    figures = {
        "samples": len(samples), "steady_samples": len(steady), "warmup_s": warm,
        "rss_start_kib": results["first"].rss_kib, "rss_after_warmup_kib": after_warmup.rss_kib,
        "rss_end_kib": end.rss_kib, "rss_max_kib": max(s.rss_kib for s in steady),
        "rss_max_overall_kib": max(s.rss_kib for s in samples),
        "rss_slope_kib_per_min": rss_slope, "rss_slope_limit_kib_per_min": rss_limit,
        "fds_start": results["first"].fds, "fds_after_warmup": fds_after_warmup, "fds_end": fds_end,
        "fds_max": max(s.fds for s in steady), "fds_idle_after": results["idle"].fds,
        "fd_slope_per_min": fd_slope, "fd_window": window,
        "rss_by_minute": _by_minute([s for s in samples if s.t <= results["end"].t]),
    }
    verdict = Verdict()
    unexpected = sum(tally.unexpected.values())
    verdict.check("zero unexpected client errors", unexpected == 0,
                  f"{unexpected}" + (f" (e.g. {tally.unexpected_samples[0]})" if unexpected else ""))
    log_errors = list(results["log_errors"])
    cuts = tally.by_scenario[("body-cut", "IncompleteRead")]
    cut_records: Counter[str] = results["log_cut_records"]
    log_errors += [f"{n} × {kind} for {cuts} cut bodies" for kind, n in cut_records.items() if n > cuts]
    verdict.check("no unexpected ERROR records or tracebacks in the proxy log", not log_errors,
                  f"{len(log_errors)}" + (f" (e.g. {log_errors[0]})" if log_errors else "")
                  + f"; expected for {cuts} cut non-streamed bodies: "
                  + (", ".join(f"{n} × {kind}" for kind, n in sorted(cut_records.items())) or "none"))
    verdict.check("proxy exits 0 on SIGTERM", results["exit_code"] == 0, f"exit code {results['exit_code']}")
    verdict.check("every worker stopped", not results["alive_workers"], ", ".join(results["alive_workers"]) or "yes")
    verdict.check(f"open fds at end ≤ after warm-up + {args.fd_slack} (medians of {window} samples)",
                  fds_end <= fds_after_warmup + args.fd_slack,
                  f"{fds_end} vs {fds_after_warmup} (slope {fd_slope:+.2f}/min, max {figures['fds_max']})")
    if args.idle_wait >= IDLE_KEEPALIVE:
        idle, first = results["idle"].fds, results["first"].fds
        verdict.check(f"open fds once idle ≤ before the first request + {args.fd_slack}",
                      idle <= first + args.fd_slack, f"{idle} vs {first} ({args.idle_wait:g} s after the load)")
    verdict.check(f"RSS slope < {args.rss_slope_limit:g} % of RSS per 10 min", rss_slope < rss_limit,
                  f"{rss_slope:+.1f} KiB/min vs limit {rss_limit:.1f} KiB/min")
    backlog = results["ready"].get("metering_backlog") if isinstance(results["ready"], dict) else None
    verdict.check("metering backlog drained before shutdown", backlog in (0, None) and "error" not in results["ready"],
                  f"readyz: {json.dumps(results['ready'])[:200]}")
    # Nothing lost: per (app, operation), the proxy's rows vs the clients' counts.
    metered: dict[tuple[str, str], dict[str, int]] = results["metered"]
    mismatches = []
    rows = []
    faults_metered = sum(r["requests"] for (app, _), r in metered.items() if app == "faults")
    for (app, op), (requests, inp, out) in sorted(tally.client_usage.items()):
        if app == "faults":
            row = {"requests": faults_metered, "input_tokens": 0, "output_tokens": 0, "estimated_requests":
                   sum(r["estimated_requests"] for (a, _), r in metered.items() if a == "faults")}
        else:
            row = metered.get((app, op), {"requests": 0, "input_tokens": 0, "output_tokens": 0,
                                          "estimated_requests": 0})
        compare_tokens = (app, op) not in tally.no_tokens
        ok = row["requests"] == requests and (not compare_tokens or (
            row["input_tokens"] == inp and row["output_tokens"] == out and row["estimated_requests"] == 0))
        rows.append((app, op, requests, row["requests"], inp, row["input_tokens"], out, row["output_tokens"],
                     row["estimated_requests"], compare_tokens, ok))
        if not ok:
            mismatches.append(f"{app}/{op}")
    seen = {key for key in tally.client_usage if key[0] != "faults"}
    for (app, op), row in sorted(metered.items()):
        if app != "faults" and (app, op) not in seen:
            mismatches.append(f"{app}/{op} (metered {row['requests']}, never counted by a client)")
            rows.append((app, op, 0, row["requests"], 0, row["input_tokens"], 0, row["output_tokens"],
                         row["estimated_requests"], True, False))
    figures["accounting"] = rows
    verdict.check("nothing lost: metered = client-counted (requests, tokens) per app and operation",
                  not mismatches, ", ".join(mismatches) or f"{len(rows)} groups match")
    missing = [s.name for s in SCENARIOS if not any(n == s.name for n, _ in tally.by_scenario)]
    verdict.check("every scenario ran", not missing, ", ".join(missing) or f"{len(SCENARIOS)} scenarios")
    return verdict, figures


# ----------------------------------------------------------------- report
def report(args: argparse.Namespace, results: dict[str, Any], verdict: Verdict, figures: dict[str, Any],
           command: str) -> str:
    soak: Soak = results["soak"]
    tally = soak.tally
    total = sum(tally.by_scenario.values())
    elapsed = results["elapsed"]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "n/a")
    mib = 1024.0
    out = [
        "## Soak", "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} by:", "",
        "```", command, "```", "",
        f"Machine: `nproc` {sh('nproc')}, CPU {cpu}, Python {platform.python_version()} "
        f"({platform.python_implementation()}), kernel {platform.release()}. Simulator, proxy and "
        "clients share these cores over 127.0.0.1.", "",
        f"{args.workers} boto3 worker threads (no SDK retries) for {elapsed:.0f} s: {total:,} requests "
        f"({total / elapsed:.1f}/s), the proxy in SigV4 mode with a SQLite store and production metering "
        f"defaults. Samples every {args.sample_interval:g} s; warm-up = first {args.warmup:.0%} "
        f"({figures['warmup_s']:.0f} s), excluded from the slopes.", "",
        f"**Verdict: {'PASS' if verdict.passed else 'FAIL'}**", "",
        "| criterion | result | measured |", "|---|---|---|",
    ]
    out += [f"| {name} | {'pass' if ok else '**FAIL**'} | {detail} |" for name, ok, detail in verdict.checks]
    out += [
        "", "| proxy | start | after warm-up | end | max (steady) | slope |", "|---|---:|---:|---:|---:|---:|",
        f"| RSS MiB | {figures['rss_start_kib'] / mib:.1f} | {figures['rss_after_warmup_kib'] / mib:.1f} "
        f"| {figures['rss_end_kib'] / mib:.1f} | {figures['rss_max_kib'] / mib:.1f} "
        f"| {figures['rss_slope_kib_per_min']:+.1f} KiB/min |",
        f"| open fds | {figures['fds_start']} | {figures['fds_after_warmup']} | {figures['fds_end']} "
        f"| {figures['fds_max']} | {figures['fd_slope_per_min']:+.2f}/min |",
        "",
        "RSS over the run (minute: MiB): " + ", ".join(f"{t / 60:.1f}: {rss / mib:.1f}"
                                                       for t, rss in figures["rss_by_minute"]) + ".",
        "",
        f"Open fds {args.idle_wait:g} s after the load stopped (idle keep-alives closed): "
        f"{figures['fds_idle_after']} (at start, before any request: {figures['fds_start']}).",
        "", "| scenario | app | operation | requests | ok | expected error |", "|---|---|---|---:|---:|---|",
    ]
    for s in SCENARIOS:
        counts = {outcome: n for (name, outcome), n in tally.by_scenario.items() if name == s.name}
        ok = counts.pop("ok", 0)
        bad = counts.pop("unexpected", 0)
        errors = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
        out.append(f"| {s.name} | {s.app} | {s.operation.replace('|', ' / ')} | {ok + bad + sum(counts.values()):,} "
                   f"| {ok:,} | {errors}{f' (**{bad} unexpected**)' if bad else ''} |")
    out += ["", "Requests by operation: " + ", ".join(f"{op} {n:,}" for op, n in sorted(tally.by_operation.items())),
            "", "Expected errors: " + (", ".join(f"{k} {v:,}" for k, v in sorted(tally.expected.items())) or "none")
            + f". Unexpected: {sum(tally.unexpected.values())}.", ""]
    if tally.unexpected_samples:
        out += ["Unexpected errors (first ones):", "", *[f"- `{line}`" for line in tally.unexpected_samples], ""]
    out += ["Served by the quota'd apps (model, mode): " + ", ".join(
        f"{app} {model} {mode} {n:,}" for (app, model, mode), n in sorted(tally.served.items())
        if app in ("quota", "xfamily", "limited")) + ".", "",
        "Nothing lost — usage metered by the proxy (`costkeeper usage --by app,operation` after SIGTERM) vs "
        "counted by the clients from the simulator's responses (`faults`: requests only, every operation "
        "together; their tokens are zero or estimated):", "",
        "| app | operation | client requests | metered | client input | metered | client output | metered "
        "| estimated | match |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for app, op, cr, mr, ci, mi, co, mo, est, tokens, ok in figures["accounting"]:
        dash = "—"
        out.append(f"| {app} | {op} | {cr:,} | {mr:,} | {f'{ci:,}' if tokens else dash} | "
                   f"{f'{mi:,}' if tokens else dash} | {f'{co:,}' if tokens else dash} | "
                   f"{f'{mo:,}' if tokens else dash} | {est:,} | {'yes' if ok else '**no**'} |")
    cut_records: Counter[str] = results["log_cut_records"]
    if cut_records:
        out += ["", "Proxy log: ERROR records for the upstream cuts of non-streamed bodies (`body-cut`), "
                "counted as expected (uvicorn's own line as it drops the connection; the proxy's is a "
                "warning): " + ", ".join(f"{n:,} × {kind}" for kind, n in sorted(cut_records.items())) + "."]
    races = tally.expected.get(KEEPALIVE, 0)
    if races:
        out += ["", f"Keep-alive races: {races:,} — boto3 reused a pooled connection idle for ≥ "
                f"{KEEPALIVE_RACE:g} s just as the proxy closed it (`server.keepalive_timeout` set to 5 s "
                "here, so the idle check can run) and got `ConnectionClosedError`; the request never reached "
                "the proxy. SDK retries hide it (this harness disables them). The proxy's default, 75 s, is "
                "above load balancers' idle timeouts (ALB: 60 s), so in production the balancer closes first."]
    out += ["", f"Cache hits (metered at zero): {tally.cache_hits:,}.",
            f"RSS criterion: slope < {args.rss_slope_limit:g} % of the post-warm-up RSS per 10 minutes "
            f"= {figures['rss_slope_limit_kib_per_min']:.1f} KiB/min; at {total / elapsed * 60:,.0f} requests/min "
            f"that would catch a leak of ≈ {figures['rss_slope_limit_kib_per_min'] * 1024 / max(total / elapsed * 60, 1):,.0f}"
            " bytes per request."]
    return "\n".join(out) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace what is between the soak markers (appended, with the markers, if missing)."""
    text = path.read_text() if path.exists() else ""
    block = f"{START}\n{section}{END}"
    if START in text and END in text and text.index(START) < text.index(END):
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    parser.add_argument("--workers", type=int, default=4, help="concurrent boto3 worker threads")
    parser.add_argument("--warmup", type=float, default=0.5,
                        help="share of the run excluded from the slopes (default 0.5: see bench/README.md)")
    parser.add_argument("--sample-interval", type=float, default=2.0, help="seconds between RSS/fd samples")
    parser.add_argument("--rss-slope-limit", type=float, default=1.0,
                        help="max RSS slope, %% of the post-warm-up RSS per 10 minutes (default 1)")
    parser.add_argument("--fd-slack", type=int, default=8, help="open fds the end may exceed the warm-up by")
    parser.add_argument("--idle-wait", type=float, default=7.0, help="seconds idle before the last fd sample")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--progress", type=float, default=30.0, help="seconds between progress lines (0: none)")
    parser.add_argument("--out", default=str(REPO / "bench" / "RESULTS.md"))
    parser.add_argument("--no-write", action="store_true", help="print the figures, do not write --out")
    parser.add_argument("--json", help="also write raw figures here")
    parser.add_argument("--workdir", help="keep the processes' logs, configs and store here (default: a temp dir)")
    args = parser.parse_args(argv)
    command = "make soak   # = " + shlex.join(
        [os.path.relpath(sys.executable, REPO), "-m", "bench.soak", *(sys.argv[1:] if argv is None else argv)])
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        results = run(args, Path(args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="costkeeper-soak-") as tmp:
            results = run(args, Path(tmp))
    verdict, figures = judge(args, results)
    section = report(args, results, verdict, figures, command)
    print(section)
    if not args.no_write:
        write_section(Path(args.out), section)
    if args.json:
        tally = results["soak"].tally
        Path(args.json).write_text(json.dumps({
            "passed": verdict.passed,
            "checks": [{"name": n, "ok": ok, "detail": d} for n, ok, d in verdict.checks],
            "figures": {k: v for k, v in figures.items() if k != "accounting"},
            "accounting": figures["accounting"],
            "scenarios": {f"{name}:{outcome}": n for (name, outcome), n in tally.by_scenario.items()},
            "operations": dict(tally.by_operation),
            "expected": dict(tally.expected), "unexpected": dict(tally.unexpected),
            "unexpected_samples": tally.unexpected_samples,
            "samples": [[s.t, s.rss_kib, s.fds] for s in results["soak"].samples],
            "elapsed": results["elapsed"],
        }, indent=1))
    print("soak:", "PASS" if verdict.passed else "FAIL", flush=True)
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
