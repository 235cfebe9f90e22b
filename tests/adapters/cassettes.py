"""Load the recorded Bedrock exchanges in `tests/fixtures/bedrock/` (vcrpy YAML).

Bodies come three ways (MANIFEST.md there): `body.string` as text (JSON),
`body.string` as `!!binary` (event streams; SafeLoader yields `bytes`), or
`parsed_body` (pydantic-ai's decoded JSON, replayed with `json.dumps`).
Header values are lists, sometimes of `!!binary` bytes.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml
from botocore.eventstream import EventStreamBuffer

__all__ = ["FIXTURES", "Interaction", "interaction", "load", "stream_events"]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "bedrock"

_OPERATIONS = {
    "invoke": "InvokeModel",
    "invoke-with-response-stream": "InvokeModelWithResponseStream",
    "converse": "Converse",
    "converse-stream": "ConverseStream",
    "count-tokens": "CountTokens",
}
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Interaction:
    name: str
    operation: str
    model_id: str
    request_body: bytes
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def is_event_stream(self) -> bool:
        content_type = next((v for k, v in self.headers.items() if k.lower() == "content-type"), "")
        return self.status == 200 and content_type.startswith("application/vnd.amazon.eventstream")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _body(message: dict[str, Any]) -> bytes:
    if "parsed_body" in message:
        return json.dumps(message["parsed_body"]).encode()
    body = message.get("body")
    if isinstance(body, dict):
        body = body.get("string")
    if body is None:
        return b""
    return body if isinstance(body, bytes) else str(body).encode()


def _route(uri: str) -> tuple[str, str]:
    # Split before unquoting: an ARN model id holds an encoded "/".
    _, model, encoded_id, action = urlsplit(uri).path.split("/")
    assert model == "model", uri
    return _OPERATIONS[action], unquote(encoded_id)


@cache
def load(relative: str) -> tuple[Interaction, ...]:
    """All interactions of one cassette, e.g. `load("openllmetry/test_prompt_cache.yaml")`."""
    with open(FIXTURES / relative, encoding="utf-8") as file:
        cassette = yaml.load(file, Loader=_Loader)
    out = []
    for number, exchange in enumerate(cassette["interactions"], start=1):
        request, response = exchange["request"], exchange["response"]
        operation, model_id = _route(request["uri"])
        out.append(
            Interaction(
                name=f"{relative}#{number}",
                operation=operation,
                model_id=model_id,
                request_body=_body(request),
                status=int(response["status"]["code"]),
                headers={name: ", ".join(_text(v) for v in values) for name, values in response["headers"].items()},
                body=_body(response),
            )
        )
    return tuple(out)


def interaction(name: str) -> Interaction:
    """`"dir/file.yaml#2"` → the second interaction of that cassette (`#1` if omitted)."""
    relative, _, number = name.partition("#")
    return load(relative)[int(number or 1) - 1]


def stream_events(item: Interaction) -> list[tuple[str, dict[str, Any]]]:
    """The decoded events of a recorded event stream: `(event type, payload)`;
    for InvokeModelWithResponseStream, the payload is the model-native chunk."""
    buffer = EventStreamBuffer()
    buffer.add_data(item.body)
    events = []
    for message in buffer:
        payload = json.loads(message.payload)
        if "bytes" in payload:
            payload = json.loads(base64.b64decode(payload["bytes"]))
        events.append((message.headers[":event-type"], payload))
    return events
