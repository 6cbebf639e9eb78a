"""``wgpy socks``: a SOCKS5 and HTTP proxy into a userspace tunnel.

One listening port serves both protocols, told apart by the first byte a
client sends (5: SOCKS5; a letter: an HTTP request).  SOCKS5 (RFC 1928)
does CONNECT and UDP ASSOCIATE, with optional username/password (RFC
1929); names in requests are resolved through the tunnel's DNS (what
``socks5h://`` asks for).  The HTTP side does CONNECT (any TCP, e.g. HTTPS)
and forwards plain ``http://`` requests one per connection.  Errors get
the protocol's reply (SOCKS codes 1-8, HTTP 4xx/5xx) and a closed
connection; one client's garbage never affects another.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import signal
import socket
import sys
import textwrap
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from wgpy.protocol import ConfigError
from wgpy.userspace import aio, resolver, socks5
from wgpy.userspace.relay import RELAY_CHUNK, relay
from wgpy.userspace.socks5 import ProxyProtocolError
from wgpy.userspace.spec import parse_host_port
from wgpy.userspace.tunnel import Tunnel

log = logging.getLogger("wgpy.socks")

HANDSHAKE_TIMEOUT = 10.0  # seconds a client has to finish its request
MAX_CLIENTS = 1024
T = TypeVar("T")


@dataclass
class Auth:
    user: bytes
    password: bytes


def socks_code(exc: BaseException) -> int:
    """The SOCKS5 reply for a failed connect."""
    if isinstance(exc, ConnectionRefusedError):
        return socks5.CONNECTION_REFUSED
    if isinstance(exc, (TimeoutError, socket.gaierror)):
        return socks5.HOST_UNREACHABLE
    if isinstance(exc, OSError) and exc.errno == errno.ENETUNREACH:
        return socks5.NETWORK_UNREACHABLE
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.EHOSTDOWN):
        return socks5.HOST_UNREACHABLE
    return socks5.GENERAL_FAILURE


def http_error(exc: BaseException) -> bytes:
    if isinstance(exc, TimeoutError):
        return socks5.http_response(504, "Gateway Timeout", body=f"{exc}\n")
    return socks5.http_response(502, "Bad Gateway", body=f"{exc}\n")


class ProxyServer:
    """The proxy; ``serve`` runs it on an asyncio loop."""

    def __init__(self, tunnel: Tunnel, auth: Auth | None = None,
                 connect_timeout: float = 10.0) -> None:
        self.tunnel = tunnel
        self.auth = auth
        self.connect_timeout = connect_timeout
        self.clients = 0
        self.refused = 0
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> asyncio.Server:
        self.server = await asyncio.start_server(self._client, host, port,
                                                 limit=RELAY_CHUNK)
        return self.server

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if self.clients >= MAX_CLIENTS:
            self.refused += 1
            writer.close()
            return
        self.clients += 1
        try:
            first = await asyncio.wait_for(reader.read(1), HANDSHAKE_TIMEOUT)
            if not first:
                return
            if first[0] == socks5.VERSION:
                await self._socks(first, reader, writer)
            elif first.isalpha():
                await self._http(first, reader, writer)
            else:
                log.info("%s: neither SOCKS5 nor HTTP (first byte %d): closed", peer, first[0])
        except ProxyProtocolError as e:
            log.info("%s: %s", peer, e)
            if e.reply:
                with contextlib.suppress(OSError):
                    writer.write(e.reply)
                    await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError):
            log.info("%s: request incomplete after %g s: closed", peer, HANDSHAKE_TIMEOUT)
        except (ConnectionError, OSError) as e:
            log.info("%s: %s", peer, e)
        finally:
            self.clients -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- SOCKS5 ---------------------------------------------------------------------
    async def _socks(self, first: bytes, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        buf = bytearray(first)
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            greeting = await _read_until(reader, buf, socks5.parse_greeting)
            methods, used = greeting
            del buf[:used]
            writer.write(socks5.choose_method(methods, self.auth is not None))
            if self.auth is not None:
                user, password, used = await _read_until(reader, buf, socks5.parse_auth)
                del buf[:used]
                ok = socks5.check_credentials(user, password, self.auth.user,
                                              self.auth.password)
                writer.write(socks5.auth_reply(ok))
                if not ok:
                    await writer.drain()
                    raise ProxyProtocolError("wrong username or password")
            request, used = await _read_until(reader, buf, socks5.parse_request)
            del buf[:used]
        if request.command == socks5.CMD_UDP_ASSOCIATE:
            await self._udp_associate(reader, writer)
            return
        try:
            r2, w2 = await self.tunnel.open_connection(request.host, request.port,
                                                       timeout=self.connect_timeout)
        except (OSError, socket.gaierror) as e:
            log.info("CONNECT %s:%d: %s", request.host, request.port, e)
            raise ProxyProtocolError(f"CONNECT {request.host}:{request.port}: {e}",
                                     socks5.reply(socks_code(e))) from None
        host, port = w2.get_extra_info("sockname")
        writer.write(socks5.reply(socks5.SUCCEEDED, host, port))
        if buf:
            w2.write(bytes(buf))
        await relay(reader, writer, r2, w2)

    async def _udp_associate(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        client_ip = writer.get_extra_info("peername")[0]
        local_ip = writer.get_extra_info("sockname")[0]
        dgram = await aio.open_datagram(self.tunnel)
        relay = _UdpRelay(self.tunnel, dgram, client_ip)
        transport, _ = await loop.create_datagram_endpoint(lambda: relay,
                                                           local_addr=(local_ip, 0))
        try:
            host, port = transport.get_extra_info("sockname")[:2]
            writer.write(socks5.reply(socks5.SUCCEEDED, host, port))
            await writer.drain()
            back = asyncio.create_task(relay.from_tunnel())
            # The association lasts as long as its TCP connection (RFC 1928 7).
            while await reader.read(RELAY_CHUNK):
                pass
            back.cancel()
        finally:
            transport.close()
            dgram.close()

    # -- HTTP -------------------------------------------------------------------------
    async def _http(self, first: bytes, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        buf = bytearray(first)
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            req = await _read_until_head(reader, buf)
        del buf[: req.head_len]
        if self.auth is not None and not socks5.http_basic_ok(req, self.auth.user,
                                                                self.auth.password):
            raise ProxyProtocolError(
                "missing or wrong Proxy-Authorization",
                socks5.http_response(407, "Proxy Authentication Required",
                                     'Proxy-Authenticate: Basic realm="wgpy"\r\n'))
        if req.method == "CONNECT":
            try:
                host, port = parse_host_port(req.target)
            except ValueError as e:
                raise ProxyProtocolError(f"CONNECT {req.target[:80]!r}: {e}",
                                         socks5.http_response(400, "Bad Request")) from None
            try:
                r2, w2 = await self.tunnel.open_connection(host, port,
                                                           timeout=self.connect_timeout)
            except (OSError, socket.gaierror) as e:
                raise ProxyProtocolError(f"CONNECT {req.target}: {e}", http_error(e)) from None
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if buf:
                w2.write(bytes(buf))
            await relay(reader, writer, r2, w2)
            return
        await self._http_forward(req, buf, reader, writer)

    async def _http_forward(self, req: socks5.HttpRequest, rest: bytearray,
                            reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        url = urlsplit(req.target)
        if url.scheme != "http" or not url.hostname:
            raise ProxyProtocolError(f"{req.method} {req.target!r}: not an http:// URI",
                                     socks5.http_response(400, "Bad Request"))
        port = url.port or 80
        try:
            r2, w2 = await self.tunnel.open_connection(url.hostname, port,
                                                       timeout=self.connect_timeout)
        except (OSError, socket.gaierror) as e:
            raise ProxyProtocolError(f"{req.method} {req.target}: {e}", http_error(e)) from None
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        hop = {"proxy-authorization", "proxy-connection", "connection", "keep-alive"}
        lines = [f"{req.method} {path} {req.version}"]
        lines += [f"{k}: {v}" for k, v in req.headers if k.lower() not in hop]
        lines.append("Connection: close")
        w2.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + bytes(rest))
        await relay(reader, writer, r2, w2)


class _UdpRelay(asyncio.DatagramProtocol):
    """One UDP ASSOCIATE: the client's datagrams into the tunnel and back."""

    def __init__(self, tunnel: Tunnel, dgram: aio.DatagramEndpoint, client_ip: str) -> None:
        self.tunnel = tunnel
        self.dgram = dgram
        self.client_ip = client_ip
        self.client: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector transport is not registered as a DatagramTransport.
        self.transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[0] != self.client_ip:
            return  # only the client that asked may use the association
        self.client = (addr[0], addr[1])
        parsed = socks5.parse_udp(data)
        if parsed is None:
            return
        host, port, payload = parsed
        asyncio.get_running_loop().create_task(self._send(host, port, payload))

    async def _send(self, host: str, port: int, payload: bytes) -> None:
        try:
            if resolver.literal(host) is None:
                loop = asyncio.get_running_loop()
                host = (await loop.run_in_executor(None, self.tunnel.resolve, host))[0]
            self.dgram.sendto(payload, (host, port))
        except (OSError, socket.gaierror) as e:
            log.info("UDP to %s:%d: %s", host, port, e)

    async def from_tunnel(self) -> None:
        while True:
            try:
                data, (host, port) = await self.dgram.recvfrom()
            except OSError as e:
                if e.errno == errno.EBADF:
                    return
                continue  # an ICMP error for one destination: keep relaying
            if self.client is not None and self.transport is not None:
                self.transport.sendto(socks5.build_udp(host, port, data), self.client)


async def _read_until(reader: asyncio.StreamReader, buf: bytearray,
                      parse: Callable[[bytes], T | None]) -> T:
    while True:
        got = parse(bytes(buf))
        if got is not None:
            return got
        data = await reader.read(4096)
        if not data:
            raise asyncio.IncompleteReadError(bytes(buf), None)
        buf += data
        if len(buf) > socks5.MAX_HTTP_HEAD:
            raise ProxyProtocolError("request too long")


async def _read_until_head(reader: asyncio.StreamReader, buf: bytearray
                           ) -> socks5.HttpRequest:
    while True:
        req = socks5.parse_http_head(bytes(buf))
        if req is not None:
            return req
        data = await reader.read(4096)
        if not data:
            raise asyncio.IncompleteReadError(bytes(buf), None)
        buf += data


# -- the command ----------------------------------------------------------------------
USAGE_EPILOG = """\
The proxy listens on loopback by default. Anyone who can reach its port can
use the tunnel: listen on another address only with --auth-file.

Examples:
  wgpy socks wg0.conf &
  curl --socks5-hostname 127.0.0.1:1080 http://10.0.0.1/
  curl --proxy http://127.0.0.1:1080 https://intranet.example/
  ALL_PROXY=socks5h://127.0.0.1:1080 some-program

Exit status: 0 after SIGINT or SIGTERM, 1 on a configuration error.
"""


def read_auth(path: Path) -> Auth:
    """``USER:PASSWORD`` on the first line of ``path``."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", str(path)) from None
    user, sep, password = (lines[0] if lines else "").partition(":")
    if not sep or not user or len(user) > 255 or len(password) > 255:
        raise ConfigError("expected USER:PASSWORD (each 1-255 bytes) on the first line",
                          str(path), 1)
    return Auth(user.encode(), password.encode())


def socks_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="wgpy socks",
        description=textwrap.fill(
            "Run a SOCKS5 and HTTP proxy into a WireGuard tunnel, in userspace: no "
                    "TUN interface and no root. CONFIG is a wg-quick file; its Address is "
                    "the proxy's address inside the tunnel and its DNS servers resolve the "
                    "names clients ask for. SOCKS5 CONNECT and UDP ASSOCIATE (RFC 1928), "
                    "username/password (RFC 1929), HTTP CONNECT and plain http:// requests "
                    "are served on one port."),
        epilog=USAGE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", metavar="CONFIG", help="a wg-quick configuration file")
    parser.add_argument("-l", "--listen", default="127.0.0.1:1080", metavar="[HOST:]PORT",
                        help="where the proxy listens (default: 127.0.0.1:1080)")
    parser.add_argument("--auth-file", type=Path, metavar="FILE",
                        help="require USER:PASSWORD, read from the first line of FILE")
    parser.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="how long a connection through the tunnel may take (default 10)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every client's errors, not only the proxy's own")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="wgpy socks: %(message)s", stream=sys.stderr)
    try:
        host, port = _listen_address(args.listen)
        auth = read_auth(args.auth_file) if args.auth_file else None
        tunnel = Tunnel(args.config, timeout=args.connect_timeout)
    except (ConfigError, OSError) as e:
        sys.stderr.write(f"wgpy socks: {e}\n")
        return 1
    try:
        return asyncio.run(_serve(ProxyServer(tunnel, auth, args.connect_timeout), host, port,
                                  tunnel))
    finally:
        tunnel.close()


def _listen_address(value: str) -> tuple[str, int]:
    try:
        return parse_host_port(value, default_host="127.0.0.1")
    except ValueError as e:
        raise ConfigError(f"--listen: {e}") from None


async def _serve(proxy: ProxyServer, host: str, port: int, tunnel: Tunnel) -> int:
    try:
        server = await proxy.start(host, port)
    except OSError as e:
        sys.stderr.write(f"wgpy socks: cannot listen on {host}:{port}: {e.strerror}\n")
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()
    sys.stderr.write(f"wgpy socks: listening on {bound[0]}:{bound[1]} (SOCKS5 and HTTP); "
                     f"tunnel address {', '.join(tunnel.addresses)}, UDP port "
                     f"{tunnel.listen_port}\n")
    sys.stderr.flush()
    async with server:
        await stop.wait()
    return 0
