"""The registry's asyncio shell: UDP and TCP listeners around ``Registry``.

UDP sockets are read with ``recvmsg`` and ``IP_PKTINFO``/``IPV6_RECVPKTINFO``
so that each datagram's arrival interface and destination address are known:
the interface decides whether an UPDATE came through the WireGuard tunnel,
and the destination becomes the reply's source address (correct replies from
wildcard listeners on multi-homed hosts).  Datagrams go through a bounded
queue (overflow drops, as UDP may) to one worker.  TCP connections carry
2-byte length-prefixed messages (RFC 1035 4.2.2); they are limited in number
and idle time.  A TCP listener on an address of the WireGuard interface is
bound to that interface (``SO_BINDTODEVICE``), so every connection it
accepts came through the tunnel and may carry UPDATEs; other TCP listeners
never authorise them.

The device's peer table is read over UAPI in an executor and cached for
``refresh`` seconds.  Every ``refresh`` seconds the shell also advances the
registry's clock (``Registry.observe``: leases, relay expiry, zone
versions), sends NOTIFY to the secondaries when the serial moved
(``notify.NotifySchedule``: retries with backoff), binds or closes relay
sockets (``relay_server.RelayServer``) and writes the registry's log lines.
SIGUSR1 logs one line of counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import signal
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.opcode
import dns.rcode

from wgpy.control.endpoint import format_endpoint, parse_endpoint
from wgpy.control.uapi import DeviceInfo, UapiError, UapiProtocolError
from wgpy.control.uapi_client import UapiClient
from wgpy.discovery.metrics import RegistrySnapshot, registry_families
from wgpy.discovery.notify import NotifySchedule
from wgpy.discovery.records import IPAddress, canonical_endpoint
from wgpy.discovery.registry import PeerView, Registry, Snapshot, Source, unverified_keyring
from wgpy.discovery.relay_server import RelayServer
from wgpy.discovery.update import interface_addresses
from wgpy.protocol.events import Endpoint
from wgpy.service import notify
from wgpy.service.metrics import MetricsServer, on_loop
from wgpy.service.metrics import serve as serve_metrics

log = logging.getLogger("wgpy.registry")

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; CPython does not export it
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
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
    """Serve ``registry`` for ``interface`` on ``listen`` addresses (UDP and TCP).

    :param secondaries: where to send NOTIFY when the serial moves.
    """

    def __init__(
        self,
        registry: Registry,
        interface: str,
        listen: Sequence[Endpoint],
        uapi: UapiClient | None = None,
        self_config: SelfConfig | None = None,
        refresh: float = 0.5,
        secondaries: Sequence[Endpoint] = (),
    ) -> None:
        self.registry = registry
        self.interface = interface
        self.listen = list(listen)
        self.uapi = uapi or UapiClient(interface)
        self.self_config = self_config
        self.refresh = refresh
        self.notify = NotifySchedule(list(secondaries))
        self._announced: int | None = None
        self._notify_wake = asyncio.Event()
        self._notify_socks: dict[int, socket.socket] = {}
        self.relay: RelayServer | None = None
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
            # pyroute2's blocking API runs its own loop: not in this thread
            found = await loop.run_in_executor(None, interface_addresses, self.interface)
            tunnel = {str(a) for a in found}
        except OSError:
            tunnel = set()
        try:
            for host, port in self.listen:
                sock = _udp_socket(host, port)
                self._udp.append(sock)
                loop.add_reader(sock.fileno(), self._readable, sock)
                via = host in tunnel
                tcp = _tcp_listener(host, port, self.interface if via else None)

                async def client(r: asyncio.StreamReader, w: asyncio.StreamWriter,
                                 via: bool = via) -> None:
                    await self._tcp_client(r, w, via)

                self._tcp.append(await asyncio.start_server(client, sock=tcp))
            for host, _port in self.notify_sources():
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                if family not in self._notify_socks:
                    nsock = socket.socket(family, socket.SOCK_DGRAM)
                    self._notify_socks[family] = nsock
                    nsock.bind((host, 0))
                    nsock.setblocking(False)
                    loop.add_reader(nsock.fileno(), self._notify_answers, nsock)
        except OSError as e:
            self.close()
            where = format_endpoint(host, port)
            raise OSError(e.errno, f"cannot listen on {where}: {e.strerror}") from e
        if self.registry.relay is not None:
            self.relay = RelayServer(self.registry.relay, loop)
        self._tasks.append(asyncio.create_task(self._worker()))
        self._tasks.append(asyncio.create_task(self._clock()))
        if self.notify.targets:
            self._tasks.append(asyncio.create_task(self._notifier()))
        where = ", ".join(format_endpoint(h, p) for h, p in self.listen)
        log.info("serving zone %s for %s on %s (udp+tcp), ttl %ds",
                 self.registry.names.zone, self.interface, where, self.registry.ttl)
        if self.registry.relay is not None:
            t = self.registry.relay
            log.info("relay on %s, ports %d-%d", ", ".join(t.addresses.values()),
                     t.ports[0], t.ports[-1])

    def notify_sources(self) -> list[Endpoint]:
        """One source per family of the secondaries: a specific listen address of
        that family (what the secondary has as our address), else the wildcard."""
        out: list[Endpoint] = []
        for target, _ in (t.endpoint for t in self.notify.targets):
            v6 = ":" in target
            if any((":" in h) == v6 for h, _ in out):
                continue
            specific = [h for h, _ in self.listen if (":" in h) == v6 and
                        not ipaddress.ip_address(h).is_unspecified]
            out.append((specific[0] if specific else ("::" if v6 else "0.0.0.0"), 0))
        return out

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in [*self._udp, *self._notify_socks.values()]:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(sock.fileno())
            sock.close()
        self._udp.clear()
        self._notify_socks.clear()
        for server in self._tcp:
            server.close()
        self._tcp.clear()
        for task in self._tasks:
            task.cancel()
        if self.relay is not None:
            self.relay.close()

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
            log.info("stopped; %s", self.stats_line() or "no messages")

    def stats_line(self) -> str:
        """Every counter as ``key=value`` (the SIGUSR1 line)."""
        return " ".join(f"{k}={v}" for k, v in sorted(self.counters().items()))

    def counters(self) -> dict[str, int]:
        """Every counter: the registry's, the relay's (``relay.``), NOTIFY's
        (``notify.``) and the zone's serial; the stats line and /metrics show these."""
        stats = dict(self.registry.stats)
        stats["serial"] = self.registry.journal.serial
        if self.registry.relay is not None:
            stats.update({f"relay.{k}": v for k, v in self.registry.relay.counters().items()})
        if self.relay is not None:
            stats.update({f"relay.send_error.{k}": v for k, v in self.relay.send_errors.items()})
        stats.update({f"notify.{k}": v for k, v in self.notify.stats.items()})
        return stats

    def metrics_snapshot(self) -> RegistrySnapshot:
        """The counters and the last peer table, for a scrape (call on the loop)."""
        info = self._info
        views = peer_views(info) if info is not None else []
        return RegistrySnapshot(self.counters(),
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

    def _snapshot(self, info: DeviceInfo, source: Source | None, local: str) -> Snapshot:
        peers = peer_views(info)
        me = None
        cfg = self.self_config
        if cfg is not None and info.private_key:
            host = cfg.endpoint_host
            if host is None and source is not None and not source.via_tunnel and local:
                addr = ipaddress.ip_address(local.split("%")[0])
                host = None if addr.is_unspecified else addr
            port = cfg.endpoint_port or info.listen_port
            ep = canonical_endpoint(host, port) if host is not None and port else None
            me = PeerView(public_key_of(info.private_key), ep, cfg.allowed_ips)
        return Snapshot(peers, me)

    async def process(self, wire: bytes, source: Source, local: str) -> list[bytes]:
        """One message in, the replies out (none: drop).  Never raises."""
        info = await self.snapshot_info()
        try:
            if info is None:
                reply = _servfail(wire)
                return [reply] if reply else []
            snapshot = self._snapshot(info, source, local)
            replies = self.registry.handle_all(wire, source, snapshot, time.monotonic(),
                                               time.time())
        except Exception:  # a bug must cost one answer, not the server
            log.exception("internal error answering %s:%d", source.ip, source.port)
            reply = _servfail(wire)
            return [reply] if reply else []
        self._housekeeping()
        return replies

    def _housekeeping(self) -> None:
        """Relay sockets for new or ended allocations; the registry's log lines."""
        reg = self.registry
        if self.relay is not None:
            self.relay.sync()
            for alloc in reg.relay_ended:
                self.relay.close_allocation(alloc)
                log.info("relay ended: %s", alloc.describe())
        reg.relay_ended.clear()
        for level, line in reg.drain_logs():
            log.log(level, "%s", line)

    async def _clock(self) -> None:
        """Every ``refresh``: the registry's clock, NOTIFY when the serial moved."""
        while True:
            info = await self.snapshot_info()
            if info is not None:
                try:
                    self.registry.observe(self._snapshot(info, None, ""), time.monotonic())
                except Exception:
                    log.exception("internal error in the registry's clock")
                current = self.registry.journal.current
                if current is not None and current.serial != self._announced:
                    self._announced = current.serial
                    if self.notify.targets:
                        log.debug("serial %d: notifying secondaries", current.serial)
                        self.notify.changed(current.serial, time.monotonic())
                        self._notify_wake.set()
            self._housekeeping()
            await asyncio.sleep(self.refresh)

    # -- NOTIFY ----------------------------------------------------------------

    async def _notifier(self) -> None:
        while True:
            now = time.monotonic()
            for target in self.notify.due(now):
                qid = secrets.randbelow(65536)
                wire = self.registry.notify_message(qid).to_wire()
                family = socket.AF_INET6 if ":" in target.endpoint[0] else socket.AF_INET
                sock = self._notify_socks.get(family)
                if sock is None:
                    continue
                try:
                    sock.sendto(wire, target.endpoint)
                except OSError as e:
                    log.debug("NOTIFY to %s: %s", format_endpoint(*target.endpoint), e)
                self.notify.sent(target, qid, now)
            for given_up in self.notify.drain_given_up():
                log.warning("secondary %s did not answer NOTIFY for serial %s; its refresh "
                            "timer will catch up", format_endpoint(*given_up.endpoint),
                            given_up.serial)
            wait = max(0.05, min(self.refresh * 4, self.notify.next_deadline() - now))
            self._notify_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._notify_wake.wait(), wait)

    def _notify_answers(self, sock: socket.socket) -> None:
        for _ in range(64):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            try:
                # The answer is not verified: a forged one can only stop our retries.
                msg = dns.message.from_wire(data, keyring=unverified_keyring)
            except (dns.exception.DNSException, ValueError, UnicodeError, struct.error):
                self.notify.stats["garbage"] += 1
                continue
            if msg.opcode() != dns.opcode.NOTIFY:
                self.notify.stats["garbage"] += 1
                continue
            ip = str(ipaddress.ip_address(addr[0].split("%")[0]))
            ok = msg.rcode() == dns.rcode.NOERROR
            self.notify.answered((ip, addr[1]), msg.id, ok)
            if not ok:
                log.warning("secondary %s answered NOTIFY with %s", format_endpoint(ip, addr[1]),
                            dns.rcode.to_text(msg.rcode()))

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
            replies = await self.process(data, Source(ip, addr[1], via, "udp"), local)
            for reply in replies[:1]:  # one datagram answers one datagram
                try:
                    sock.sendmsg([reply], _reply_pktinfo(sock.family, local), 0, addr)
                except OSError as e:
                    log.debug("sendmsg to %s: %s", addr, e)

    # -- TCP ----------------------------------------------------------------

    async def _tcp_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, via_tunnel: bool
    ) -> None:
        if self._tcp_slots.locked():
            self.registry.stats["dropped.tcp"] += 1
            writer.close()
            return
        async with self._tcp_slots:
            peer = writer.get_extra_info("peername")
            local = writer.get_extra_info("sockname")
            try:
                ip = ipaddress.ip_address(peer[0].split("%")[0])
                source = Source(ip, peer[1], via_tunnel, "tcp")
                for _ in range(1000):  # bounded per connection
                    head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                    (length,) = struct.unpack("!H", head)
                    wire = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE)
                    replies = await self.process(wire, source, local[0])
                    if not replies:
                        break
                    for reply in replies:
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


def _tcp_listener(host: str, port: int, device: str | None) -> socket.socket:
    """A TCP listener; bound to ``device`` when given, so that it only accepts
    connections that arrived on that interface."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if device is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, device.encode())
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
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
        query = dns.message.from_wire(wire, keyring=unverified_keyring)
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

        loop.add_signal_handler(signal.SIGUSR1,
                                lambda: log.info("stats %s", server.stats_line()))
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
