from __future__ import annotations

import json

import pytest

from adapters import family_of, llama
from adapters.headers import usage_from_invocation_metrics
from adapters.neutral import Message, NeutralRequest, Text, TranslationError
from adapters.usage import Usage
from tests.adapters.cassettes import interaction, stream_events


@pytest.mark.parametrize(
    "model_id",
    ["meta.llama3-70b-instruct-v1:0", "us.meta.llama3-3-70b-instruct-v1:0", "meta.llama4-scout-17b-instruct-v1:0",
     "meta.llama2-13b-chat-v1"],
)
def test_family(model_id: str) -> None:
    assert family_of(model_id) == "llama"


def test_usage_from_recorded_body() -> None:
    body = json.loads(interaction("openllmetry/test_meta_llama3_completion.yaml").body)
    assert llama.usage_from_body(body) == Usage(8, 35)
    assert llama.output_text(body).startswith("\nWhy did the opentelemetry span")


def test_recorded_stream_takes_the_first_prompt_count_and_the_last_generation_count() -> None:
    usage = None
    text = ""
    events = stream_events(interaction("dd-trace-py/meta_invoke_stream.yaml"))
    for _, chunk in events:
        usage = llama.usage_from_chunk(chunk, usage)
        text += llama.output_text(chunk)
    assert usage == Usage(10, 60)
    assert usage == usage_from_invocation_metrics(events[-1][1])
    assert text.startswith('\n\nThe phrase "lorem ipsum"')


@pytest.mark.parametrize(
    ("chunk", "before", "after"),
    [
        ({"generation": "x", "prompt_token_count": None, "generation_token_count": 7}, Usage(10, 6), Usage(10, 7)),
        ({"generation": "x", "prompt_token_count": 3, "generation_token_count": 1}, None, Usage(3, 1)),
        ({"generation": "x"}, Usage(1, 1), Usage(1, 1)),
        ({"generation_token_count": 4.0}, None, Usage(0, 4)),
    ],
)
def test_usage_from_chunk(chunk: dict[str, object], before: Usage | None, after: Usage) -> None:
    assert llama.usage_from_chunk(chunk, before) == after


SYSTEM_AND_TWO_TURNS = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nA joke?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"prompt": SYSTEM_AND_TWO_TURNS, "max_gen_len": 100, "temperature": 0.5, "top_p": 0.9},
            NeutralRequest(
                messages=(Message("user", (Text("Hi"),)), Message("assistant", (Text("Hello!"),)),
                          Message("user", (Text("A joke?"),))),
                system=(Text("Be brief."),), max_tokens=100, temperature=0.5, top_p=0.9,
            ),
        ),
        # Recorded requests send plain text: one user turn, and Llama's default length.
        (
            {"prompt": "Tell me a joke about opentelemetry"},
            NeutralRequest(messages=(Message("user", (Text("Tell me a joke about opentelemetry"),)),), max_tokens=512),
        ),
        # An unterminated assistant turn is a prefill.
        (
            {"prompt": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nCount<|eot_id|>"
                       "<|start_header_id|>assistant<|end_header_id|>\n\n1, 2,", "max_gen_len": 5},
            NeutralRequest(messages=(Message("user", (Text("Count"),)), Message("assistant", (Text("1, 2,"),))),
                           max_tokens=5),
        ),
    ],
)
def test_request_to_neutral(body: dict[str, object], expected: NeutralRequest) -> None:
    assert llama.request_to_neutral(body) == expected


def test_chat_template_round_trip() -> None:
    body = {"prompt": SYSTEM_AND_TWO_TURNS, "max_gen_len": 100, "temperature": 0.5, "top_p": 0.9}
    assert llama.request_from_neutral(llama.request_to_neutral(body)) == body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "<|begin_of_text|><|start_header_id|>ipython<|end_header_id|>\n\n{}<|eot_id|>"}, "prompt"),
        ({"prompt": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>junk"}, "prompt"),
        ({"prompt": "<|image|>What is this?", "images": ["aGk="]}, "images"),
        ({"max_gen_len": 5}, "prompt"),
        ({"prompt": "hi", "max_gen_len": "many"}, "max_gen_len"),
    ],
)
def test_request_refusals(body: dict[str, object], field: str) -> None:
    with pytest.raises(TranslationError) as caught:
        llama.request_to_neutral(body)
    assert (caught.value.family, caught.value.field) == ("llama", field)
