"""`make demo`: what Cost Keeper is for, in one run of under a minute.

Starts a Bedrock Runtime simulator and a Cost Keeper proxy on loopback, issues a
key, and tells the story in five steps:

1. boto3, the Anthropic SDK (AnthropicBedrock) and LangChain go through the proxy
   unchanged: nothing but the endpoint differs from calling Bedrock;
2. org `demo` has a deliberately small daily quota on `premium` (Claude Haiku 4.5);
   the Anthropic SDK spends it, and the next request is answered by the fallback,
   Nova Lite, translated back into Claude's Messages format (`x-costkeeper-*` headers):
   premium is exhausted for the day, the dashboard's first fallback event;
3. boto3 spends the fallback's quota too: `ServiceQuotaExceededException`, and the
   second event (the chain is spent);
4. `costkeeper usage` shows the costs, and one Prometheus line the token counter;
5. the dashboard's URL, with its admin token.

`--keep` (`make demo-serve`) leaves the simulator, the proxy and the dashboard up
until Ctrl-C. `tests/e2e/test_demo.py` runs this script and checks the story.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import anthropic
import boto3
import botocore.config
import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from metering.leases import RECHECK  # noqa: E402
from tests.processes import Process, Proxy, costkeeper, start_proxy, start_simulator, words_for_half  # noqa: E402

#: Claude Haiku 4.5 is served only through inference profiles; a `us.` request falls
#: back in its routing scope, to `us.amazon.nova-lite-v1:0`.
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
NOVA_LITE, NOVA_MICRO = "amazon.nova-lite-v1:0", "us.amazon.nova-micro-v1:0"
#: Small daily quotas, each spent in about fifteen requests (`spend`). A model is spent, and its
#: scope falls back for the rest of the UTC day, once a request does not fit and 99 % of
#: its quota is used (budget leases, metering/leases.py): each quota is over 100 worst
#: cases of the smallest request, so the last one refused leaves less than 1 %.
DEMO_POLICY: dict[str, Any] = {
    "models": {"premium": CLAUDE, "standard": NOVA_LITE},
    "fallback": ["premium", "standard"],
    "orgs": {"demo": {"daily_quota_usd": {"premium": 0.02, "standard": 0.002}}},
}
MAX_TOKENS = 60
#: Bounds on the loops that spend a quota (they end far sooner).
MAX_REQUESTS = 40
#: A request refused or moved on a read of the store younger than this (one that missed
#: the last flush of the usage) is followed by one after it, which reads the store again.
STORE_RECHECK = RECHECK + 0.1
#: The longest answer the demo asks for.
MOST_WORDS = 2000
HEADERS = ("x-costkeeper-model-id", "x-costkeeper-fallback", "x-costkeeper-mode")


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def costkeeper_headers(headers: Any) -> str:
    return "  ".join(f"{name}: {headers.get(name)}" for name in HEADERS)


def boto3_client(key: dict[str, str]) -> Any:
    """bedrock-runtime as any application makes it; the endpoint comes from
    AWS_ENDPOINT_URL_BEDROCK_RUNTIME. One attempt: a demo shows errors as they are."""
    session = boto3.session.Session(aws_access_key_id=key["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=key["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    return session.client("bedrock-runtime", config=botocore.config.Config(retries={"total_max_attempts": 1}))


def anthropic_client(proxy: Proxy, key: dict[str, str]) -> anthropic.AnthropicBedrock:
    return anthropic.AnthropicBedrock(base_url=proxy.url, aws_access_key=key["AWS_ACCESS_KEY_ID"],
                                      aws_secret_key=key["AWS_SECRET_ACCESS_KEY"], aws_region="us-east-1",
                                      max_retries=0)


def converse(client: Any, model: str, prompt: str) -> Any:
    return client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": prompt}]}],
                           inferenceConfig={"maxTokens": MAX_TOKENS})


def unchanged_clients(proxy: Proxy, key: dict[str, str]) -> None:
    step("1. boto3, the Anthropic SDK and LangChain, unchanged (only the endpoint points at the proxy)")
    client = boto3_client(key)
    reply = converse(client, NOVA_MICRO, "Explain quotas in one paragraph.")
    print(f"boto3 Converse {NOVA_MICRO}: usage {reply['usage']}")
    print(f"  {costkeeper_headers(reply['ResponseMetadata']['HTTPHeaders'])}")
    stream = client.converse_stream(modelId=NOVA_MICRO, messages=[{"role": "user", "content": [{"text": "Count."}]}],
                                    inferenceConfig={"maxTokens": MAX_TOKENS})
    usage = next(event["metadata"]["usage"] for event in stream["stream"] if "metadata" in event)
    print(f"boto3 ConverseStream {NOVA_MICRO}: usage {usage}")
    raw = anthropic_client(proxy, key).messages.with_raw_response.create(
        model=CLAUDE, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "Name three rivers."}])
    message = raw.parse()
    print(f"Anthropic SDK messages.create {CLAUDE}: {message.type}, "
          f"{message.usage.input_tokens} in / {message.usage.output_tokens} out")
    print(f"  {costkeeper_headers(raw.headers)}")
    from langchain_aws import ChatBedrockConverse  # imported here: it takes a second or two

    chat = ChatBedrockConverse(model=NOVA_MICRO, region_name="us-east-1", max_tokens=MAX_TOKENS,
                               aws_access_key_id=key["AWS_ACCESS_KEY_ID"],  # type: ignore[arg-type]
                               aws_secret_access_key=key["AWS_SECRET_ACCESS_KEY"])  # type: ignore[arg-type]
    answer = chat.invoke("What is the capital of France?")
    print(f"LangChain ChatBedrockConverse {NOVA_MICRO}: usage {answer.usage_metadata}")


class Budget:
    """What the demo has spent of each quota, from the usage each response reports and the
    price table (a request that is moved spends its fallback's): each request asks for
    about half of what is left, in words the simulator answers exactly (`[[sim:words=N]]`,
    the stand-in for an agent that uses every token it asks for)."""

    def __init__(self, proxy: Proxy, admin_token: str, pricing: dict[str, Any]) -> None:
        self._proxy, self._token, self._pricing = proxy, admin_token, pricing
        self.spent: dict[str, int] = {}

    def _priced(self, model: str) -> str:
        """The id `model`'s price is kept under: a geo profile without a price of its own has its model's."""
        return model if model in self._pricing else model.split(".", 1)[1]

    def _price(self, model: str) -> tuple[int, int]:
        """pico-USD per input and output token."""
        price = self._pricing[self._priced(model)]
        return round(price["input"] * 1_000_000), round(price["output"] * 1_000_000)

    def words(self, label: str, model: str, most: int) -> int:
        """About half of what is left of `label`'s quota (kept under `model`), at most `most`."""
        left = round(DEMO_POLICY["orgs"]["demo"]["daily_quota_usd"][label] * 10**12) - self.spent.get(model, 0)
        return words_for_half(left, *self._price(model), most=most)

    def spend(self, served: str, input_tokens: int, output_tokens: int) -> None:
        price_in, price_out = self._price(served)
        model = self._priced(served)
        self.spent[model] = self.spent.get(model, 0) + input_tokens * price_in + output_tokens * price_out

    def exhausted(self, model: str) -> float | None:
        """The share of its quota `model` had spent when it was marked exhausted for `demo`, or None."""
        quotas = httpx.get(f"{self._proxy.admin_url}/v1/quotas", headers={"Authorization": f"Bearer {self._token}"},
                           timeout=5).json()
        (state,) = [state for scope in quotas["scopes"] for state in scope["models"] if state["model"] == model]
        return state["ratio"] if state["exhausted"] else None


def spend_premium(proxy: Proxy, key: dict[str, str], budget: Budget) -> None:
    quota = DEMO_POLICY["orgs"]["demo"]["daily_quota_usd"]["premium"]
    step(f"2. A ${quota} daily quota on premium ({CLAUDE}) is spent; the fallback answers")
    client = anthropic_client(proxy, key)
    translated, most = False, MOST_WORDS
    for number in range(1, MAX_REQUESTS + 1):
        words = budget.words("premium", CLAUDE, most)
        raw = client.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=words,
            messages=[{"role": "user", "content": f"Tell me fact {number}. [[sim:words={words}]]"}])
        message = raw.parse()
        served = raw.headers["x-costkeeper-model-id"]
        budget.spend(served, message.usage.input_tokens, message.usage.output_tokens)
        print(f"Anthropic SDK request {number:>2}: {costkeeper_headers(raw.headers)}  max_tokens {words}", flush=True)
        if raw.headers.get("x-costkeeper-fallback") != "true":
            continue
        if not translated:
            translated = True
            print(f"Served by {served}, translated back: the Anthropic SDK parsed a "
                  f"Claude Messages {message.type} (role {message.role}, stop_reason {message.stop_reason}, "
                  f"{message.usage.output_tokens} output tokens): {message.content[0].text[:48]!r}…")  # type: ignore[union-attr]
        ratio = budget.exhausted(CLAUDE)
        if ratio is not None:
            print(f"premium is spent ({ratio:.1%} of its quota): scope 'demo' falls back to standard until 00:00 UTC")
            return
        # Moved for itself: the next, smaller, is refused with the store read again.
        most = max(1, words // 2)
        time.sleep(STORE_RECHECK)
    raise SystemExit(f"premium was not spent in {MAX_REQUESTS} requests")


def spend_the_chain(key: dict[str, str], budget: Budget) -> None:
    quota = DEMO_POLICY["orgs"]["demo"]["daily_quota_usd"]["standard"]
    step(f"3. boto3 spends the fallback's ${quota} quota too (standard, {NOVA_LITE})")
    client = boto3_client(key)
    most = MOST_WORDS
    for number in range(1, MAX_REQUESTS + 1):
        words = budget.words("standard", NOVA_LITE, most)
        try:
            reply = client.converse(
                modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": f"Give me tip {number}. [[sim:words={words}]]"}]}],
                inferenceConfig={"maxTokens": words})
        except client.exceptions.ServiceQuotaExceededException as error:
            status, message = error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Message"]
            if budget.exhausted(NOVA_LITE) is None:  # refused for itself: a smaller one, the store read again
                most = max(1, words // 2)
                time.sleep(STORE_RECHECK)
                continue
            print(f"boto3 raised ServiceQuotaExceededException (HTTP {status}, not retried): {message}")
            return
        headers = reply["ResponseMetadata"]["HTTPHeaders"]
        budget.spend(headers["x-costkeeper-model-id"], reply["usage"]["inputTokens"], reply["usage"]["outputTokens"])
        print(f"boto3 Converse {CLAUDE} request {number:>2}: {costkeeper_headers(headers)}  maxTokens {words}",
              flush=True)
    raise SystemExit(f"the chain was not spent in {MAX_REQUESTS} requests")


def report(proxy: Proxy, admin_token: str) -> None:
    step("4. What it cost: costkeeper usage, and the token counter in /metrics")
    time.sleep(0.5)  # the recorder flushes every 0.1 s here
    print(costkeeper("usage", "--config", str(proxy.config_path), "--days", "1").stdout.rstrip())
    metrics = httpx.get(f"{proxy.admin_url}/metrics", headers={"Authorization": f"Bearer {admin_token}"},
                        timeout=5).text
    line = next(line for line in metrics.splitlines()
                if line.startswith("costkeeper_tokens_total{") and f'model="us.{NOVA_LITE}"' in line)
    print(f"\n{line}")


def serve_until_interrupted() -> None:
    print("\nThe simulator, the proxy and the dashboard stay up: Ctrl-C stops them.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print()


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo as Ctrl-C does, children included


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave everything up until Ctrl-C")
    parser.add_argument("--work", type=Path, default=REPO / ".demo", help="scratch directory (emptied first)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    # Ctrl-C even when started in the background of a non-interactive shell (`make demo-serve &`),
    # which starts a process with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    pricing = yaml.safe_load((REPO / "config.yaml").read_text())["pricing"]
    admin_token = secrets.token_urlsafe(24)
    print("Starting the Bedrock simulator and the Cost Keeper proxy …", flush=True)
    simulator: Process | None = None
    proxy: Proxy | None = None
    try:
        simulator = start_simulator(args.work)
        proxy = start_proxy(args.work, simulator.url, {"pricing": pricing, **DEMO_POLICY},
                            env={"COSTKEEPER_ADMIN_TOKEN": admin_token})
        print(f"simulator {simulator.url}   proxy {proxy.url}   admin {proxy.admin_url}")
        key = proxy.issue_key("demo", "notebook")
        print(f"costkeeper keys create --org demo --app notebook → {key['AWS_ACCESS_KEY_ID']}")
        os.environ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = proxy.url
        print(f"export AWS_ENDPOINT_URL_BEDROCK_RUNTIME={proxy.url}")
        unchanged_clients(proxy, key)
        budget = Budget(proxy, admin_token, pricing)
        spend_premium(proxy, key, budget)
        spend_the_chain(key, budget)
        report(proxy, admin_token)
        step("5. The dashboard (spend vs quota, today's fallbacks, charts)")
        print(f"{proxy.admin_url}/dashboard?token={admin_token}", flush=True)
        if args.keep:
            serve_until_interrupted()
    except KeyboardInterrupt:
        print("\nInterrupted.")
    finally:
        if proxy is not None:
            proxy.stop()
        if simulator is not None:
            simulator.stop()
    print("Stopped the simulator and the proxy.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
