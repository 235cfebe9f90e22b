"""In-process pieces: raw-path routing, directives, counting, hold gates, cache."""

from __future__ import annotations

import asyncio

import pytest

from simulator import anthropic, converse, nova
from simulator.cache import PromptCache
from simulator.control import NO_DIRECTIVES, Directives, HoldGates, parse_directives
from simulator.generate import PromptBuilder, complete
from simulator.routing import Route, match


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("POST", "/model/amazon.nova-lite-v1%3A0/invoke", Route("InvokeModel", "amazon.nova-lite-v1:0")),
    ("POST", "/model/us.anthropic.claude-x-v1:0/invoke-with-response-stream",
     Route("InvokeModelWithResponseStream", "us.anthropic.claude-x-v1:0")),
    ("POST", "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.m-v1%3A0/converse",
     Route("Converse", "arn:aws:bedrock:us-east-1:1:inference-profile/us.m-v1:0")),
    ("POST", "/model/m/converse-stream", Route("ConverseStream", "m")),
    ("POST", "/model/m/count-tokens", Route("CountTokens", "m")),
    ("POST", "/guardrail/g1/version/DRAFT/apply", Route("ApplyGuardrail", params=("g1", "DRAFT"))),
    ("POST", "/async-invoke", Route("StartAsyncInvoke")),
    ("GET", "/async-invoke", Route("ListAsyncInvokes")),
    ("GET", "/async-invoke/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aasync-invoke%2Fabc",
     Route("GetAsyncInvoke", params=("arn:aws:bedrock:us-east-1:1:async-invoke/abc",))),
    ("GET", "/model/m/invoke", None),
    ("POST", "/model/arn:aws:bedrock:us-east-1:1:inference-profile/x/invoke", None),  # raw `/` splits
    ("POST", "/model//invoke", None),
    ("POST", "/", None),
])
def test_routing(method: str, path: str, expected: Route | None) -> None:
    assert match(method, path) == expected


def test_directives() -> None:
    assert parse_directives(b'{"text":"plain"}') is NO_DIRECTIVES
    body = b'{"text":"a [[sim:cut]] b [[sim:hold=k-1.x]] [[sim:words=12]] [[sim:stream-error]] [[sim:nope]]"}'
    assert parse_directives(body) == Directives(cut=True, hold="k-1.x", words=12, stream_error=True)
    assert parse_directives(b"[[sim:words=abc]]") is NO_DIRECTIVES
    assert parse_directives(b"[[sim:hold-last=k2]]") == Directives(hold_last="k2")


def test_claude_and_converse_count_the_same() -> None:
    claude = anthropic.parse_request({"anthropic_version": "v", "max_tokens": 9, "system": "Be brief.",
                                      "messages": [{"role": "user", "content": "Hi there"}]})
    conversed = converse.parse_request({"system": [{"text": "Be brief."}],
                                        "messages": [{"role": "user", "content": [{"text": "Hi there"}]}],
                                        "inferenceConfig": {"maxTokens": 9}})
    native = nova.parse_request({"system": [{"text": "Be brief."}],
                                 "messages": [{"role": "user", "content": [{"type": "x", "text": "Hi there"}]}],
                                 "inferenceConfig": {"maxTokens": 9}})
    assert claude == conversed == native
    assert claude.tokens == 4 + 3 + 3 + 2  # prompt + message + "Be brief." + "Hi there"


def test_token_count_rounds_utf8_bytes_up() -> None:
    builder = PromptBuilder()
    builder.text("é")  # 2 bytes → 1 token
    builder.text("12345")  # 5 bytes → 2 tokens
    assert builder.build(1).tokens == 4 + 1 + 2


def test_cache_longest_prefix_wins() -> None:
    def points(*texts: str) -> tuple:
        builder = PromptBuilder()
        for text in texts:
            builder.text(text)
            builder.cache_point()
        return builder.build(10).cache_points

    cache = PromptCache()
    assert cache.resolve("m", points("a" * 40)) == (0, 14)
    assert cache.resolve("m", points("a" * 40, "b" * 40)) == (14, 10)
    assert cache.resolve("m", points("a" * 40, "b" * 40)) == (24, 0)
    assert cache.resolve("other", points("a" * 40)) == (0, 14)


def test_completion_respects_max_tokens() -> None:
    prompt = converse.parse_request({"messages": [{"role": "user", "content": [{"text": "x"}]}],
                                     "inferenceConfig": {"maxTokens": 3}})
    capped = complete(prompt, Directives(words=10), (0, 0), seed=0)
    assert (capped.usage.output_tokens, capped.stop_reason, len(capped.deltas)) == (3, "max_tokens", 3)
    exact = complete(prompt, Directives(words=3), (0, 0), seed=0)
    assert exact.stop_reason == "end_turn" and exact.text.endswith(".")
    assert complete(prompt, NO_DIRECTIVES, (0, 0), seed=1).text != complete(prompt, NO_DIRECTIVES, (0, 0), 2).text


def test_hold_gates() -> None:
    async def scenario() -> None:
        gates = HoldGates()
        waiter = asyncio.create_task(gates.wait("k"))
        await asyncio.sleep(0)
        assert gates.waiting() == {"k": 1}
        assert gates.release("k") == 1
        assert await waiter is True
        assert gates.waiting() == {}
        assert gates.release("early") == 0
        assert await gates.wait("early", limit=1) is True  # remembered
        assert await gates.wait("early", limit=0.01) is False  # consumed
    asyncio.run(scenario())
