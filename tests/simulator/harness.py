"""A real simulator on 127.0.0.1: uvicorn in a background thread, real sockets.

In a thread rather than a subprocess so a test can start one with its own
`SimulatorConfig` (faults, latency) in milliseconds; the wire is still real TCP
and HTTP/1.1, which is what the clients under test see.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.config
import httpx
import uvicorn

from proxy.config import SimulatorConfig
from simulator.app import create_simulator

ACCESS_KEY = "AKIDSIMTEST000000001"
SECRET_KEY = "sim-secret-for-unit-tests"
REGION = "us-east-1"
NOVA = "us.amazon.nova-lite-v1:0"
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
MODELS = {"nova": NOVA, "anthropic": CLAUDE}


@dataclass
class SimServer:
    config: SimulatorConfig
    server: uvicorn.Server
    thread: threading.Thread
    url: str = ""
    #: One pooled httpx client: creating one per call costs ~50 ms (TLS context).
    http: httpx.Client = field(default_factory=httpx.Client)
    _clients: list[Any] = field(default_factory=list)

    @classmethod
    def start(cls, **overrides: Any) -> SimServer:
        config = SimulatorConfig(access_key=ACCESS_KEY, secret_key=SECRET_KEY, **overrides)
        server = uvicorn.Server(uvicorn.Config(
            create_simulator(config), host="127.0.0.1", port=0, log_level="warning",
            ws="none", lifespan="off", server_header=False, timeout_graceful_shutdown=1,
        ))
        thread = threading.Thread(target=server.run, name="simulator", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("simulator did not start")
            time.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        return cls(config, server, thread, f"http://127.0.0.1:{port}")

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def client(self, secret: str = SECRET_KEY, access_key: str = ACCESS_KEY, region: str = REGION,
               **config: Any) -> Any:
        """A boto3 bedrock-runtime client pointed here, with retries off.

        `total_max_attempts`, not `max_attempts`: botocore adds one to the latter
        (`max_attempts: 1` still retries once, after a back-off of up to 1 s).
        """
        client = boto3.client(
            "bedrock-runtime",
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret,
            config=botocore.config.Config(retries={"total_max_attempts": 1}, **config),
        )
        self._clients.append(client)
        return client

    def requests(self) -> list[dict[str, Any]]:
        return self.http.get(f"{self.url}/_sim/requests").json()

    def last_request(self) -> dict[str, Any]:
        return self.requests()[-1]

    def record(self, request_id: str) -> dict[str, Any]:
        return next(r for r in self.requests() if r["request_id"] == request_id)

    def release(self, key: str) -> int:
        return int(self.http.post(f"{self.url}/_sim/release/{key}").json()["released"])

    def wait_held(self, key: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.http.get(f"{self.url}/_sim/holds").json().get(key, 0) == 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing held on {key}")
            time.sleep(0.01)

    def post(self, path: str, body: Any, **headers: str) -> httpx.Response:
        """An unsigned-but-bearer request with httpx (boto3 refuses bearer over http)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(self.url + path, content=data,
                          headers={"authorization": f"Bearer {SECRET_KEY}", **headers})


def claude_body(prompt: str, max_tokens: int = 200, **extra: Any) -> dict[str, Any]:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": max_tokens,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }


def nova_body(prompt: str, max_tokens: int = 200, **extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": "messages-v1",
        "system": [{"text": "You are terse."}],
        "messages": [{"role": "user", "content": [{"text": prompt}]}],
        "inferenceConfig": {"maxTokens": max_tokens},
        **extra,
    }


def native_body(family: str, prompt: str, max_tokens: int = 200) -> dict[str, Any]:
    return claude_body(prompt, max_tokens) if family == "anthropic" else nova_body(prompt, max_tokens)


def converse_args(prompt: str, max_tokens: int = 200) -> dict[str, Any]:
    """The Converse twin of `native_body`: same system and user text."""
    return {
        "system": [{"text": "You are terse."}],
        "messages": [{"role": "user", "content": [{"text": prompt}]}],
        "inferenceConfig": {"maxTokens": max_tokens},
    }
