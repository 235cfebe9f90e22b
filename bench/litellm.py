"""`make bench-litellm`: Cost Keeper beside LiteLLM's Bedrock pass-through (`/bedrock/…`), on
127.0.0.1 only, against the same fast fake Bedrock (bench/upstream.py). Optional: never part
of `make install`, `make test` or `make bench`.

LiteLLM is installed, pinned (`LITELLM_VERSION`, with its `proxy` extras), into a venv of its
own, `.bench-venv/litellm` (git-ignored), by `python -m bench.litellm --install-only` (what
the make target runs first, with the network); the measurement then runs under
`tools/isolated` (a private network namespace: loopback only), so nothing either proxy might
try to fetch or report leaves the machine.

Targets, each driven by bench/client.py's loader (non-streamed Converse, closed loop, one
keep-alive connection per worker) in interleaved rounds (bench/rounds.py):

* `direct`: the upstream itself (its CPU is not read);
* `floor`: bench/floor.py, a bare relay on uvicorn + aiohttp;
* `proxy-trust`, `proxy-sigv4`: `costkeeper serve` as `make bench` starts it (SQLite store,
  production metering defaults), sigv4 with a key from `costkeeper keys create`;
* `litellm`: LiteLLM's proxy (`litellm --config …`, its default server: uvicorn, one worker,
  uvloop) with the model in its `model_list` (the route LiteLLM's docs give for
  `/bedrock/model/{id}/converse`), signing with its own fake AWS keys to
  `AWS_BEDROCK_RUNTIME_ENDPOINT` = the upstream;

Every response must be a 200 whose body is the upstream's Converse body, byte for byte;
anything else is counted as an error. CPU per request is the server's (for LiteLLM, its
process and any descendants: `tree_cpu_seconds`).
Run: ``python -m bench.litellm --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.client import MODEL, Point, build_request, load, read_response
from bench.processes import cpu_seconds, start_floor, start_upstream
from bench.report import fmt
from bench.rounds import interleaved
from bench.upstream import CONVERSE_BODY
from tests.processes import REPO, base_env, free_port, start_proxy

__all__ = ["LITELLM_VERSION", "descendants", "litellm_config", "litellm_request", "main", "ratio_rows"]

#: Exact pin: the newer releases tried (1.108.14, 1.110.2) pin `litellm-proxy-extras`,
#: `litellm-enterprise` or `litellm-proxy` releases this machine's registry does not have, and
#: LiteLLM releases have been reported compromised (1.82.7/1.82.8, 1.107.0): never floating.
#: Its dependencies resolve as pip resolves them; `litellm_stack` prints what served.
LITELLM_VERSION = "1.106.12"
VENV = REPO / ".bench-venv" / "litellm"
#: LiteLLM refuses to start without a master key; the client sends it as a Bearer token.
MASTER_KEY = "sk-bench-litellm-0123456789abcdef0123456789abcdef"
#: LiteLLM's own AWS credentials (fake: the upstream checks no signature).
UPSTREAM_KEY = ("AKIDBENCHUPSTREAM001", "bench-secret")
#: What LiteLLM would otherwise fetch at start-up (model prices, Anthropic beta headers, the
#: auto-router presets, blog posts, policy templates): read from the package instead.
LOCAL_FILES = ("LITELLM_LOCAL_MODEL_COST_MAP", "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS",
               "LITELLM_LOCAL_AUTOROUTER_PRESETS", "LITELLM_LOCAL_BLOG_POSTS", "LITELLM_LOCAL_POLICY_TEMPLATES")


# ----------------------------------------------------------------- pure parts
def litellm_request(raw: bytes, master_key: str) -> bytes:
    """bench/client.py's request bytes for a Bedrock path, as a client of LiteLLM's Bedrock
    pass-through sends them: the path under `/bedrock`, and the SigV4 `Authorization`
    (nothing in LiteLLM checks it) replaced by LiteLLM's key as a Bearer token. Every other
    header, and the body, are unchanged."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no end of head")
    request_line, *headers = head.split(b"\r\n")
    method, path, version = request_line.split(b" ")
    if not path.startswith(b"/model/"):
        raise ValueError(f"not a Bedrock Runtime path: {path!r}")
    kept = [h for h in headers if not h.lower().startswith(b"authorization:")]
    if len(kept) != len(headers) - 1:
        raise ValueError("expected exactly one Authorization header")
    lines = [b" ".join((method, b"/bedrock" + path, version)), *kept,
             b"Authorization: Bearer " + master_key.encode()]
    return b"\r\n".join(lines) + sep + body


def litellm_config(model: str, master_key: str, region: str) -> dict[str, Any]:
    """LiteLLM's proxy config: `model` in its `model_list` under its own Bedrock id (the way
    LiteLLM's docs give for `/bedrock/model/{id}/converse`; without it, LiteLLM 1.106 answers
    400 "Invalid model name" for a model id it has no deployment for), signing with the AWS
    credentials of its environment. No database, no callbacks (none are on by default),
    spend logs off."""
    return {"general_settings": {"master_key": master_key, "disable_spend_logs": True},
            "model_list": [{"model_name": model, "litellm_params": {
                "model": f"bedrock/{model}", "custom_llm_provider": "bedrock", "aws_region_name": region}}]}


def descendants(parents: Mapping[int, int], root: int) -> set[int]:
    """`root` and every process below it, given each live process's parent."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def ratio_rows(points: Mapping[str, Point], proxies: list[str], others: list[str]) -> list[dict[str, Any]]:
    """Each Cost Keeper target against each LiteLLM one: req/s ratio (Cost Keeper ÷ LiteLLM)
    and CPU-per-request ratio (LiteLLM ÷ Cost Keeper), both "how many times better"."""
    rows = []
    for proxy in proxies:
        for other in others:
            mine, theirs = points[proxy], points[other]
            rows.append({"proxy": proxy, "vs": other,
                         "rps_ratio": mine.rps / theirs.rps if theirs.rps else float("nan"),
                         "cpu_ratio": theirs.cpu_us / mine.cpu_us if mine.cpu_us else float("nan")})
    return rows


# ----------------------------------------------------------------- processes
def tree_cpu_seconds(root: int) -> float:
    """CPU of `root` and its live descendants (a forking server's workers)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    total = 0.0
    for pid in descendants(parents, root):
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue
    return total


def installed() -> bool:
    return (VENV / f".installed-{LITELLM_VERSION}").exists()


def install() -> None:
    """LiteLLM with its proxy extras, pinned, in its own venv (never the project's)."""
    if installed():
        return
    if VENV.exists():
        shutil.rmtree(VENV)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
    (VENV / f".installed-{LITELLM_VERSION}").touch()


def litellm_stack() -> dict[str, str | None]:
    """Versions in LiteLLM's venv of what serves a request (None: not installed)."""
    names = ("litellm", "uvicorn", "uvloop", "httptools", "fastapi", "starlette", "httpx", "aiohttp")
    code = ("import importlib.metadata as m, json, sys\n"
            "def v(n):\n    try: return m.version(n)\n    except m.PackageNotFoundError: return None\n"
            "print(json.dumps({n: v(n) for n in sys.argv[1:]}))")
    out = subprocess.run([str(VENV / "bin" / "python"), "-c", code, *names], check=True, capture_output=True,
                         text=True).stdout
    stack: dict[str, str | None] = json.loads(out)
    return stack


def litellm_env(upstream_url: str) -> dict[str, str]:
    env = {k: v for k, v in base_env().items() if k not in ("PYTHONPATH", "LITELLM_MASTER_KEY", "DATABASE_URL")}
    env.update({"AWS_ACCESS_KEY_ID": UPSTREAM_KEY[0], "AWS_SECRET_ACCESS_KEY": UPSTREAM_KEY[1],
                "AWS_REGION_NAME": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_BEDROCK_RUNTIME_ENDPOINT": upstream_url})
    env.update(dict.fromkeys(LOCAL_FILES, "True"))
    return env


@dataclass
class LiteLLM:
    popen: subprocess.Popen[bytes]
    port: int
    log: Path


def start_litellm(tmp: Path, upstream_url: str) -> LiteLLM:
    """LiteLLM's proxy with its default server settings (uvicorn, one worker), on 127.0.0.1."""
    work = tmp / "litellm"
    work.mkdir()  # its working directory: LiteLLM reads a .env from there, and there is none
    port = free_port()
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(litellm_config(MODEL, MASTER_KEY, "us-east-1")))
    log = work / "litellm.log"
    with log.open("wb") as out:
        popen = subprocess.Popen([str(VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
                                  "--port", str(port)],
                                 env=litellm_env(upstream_url), cwd=work, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120  # imports and the router's set-up take ≈ 20 s here
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"LiteLLM exited at start-up:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=2) as response:
                if response.status == 200:
                    return LiteLLM(popen, port, log)
        except OSError:
            pass
        time.sleep(0.25)
    popen.kill()
    raise RuntimeError(f"LiteLLM did not start:\n{log.read_text()[-3000:]}")


# ----------------------------------------------------------------- measurement
@dataclass
class Target:
    name: str
    port: int
    raw: bytes
    #: The server process whose CPU (with its descendants') is measured; None: not read.
    pid: int | None = None
    notes: list[str] = field(default_factory=list)


async def measure(target: Target, concurrency: int, duration: float, max_requests: int) -> Point:
    before = tree_cpu_seconds(target.pid) if target.pid else 0.0
    point = await load(target.port, target.raw, Point(target.name, "converse", concurrency), duration,
                       max_requests, expect=CONVERSE_BODY)
    if target.pid:
        point.cpu = tree_cpu_seconds(target.pid) - before
    return point


async def check_once(target: Target) -> None:
    """One request: a 200 with the upstream's body, or the comparison is worthless."""
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    try:
        writer.write(target.raw)
        body = bytearray()
        status, _, _ = await asyncio.wait_for(read_response(reader, body), 30)
    finally:
        writer.close()
    if status != 200 or body != CONVERSE_BODY:
        raise RuntimeError(f"{target.name} answered {status} {bytes(body[:600])!r}, not the upstream's Converse body")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    stack = litellm_stack()
    print("LiteLLM's venv: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in stack.items()), flush=True)
    upstream, up_port = start_upstream(tmp, 200)
    children: list[subprocess.Popen[bytes]] = [upstream]
    stops: list[Any] = []
    url = f"http://127.0.0.1:{up_port}"
    try:
        targets = [Target("direct", up_port, build_request(up_port, "converse", None))]
        if args.floor:
            floor, floor_port = start_floor(tmp, url)
            children.append(floor)
            targets.append(Target("floor", floor_port, build_request(floor_port, "converse", None), floor.pid))
        proxies = []
        for mode in [m for m in args.modes.split(",") if m]:
            sub = tmp / mode
            sub.mkdir()
            proxy = start_proxy(sub, url, {"auth": {"mode": mode}, "metering": {}}, upstream_credentials=UPSTREAM_KEY)
            stops.append(proxy.stop)
            key = None
            if mode == "sigv4":
                issued = proxy.issue_key("bench", "bench")
                key = (issued["AWS_ACCESS_KEY_ID"], issued["AWS_SECRET_ACCESS_KEY"])
            port = int(proxy.url.rsplit(":", 1)[1])
            targets.append(Target(f"proxy-{mode}", port, build_request(port, "converse", key), proxy.popen.pid))
            proxies.append(f"proxy-{mode}")
        server = start_litellm(tmp, url)
        children.append(server.popen)
        raw = litellm_request(build_request(server.port, "converse", None), MASTER_KEY)
        targets.append(Target("litellm", server.port, raw, server.popen.pid))
        for target in targets:
            await check_once(target)
        c = args.concurrency
        # Warm-up, not counted: first requests through each server (lazy imports, pools).
        for target in targets:
            await load(target.port, target.raw, Point(target.name, "converse", c), args.warmup, 10**9,
                       expect=CONVERSE_BODY)

        async def converse_slice(target: Target, _: int) -> Point:
            return await measure(target, c, args.duration / args.rounds, max(1, args.max_requests // args.rounds))

        points = {p.target: p for p in await interleaved(targets, converse_slice, args.rounds)}
        for point in points.values():
            print(f"converse {point.target:15} c={c:<3} {point.rps:8,.0f} req/s  p50 {fmt(point.pct(0.5))} ms  "
                  f"p99 {fmt(point.pct(0.99))} ms  cpu/req {fmt(point.cpu_us)} µs  "
                  f"requests {point.requests}  errors {point.errors}", flush=True)
        ratios = ratio_rows(points, proxies, ["litellm"])
        for row in ratios:
            print(f"{row['proxy']} vs {row['vs']}: req/s ×{row['rps_ratio']:.1f}, "
                  f"CPU per request ×{row['cpu_ratio']:.1f} less", flush=True)
        return {"litellm": stack, "concurrency": c, "rounds": args.rounds, "duration": args.duration,
                "points": [{"target": p.target, "requests": p.requests, "errors": p.errors, "rps": p.rps,
                            "p50_ms": p.pct(0.5), "p99_ms": p.pct(0.99), "cpu_us": _finite(p.cpu_us)}
                           for p in points.values()],
                "ratios": [{k: _finite(v) if isinstance(v, float) else v for k, v in row.items()}
                           for row in ratios]}
    finally:
        for stop in stops:
            stop()
        for child in children:
            child.terminate()
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--install-only", action="store_true",
                        help=f"install LiteLLM {LITELLM_VERSION} into {VENV.relative_to(REPO)} and stop")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per target, over all rounds")
    parser.add_argument("--max-requests", type=int, default=100_000, help="requests per target (upper bound)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (bench/rounds.py)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of uncounted load per target first")
    parser.add_argument("--modes", default="trust,sigv4", help="Cost Keeper auth modes")
    parser.add_argument("--no-floor", dest="floor", action="store_false")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.install_only:
        install()
        print(f"LiteLLM {LITELLM_VERSION} in {VENV}")
        return 0
    if not installed():
        print(f"LiteLLM {LITELLM_VERSION} is not installed in {VENV}: run `make bench-litellm` "
              f"(or `python -m bench.litellm --install-only` first)", file=sys.stderr)
        return 2
    try:
        import uvloop
        uvloop.install()  # the load client's loop, as in `make bench`
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="costkeeper-litellm-") as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    results["machine"] = {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}
    results["command"] = "make bench-litellm LITELLM_ARGS=" + shlex.quote(
        shlex.join(sys.argv[1:] if argv is None else argv))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if all(p["errors"] == 0 for p in results["points"]) else 1


if __name__ == "__main__":
    sys.exit(main())
