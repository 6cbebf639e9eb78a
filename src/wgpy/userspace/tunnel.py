"""``Tunnel``: a WireGuard tunnel inside the program, from a wg-quick file.

No TUN interface, no root: the WireGuard device (``wgpy.protocol``) and a
TCP/IP stack (``wgpy.netstack``) run in the process over one ordinary UDP
socket per address family (``engine``).  The ``[Interface]`` ``Address``
lines are the program's addresses inside the tunnel, ``DNS`` its name
servers, ``MTU`` its packet size; the peers are used as wg(8) would.
PostUp, Table and the other wg-quick keys that change the host are ignored
(there is no interface to change).

    with Tunnel("wg0.conf") as tunnel:
        with tunnel.create_connection(("10.0.0.1", 80)) as s:
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            print(s.recv(4096))
"""

from __future__ import annotations

import errno
import logging
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from wgpy.control.apply import apply_set
from wgpy.control.config import QuickConfig, parse_quick_config, to_uapi
from wgpy.control.keys import Key
from wgpy.control.uapi import UapiError, parse_set
from wgpy.io.udp import UdpBind
from wgpy.netstack import Ready, Stack, TcpConfig
from wgpy.netstack.tcp import error_for
from wgpy.protocol import ConfigError, Device
from wgpy.protocol.constants import DEFAULT_MTU
from wgpy.userspace import resolver
from wgpy.userspace.engine import Engine, Waiter
from wgpy.userspace.sockets import Address, TunnelListener, TunnelSocket, TunnelUdpSocket

if TYPE_CHECKING:
    import asyncio

    from wgpy.userspace.aio import TunnelServer

log = logging.getLogger("wgpy.userspace")

DEFAULT_TIMEOUT = 30.0
_DEFAULT = object()


def load_config(path: str | Path) -> QuickConfig:
    """Parse a wg-quick file for a userspace tunnel.

    :raises ConfigError: naming the file, the line and the reason; also when
        the file has no ``Address`` (the tunnel would have no address)."""
    p = Path(path)
    try:
        text_ = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read the configuration: {e.strerror}", str(p)) from None
    qc = parse_quick_config(text_, p, p.stem)
    if not qc.addresses:
        raise ConfigError("no Address in [Interface]: a userspace tunnel needs its own "
                          "address inside the tunnel", str(p))
    if qc.device.private_key is None:
        raise ConfigError("no PrivateKey in [Interface]", str(p))
    return qc


class Tunnel:
    """A running userspace WireGuard tunnel; see the module docstring.

    :param config: a wg-quick file (path), or one parsed by ``load_config``.
    :param timeout: the default of ``create_connection`` and name resolution
        (seconds; a peer that never completes a handshake fails within it).
    :param tcp: buffer sizes and timers of the TCP stack.
    """

    def __init__(self, config: str | Path | QuickConfig, *, timeout: float = DEFAULT_TIMEOUT,
                 tcp: TcpConfig | None = None) -> None:
        qc = config if isinstance(config, QuickConfig) else load_config(config)
        self.config = qc
        self.timeout = timeout
        self.dns = list(qc.dns)
        self.dns_search = list(qc.dns_search)
        self.addresses = [a.split("/")[0] for a in qc.addresses]
        mtu = qc.mtu or DEFAULT_MTU
        device = Device(secrets.token_bytes, mtu)
        try:
            apply_set(device, parse_set(to_uapi(qc.device)), time.monotonic(), time.time())
        except UapiError as e:
            raise ConfigError(str(e), str(qc.path)) from None
        port = qc.device.listen_port or 0
        try:
            bind = UdpBind.open(port)
        except OSError as e:
            raise OSError(e.errno, f"cannot bind UDP port {port}: {e.strerror}") from None
        device.listen_port = bind.port
        # The tunnel authenticates every packet (AEAD): the kernel's WireGuard
        # marks them CHECKSUM_UNNECESSARY, and so do we.
        stack = Stack(qc.addresses, mtu, secrets.token_bytes, tcp, verify_checksums=False)
        self.engine = Engine(device, stack, bind)
        self.engine.start()

    @property
    def listen_port(self) -> int:
        return self.engine.bind.port

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the tunnel; its connections end without a FIN (as a process exit)."""
        self.engine.close()

    # -- TCP -------------------------------------------------------------------------
    def create_connection(self, address: tuple[str, int], timeout: object = _DEFAULT,
                          source_address: tuple[str, int] | None = None) -> TunnelSocket:
        """Connect to ``address`` (host, port) through the tunnel, as
        ``socket.create_connection``: names are resolved by the tunnel's DNS
        servers, each address is tried in turn.  The socket's timeout is
        ``timeout`` (the tunnel's, by default).

        :raises TimeoutError: nothing answered in time; the message says
            whether the WireGuard handshake itself completed.
        :raises ConnectionRefusedError: the host answered with a RST.
        :raises OSError: EHOSTUNREACH when no peer's AllowedIPs cover it."""
        host, port = address
        t = self.timeout if timeout is _DEFAULT else timeout
        assert t is None or isinstance(t, (int, float))
        deadline = None if t is None else time.monotonic() + float(t)
        first: OSError | None = None
        for addr in self.resolve(host, timeout=t):
            left = None if deadline is None else max(0.001, deadline - time.monotonic())
            try:
                return self._connect(addr, int(port), left,
                                     source_address[1] if source_address else 0, t)
            except OSError as e:
                first = first or e
        assert first is not None
        raise first

    def _connect(self, addr: str, port: int, timeout: float | None, local_port: int,
                 asked: float | None) -> TunnelSocket:
        engine = self.engine
        remote = resolver.literal(addr)
        assert remote is not None
        with engine.locked() as now:
            conn = engine.stack.connect(remote, port, now, local_port)
            sock = TunnelSocket(engine, conn, timeout)
            try:
                sock.wait_until(lambda: conn.established or conn.error is not None, timeout,
                           "connect")
            except TimeoutError:
                conn.user = None
                conn.abort(engine.now())
                raise TimeoutError(errno.ETIMEDOUT, self.explain_timeout(addr, port, asked)
                                   ) from None
            if conn.error is not None:
                code = conn.error
                conn.user = None
                exc = error_for(code)
                raise type(exc)(code, f"connecting to {_fmt(addr, port)}: {exc.strerror}")
        return sock

    def explain_timeout(self, addr: str, port: int, timeout: float | None) -> str:
        """Why a connection got no answer: the WireGuard side first."""
        target = _fmt(addr, port)
        device = self.engine.device
        packed = resolver.literal(addr)
        assert packed is not None
        n = int.from_bytes(packed, "big")
        peer = device.allowed_ips.lookup4(n) if len(packed) == 4 else device.allowed_ips.lookup6(n)
        after = f"after {timeout:.3g} s" if timeout is not None else ""
        if peer is None:
            return f"connecting to {target}: timed out {after}: no peer's AllowedIPs cover {addr}"
        name = Key(peer.public_key).to_base64()
        endpoint = f"{peer.endpoint[0]}:{peer.endpoint[1]}" if peer.endpoint else "no endpoint"
        if peer.keypairs.current is None:
            return (f"connecting to {target}: timed out {after}: no WireGuard handshake with "
                    f"peer {name} ({endpoint}) has completed; is the peer up and reachable, "
                    "and does it know this tunnel's public key?")
        return (f"connecting to {target}: timed out {after}: the WireGuard session with "
                f"peer {name} ({endpoint}) is up, but {target} did not answer")

    def listen(self, port: int = 0, address: str | None = None, backlog: int = 128
               ) -> TunnelListener:
        """Listen on ``port`` of the tunnel's address (``address``: one of them;
        None: all): peers connect to it as to any host."""
        local = resolver.literal(address) if address else None
        if address and local is None:
            raise OSError(errno.EINVAL, f"not an IP address: {address!r}")
        with self.engine.locked():
            lst = self.engine.stack.listen(port, local, backlog)
            return TunnelListener(self.engine, lst, None)

    # -- UDP, ICMP, names ----------------------------------------------------------------
    def udp_socket(self, port: int = 0, address: str | None = None) -> TunnelUdpSocket:
        """A UDP socket bound to ``port`` (0: ephemeral) of the tunnel's address."""
        local = resolver.literal(address) if address else None
        with self.engine.locked():
            ep = self.engine.stack.udp_bind(port, local)
            return TunnelUdpSocket(self.engine, ep, self._resolve_one, None)

    def ping(self, host: str, timeout: float = 2.0, payload: bytes = b"wgpy" * 14) -> float:
        """Send one ICMP echo request to ``host``; the round trip in seconds.

        :raises TimeoutError: no reply within ``timeout``."""
        remote = self._resolve_one(host)
        engine = self.engine
        waiter = _EchoWaiter(engine)
        with engine.locked() as now:
            ep = engine.stack.echo_open()
            ep.user = waiter
            try:
                engine.stack.echo_send(ep, remote, 1, payload)
                sent = now
                deadline = now + timeout
                while True:
                    while ep.replies:
                        src, seq, data = ep.replies.popleft()
                        if src == remote and seq == 1 and data == payload:
                            return engine.now() - sent
                    left = deadline - engine.now()
                    if left <= 0:
                        raise TimeoutError(f"no echo reply from {host} within {timeout:g} s")
                    engine.settle()
                    waiter.cond.wait(left)
            finally:
                engine.stack.echo_close(ep)

    def resolve(self, host: str, family: int = 0, timeout: object = _DEFAULT) -> list[str]:
        """The addresses of ``host``, resolved by the configuration's DNS
        servers through the tunnel (an address is returned as it is).

        :raises socket.gaierror: as ``getaddrinfo`` does."""
        t = self.timeout if timeout is _DEFAULT else timeout
        fams = self._families(family)
        return resolver.resolve(host, self.dns, self.dns_search, fams,
                                resolver.Transport(self.udp_socket, self._dns_tcp),
                                DEFAULT_TIMEOUT if t is None else float(t))  # type: ignore[arg-type]

    def _families(self, family: int) -> list[int]:
        have = [socket.AF_INET] if self.engine.stack.v4 else []
        if self.engine.stack.v6:
            have.append(socket.AF_INET6)
        return [f for f in have if family in (0, f)]

    def _resolve_one(self, host: str) -> bytes:
        packed = resolver.literal(host)
        if packed is not None:
            return packed
        addr = resolver.literal(self.resolve(host)[0])
        assert addr is not None
        return addr

    def _dns_tcp(self, server: str, port: int, timeout: float) -> TunnelSocket:
        return self.create_connection((server, port), timeout=timeout)

    # -- asyncio ----------------------------------------------------------------------
    async def open_connection(self, host: str, port: int, *, limit: int = 2 ** 16,
                              timeout: object = _DEFAULT
                              ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """``asyncio.open_connection`` through the tunnel."""
        from wgpy.userspace import aio

        t = self.timeout if timeout is _DEFAULT else timeout
        return await aio.open_connection(self, host, port, limit=limit,
                                         timeout=t)  # type: ignore[arg-type]

    async def start_server(self, client_connected_cb: Callable[
            [asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None],
            port: int = 0, host: str | None = None, *, limit: int = 2 ** 16,
            backlog: int = 128) -> TunnelServer:
        """``asyncio.start_server`` on the tunnel's address."""
        from wgpy.userspace import aio

        return await aio.start_server(self, client_connected_cb, port, host, limit=limit,
                                      backlog=backlog)


class _EchoWaiter(Waiter):
    def __init__(self, engine: Engine) -> None:
        self.cond = threading.Condition(engine.lock)

    def ready(self, flags: Ready) -> None:
        self.cond.notify_all()


def _fmt(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


__all__ = ["Address", "Tunnel", "TunnelListener", "TunnelSocket", "TunnelUdpSocket",
           "load_config"]
