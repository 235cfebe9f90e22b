"""Per-call cost of the proxy's own steps, warm, in this process: what a request pays
before anything else (the HTTP server and client) is counted.

* verify: a boto3-shaped Converse request checked by `proxy.sigv4.verify_signature`
  (sigv4 mode, botocore's canonical request);
* re-sign: `proxy.upstream.sign`, botocore's `SigV4Auth` over the request for Bedrock
  (both modes);
* journal: one usage event encoded and appended to the journal (`metering.journal`),
  written before the response's last byte;
* frame_converse, frame_invoke: one event-stream frame through the usage watcher
  (`adapters.watch.StreamUsageWatcher`), per frame of the bench upstream's 200-frame
  ConverseStream and InvokeModelWithResponseStream (Anthropic) streams fed one frame
  at a time, as a paced stream arrives.

Warm means caches hot: the loop repeats one call. Cold is the same call made once
after 0.2 s of 1 ms naps, as a process between the requests of a light load sees
its CPU: the median over `cold_rounds` such calls. A pure-Python arithmetic loop is
the control: it touches almost no memory, so what it loses after the naps is the
clock's share, and what the steps lose beyond it is their code and data no longer
in the CPU's caches (bench/READING.md).
"""

from __future__ import annotations

import json
import statistics
import time
import timeit
from collections.abc import Callable
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from adapters.watch import StreamUsageWatcher
from bench.upstream import converse_stream_frames, invoke_stream_frames
from metering.events import UsageEvent
from metering.journal import Journal, encode
from proxy.sigv4 import parse_authorization, verify_signature
from proxy.upstream import sign

__all__ = ["micro"]

_BODY = json.dumps({"messages": [{"role": "user", "content": [{"text": "Say hello in one word."}]}],
                    "inferenceConfig": {"maxTokens": 64}}).encode()
_PATH = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
_HOST = "127.0.0.1:8080"


def _per_call_us(call: Callable[[], object], seconds: float = 0.3) -> float:
    """Best of five rounds of about `seconds` each: the warm cost of one call, in µs."""
    number = max(1, int(seconds / max(timeit.timeit(call, number=20) / 20, 1e-9)))
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def _cold_us(call: Callable[[], object], rounds: int) -> float:
    """Median µs of `call` made once after each of `rounds` spells of 200 naps of 1 ms."""
    samples = []
    for _ in range(rounds):
        for _ in range(200):
            time.sleep(0.001)
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1e6)
    return statistics.median(samples)


def _loop() -> int:
    """The control: ≈ 20 µs of interpreter work on a few integers."""
    total = 0
    for i in range(1500):
        total += i
    return total


def _client_request() -> tuple[list[tuple[str, str]], str]:
    """Headers as boto3 sends a Converse call (signed by botocore), and their Authorization."""
    request = AWSRequest(method="POST", url=f"http://{_HOST}{_PATH}", data=_BODY, headers={
        "Content-Type": "application/json",
        "User-Agent": "Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux lang/python#3.11.7 cfg/retry-mode#legacy",
        "amz-sdk-invocation-id": "0b2d4c64-62a1-4a56-9f39-6d7f1a0e0f3b",
        "amz-sdk-request": "attempt=1",
        "Content-Length": str(len(_BODY)),
    })
    SigV4Auth(Credentials("AKIDBENCHMICRO000001", "bench-micro-secret"), "bedrock", "us-east-1").add_auth(request)
    headers = [(name.lower(), value) for name, value in request.headers.items()] + [("host", _HOST)]
    return headers, request.headers["Authorization"]


def _stream_per_frame(operation: str, frames: list[bytes]) -> Callable[[], object]:
    """A whole stream through a new watcher, frame by frame (divide by `len(frames)`)."""
    def watch() -> object:
        watcher = StreamUsageWatcher(operation, "anthropic.claude-3-haiku-20240307-v1:0", _BODY)
        for frame in frames:
            watcher.feed(frame)
        watcher.end()
        return watcher.finish()

    return watch


def micro(tmp: Path, cold_rounds: int = 20) -> dict[str, float]:
    """µs per call of each step, warm; `cold_<step>` after naps (none if `cold_rounds` is 0)."""
    headers, authorization = _client_request()
    parsed = parse_authorization(authorization)
    in_scope = [(name.encode(), value.encode()) for name, value in headers]  # as an ASGI scope holds them

    def verify() -> None:
        verify_signature(parsed, "bench-micro-secret", method="POST", host=_HOST, raw_path=_PATH, raw_query="",
                         headers=in_scope, body=_BODY)

    upstream_headers = {name: value for name, value in headers
                        if name not in ("authorization", "x-amz-date", "host")}
    upstream_headers["host"] = "bedrock-runtime.us-east-1.amazonaws.com"
    credentials = Credentials("AKIDBENCHUPSTREAM001", "bench-secret")

    def resign() -> None:
        sign(credentials, "us-east-1", "POST", f"https://bedrock-runtime.us-east-1.amazonaws.com{_PATH}",
             dict(upstream_headers), _BODY)

    journal = Journal(tmp / "micro-journal")
    journal.open()
    event = UsageEvent(request_id="micro", timestamp=time.time(), org="bench", app="bench", operation="Converse",
                       requested_model="anthropic.claude-3-haiku-20240307-v1:0",
                       model="anthropic.claude-3-haiku-20240307-v1:0", input_tokens=12, output_tokens=3,
                       cache_read_tokens=0, cache_write_tokens=0, cost_pico_usd=7_000_000, priced=True, latency_ms=1.0,
                       first_byte_ms=None, status=200, estimated=False)
    try:
        steps = {"verify": _per_call_us(verify), "resign": _per_call_us(resign),
                 # Short rounds: every call appends a line (≈ 400 bytes) to a real file.
                 "journal": _per_call_us(lambda: journal.append(encode(event)), seconds=0.05),
                 "loop": _per_call_us(_loop)}
        for step, operation, frames in (("frame_converse", "ConverseStream", converse_stream_frames(200)),
                                        ("frame_invoke", "InvokeModelWithResponseStream", invoke_stream_frames(200))):
            steps[step] = _per_call_us(_stream_per_frame(operation, frames)) / len(frames)
        if cold_rounds:
            for name, call in (("verify", verify), ("resign", resign), ("loop", _loop)):
                steps[f"cold_{name}"] = _cold_us(call, cold_rounds)
        return steps
    finally:
        journal.close()
