"""The registry's asyncio shell: UDP and TCP listeners around ``Registry``.

UDP sockets are read with ``recvmsg`` and ``IP_PKTINFO``/``IPV6_RECVPKTINFO``
so that each datagram's arrival interface and destination address are known:
the interface decides whether an UPDATE came through the WireGuard tunnel,
and the destination becomes the reply's source address (correct replies from
wildcard listeners on multi-homed hosts).  Datagrams go through a bounded
queue (overflow drops, as UDP may) to one worker.  TCP connections carry
2-byte length-prefixed messages (RFC 1035 4.2.2); they are limited in number
and idle time, and never authorise UPDATEs.

The device's peer table is read over UAPI in an executor and cached for
``refresh`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.message
import dns.rcode

from wgpy.control.endpoint import format_endpoint, parse_endpoint
from wgpy.control.keys import Key
from wgpy.control.uapi import DeviceInfo, UapiError, UapiProtocolError
from wgpy.control.uapi_client import UapiClient
from wgpy.discovery.metrics import RegistrySnapshot, registry_families
from wgpy.discovery.records import IPAddress, canonical_endpoint
from wgpy.discovery.registry import PeerView, Registry, Snapshot, Source
from wgpy.protocol.events import Endpoint
from wgpy.service import notify
from wgpy.service.metrics import MetricsServer, on_loop
from wgpy.service.metrics import serve as serve_metrics

log = logging.getLogger("wgpy.registry")

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; CPython does not export it
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
QUEUE_SIZE = 256
MAX_TCP_CLIENTS = 64
TCP_IDLE = 10.0


@dataclass(frozen=True)
class SelfConfig:
    """Publish the registry's own key (``--self``)."""

    endpoint_host: IPAddress | None = None  # None: the address the query arrived on
    endpoint_port: int | None = None  # None: the device's listen port
    allowed_ips: tuple[str, ...] = ()


def public_key_of(private_key: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()


def peer_views(info: DeviceInfo) -> list[PeerView]:
    out = []
    for p in info.peers:
        ep: Endpoint | None = None
        if p.endpoint:
            try:
                host, port = parse_endpoint(p.endpoint)
                ep = canonical_endpoint(host.split("%")[0], port)
            except ValueError:
                ep = None
        out.append(PeerView(p.public_key, ep, tuple(p.allowed_ips)))
    return out


class RegistryServer:
    """Serve ``registry`` for ``interface`` on ``listen`` addresses (UDP and TCP)."""

    def __init__(
        self,
        registry: Registry,
        interface: str,
        listen: Sequence[Endpoint],
        uapi: UapiClient | None = None,
        self_config: SelfConfig | None = None,
        refresh: float = 0.5,
    ) -> None:
        self.registry = registry
        self.interface = interface
        self.listen = list(listen)
        self.uapi = uapi or UapiClient(interface)
        self.self_config = self_config
        self.refresh = refresh
        self._info: DeviceInfo | None = None
        self._info_at = float("-inf")
        self._info_error = ""
        self._lock = asyncio.Lock()
        self._ifindex = 0
        self._queue: asyncio.Queue[tuple[socket.socket, bytes, tuple[str, int], int, str]] = (
            asyncio.Queue(QUEUE_SIZE)
        )
        self._udp: list[socket.socket] = []
        self._tcp: list[asyncio.Server] = []
        self._tcp_slots = asyncio.Semaphore(MAX_TCP_CLIENTS)
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Bind every listener; OSError (with the address in the message) if one fails."""
        loop = asyncio.get_running_loop()
        try:
            for host, port in self.listen:
                sock = _udp_socket(host, port)
                self._udp.append(sock)
                loop.add_reader(sock.fileno(), self._readable, sock)
                server = await asyncio.start_server(
                    self._tcp_client, host, port, reuse_address=True
                )
                self._tcp.append(server)
        except OSError as e:
            self.close()
            where = format_endpoint(host, port)
            raise OSError(e.errno, f"cannot listen on {where}: {e.strerror}") from e
        self._tasks.append(asyncio.create_task(self._worker()))
        where = ", ".join(format_endpoint(h, p) for h, p in self.listen)
        log.info("serving zone %s for %s on %s (udp+tcp), ttl %ds",
                 self.registry.names.zone, self.interface, where, self.registry.ttl)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._udp:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(sock.fileno())
            sock.close()
        self._udp.clear()
        for server in self._tcp:
            server.close()
        self._tcp.clear()
        for task in self._tasks:
            task.cancel()

    async def serve(self, stop: asyncio.Event,
                    ready: Callable[[], None] | None = None) -> None:
        """Bind, call ``ready`` (once every listener is bound), serve until ``stop``."""
        await self.start()
        try:
            if ready is not None:
                ready()
            await stop.wait()
        finally:
            self.close()
            stats = ", ".join(f"{k}={v}" for k, v in sorted(self.registry.stats.items()))
            log.info("stopped; %s", stats or "no messages")

    def metrics_snapshot(self) -> RegistrySnapshot:
        """The counters and the last peer table, for a scrape (call on the loop)."""
        info = self._info
        views = peer_views(info) if info is not None else []
        return RegistrySnapshot(dict(self.registry.stats),
                                sum(1 for v in views if v.endpoint is not None), len(views),
                                len(self.registry.lan), info is not None)

    # -- the peer table ------------------------------------------------------

    async def snapshot_info(self) -> DeviceInfo | None:
        async with self._lock:
            now = time.monotonic()
            if now - self._info_at < self.refresh:
                return self._info
            loop = asyncio.get_running_loop()
            try:
                self._info = await loop.run_in_executor(None, self.uapi.get)
                if self._info_error:
                    log.info("%s is readable again", self.interface)
                self._info_error = ""
            except (UapiError, UapiProtocolError, OSError) as e:
                if str(e) != self._info_error:
                    log.error("cannot read %s: %s", self.interface, e)
                self._info_error = str(e)
                self._info = None
            self._info_at = now
            try:
                self._ifindex = socket.if_nametoindex(self.interface)
            except OSError:
                self._ifindex = 0  # no such interface here: nothing arrives through a tunnel
            return self._info

    def _snapshot(self, info: DeviceInfo, source: Source, local: str) -> Snapshot:
        peers = peer_views(info)
        me = None
        cfg = self.self_config
        if cfg is not None and info.private_key:
            host = cfg.endpoint_host
            if host is None and not source.via_tunnel and local:
                addr = ipaddress.ip_address(local.split("%")[0])
                host = None if addr.is_unspecified else addr
            port = cfg.endpoint_port or info.listen_port
            ep = canonical_endpoint(host, port) if host is not None and port else None
            me = PeerView(public_key_of(info.private_key), ep, cfg.allowed_ips)
        return Snapshot(peers, me)

    async def process(self, wire: bytes, source: Source, local: str) -> bytes | None:
        """One message in, the reply out (None: drop).  Never raises."""
        info = await self.snapshot_info()
        try:
            if info is None:
                return _servfail(wire)
            snapshot = self._snapshot(info, source, local)
            reply = self.registry.handle_wire(wire, source, snapshot, time.monotonic())
        except Exception:  # a bug must cost one answer, not the server
            log.exception("internal error answering %s:%d", source.ip, source.port)
            return _servfail(wire)
        self._log_update()
        return reply

    def _log_update(self) -> None:
        reg = self.registry
        if reg.last_refusal:
            log.warning("refused update: %s", reg.last_refusal)
            reg.last_refusal = ""
        if reg.last_accepted is not None:
            key, lan = reg.last_accepted
            addrs = ", ".join(str(a) for a in lan.addresses) or "none"
            nat = lan.nat.value if lan.nat else "not reported"
            log.info("LAN candidates for %s: port %s, addresses %s, NAT %s",
                     Key(key).short_name(), lan.port, addrs, nat)
            reg.last_accepted = None

    # -- UDP ----------------------------------------------------------------

    def _readable(self, sock: socket.socket) -> None:
        for _ in range(64):  # bounded: let other work run
            try:
                data, anc, _flags, addr = sock.recvmsg(65535, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("recvmsg: %s", e)
                return
            ifindex, local = _pktinfo(anc)
            try:
                self._queue.put_nowait((sock, data, addr, ifindex, local))
            except asyncio.QueueFull:
                self.registry.stats["dropped.queue"] += 1

    async def _worker(self) -> None:
        while True:
            sock, data, addr, ifindex, local = await self._queue.get()
            ip = ipaddress.ip_address(addr[0].split("%")[0])
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            via = bool(self._ifindex) and ifindex == self._ifindex
            reply = await self.process(data, Source(ip, addr[1], via, "udp"), local)
            if reply is None:
                continue
            try:
                sock.sendmsg([reply], _reply_pktinfo(sock.family, local), 0, addr)
            except OSError as e:
                log.debug("sendmsg to %s: %s", addr, e)

    # -- TCP ----------------------------------------------------------------

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_slots.locked():
            self.registry.stats["dropped.tcp"] += 1
            writer.close()
            return
        async with self._tcp_slots:
            peer = writer.get_extra_info("peername")
            local = writer.get_extra_info("sockname")
            try:
                ip = ipaddress.ip_address(peer[0].split("%")[0])
                for _ in range(1000):  # bounded per connection
                    head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                    (length,) = struct.unpack("!H", head)
                    wire = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE)
                    reply = await self.process(wire, Source(ip, peer[1], False, "tcp"), local[0])
                    if reply is None:
                        break
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, OSError):
                pass
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()


def _udp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _pktinfo(anc: list[tuple[int, int, bytes]]) -> tuple[int, str]:
    """(arrival ifindex, destination address) from recvmsg ancillary data."""
    for level, kind, data in anc:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            ifindex, _spec, dst = struct.unpack("=i4s4s", data[:12])
            return ifindex, socket.inet_ntop(socket.AF_INET, dst)
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 20:
            dst6, ifindex6 = struct.unpack("=16sI", data[:20])
            return ifindex6, socket.inet_ntop(socket.AF_INET6, dst6)
    return 0, ""


def _reply_pktinfo(family: int, local: str) -> list[tuple[int, int, bytes]]:
    """Ancillary data that makes a reply leave from the address the query reached."""
    if not local:
        return []
    if family == socket.AF_INET:
        spec = socket.inet_pton(socket.AF_INET, local)
        return [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=i4s4s", 0, spec, bytes(4)))]
    addr = socket.inet_pton(socket.AF_INET6, local)
    return [(socket.IPPROTO_IPV6, IPV6_PKTINFO, struct.pack("=16sI", addr, 0))]


def _servfail(wire: bytes) -> bytes | None:
    try:
        query = dns.message.from_wire(wire)
    except Exception:  # noqa: BLE001 - garbage: drop
        return None
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.SERVFAIL)
    return response.to_wire()


def run(server: RegistryServer, metrics: str | None = None) -> int:
    """Run until SIGINT/SIGTERM; 0 on a clean stop, 1 if a listener (or the
    ``metrics`` endpoint, ``ADDR:PORT``) cannot be bound.  systemd is told
    READY=1 once every listener is bound, STOPPING=1 when a signal came."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        exporter: MetricsServer | None = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        zone = server.registry.names.zone.to_text(omit_final_dot=True)

        def ready() -> None:
            nonlocal exporter
            if metrics:
                exporter = serve_metrics(metrics, lambda: registry_families(
                    zone, on_loop(loop, server.metrics_snapshot)))
            notify.ready(f"serving {zone}")

        try:
            await server.serve(stop, ready)
        except OSError as e:
            log.error("%s", e.strerror or e)
            return 1
        finally:
            notify.stopping()
            if exporter is not None:
                exporter.close()
        return 0

    return asyncio.run(main())
