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

This module runs the soak (processes, workers, samples); the traffic and its
tally are bench/soak_traffic.py, the criteria and the report bench/soak_verdict.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import httpx

from bench.memory import rss_kib
from bench.soak_traffic import (
    APPS,
    KEEPALIVE,
    KEEPALIVE_RACE,
    ORG,
    Result,
    Scenario,
    Tally,
    Unexpected,
    Worker,
    error_code,
    proxy_config,
)
from bench.soak_verdict import Sample, judge, proxy_log_problems, report, write_section
from tests.processes import REPO, Process, Proxy, base_env, costkeeper, start_proxy, start_simulator

#: Fault outcomes with no usage row: the proxy's own refusal of a bad signature, a
#: keep-alive race, and Bedrock's 4xx refusals (they bill nothing: UsageEvent.refused).
_NOT_METERED = frozenset({"InvalidSignatureException", KEEPALIVE, "ThrottlingException", "ValidationException"})


# ----------------------------------------------------------------- soak
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
            code = error_code(exc)
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
                # refusals by the proxy itself (signature, quota, rate limit) are not, nor
                # are Bedrock's own 4xx refusals, which bill nothing (UsageEvent.refused).
                if scenario.app == "faults" and outcome not in _NOT_METERED:
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
