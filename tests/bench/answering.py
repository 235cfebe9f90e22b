"""A minimal HTTP/1.1 server for the load client's tests: it answers every request on a
keep-alive connection with a 200 of two bytes, after `before_answer(connection)` (the
connection's number, in order of arrival) if given."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["answering_server"]


async def answering_server(before_answer: Callable[[int], Awaitable[None]] | None = None) -> tuple[asyncio.Server, int]:
    """The server (use it as an async context manager) and its port on 127.0.0.1."""
    connections = [0]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = connections[0]
        connections[0] += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if before_answer is not None:
                    await before_answer(number)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]
