"""Real processes for end-to-end tests: the simulator and the proxy, on loopback.

Everything a transparency claim rests on runs as it does in production: a
separate `costkeeper` process, real sockets, real clients.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

SIM_ACCESS_KEY = "AKIDSIMULATORTESTS01"
SIM_SECRET_KEY = "simulator-secret-for-tests-only"
#: The key for issued secrets of proxies on DynamoDB (which has no default key file):
#: replicas sharing a table share it, as a deployment's Secret would give them.
TEST_SECRET_KEY = base64.b64encode(b"costkeeper-e2e-test-secret-key!!").decode()
REPO = Path(__file__).resolve().parent.parent


def words_for_half(left: int, input_price: int, output_price: int, most: int = 2000) -> int:
    """Max tokens (and `[[sim:words=N]]` words, so the output is exactly that long) for a
    request costing about half of the `left` pico-USD of a quota, at these prices (pico-USD
    a token), with 300 input tokens allowed for; at least 1, at most `most`.

    Spending a quota this way, requests shrink to the smallest there are, and the one
    refused leaves less than 1 % of the quota when each quota is over 100 such smallest
    worst cases: budget leases mark a model exhausted for its scope (the scope's fallback
    event) only when a request does not fit and 99 % of the quota is spent
    (metering/leases.py); a request that does not fit sooner moves for itself only."""
    return max(1, min(most, (left - 300 * input_price) // (2 * output_price)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], within: float, what: str) -> None:
    """Poll `predicate` every 50 ms; AssertionError naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def refuses_connections(url: str) -> bool:
    """Whether nothing accepts a TCP connection at `url`'s host and port (any more)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=1):
            return False
    except OSError:
        return True


def base_env() -> dict[str, str]:
    """The environment of a child process, without any AWS settings of the developer's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "COSTKEEPER_", "ANTHROPIC_"))}
    env["PYTHONPATH"] = str(REPO)
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent"
    return env


def costkeeper(*args: str, env: Mapping[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        env={**base_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
        cwd=REPO,
    )


@dataclass
class Process:
    popen: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self, sig_timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=sig_timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _spawn(args: list[str], env: Mapping[str, str], log: Path, url: str, health: str) -> Process:
    handle = log.open("wb")
    popen = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", *args],
        env={**base_env(), **env},
        stdout=handle,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    handle.close()
    process = Process(popen, url, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{args[0]} exited with {popen.returncode}:\n{process.output()}")
        try:
            if httpx.get(health, timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.stop()
    raise RuntimeError(f"{args[0]} did not become healthy:\n{process.output()}")


def start_simulator(tmp: Path, *extra: str) -> Process:
    port = free_port()
    return _spawn(
        ["simulate", "--port", str(port), *extra],
        {"COSTKEEPER_SIM_ACCESS_KEY": SIM_ACCESS_KEY, "COSTKEEPER_SIM_SECRET_KEY": SIM_SECRET_KEY},
        tmp / f"simulator-{port}.log",
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{port}/_sim/health",
    )


@dataclass
class Proxy(Process):
    admin_url: str
    config_path: Path
    store_path: Path
    #: The proxy's AWS credentials: the CLI needs them too when the store is DynamoDB.
    aws_env: dict[str, str] = field(default_factory=dict)

    def keys(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return costkeeper("keys", *args, "--config", str(self.config_path), env=self.aws_env, check=check)

    def issue_key(self, org: str, app: str) -> dict[str, str]:
        out = self.keys("create", "--org", org, "--app", app).stdout
        pairs = dict(line.split("=", 1) for line in out.splitlines() if line and not line.startswith("#"))
        bearer = next(line.split("AWS_BEARER_TOKEN_BEDROCK=", 1)[1] for line in out.splitlines()
                      if "AWS_BEARER_TOKEN_BEDROCK=" in line)
        return {**pairs, "AWS_BEARER_TOKEN_BEDROCK": bearer}


def start_proxy(
    tmp: Path,
    upstream_url: str,
    config: Mapping[str, Any] | None = None,
    *,
    upstream_credentials: tuple[str, str] = (SIM_ACCESS_KEY, SIM_SECRET_KEY),
    extra_args: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
) -> Proxy:
    port, admin_port = free_port(), free_port()
    store_path = tmp / f"store-{port}.db"
    document: dict[str, Any] = {
        "region": "us-east-1",
        "upstream": {"endpoint_url": upstream_url, "read_timeout": 30},
        "server": {"host": "127.0.0.1", "port": port, "admin_port": admin_port},
        "store": {"backend": "sqlite", "path": str(store_path)},
        "metering": {"flush_interval": 0.1},
        **(config or {}),
    }
    # The ports are this function's to choose: other server settings merge into them.
    document["server"] = {**(config or {}).get("server", {}), "host": "127.0.0.1", "port": port,
                          "admin_port": admin_port}
    config_path = tmp / f"config-{port}.yaml"
    config_path.write_text(yaml.safe_dump(document))
    access, secret = upstream_credentials
    aws_env = {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret}
    if document["store"].get("backend") == "dynamodb":
        aws_env["COSTKEEPER_SECRET_KEY"] = TEST_SECRET_KEY
    # The proxy's AWS credentials also sign its DynamoDB calls (DynamoDB Local accepts any).
    costkeeper("store", "init", "--config", str(config_path), env=aws_env)
    scheme = "https" if "--tls-cert" in extra_args else "http"
    process = _spawn(
        ["serve", "--config", str(config_path), *extra_args],
        {**aws_env, **(env or {})},
        tmp / f"proxy-{port}.log",
        f"{scheme}://127.0.0.1:{port}",
        f"http://127.0.0.1:{admin_port}/healthz",
    )
    return Proxy(process.popen, process.url, process.log, f"http://127.0.0.1:{admin_port}", config_path, store_path,
                 aws_env)
