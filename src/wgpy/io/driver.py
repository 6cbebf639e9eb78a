"""The I/O around one protocol ``Device``: TUN, UDP, timers and the UAPI.

Theory of operation: one thread, one ``EventLoop`` (io/loop.py: epoll, not
asyncio, whose per-wake-up cost showed in ping latency).  The TUN fd and
each UDP socket are watched with ``add_reader`` and drained in bounded
batches with plain ``readv``/``recvmsg_into``.  Each input goes to the core
with ``now`` from the monotonic clock and ``wall`` from ``time.time()``;
the actions it returns are carried out at once.  One ``call_at`` timer
follows the core's ``next_deadline()``.  The UAPI is served on the same
loop, so configuration never races the data path.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import functools
import gc
import os
import signal
import socket
import termios
import time
from collections import Counter
from pathlib import Path

from wgpy.control.apply import apply_set, device_info
from wgpy.control.uapi import EADDRINUSE, UapiError, format_get, format_stats, parse_set
from wgpy.io import offload
from wgpy.io.batch import GroReceiver, GsoSender, enable_gro
from wgpy.io.keylog import KeyLog
from wgpy.io.log import SILENT, Logger
from wgpy.io.loop import EventLoop, Timer
from wgpy.io.tun import Tun
from wgpy.io.uapi_server import UapiServer
from wgpy.io.udp import UdpBind
from wgpy.protocol import (
    Action,
    Device,
    HandshakeKeys,
    LogEvent,
    SendBatch,
    SendDatagram,
    WriteTun,
    messages,
    stats_fields,
)
from wgpy.service import notify

BATCH = 256
TUN_BATCH_PACKETS = 128
MAX_DATAGRAM = 65535
SOCKET_CHECK_INTERVAL = 1.0
# TUN wake-ups closer than this count as a burst (see _on_tun).
TUN_BURST_GAP = 0.0002
# Busy polling after sending a handshake message (when busy polling is on).
HANDSHAKE_BUSY_POLL = 0.004
_HANDSHAKE_SENT = (messages.MESSAGE_INITIATION, messages.MESSAGE_RESPONSE)


class Driver:
    def __init__(
        self,
        device: Device,
        tun: Tun,
        bind: UdpBind,
        uapi_sock: socket.socket,
        uapi_path: Path,
        logger: Logger,
        keylog: KeyLog | None = None,
        busy_poll: float = 0.0,
    ) -> None:
        self.device = device
        self.tun = tun
        self.bind = bind
        self.uapi_sock = uapi_sock
        self.uapi_path = uapi_path
        self.log = logger
        self.keylog = keylog
        self.device.listen_port = bind.port
        self.device.verbose = logger.verbose_enabled
        self.device.keylog = keylog is not None
        self._timer: Timer | None = None
        self._prepare_queued = False
        self._timer_at: float | None = None
        self._stopping = False
        self._loop = EventLoop(on_error=logger.error, busy_poll=busy_poll)
        self._uapi_ino = os.stat(uapi_path).st_ino
        # The data path (io/offload.py, io/batch.py): with the TUN's vnet header,
        # TSO/USO super-segments and UDP GSO/GRO; without it, plain batches.
        self.mode = "offload" if tun.vnet_hdr else "batch"
        self._tun_buf = bytearray(offload.VNET_HDR_LEN + MAX_DATAGRAM)
        self._tun_drain = False
        self._tun_last_wake = float("-inf")
        self._fionread = array.array("i", [0])
        self._gro = GroReceiver()
        # UDP send failures by errno, for the SIGUSR1 line (a datagram that cannot
        # be sent is dropped, as UDP does, but operators must be able to see it).
        self.send_errors: Counter[int] = Counter()
        self._gso = GsoSender(self.send_errors)
        self._gso.gso = self.mode == "offload"
        # UAPI requests answered, by operation, and sets refused (errno != 0).
        self.uapi_requests: Counter[str] = Counter()
        self._server: UapiServer | None = None

    # -- lifecycle -----------------------------------------------------------
    def run(self) -> None:
        """Serve the device until ``stop()``: a signal, the socket or the TUN going away."""
        loop = self._loop
        loop.add_reader(self.tun.fd, self._on_tun)
        self._watch_bind()
        server = self._server = UapiServer(loop, self.uapi_sock, self._uapi)
        for sig in (signal.SIGINT, signal.SIGTERM):
            reason = f"received {signal.Signals(sig).name}"
            loop.add_signal_handler(sig, functools.partial(self.stop, reason))
        loop.add_signal_handler(signal.SIGUSR1, self.dump_stats)
        loop.call_later(SOCKET_CHECK_INTERVAL, self._watch_socket)
        self._settle_memory()
        self.log.verbose("Device started")
        # Ready once the loop runs, i.e. serves the UAPI socket (systemd Type=notify).
        loop.call_later(0, self._ready)
        try:
            loop.run()
        finally:
            server.close()
            self._shutdown()
            loop.close()

    def _ready(self) -> None:
        notify.ready(f"serving {self.tun.name}")

    def stop(self, reason: str) -> None:
        if not self._stopping:
            self._stopping = True
            notify.stopping(reason)
            self.log.verbose(f"Shutting down: {reason}")
            self._loop.stop()

    def counters(self) -> list[tuple[str, int]]:
        """The core's counters (``stats_fields``) and the driver's: UDP send errors
        by errno, UAPI requests by operation, the UAPI server's connections."""
        fields = stats_fields(self.device, self._loop.time(), self.send_errors)
        fields += [(f"uapi.{op}", n) for op, n in sorted(self.uapi_requests.items())]
        if self._server is not None:
            fields.append(("uapi.connections", self._server.connections))
            fields.append(("uapi.closed_idle", self._server.closed_idle))
        return fields

    def dump_stats(self) -> None:
        """SIGUSR1: one ``INFO:`` line with the device's counters (no secrets), at
        any LOG_LEVEL but silent; for operators and the hardening tests."""
        if self.log.level > SILENT:
            self.log.info("stats " + " ".join(f"{k}={v}" for k, v in self.counters()))

    def _shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.tun.fd)
        self._unwatch_bind()
        if self._timer is not None:
            self._timer.cancel()
        self.device.remove_all_peers()
        self.bind.close()
        self.tun.close()  # a non-persistent TUN disappears with its last fd
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.uapi_path).st_ino == self._uapi_ino:
                self.uapi_path.unlink()
        if self.keylog is not None:
            self.keylog.close()

    @staticmethod
    def _settle_memory() -> None:
        """Collect once, then exempt what survived (modules, the libraries' objects:
        about a hundred thousand) from the cyclic GC, so that the collections that
        run while packets flow walk only what was made since: a full collection
        would stall a handshake.  Objects made later (peers) are collected as usual."""
        gc.collect()
        gc.freeze()

    def _watch_socket(self) -> None:
        # wireguard-go exits when its UAPI socket is removed; so do we.  The
        # same slow timer keeps the core's MTU in step with the interface.
        try:
            ino = os.stat(self.uapi_path).st_ino
        except FileNotFoundError:
            ino = -1
        if ino != self._uapi_ino:
            self.stop("UAPI socket removed")
            return
        # Padding must follow the interface MTU that ip/wg-quick may change.
        with contextlib.suppress(OSError):
            self.device.mtu = self.tun.mtu()
        self._loop.call_later(SOCKET_CHECK_INTERVAL, self._watch_socket)

    def _watch_bind(self) -> None:
        for s in self.bind.sockets():
            if self.mode == "offload":
                enable_gro(s)
            self._loop.add_reader(s.fileno(), functools.partial(self._on_udp, s))

    def _unwatch_bind(self) -> None:
        for s in self.bind.sockets():
            with contextlib.suppress(Exception):
                self._loop.remove_reader(s.fileno())

    # -- data path -----------------------------------------------------------
    def _on_tun(self) -> None:
        """Drain the TUN, split super-segments, hand the core one batch at a time.

        A TUN has no FIONREAD, and the read that ends a drain raises EAGAIN: an
        exception, costly in a process that was asleep, on every ping.  So
        sparse traffic reads once a wake-up (epoll is level-triggered: anything
        left wakes us at once), and a burst (several packets a wake-up, or
        wake-ups back to back) drains, for the batching."""
        fd = self.tun.fd
        dev = self.device
        now = self._loop.time()
        wall = time.time()
        vnet = self.tun.vnet_hdr
        buf = self._tun_buf
        packets: list[bytearray] = []
        drain = self._tun_drain or now - self._tun_last_wake < TUN_BURST_GAP
        self._tun_last_wake = now
        reads = 0
        for _ in range(BATCH if drain else 1):
            try:
                if vnet:
                    n = os.readv(fd, (buf,))
                else:
                    packet = bytearray(os.read(fd, MAX_DATAGRAM))
                    n = len(packet)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self.log.error(f"Failed to read packet from TUN device: {e.strerror}")
                self.stop("TUN device went away")
                return
            if not n:
                self.stop("TUN device closed")
                return
            reads += 1
            if vnet:
                try:
                    offload.split(memoryview(buf)[:n], packets)
                except offload.OffloadError as e:
                    self.log.verbose(f"Dropped packet from TUN device: {e}")
            else:
                packets.append(packet)
            if len(packets) >= TUN_BATCH_PACKETS:
                self._carry_out(dev.encapsulate_batch(packets, now, wall))
                packets = []
        if packets:
            self._carry_out(dev.encapsulate_batch(packets, now, wall))
        self._tun_drain = reads > 1
        self._rearm()

    def _on_udp(self, sock: socket.socket) -> None:
        """Drain a UDP socket (GRO reads when enabled), one core batch per source."""
        dev = self.device
        now = self._loop.time()
        wall = time.time()
        rx = self._gro
        rx.reset()
        batch: list[memoryview] = []
        source: tuple[str, int] | None = None
        for _ in range(BATCH):
            if not rx.room():
                if batch and source is not None:
                    self._carry_out(dev.decapsulate_batch(batch, source, now, wall))
                batch = []
                rx.reset()
            try:
                got = rx.recv(sock)
            except OSError:
                break  # e.g. ICMP errors surfacing on the socket
            if got is None:
                break
            datagrams, addr = got
            if addr != source and batch and source is not None:
                self._carry_out(dev.decapsulate_batch(batch, source, now, wall))
                batch = []
            source = addr
            batch.extend(datagrams)
            # FIONREAD instead of a read that fails with EAGAIN: no exception on
            # a cold wake-up (see _on_tun).
            fcntl.ioctl(sock.fileno(), termios.FIONREAD, self._fionread)
            if not self._fionread[0]:
                break
        if batch and source is not None:
            self._carry_out(dev.decapsulate_batch(batch, source, now, wall))
        self._rearm()

    def _write_tun(self, packets: list[bytes]) -> None:
        fd = self.tun.fd
        try:
            if self.tun.vnet_hdr:
                for parts in offload.coalesce(packets):
                    os.writev(fd, parts)
            else:
                for p in packets:
                    os.write(fd, p)
        except (BlockingIOError, InterruptedError):
            pass  # the TUN queue is full: drop, as a NIC would
        except OSError as e:
            self.log.error(f"Failed to write packet to TUN device: {e.strerror}")

    def _carry_out(self, actions: list[Action]) -> None:
        for act in actions:
            kind = type(act)
            if kind is SendBatch:
                assert isinstance(act, SendBatch)
                sock = self.bind.socket_for(act.endpoint)
                if sock is not None:
                    self._gso.send(sock, act.data, act.sizes, act.endpoint)
            elif kind is WriteTun:
                assert isinstance(act, WriteTun)
                self._write_tun(act.packets)
            elif kind is SendDatagram:
                assert isinstance(act, SendDatagram)
                self.bind.send(act.data, act.endpoint, self.send_errors)
                if messages.message_type(act.data) in _HANDSHAKE_SENT:
                    # The answer (response, or the first data packet that confirms
                    # the keys) takes a cold peer a while: be awake for it.
                    self._loop.keep_awake(self._loop.time() + HANDSHAKE_BUSY_POLL)
            elif kind is LogEvent:
                assert isinstance(act, LogEvent)
                if act.rate_limited:
                    self.log.verbose_limited(act.message)
                else:
                    self.log.verbose(act.message)
            elif kind is HandshakeKeys and self.keylog is not None:
                assert isinstance(act, HandshakeKeys)
                try:
                    self.keylog.write(act)
                except OSError as e:
                    self.log.error(f"Failed to write key log: {e.strerror}")

    # -- timers --------------------------------------------------------------
    def _rearm(self) -> None:
        if self.device.prepare_pending and not self._prepare_queued:
            # Not right after the events that asked for it: in front of the reply
            # they wait for (see EventLoop.call_when_idle).
            self._prepare_queued = True
            self._loop.call_when_idle(self._prepare)
        nd = self.device.next_deadline()
        if nd == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = nd
        if nd is not None:
            self._timer = self._loop.call_at(nd, self._on_timer)

    def _prepare(self) -> None:
        self._prepare_queued = False
        self.device.prepare()
        self._rearm()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        actions = self.device.tick(self._loop.time(), time.time())
        if actions:
            self._carry_out(actions)
        self._rearm()

    # -- UAPI ----------------------------------------------------------------
    def _uapi(self, op: str, lines: list[str]) -> str:
        self.uapi_requests[op] += 1
        if op == "get":
            return format_get(device_info(self.device)) + "errno=0\n\n"
        if op == "stats":
            return format_stats(self.counters()) + "errno=0\n\n"
        reply = self._set(lines)
        if reply != "errno=0\n\n":
            self.uapi_requests["set_refused"] += 1
        return reply

    def _set(self, lines: list[str]) -> str:
        try:
            req = parse_set(lines)
        except UapiError as e:
            self.log.error(f"UAPI set: {e}")
            return f"errno={e.errno}\n\n"
        port = req.listen_port
        if port is not None and port != self.bind.port:
            mark = req.fwmark if req.fwmark is not None else self.device.fwmark
            try:
                new_bind = UdpBind.open(port, mark)
            except OSError as e:
                self.log.error(f"UAPI set: failed to set listen_port: {e.strerror}")
                return f"errno={EADDRINUSE}\n\n"
            self._unwatch_bind()
            self.bind.close()
            self.bind = new_bind
            self._watch_bind()
            self.log.verbose(f"UDP bind has been updated (port {new_bind.port})")
        elif req.fwmark is not None and req.fwmark != self.device.fwmark:
            try:
                self.bind.set_fwmark(req.fwmark)
            except OSError as e:
                self.log.error(f"UAPI set: failed to set fwmark: {e.strerror}")
                return f"errno={EADDRINUSE}\n\n"
        actions = apply_set(self.device, req, self._loop.time(), time.time())
        self.device.listen_port = self.bind.port
        if actions:
            self._carry_out(actions)
        if req.peers:
            # A changed peer is usually about to be used (wg-quick up, a new
            # endpoint): be awake for its first packet, as for a handshake.
            self._loop.keep_awake(self._loop.time() + HANDSHAKE_BUSY_POLL)
        self._rearm()
        return "errno=0\n\n"
