"""A test origin: HTTP-ish and echo services on many addresses and ports.

Usage: origin_server.py SPEC [SPEC...] where SPEC is
``proto,host,port,name[,pp]`` (``pp``: expect a PROXY v1/v2 header).

TCP: if the request starts with ``GET`` it answers one HTTP response whose
body is ``origin=NAME port=P client=C dst=D``; otherwise it echoes every byte
and, after the client's EOF (half-close), sends ``BYE origin=NAME client=C``
and closes.  UDP: answers each datagram with ``origin=NAME client=C data=...``.
With ``pp``, C and D come from the PROXY header (else from the socket).
"""

from __future__ import annotations

import asyncio
import functools
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import cast

from wgpy.proxy import proxyproto


async def read_header(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    buf = b""
    for _ in range(64):  # bounded: a header is at most 232 bytes
        res = proxyproto.decode(buf) if buf else None
        if res is not None:
            info, used = res
            assert info is not None
            return f"{info.src[0]}:{info.src[1]}", f"{info.dst[0]}:{info.dst[1]}", buf[used:]
        chunk = await reader.read(256 - len(buf) if len(buf) < 256 else 1)
        if not chunk:
            raise ConnectionError("EOF before PROXY header")
        buf += chunk
    raise ConnectionError("no PROXY header")


def serve_tcp(
    name: str, pp: bool
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        client, dst, rest = f"{peer[0]}:{peer[1]}", f"{local[0]}:{local[1]}", b""
        try:
            if pp:
                client, dst, rest = await read_header(reader)
            first = rest or await reader.read(65536)
            if first.startswith(b"GET "):
                while b"\r\n\r\n" not in first and len(first) < 65536:
                    more = await reader.read(65536)
                    if not more:
                        break
                    first += more
                body = f"origin={name} port={local[1]} client={client} dst={dst}\n".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (len(body), body))  # fmt: skip
            else:
                data = first
                while data:
                    writer.write(data)
                    await writer.drain()
                    data = await reader.read(65536)
                writer.write(f"BYE origin={name} client={client}\n".encode())
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    return handle


class Udp(asyncio.DatagramProtocol):
    def __init__(self, name: str, pp: bool) -> None:
        self.name, self.pp = name, pp
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's transport has DatagramTransport's methods, but
        # asyncio's class does not derive from it: an isinstance check fails.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        client = f"{addr[0]}:{addr[1]}"
        if self.pp:
            try:
                res = proxyproto.decode(data)
            except proxyproto.ProxyHeaderError:
                res = None
            if res is None or res[0] is None:
                client = "NO-HEADER"
            else:
                info, used = res
                assert info is not None
                client, data = f"{info.src[0]}:{info.src[1]}", data[used:]
        reply = f"origin={self.name} client={client} data=".encode() + data
        assert self.transport is not None
        self.transport.sendto(reply, addr)


async def main(specs: list[str]) -> None:
    loop = asyncio.get_running_loop()
    for spec in specs:
        proto, host, port, name, *flags = spec.split(",")
        pp = "pp" in flags
        if proto == "tcp":
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            await asyncio.start_server(serve_tcp(name, pp), host, int(port), family=fam,
                                       backlog=4096, reuse_address=True)  # fmt: skip
        else:
            await loop.create_datagram_endpoint(functools.partial(Udp, name, pp),
                                                local_addr=(host, int(port)))  # fmt: skip
    print("origin ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
