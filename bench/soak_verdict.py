"""The soak's verdict (bench/soak.py): the criteria judged on the samples, the
tally and the proxy's log, and the section of bench/RESULTS.md that reports them."""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.report import sh
from bench.soak_traffic import KEEPALIVE, KEEPALIVE_RACE, SCENARIOS, Tally

START, END = "<!-- soak:start -->", "<!-- soak:end -->"
#: Samples whose median is "open fds after the warm-up" and "at the end".
FD_WINDOW = 5
#: Idle seconds after which every keep-alive connection has closed (uvicorn closes an
#: idle one after 5 s, on the proxy's data port and on the simulator's side of its pool).
IDLE_KEEPALIVE = 6.0


@dataclass
class Sample:
    """The proxy's RSS and open fds, `t` seconds into the soak."""

    t: float
    rss_kib: int
    fds: int


class SoakRun(Protocol):
    """What the verdict reads of the soak (bench/soak.py's `Soak`, which imports this module)."""

    tally: Tally
    samples: list[Sample]


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
    soak: SoakRun = results["soak"]
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
    soak: SoakRun = results["soak"]
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
