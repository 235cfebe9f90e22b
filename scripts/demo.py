"""`make demo`: the simulator, the proxy, real boto3 traffic, the usage report.

Starts a Bedrock Runtime simulator and a Cost Keeper proxy on loopback, issues
a key with `costkeeper keys create`, drives boto3 through the proxy with nothing
but `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` changed (all four inference operations,
Nova and Claude, streamed and not), prints `costkeeper usage`, and stops
everything it started.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import boto3
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.processes import costkeeper, start_proxy, start_simulator  # noqa: E402

MODELS = {"Nova": "us.amazon.nova-micro-v1:0", "Claude": "us.anthropic.claude-haiku-4-5-20251001-v1:0"}


def _body(family: str, prompt: str) -> bytes:
    if family == "Claude":
        return json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 60,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
    return json.dumps({"messages": [{"role": "user", "content": [{"text": prompt}]}],
                       "inferenceConfig": {"maxTokens": 60}}).encode()


def drive(client: object) -> None:
    messages = [{"role": "user", "content": [{"text": "Explain quotas in one paragraph."}]}]
    for family, model in MODELS.items():
        reply = client.converse(modelId=model, messages=messages)  # type: ignore[attr-defined]
        print(f"  {family:<7} Converse                       usage {reply['usage']}")
        stream = client.converse_stream(modelId=model, messages=messages)  # type: ignore[attr-defined]
        usage = next(e["metadata"]["usage"] for e in stream["stream"] if "metadata" in e)
        print(f"  {family:<7} ConverseStream                 usage {usage}")
        invoked = client.invoke_model(modelId=model, body=_body(family, "Name three rivers."))  # type: ignore[attr-defined]
        document = json.loads(invoked["body"].read())
        print(f"  {family:<7} InvokeModel                    usage {document['usage']}")
        streamed = client.invoke_model_with_response_stream(modelId=model, body=_body(family, "Count to five."))  # type: ignore[attr-defined]
        chunks = [json.loads(e["chunk"]["bytes"]) for e in streamed["body"]]
        metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
        print(f"  {family:<7} InvokeModelWithResponseStream  {len(chunks)} chunks, "
              f"input {metrics['inputTokenCount']}, output {metrics['outputTokenCount']}")


def main() -> int:
    work = REPO / ".demo"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    pricing = yaml.safe_load((REPO / "config.yaml").read_text())["pricing"]
    print("Starting the Bedrock simulator and the Cost Keeper proxy …")
    simulator = start_simulator(work)
    proxy = None
    try:
        proxy = start_proxy(work, simulator.url, {"pricing": pricing})
        print(f"  simulator {simulator.url}   proxy {proxy.url}   admin {proxy.admin_url}")
        key = proxy.issue_key("demo", "notebook")
        print(f"Issued a key for org 'demo', app 'notebook': {key['AWS_ACCESS_KEY_ID']}")
        os.environ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = proxy.url
        client = boto3.session.Session(
            aws_access_key_id=key["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=key["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        ).client("bedrock-runtime")
        print(f"boto3 through the proxy (AWS_ENDPOINT_URL_BEDROCK_RUNTIME={proxy.url}):")
        drive(client)
        time.sleep(0.5)  # let the recorder's next flush (every 0.1 s here) land
        print("\ncostkeeper usage --days 1 --by org,app,model:")
        print(costkeeper("usage", "--config", str(proxy.config_path), "--days", "1").stdout)
    finally:
        if proxy is not None:
            proxy.stop()
        simulator.stop()
    print("Stopped the simulator and the proxy.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
