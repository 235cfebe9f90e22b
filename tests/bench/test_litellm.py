"""bench/litellm.py's pure parts (the comparison itself installs LiteLLM and is never run
here), and the load client's body check it relies on."""

from __future__ import annotations

import asyncio

import pytest

from bench.client import MODEL, Point, build_request, read_response
from bench.litellm import descendants, litellm_config, litellm_request, ratio_rows


def test_litellm_request_moves_the_path_under_bedrock_and_swaps_sigv4_for_the_bearer_key() -> None:
    raw = build_request(4000, "converse", None)
    out = litellm_request(raw, "sk-test")
    head, body = out.split(b"\r\n\r\n", 1)
    original_head, original_body = raw.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /bedrock" + original_head.split(b"\r\n")[0][5:]
    assert lines[0].startswith(b"POST /bedrock/model/us.anthropic.") and lines[0].endswith(b"/converse HTTP/1.1")
    assert [line for line in lines if line.lower().startswith(b"authorization:")] == [b"Authorization: Bearer sk-test"]
    kept = {line for line in original_head.split(b"\r\n")[1:] if not line.lower().startswith(b"authorization:")}
    assert kept <= set(lines)  # Host, X-Amz-Date, Content-Length… unchanged
    assert len(lines) == len(original_head.split(b"\r\n"))
    assert body == original_body


@pytest.mark.parametrize("raw", [b"POST /model/x/converse HTTP/1.1\r\nHost: h\r\n",  # no end of head
                                 b"POST /other HTTP/1.1\r\nAuthorization: a\r\n\r\n",  # not a Bedrock path
                                 b"POST /model/x/converse HTTP/1.1\r\nHost: h\r\n\r\n"])  # no Authorization
def test_litellm_request_refuses_what_it_cannot_rewrite(raw: bytes) -> None:
    with pytest.raises(ValueError):
        litellm_request(raw, "sk-test")


def test_litellm_config_lists_the_bench_model_under_its_bedrock_id_with_no_database_or_spend_logs() -> None:
    config = litellm_config(MODEL, "sk-test", "us-east-1")
    assert config["general_settings"] == {"master_key": "sk-test", "disable_spend_logs": True}
    (entry,) = config["model_list"]
    assert entry["model_name"] == MODEL and entry["litellm_params"]["model"] == f"bedrock/{MODEL}"
    assert "database_url" not in str(config).lower() and "callbacks" not in str(config)


def test_descendants_are_the_root_and_everything_below_it_only() -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 10, 13: 11, 20: 1, 21: 20}
    assert descendants(parents, 10) == {10, 11, 12, 13}
    assert descendants(parents, 21) == {21}
    assert descendants(parents, 99) == {99}  # gone: itself only
    assert descendants({5: 6, 6: 5}, 5) == {5, 6}  # a cycle (pid reuse mid-scan) ends


def test_ratio_rows_are_cost_keeper_over_litellm_for_throughput_and_litellm_over_cost_keeper_for_cpu() -> None:
    def point(name: str, requests: int, cpu: float) -> Point:
        return Point(name, "converse", 16, requests=requests, elapsed=2.0, cpu=cpu)

    points = {"proxy-trust": point("proxy-trust", 6000, 1.8), "litellm": point("litellm", 200, 3.0)}
    (row,) = ratio_rows(points, ["proxy-trust"], ["litellm"])
    assert row["proxy"] == "proxy-trust" and row["vs"] == "litellm"
    assert row["rps_ratio"] == pytest.approx(30.0)  # 3,000 ÷ 100 req/s
    assert row["cpu_ratio"] == pytest.approx(50.0)  # 15,000 ÷ 300 µs per request


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
])
def test_read_response_keeps_the_body_when_asked(response: bytes) -> None:
    async def read() -> tuple[int, int, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(response)
        reader.feed_eof()
        body = bytearray()
        status, _, size = await read_response(reader, body)
        return status, size, bytes(body)

    assert asyncio.run(read()) == (200, 5, b"hello")
