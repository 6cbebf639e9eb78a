"""Hold many concurrent TCP connections through the proxy to an echo origin.

Usage: many_clients.py COUNT PREFIX24 READY_FILE RELEASE_FILE [TIMEOUT]

Phase 1 opens COUNT connections to random addresses of PREFIX24 (e.g.
``10.77.2``) and random ports, and checks one echo on each; then it writes
READY_FILE and waits (bounded) for RELEASE_FILE.  Phase 2 echoes again on
every connection, half-closes it and expects the origin's ``BYE`` trailer
after its own EOF.  Prints a JSON summary; exit 0 only if every connection
passed both phases.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, msg: bytes) -> bool:
    writer.write(msg)
    await writer.drain()
    got = await reader.readexactly(len(msg))
    return got == msg


async def main() -> int:
    count, prefix = int(sys.argv[1]), sys.argv[2]
    ready, release = Path(sys.argv[3]), Path(sys.argv[4])
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 60.0
    rng = random.Random()
    sem = asyncio.Semaphore(200)  # connect in waves, hold all at once

    async def open_one(i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        host, port = f"{prefix}.{rng.randrange(1, 255)}", rng.randrange(1024, 65000)
        async with sem:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 20)
                if await asyncio.wait_for(echo(r, w, b"one %d\n" % i), 20):
                    return r, w
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                pass
        return None

    t0 = time.monotonic()
    conns = await asyncio.gather(*(open_one(i) for i in range(count)))
    ok1 = sum(c is not None for c in conns)
    t1 = time.monotonic()
    ready.write_text(json.dumps({"open": ok1}))
    deadline = time.monotonic() + timeout
    while not release.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)

    async def finish(i: int, c: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> bool:
        if c is None:
            return False
        r, w = c
        try:
            async with sem:
                if not await asyncio.wait_for(echo(r, w, b"two %d\n" % i), 20):
                    return False
                w.write_eof()
                tail = await asyncio.wait_for(r.read(), 20)
                return tail.startswith(b"BYE ")
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            return False
        finally:
            w.close()

    results = await asyncio.gather(*(finish(i, c) for i, c in enumerate(conns)))
    ok2 = sum(results)
    print(json.dumps({"count": count, "phase1": ok1, "phase2": ok2,
                      "open_seconds": round(t1 - t0, 2)}))  # fmt: skip
    return 0 if ok1 == ok2 == count else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
