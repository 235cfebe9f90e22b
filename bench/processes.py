"""The bench's own server processes: the fast upstream and the floor, each started on a
free port of 127.0.0.1 and waited for; and a process's CPU time so far."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.processes import REPO, base_env, free_port

__all__ = ["cpu_seconds", "start_floor", "start_upstream"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` so far (clock ticks of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for_port(popen: subprocess.Popen[bytes], port: int, what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    popen.kill()
    raise RuntimeError(f"{what} did not start")


def start_upstream(tmp: Path, frames: int, interval: float = 0.0) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    with (tmp / f"upstream-{port}.log").open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "bench.upstream", "--port", str(port), "--frames", str(frames),
             "--frame-interval", str(interval)],
            env=base_env(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    _wait_for_port(popen, port, "bench upstream")
    return popen, port


def start_floor(tmp: Path, upstream_url: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    with (tmp / f"floor-{port}.log").open("wb") as log:
        popen = subprocess.Popen([sys.executable, "-m", "bench.floor", "--upstream", upstream_url, "--port", str(port)],
                                 env={**base_env(), **(env or {})}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    _wait_for_port(popen, port, "bench floor")
    return popen, port
