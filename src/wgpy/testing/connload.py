"""Many concurrent TCP connections, for the proxy benchmark (``bench/proxy.py``):

    python3 -m wgpy.testing.connload HOST PORT COUNT [--hold SECONDS]

opens COUNT connections to an echo server at once (at most 256 connects in
flight), sends 64 bytes on each and reads them back; prints ``HOLDING`` and
keeps them all open for --hold seconds; then echoes once more on every one
and prints one line of JSON: connections established, the seconds to open
them all and echo once, the seconds of the second echo on all, failures.
Bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

PAYLOAD = b"x" * 64


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(PAYLOAD)
    await writer.drain()
    got = b""
    while len(got) < len(PAYLOAD):
        chunk = await reader.read(len(PAYLOAD) - len(got))
        if not chunk:
            raise ConnectionError("closed")
        got += chunk


async def run(host: str, port: int, count: int, hold: float, timeout: float) -> dict[str, float]:
    gate = asyncio.Semaphore(256)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    failures = 0

    async def one() -> None:
        nonlocal failures
        try:
            async with gate:
                r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            await asyncio.wait_for(_echo(r, w), timeout)
            conns.append((r, w))
        except (OSError, TimeoutError, ConnectionError):
            failures += 1

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(count)))
    opened = time.monotonic() - t0
    print("HOLDING", flush=True)
    await asyncio.sleep(hold)
    t1 = time.monotonic()
    results = await asyncio.gather(*(asyncio.wait_for(_echo(r, w), timeout) for r, w in conns),
                                   return_exceptions=True)
    again = time.monotonic() - t1
    for _, w in conns:
        w.close()
    return {"established": float(len(conns)), "open_and_echo_s": opened, "echo_all_s": again,
            "failures": float(failures + sum(isinstance(x, BaseException) for x in results))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m wgpy.testing.connload")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p.add_argument("--hold", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=20.0)
    a = p.parse_args(argv)
    if not 0 < a.count <= 20000 or not 0 <= a.hold <= 60:
        p.error("COUNT must be 1-20000 and --hold 0-60")
    print(json.dumps(asyncio.run(run(a.host, a.port, a.count, a.hold, a.timeout))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
