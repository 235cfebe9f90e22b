"""Where a request's CPU goes: a py-spy profile of the proxy under load, by component.

`py-spy record --format raw` gives one line per distinct stack with its sample
count. Each sample is charged to the innermost frame that belongs to a known
component (so `json.dumps` called by the access log counts as observability,
and `hmac` called by botocore's signer as re-signing). Idle thread-pool
workers are left out. The summary is the share of samples per component.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

__all__ = ["COMPONENTS", "profile", "profile_under_load", "summarise"]

#: (component, path fragments of its frames), checked innermost frame first.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("caller identity (SigV4 verification)", ("proxy/identity.py", "proxy/sigv4.py", "proxy/sigv4_signer.py")),
    ("upstream re-signing (botocore SigV4)", ("botocore/", "aiobotocore/", "proxy/upstream.py")),
    ("HTTP client (proxy/http1_*, aiohttp)", ("proxy/http1_client.py", "proxy/http1_pool.py", "aiohttp/", "yarl/",
                                             "multidict/")),
    ("HTTP server (uvicorn, httptools)", ("uvicorn/", "httptools/", "proxy/head_with_body.py")),
    ("usage parsing (adapters)", ("adapters/",)),
    ("metering (journal, aggregation, store)", ("metering/", "sqlite3/")),
    ("observability (access log, metrics)", ("proxy/eventlog.py", "proxy/admin/metrics.py", "proxy/admin/alerts.py",
                                             "prometheus_client/")),
    ("admission (policies, quotas, limits)", ("proxy/admission.py", "proxy/job_admission.py", "proxy/policies.py",
                                              "proxy/policy_build.py", "proxy/ratelimit.py", "proxy/limits.py",
                                              "proxy/routing.py", "proxy/response_cache.py")),
    ("proxy request path (forward, headers)", ("proxy/forward.py", "proxy/request.py", "proxy/headers.py",
                                               "proxy/data_app.py", "proxy/errors.py", "proxy/relay.py")),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop/", "selectors.py", "runners.py")),
)

_IDLE = ("concurrent/futures/thread.py:81", "threading.py")


def _component(stack: list[str]) -> str | None:
    for frame in reversed(stack):
        for name, fragments in COMPONENTS:
            if any(fragment in frame for fragment in fragments):
                return name
    return None


def summarise(raw: str) -> tuple[int, list[tuple[str, float]]]:
    """(samples counted, [(component, share of samples), …] largest first)."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack_text, _, number = line.rpartition(" ")
        if not stack_text or not number.isdigit():
            continue
        stack = stack_text.split(";")
        leaf = stack[-1]
        if any(marker in leaf for marker in _IDLE):
            continue
        counts[_component(stack) or "other (stdlib, interpreter)"] += int(number)
    total = sum(counts.values())
    return total, [(name, count / total) for name, count in counts.most_common()] if total else []


def profile(pid: int, seconds: float, out: Path) -> str | None:
    """Record `pid` for `seconds`; the raw profile text, or None without py-spy.

    `--nonblocking`: the process is never paused (a pause per sample would slow it
    down and skew the shares it measures).
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return None
    done = subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
                           "--rate", "250", "--format", "raw", "--output", str(out), "--nonblocking"],
                          capture_output=True, timeout=seconds + 60, check=False)
    if done.returncode != 0 or not out.exists():
        return None
    return out.read_text()


#: Drives load until the event is set: (requests, CPU seconds of the server, seconds).
Load = Callable[[asyncio.Event], Awaitable[tuple[int, float, float]]]


async def profile_under_load(pid: int, seconds: float, out: Path, drive: Load) -> dict[str, Any] | None:
    """Profile `pid` while `drive` loads it: {samples, shares, cpu_us, rps}, or None without py-spy.

    The load runs until py-spy is done: py-spy takes a moment to attach (longer on a
    loaded machine), and a recording window that outlasted the load would only see an
    idle server (idle samples are not counted).
    """
    stop = asyncio.Event()
    spy = asyncio.create_task(asyncio.to_thread(profile, pid, seconds, out))
    spy.add_done_callback(lambda _: stop.set())
    requests, cpu, elapsed = await drive(stop)
    raw = await spy
    if raw is None:
        return None
    samples, shares = summarise(raw)
    return {"samples": samples, "shares": shares, "cpu_us": cpu * 1e6 / requests if requests and cpu else float("nan"),
            "rps": requests / max(elapsed, 1e-9)}
