"""A shutdown does not wait for ever on an open response stream (ConverseStream,
InvokeModelWithResponseStream), and what such a stream used is never lost.

A Claude generation can stream for minutes; a pod is killed (SIGKILL) once its grace
period is over, and a stream cut that way is never metered. So `server.stream_drain_timeout`
seconds after SIGTERM, a response stream still open is ended as an upstream cut is: the
client gets a `serviceUnavailableException` frame (botocore raises it), the usage seen
so far is metered, flagged estimated, and the process flushes and exits 0.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import EventStreamError

from tests.conftest import TEST_PRICING
from tests.e2e.clients import NOVA, bedrock_client, wait_for_event
from tests.processes import Process, start_proxy, wait_for

pytestmark = pytest.mark.slow


def test_sigterm_cuts_an_open_response_stream_after_the_drain_timeout_and_meters_it(
        tmp_path: Path, simulator: Process) -> None:
    proxy = start_proxy(tmp_path, simulator.url, {"pricing": TEST_PRICING, "server": {"stream_drain_timeout": 1}})
    hold = uuid.uuid4().hex
    client = bedrock_client(proxy.issue_key("acme", "drained"), endpoint_url=proxy.url, read_timeout=60)
    stream = None
    try:
        response = client.converse_stream(modelId=NOVA, messages=[
            {"role": "user", "content": [{"text": f"[[sim:hold={hold}]] [[sim:words=2000]] tell me"}]}])
        request_id = response["ResponseMetadata"]["RequestId"]
        stream = response["stream"]
        events = iter(stream)
        assert "messageStart" in next(events)
        assert "contentBlockDelta" in next(events)  # then the upstream holds the rest
        proxy.popen.send_signal(signal.SIGTERM)
        with pytest.raises(EventStreamError) as raised:
            for _ in events:
                pass
        assert raised.value.response["Error"]["Code"] == "serviceUnavailableException"
        assert "shutting down" in str(raised.value)
        assert proxy.popen.wait(timeout=60) == 0, proxy.output()
        wait_for(lambda: "cutting 1 open stream" in proxy.output(), 10, "the cut to be logged")
        event = wait_for_event(proxy, request_id)  # stored by the shutdown's flush
        assert event.estimated and not event.hung_up and event.operation == "ConverseStream"
        assert event.input_tokens > 0 and event.output_tokens > 0
    finally:
        if stream is not None:
            stream.close()  # the cut stream's socket, not left to the garbage collector
        client.close()
        httpx.post(f"{simulator.url}/_sim/release/{hold}", timeout=5)
        proxy.stop()
