"""A relayed body's generator is closed by the relay, not left to asyncio (issue #20).

A whole body in hand ends with its last bytes: the relay stops reading there. Left
suspended, `UpstreamResponse.chunks()` would be closed by asyncio's async-generator
finalizer hook once collected: a task and a write to the loop's self-pipe per request."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncGenerator
from typing import Any

from tests.proxy.test_forward_settlement import BEFORE_MIDNIGHT, Upstream, _exchange, _handler


def test_a_body_relayed_whole_leaves_no_generator_to_the_finalizer() -> None:
    handler, recorder, _ = _handler(Upstream(), [BEFORE_MIDNIGHT - 3600])
    finalized: list[AsyncGenerator[Any, None]] = []
    scope, receive, send, sent = _exchange()

    async def main() -> None:
        firstiter, finalizer = sys.get_asyncgen_hooks()

        def counted(agen: AsyncGenerator[Any, None]) -> None:
            finalized.append(agen)
            finalizer(agen)  # type: ignore[misc]

        sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=counted)  # the loop restores its own after run
        await handler(scope, receive, send)
        gc.collect()

    asyncio.run(main())
    assert sent[0]["status"] == 200 and sent[-1] == {"type": "http.response.body", "body": sent[-1]["body"],
                                                     "more_body": False}
    assert len(recorder.events) == 1
    assert [getattr(agen, "__qualname__", "?") for agen in finalized] == []
