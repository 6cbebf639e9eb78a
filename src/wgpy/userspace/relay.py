"""Copying between two asyncio streams, both ways, with half-close."""

from __future__ import annotations

import asyncio

RELAY_CHUNK = 1 << 16


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until ``reader`` ends, then pass the end on (a FIN, not a close);
    a reset on either side resets the other."""
    try:
        while data := await reader.read(RELAY_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


async def relay(r1: asyncio.StreamReader, w1: asyncio.StreamWriter,
                r2: asyncio.StreamReader, w2: asyncio.StreamWriter) -> None:
    """Copy both ways until both directions have ended; then close ``w2``
    (the caller closes ``w1``)."""
    try:
        await asyncio.gather(pipe(r1, w2), pipe(r2, w1))
    finally:
        w2.close()
