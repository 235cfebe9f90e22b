"""Property tests: the parsers that see hostile input raise only their documented errors.

A client controls the Authorization header and the raw path; whatever it sends,
`parse_authorization` raises a Bedrock-shaped 403 or returns a parsed value, and
`parse_route` raises a Bedrock-shaped 400/404 or returns a route whose model id
is in the safe charset — never another exception, never a hang.
"""

from __future__ import annotations

import re
import string

from hypothesis import example, given, settings
from hypothesis import strategies as st

from adapters.modelid import base_model_id, encode_model_id, is_valid_model_id
from proxy.errors import (
    BedrockError,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnknownOperationException,
    ValidationException,
)
from proxy.routing import parse_route
from proxy.sigv4 import SignedRequest, parse_authorization

_AUTH_PIECES = st.sampled_from([
    "AWS4-HMAC-SHA256 ", "Credential=", "CKIAEXAMPLE", "/20261123/us-east-1/bedrock/aws4_request", ", ",
    "SignedHeaders=", "host;x-amz-date", "Signature=", "0" * 64, "a" * 63, "/", ";", "=", " ", "\t", "\x00", "é",
])


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=300), st.lists(_AUTH_PIECES, max_size=14).map("".join)))
def test_authorization_parser_raises_only_auth_errors(header: str) -> None:
    try:
        parsed = parse_authorization(header)
    except (InvalidSignatureException, MissingAuthenticationTokenException):
        return
    assert "host" in parsed.signed_headers and len(parsed.signature) == 64


_PATH_PIECES = st.sampled_from([
    "/model/", "/invoke", "/converse", "/converse-stream", "/count-tokens", "/invoke-with-response-stream",
    "amazon.nova-lite-v1", "%3A0", ":0", "%2F", "..", "%2E%2E", "%0D%0A", "%00", "arn%3Aaws%3Abedrock", "/", "%",
    "%ZZ", "%FF", "guardrail/", "version/1/apply", "async-invoke", "é",
])


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["POST", "GET", "PUT", "DELETE"]),
       st.one_of(st.text(max_size=200).map(lambda t: "/" + t), st.lists(_PATH_PIECES, max_size=10).map("".join)))
def test_route_parser_raises_only_routing_errors(method: str, path: str) -> None:
    try:
        route = parse_route(method, path)
    except (UnknownOperationException, ValidationException):
        return
    if route.model_id is not None:
        assert is_valid_model_id(route.model_id)
        assert not set(route.model_id) & set("\r\n\x00 %\\")


_MODEL_CHARS = string.ascii_letters + string.digits + "._:/+-"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_MODEL_CHARS, min_size=1, max_size=120))
@example("jp.")  # a bare geo prefix once reduced to an empty base model id
def test_model_ids_round_trip_through_the_path_encoding(model_id: str) -> None:
    """What botocore's encoding produces, routing decodes back to the same id."""
    if not is_valid_model_id(model_id):
        return
    route = parse_route("POST", f"/model/{encode_model_id(model_id)}/converse")
    assert route.model_id == model_id
    assert base_model_id(model_id)  # never empty, never raises


#: `parse_authorization` before its scope was kept per client (issue #20): one expression, the whole value.
_WHOLE = re.compile(
    r"^AWS4-HMAC-SHA256\s+"
    r"Credential=(?P<key>[^/,\s]{1,128})/(?P<date>\d{8})/(?P<region>[a-z0-9-]{1,32})/"
    r"(?P<service>[a-z0-9-]{1,64})/aws4_request\s*,\s*"
    r"SignedHeaders=(?P<headers>[a-z0-9;:._-]{1,2048})\s*,\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


_VALID = ("AWS4-HMAC-SHA256 Credential=CKIAEXAMPLE/20261123/us-east-1/bedrock/aws4_request, "
          "SignedHeaders=host;x-amz-date, Signature=" + "0f" * 32)


def _outcome(header: str) -> object:
    try:
        return parse_authorization(header)
    except BedrockError as error:
        return type(error), error.message


@given(st.lists(_AUTH_PIECES | st.sampled_from([":authority", "x-amz-date;:authority", "２", "\n"]),
                max_size=14).map("".join) | st.text(max_size=80),
       st.sampled_from(["", " ", "\n", "\t "]))
@example(_VALID, "")
@example(_VALID.replace("host;", ":authority;"), " ")
@example(_VALID.replace("host;", ""), "")
@example(_VALID + "\n", "")
@example(_VALID.replace(", Sig", " ,\tSig"), "\n")
@example(_VALID[:-1], "")
@example(_VALID.replace("20261123", "２0261123"), "")
@example(_VALID[:-64] + "A" * 64, "")
@settings(max_examples=400, deadline=None)
def test_authorization_parser_reads_as_one_expression_over_the_whole_value(header: str, space: str) -> None:
    """Split at the signature, its scope kept per client, the parser accepts what the
    whole-value expression accepts and reads the same fields, again from the kept scope."""
    header = space + header + space
    match = _WHOLE.match(header.strip())
    for _ in range(2):
        outcome = _outcome(header)
        if match is None or not {"host", ":authority"} & set(match["headers"].split(";")):
            assert not isinstance(outcome, SignedRequest)
        else:
            assert outcome == SignedRequest(match["key"], match["date"], match["region"], match["service"],
                                            tuple(match["headers"].split(";")), match["signature"])
