"""Who started which async invocation: the records that keep tenants' jobs apart.

Every caller's StartAsyncInvoke runs under the proxy's one AWS identity, so Bedrock's
own GetAsyncInvoke and ListAsyncInvokes answer for the whole account. The proxy
records the owner (org and app) of each invocation ARN it starts, and answers Get
and List only with the caller's own (`proxy/jobs.py`). Both stores implement
`InvocationStore`: SQLite in table `async_invocations` (`metering/sqlite_invocations.py`),
DynamoDB as one item per ARN (`metering/dynamodb_invocations.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Invocation", "InvocationStore"]


@dataclass(frozen=True, slots=True)
class Invocation:
    #: `arn:aws:bedrock:<region>:<account>:async-invoke/<id>`, as Bedrock returned it.
    arn: str
    org: str
    app: str
    #: The model id sent upstream (after a label resolved).
    model: str
    #: Epoch seconds when the proxy recorded it.
    started_at: float

    def owned_by(self, org: str, app: str) -> bool:
        return (self.org, self.app) == (org, app)


@runtime_checkable
class InvocationStore(Protocol):
    async def record_invocation(self, invocation: Invocation) -> tuple[Invocation, bool]:
        """Keep `invocation` unless its ARN has a record: (the stored record, whether it
        is new). Bedrock answers a repeated `clientRequestToken` with the ARN it gave
        first, so a repeat finds the first record, whoever sent it."""
        ...

    async def invocations(self, arns: Sequence[str]) -> dict[str, Invocation]:
        """The records of those of `arns` that have one (any number of ARNs)."""
        ...
