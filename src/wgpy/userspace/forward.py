"""``wgpy forward``: port forwards through a userspace tunnel, both ways.

``-L [BIND:]PORT:HOST:PORT`` listens locally (loopback by default) and
connects through the tunnel to HOST:PORT for each client, as ``ssh -L``
and onetun do.  ``-R [ADDRESS:]PORT:HOST:PORT`` listens on the tunnel's
own address and connects each peer that comes in to HOST:PORT on this
machine, so a local service is reachable from the tunnel without a TUN
interface.  Either takes ``/udp``: each client (a source address and port)
then gets its own socket on the far side, forgotten after ``--udp-idle``
seconds of silence, as a NAT maps UDP flows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import signal
import socket
import sys
import textwrap
import time
import typing
from collections.abc import Coroutine
from typing import Any

from wgpy.protocol import ConfigError
from wgpy.userspace import aio, resolver
from wgpy.userspace.relay import relay
from wgpy.userspace.spec import Forward, parse_forward
from wgpy.userspace.tunnel import Tunnel

log = logging.getLogger("wgpy.forward")

UDP_IDLE = 120.0


class Forwarder:
    """All the forwards of one command, on one asyncio loop."""

    def __init__(self, tunnel: Tunnel, connect_timeout: float = 10.0,
                 udp_idle: float = UDP_IDLE) -> None:
        self.tunnel = tunnel
        self.connect_timeout = connect_timeout
        self.udp_idle = udp_idle
        self._closers: list[asyncio.Server | asyncio.BaseTransport | aio.TunnelServer
                            | aio.DatagramEndpoint] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def _resolved(self, host: str) -> str:
        if resolver.literal(host) is not None:
            return host
        loop = asyncio.get_running_loop()
        return (await loop.run_in_executor(None, self.tunnel.resolve, host))[0]

    # -- -L ---------------------------------------------------------------------------
    async def local(self, fwd: Forward) -> str:
        """Start a -L forward; returns what it listens on."""
        if fwd.udp:
            return await self._local_udp(fwd)

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                r2, w2 = await self.tunnel.open_connection(fwd.host, fwd.host_port,
                                                           timeout=self.connect_timeout)
            except (OSError, socket.gaierror) as e:
                log.warning("%s: %s", fwd, e)
                writer.transport.abort()  # a RST: the client sees the failure at once
                return
            try:
                await relay(reader, writer, r2, w2)
            finally:
                writer.close()

        server = await asyncio.start_server(client, fwd.bind, fwd.port)
        self._closers.append(server)
        return _name(server.sockets[0].getsockname())

    async def _local_udp(self, fwd: Forward) -> str:
        loop = asyncio.get_running_loop()
        target = (await self._resolved(fwd.host), fwd.host_port)
        flows: dict[tuple[str, int], aio.DatagramEndpoint] = {}
        seen: dict[tuple[str, int], float] = {}
        forwarder = self

        class Local(asyncio.DatagramProtocol):
            transport: asyncio.DatagramTransport

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                # asyncio's selector transport is not registered as a DatagramTransport.
                self.transport = typing.cast(asyncio.DatagramTransport, transport)

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                key = (addr[0], addr[1])
                seen[key] = time.monotonic()
                ep = flows.get(key)
                if ep is None:
                    forwarder.spawn(self._open(key, data))
                    return
                with contextlib.suppress(OSError):
                    ep.sendto(data, target)

            async def _open(self, key: tuple[str, int], first: bytes) -> None:
                ep = await aio.open_datagram(forwarder.tunnel)
                flows[key] = ep
                with contextlib.suppress(OSError):
                    ep.sendto(first, target)
                forwarder.spawn(self._back(key, ep))

            async def _back(self, key: tuple[str, int], ep: aio.DatagramEndpoint) -> None:
                try:
                    while True:
                        try:
                            async with asyncio.timeout(forwarder.udp_idle):
                                data, _ = await ep.recvfrom()
                        except TimeoutError:
                            if time.monotonic() - seen.get(key, 0) >= forwarder.udp_idle:
                                return
                            continue
                        except OSError:
                            return
                        seen[key] = time.monotonic()
                        self.transport.sendto(data, key)
                finally:
                    flows.pop(key, None)
                    ep.close()

        transport, _ = await loop.create_datagram_endpoint(Local, local_addr=(fwd.bind,
                                                                               fwd.port))
        self._closers.append(transport)
        return _name(transport.get_extra_info("sockname"))

    # -- -R ---------------------------------------------------------------------------
    async def remote(self, fwd: Forward) -> str:
        """Start a -R forward; returns what it listens on (inside the tunnel)."""
        bind = None if fwd.bind in ("", "0.0.0.0", "::", "*") else fwd.bind
        if fwd.udp:
            return await self._remote_udp(fwd, bind)

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                r2, w2 = await asyncio.wait_for(
                    asyncio.open_connection(fwd.host, fwd.host_port), self.connect_timeout)
            except (OSError, TimeoutError) as e:
                log.warning("%s: %s", fwd, e)
                writer.transport.abort()
                return
            try:
                await relay(reader, writer, r2, w2)
            finally:
                writer.close()

        server = await self.tunnel.start_server(client, fwd.port, bind)
        self._closers.append(server)
        addr = bind or ", ".join(self.tunnel.addresses)
        return f"{addr} port {server.port} (tunnel)"

    async def _remote_udp(self, fwd: Forward, bind: str | None) -> str:
        loop = asyncio.get_running_loop()
        ep = await aio.open_datagram(self.tunnel, fwd.port, bind)
        self._closers.append(ep)
        flows: dict[tuple[str, int], asyncio.DatagramTransport] = {}
        seen: dict[tuple[str, int], float] = {}

        class Back(asyncio.DatagramProtocol):
            def __init__(self, key: tuple[str, int]) -> None:
                self.key = key

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                seen[self.key] = time.monotonic()
                with contextlib.suppress(OSError):
                    ep.sendto(data, self.key)

        async def pump() -> None:
            while True:
                try:
                    data, src = await ep.recvfrom()
                except OSError:
                    if ep.ep.closed:
                        return
                    continue
                seen[src] = time.monotonic()
                transport = flows.get(src)
                if transport is None:
                    transport, _ = await loop.create_datagram_endpoint(
                        functools.partial(Back, src), remote_addr=(fwd.host, fwd.host_port))
                    flows[src] = transport
                transport.sendto(data)
                now = time.monotonic()
                for key in [k for k, t in seen.items() if now - t > self.udp_idle]:
                    seen.pop(key, None)
                    old = flows.pop(key, None)
                    if old is not None:
                        old.close()

        self.spawn(pump())
        return f"{bind or ', '.join(self.tunnel.addresses)} port {ep.port}/udp (tunnel)"

    # -- plumbing ------------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        for c in self._closers:
            c.close()
        for t in list(self._tasks):
            t.cancel()


def _name(sockname: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


USAGE_EPILOG = """\
Forwards:
  -L [BIND:]PORT:HOST:PORT[/udp]
      listen on BIND:PORT here (BIND: 127.0.0.1 unless given) and connect each
      client through the tunnel to HOST:PORT (a name resolves through the
      configuration's DNS servers).
  -R [ADDRESS:]PORT:HOST:PORT[/udp]
      listen on PORT of the tunnel's address (ADDRESS: one of the configuration's
      Address lines; all by default) and connect each peer that comes in to
      HOST:PORT on this machine.
  IPv6 addresses go in brackets: -L [::1]:8080:[fd00::1]:80.

Examples:
  wgpy forward wg0.conf -L 8080:10.0.0.1:80 -L 5353:10.0.0.1:53/udp
  wgpy forward wg0.conf -R 2222:127.0.0.1:22

Exit status: 0 after SIGINT or SIGTERM, 1 on a configuration error or a port
that cannot be opened.
"""


def forward_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="wgpy forward",
        description=textwrap.fill(
            "Forward ports through a WireGuard tunnel, in userspace: no TUN interface "
                    "and no root. CONFIG is a wg-quick file; its Address is this end's "
                    "address inside the tunnel."),
        epilog=USAGE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", metavar="CONFIG", help="a wg-quick configuration file")
    parser.add_argument("-L", dest="local", action="append", default=[], metavar="SPEC",
                        help="a local forward (see below); may repeat")
    parser.add_argument("-R", dest="remote", action="append", default=[], metavar="SPEC",
                        help="a reverse forward (see below); may repeat")
    parser.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="how long a connection may take to open (default 10)")
    parser.add_argument("--udp-idle", type=float, default=UDP_IDLE, metavar="SECONDS",
                        help=f"forget a UDP flow after this much silence (default {UDP_IDLE:g})")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each failed connection")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="wgpy forward: %(message)s", stream=sys.stderr)
    if not args.local and not args.remote:
        parser.error("nothing to forward: give at least one -L or -R")
    try:
        local = [parse_forward(s, "127.0.0.1") for s in args.local]
        remote = [parse_forward(s, "") for s in args.remote]
    except ValueError as e:
        sys.stderr.write(f"wgpy forward: {e}\n")
        return 1
    try:
        tunnel = Tunnel(args.config, timeout=args.connect_timeout)
    except (ConfigError, OSError) as e:
        sys.stderr.write(f"wgpy forward: {e}\n")
        return 1
    try:
        return asyncio.run(_serve(Forwarder(tunnel, args.connect_timeout, args.udp_idle),
                                  local, remote))
    finally:
        tunnel.close()


async def _serve(fw: Forwarder, local: list[Forward], remote: list[Forward]) -> int:
    try:
        for f in local:
            where = await fw.local(f)
            sys.stderr.write(f"wgpy forward: {where} -> {f.host}:{f.host_port}"
                             f"{'/udp' if f.udp else ''} through the tunnel\n")
        for f in remote:
            where = await fw.remote(f)
            sys.stderr.write(f"wgpy forward: {where} -> {f.host}:{f.host_port}"
                             f"{'/udp' if f.udp else ''} here\n")
    except (OSError, socket.gaierror) as e:
        sys.stderr.write(f"wgpy forward: {e}\n")
        fw.close()
        return 1
    sys.stderr.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    fw.close()
    return 0
