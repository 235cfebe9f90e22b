"""Cost Keeper's own errors, shaped like Bedrock's so SDKs raise the named exception.

    BedrockError
    ├── ValidationException            400  malformed input, invalid model id, body too large
    ├── ServiceQuotaExceededException  400  daily quota spent on every model of the chain
    ├── ConflictException              400  a clientRequestToken another caller's job holds
    ├── AccessDeniedException          403
    ├── MissingAuthenticationTokenException 403
    ├── UnrecognizedClientException    403  unknown or revoked access key
    ├── InvalidSignatureException      403  bad signature, stale or future date
    ├── ResourceNotFoundException      404  an async invocation the caller did not start
    ├── UnknownOperationException      404  a path that is no Bedrock Runtime operation
    ├── RequestTimeoutException        408  a request body stalled (retried by SDKs)
    ├── ThrottlingException            429  (retried by SDKs)
    ├── InternalServerException        500
    └── ServiceUnavailableException    503  upstream unreachable (retried by SDKs)

botocore takes the error code from `x-amzn-ErrorType` up to the first `:` and the
message from the body's `message` (BEDROCK_WIRE.md §2.1). Upstream errors never go
through here: they pass to the client unchanged.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, ClassVar, TypeVar

from starlette.types import Send

from adapters.eventstream import exception_message

__all__ = [
    "BedrockError",
    "ValidationException",
    "ServiceQuotaExceededException",
    "ConflictException",
    "AccessDeniedException",
    "MissingAuthenticationTokenException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "UnknownOperationException",
    "ResourceNotFoundException",
    "RequestTimeoutException",
    "ThrottlingException",
    "InternalServerException",
    "ServiceUnavailableException",
    "error_parts",
    "refusal",
    "send_error",
]

_ERROR_TYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.bedrock/"


class BedrockError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "InternalServerException"
    #: lowerCamel union member used when the error must be sent inside an event stream.
    stream_member: ClassVar[str] = "internalServerException"
    #: Why, as a short label for logs and metrics (`refusal`); never sent to the client.
    reason: str = ""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class ValidationException(BedrockError):
    status, code, stream_member = 400, "ValidationException", "validationException"


class ServiceQuotaExceededException(BedrockError):
    status, code, stream_member = 400, "ServiceQuotaExceededException", "validationException"


class ConflictException(BedrockError):
    status, code = 400, "ConflictException"


class ResourceNotFoundException(BedrockError):
    status, code = 404, "ResourceNotFoundException"


class AccessDeniedException(BedrockError):
    status, code = 403, "AccessDeniedException"


class MissingAuthenticationTokenException(BedrockError):
    status, code = 403, "MissingAuthenticationTokenException"


class UnrecognizedClientException(BedrockError):
    status, code = 403, "UnrecognizedClientException"


class InvalidSignatureException(BedrockError):
    status, code = 403, "InvalidSignatureException"


class UnknownOperationException(BedrockError):
    status, code = 404, "UnknownOperationException"


class RequestTimeoutException(BedrockError):
    """Not one of Bedrock's modelled errors: the code botocore's standard retry mode and
    the AWS SDK for JavaScript v3 treat as transient, on the status the Anthropic SDK
    retries (BEDROCK_WIRE.md §2.1 lists 408 only for ModelTimeoutException, which would
    blame the model)."""

    status, code = 408, "RequestTimeoutException"


class ThrottlingException(BedrockError):
    status, code, stream_member = 429, "ThrottlingException", "throttlingException"


class InternalServerException(BedrockError):
    pass


class ServiceUnavailableException(BedrockError):
    status, code, stream_member = 503, "ServiceUnavailableException", "serviceUnavailableException"


_E = TypeVar("_E", bound=BedrockError)


def refusal(error: _E, reason: str) -> _E:
    """`error`, labelled with why (e.g. `unknown_key`) for the logs and metrics."""
    error.reason = reason
    return error


def new_request_id() -> str:
    return str(uuid.uuid4())


def error_parts(error: BedrockError, request_id: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, raw headers and body of the HTTP error response for `error`."""
    body = json.dumps({"message": error.message, **error.extra}, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-amzn-errortype", (error.code + _ERROR_TYPE_SUFFIX).encode()),
        (b"x-amzn-requestid", request_id.encode()),
    ]
    return error.status, headers, body


def stream_error_frame(error: BedrockError) -> bytes:
    """The same error as a final event-stream frame, for use after the 200 head went out."""
    return exception_message(error.stream_member, error.message, **error.extra)


async def send_error(send: Send, error: BedrockError, request_id: str | None = None, *,
                     close: bool = False) -> None:
    """Answer with `error` as Bedrock would. `close`: the body was not read (a refusal
    before it, a stalled or oversized one): the connection cannot carry another request,
    and a refused body is never read."""
    status, headers, payload = error_parts(error, request_id or new_request_id())
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
