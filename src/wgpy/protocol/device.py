"""The sans-IO WireGuard device: configuration, dispatch and the receive path.

Theory of operation: the I/O layer feeds three inputs, each with the current
monotonic time ``now`` and Unix time ``wall``:

- ``encapsulate_batch(packets)``: IP packets read from the TUN;
- ``decapsulate_batch(datagrams, source)``: UDP datagrams from one source;
- ``tick()``: called at (or after) ``next_deadline()``;

and carries out the actions each returns, in order (``encapsulate`` and
``decapsulate`` are the same with one packet).  Randomness comes from the
``rng`` given at construction; idle work (``prepare``) runs when the I/O
layer has nothing else to do.  Receive follows the kernel's receive.c:
handshake messages are checked for mac1 (and, under load, mac2 and the
per-source rate limit) before any DH; transport messages are authenticated
and replay-checked before anything about the peer (endpoint, timers)
changes.  The transport data path, both directions, is in ``fastpath``;
this module holds configuration, the handshake messages and the timers.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from wgpy.protocol import fastpath, ippacket, messages, noise
from wgpy.protocol.allowedips import AllowedIPs
from wgpy.protocol.constants import (
    DEFAULT_MTU,
    HANDSHAKE_INITIATION_RATE,
    ICMP_ERROR_BURST,
    ICMP_ERROR_RATE,
    MAX_PEERS,
    REKEY_TIMEOUT_JITTER_MAX,
    UNDER_LOAD_AFTER_TIME,
    UNDER_LOAD_THRESHOLD,
)
from wgpy.protocol.cookie import CookieChecker, MacState
from wgpy.protocol.errors import ConfigError, DropReason
from wgpy.protocol.events import (
    Action,
    Endpoint,
    HandshakeKeys,
    LogEvent,
    SendDatagram,
    WriteTun,
)
from wgpy.protocol.keypair import Keypair
from wgpy.protocol.peer import Peer
from wgpy.protocol.ratelimiter import RateLimiter
from wgpy.protocol.stats import DeviceStats

# ``prepare``: key generations/DHs per call (each one a hot loop would notice),
# and spare responder keys.
PREPARE_BATCH = 4
EPHEMERAL_POOL = 2


@dataclass(slots=True)
class IndexEntry:
    """What a local session index names: a peer's keypair, or (``keypair`` None)
    its pending handshake."""

    peer: Peer
    keypair: Keypair | None


SOURCE_CACHE = 256  # parsed handshake sources kept (Device._sources)


def _source_bytes(endpoint: Endpoint) -> tuple[bytes, bytes]:
    """(packed address, packed address ‖ port) of a UDP source, for cookies and limits.
    Parsed once per source: ``Device._sources`` keeps the result."""
    ip = ipaddress.ip_address(endpoint[0].split("%")[0]).packed
    return ip, ip + endpoint[1].to_bytes(2, "little")


class Device:
    """One WireGuard interface's protocol state, without any I/O."""

    def __init__(self, rng: Callable[[int], bytes], mtu: int = DEFAULT_MTU) -> None:
        self.rng = rng
        self.mtu = mtu
        self.identity: noise.StaticIdentity | None = None
        self.listen_port = 0
        self.fwmark = 0
        self.peers: dict[bytes, Peer] = {}
        self.allowed_ips: AllowedIPs[Peer] = AllowedIPs()
        self.stats = DeviceStats()
        self.verbose = False
        self.keylog = False
        # Local session index -> what it names: the transport receive path looks
        # the receiver index of every datagram up here.
        self.indices: dict[int, IndexEntry] = {}
        self._cookies = CookieChecker(rng)
        self._limiter = RateLimiter()
        self._heap: list[tuple[float, int, Peer]] = []
        self._seq = 0
        self._load_window_start = float("-inf")
        self._load_count = 0
        self._under_load_until = float("-inf")
        self._under_load_since = float("-inf")  # start of the current period under load
        self.force_under_load = False
        self._icmp_tokens = float(ICMP_ERROR_BURST)
        self._icmp_last = float("-inf")
        # Timer jitter needs no secrecy: draw it 2 bytes at a time from a
        # 256-byte refill, not one rng call (a getrandom syscall) per data packet.
        self._jitter_pool = b""
        self._jitter_pos = 0
        # Handshake sources, parsed: peers send from the same few endpoints,
        # and the parse is slow in a process that has just woken up.
        self._sources: dict[Endpoint, tuple[bytes, bytes]] = {}
        # Handshake work done ahead while idle (``prepare``): peers that want
        # their next response (and initiation) made, and spare responder
        # ephemerals for peers without a prepared response.
        self._to_prepare: dict[bytes, bool] = {}  # peer key -> initiation wanted too
        self._ephemerals: list[noise.Ephemeral] = []
        self.prepare_pending = False

    # -- plumbing for peers ------------------------------------------------
    def jitter(self) -> float:
        pos = self._jitter_pos
        if pos + 2 > len(self._jitter_pool):
            self._jitter_pool = self.rng(256)
            pos = 0
        self._jitter_pos = pos + 2
        raw = self._jitter_pool[pos] | self._jitter_pool[pos + 1] << 8
        return raw / 65536 * REKEY_TIMEOUT_JITTER_MAX

    # -- work done ahead -------------------------------------------------------
    def want_prepared(self, peer: Peer, initiation: bool = True) -> None:
        """Ask ``prepare`` to make ``peer``'s next response, and with
        ``initiation`` its next initiation, ahead of need."""
        hs = peer.handshake
        if hs.prepared_response is None or (initiation and hs.prepared is None):
            self._to_prepare[peer.public_key] = initiation or self._to_prepare.get(
                peer.public_key, False
            )
            self.prepare_pending = True

    def take_ephemeral(self) -> noise.Ephemeral | None:
        if self._ephemerals:
            self.prepare_pending = True
            return self._ephemerals.pop()
        return None

    def prepare(self, limit: int = PREPARE_BATCH) -> bool:
        """Idle work, which the I/O layer runs when ``prepare_pending`` is set and
        nothing else is waiting: at most ``limit`` key generations and DHs that
        would otherwise sit in a handshake's latency (noise.PreparedInitiation,
        noise.PreparedResponse, a pool of responder ephemerals for the peers
        without one).  Returns whether work remains."""
        identity = self.identity
        if identity is None:
            self._to_prepare.clear()
            self.prepare_pending = False
            return False
        while limit > 0 and len(self._ephemerals) < EPHEMERAL_POOL:
            self._ephemerals.append(noise.Ephemeral.generate(self.rng))
            limit -= 1
        while limit > 0 and self._to_prepare:
            key = next(iter(self._to_prepare))
            initiation = self._to_prepare.pop(key)
            peer = self.peers.get(key)
            if peer is None:
                continue
            hs = peer.handshake
            if initiation and hs.prepared is None:
                hs.prepared = noise.prepare_initiation(identity, hs, self.rng)
                limit -= 1
            if hs.prepared_response is None:
                hs.prepared_response = noise.prepare_response(hs, self.rng)
                limit -= 1
        self.prepare_pending = bool(self._to_prepare) or len(self._ephemerals) < EPHEMERAL_POOL
        return self.prepare_pending

    def schedule(self, when: float, peer: Peer) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, peer))

    def allocate_index(self, peer: Peer, keypair: Keypair | None) -> int:
        for _ in range(64):
            index = int.from_bytes(self.rng(4), "little")
            if index and index not in self.indices:
                self.indices[index] = IndexEntry(peer, keypair)
                return index
        raise RuntimeError("random source keeps returning used session indices")

    def release_index(self, index: int) -> None:
        self.indices.pop(index, None)

    def free_handshake_index(self, peer: Peer) -> None:
        index = peer.handshake.local_index
        entry = self.indices.get(index)
        if index and entry is not None and entry.keypair is None and entry.peer is peer:
            del self.indices[index]

    # -- configuration -----------------------------------------------------
    def set_private_key(self, private: bytes | None) -> None:
        """Set (or with None, clear) the static private key; sessions restart."""
        if private is not None and len(private) != 32:
            raise ConfigError("private key must be 32 bytes")
        if private is not None and not any(private):
            private = None
        old = self.identity
        if old is not None and private is not None and old.private == private:
            return
        self.identity = noise.StaticIdentity.from_private(private) if private else None
        self.prepare_pending = self.identity is not None
        self._cookies.set_public_key(self.identity.public if self.identity else None)
        if self.identity is not None and self.identity.public in self.peers:
            self.remove_peer(self.identity.public)
        for peer in self.peers.values():
            # A handshake begun under the old key can never complete.
            self.free_handshake_index(peer)
            peer.handshake.clear()
            peer.handshake.precompute(self.identity)
            peer.expire_current_keypairs()

    @property
    def public_key(self) -> bytes | None:
        return self.identity.public if self.identity else None

    def add_peer(self, public_key: bytes) -> Peer:
        if len(public_key) != 32:
            raise ConfigError("public key must be 32 bytes")
        if public_key in self.peers:
            return self.peers[public_key]
        if len(self.peers) >= MAX_PEERS:
            raise ConfigError(f"too many peers (at most {MAX_PEERS})")
        peer = Peer(self, public_key)
        self.peers[public_key] = peer
        return peer

    def remove_peer(self, public_key: bytes) -> None:
        peer = self.peers.pop(public_key, None)
        if peer is None:
            return
        peer.removed = True
        peer.zero_and_flush()
        peer.timers.stop_all()
        self.allowed_ips.remove_peer(peer)

    def remove_all_peers(self) -> None:
        for key in list(self.peers):
            self.remove_peer(key)

    def under_load(self, now: float) -> bool:
        return self.force_under_load or now < self._under_load_until

    def time_under_load(self, now: float) -> float:
        """Seconds this device has spent under load (handshake messages arriving
        faster than UNDER_LOAD_THRESHOLD a second, and UNDER_LOAD_AFTER_TIME
        after), the current period counted up to ``now``."""
        current = min(now, self._under_load_until) - self._under_load_since
        return self.stats.under_load_seconds + max(0.0, current)

    @property
    def staged_packets(self) -> int:
        """Packets waiting for a handshake, over every peer."""
        return sum(len(p.staged) for p in self.peers.values())

    @property
    def keypairs(self) -> int:
        """Live session keypairs (current, previous and next), over every peer."""
        return sum(len(p.keypairs.all()) for p in self.peers.values())

    @property
    def ratelimiter_entries(self) -> int:
        """Sources the handshake rate limiter tracks now (bounded by its table size)."""
        return len(self._limiter)

    # -- outbound ------------------------------------------------------------
    def encapsulate(self, packet: bytes, now: float, wall: float) -> list[Action]:
        """An IP packet from the TUN: route it to a peer and encrypt (or stage) it.
        The batch path with one packet: ``encapsulate_batch`` (``fastpath``)."""
        return fastpath.encapsulate_batch(self, (packet,), now, wall)

    # Many IP packets from the TUN, in order: each peer's transport datagrams
    # come as one ``SendBatch``.  Many UDP datagrams from one source: the inner
    # packets come as ``WriteTun``.  See ``fastpath``.  The functions
    # themselves, not wrappers: one call less per wake-up.
    encapsulate_batch = fastpath.encapsulate_batch
    decapsulate_batch = fastpath.decapsulate_batch

    def unreachable(self, packet: bytes | bytearray | memoryview, now: float,
                    out: list[Action]) -> None:
        """Answer ``packet``, which no peer takes (no allowed IPs cover its
        destination, or that peer has no endpoint), with an ICMP destination
        unreachable on the TUN, as the kernel's WireGuard does, so the sender
        fails at once instead of timing out.  At most ICMP_ERROR_RATE a second
        (burst ICMP_ERROR_BURST), as the kernel limits its ICMP errors."""
        earned = (now - self._icmp_last) * ICMP_ERROR_RATE
        tokens = min(ICMP_ERROR_BURST, self._icmp_tokens + earned)
        self._icmp_last = now
        self._icmp_tokens = tokens
        if tokens < 1:
            return
        reply = ippacket.unreachable(bytes(packet))
        if reply is not None:
            self._icmp_tokens = tokens - 1
            self.stats.unreachable_sent += 1
            out.append(WriteTun([reply]))

    # -- inbound -------------------------------------------------------------
    def decapsulate(
        self, datagram: bytes, source: Endpoint, now: float, wall: float
    ) -> list[Action]:
        """A UDP datagram from ``source``: the actions it causes (often none).
        Transport data takes the batch path with one datagram (``fastpath``)."""
        if (
            messages.message_type(datagram) == messages.MESSAGE_TRANSPORT
            and len(datagram) >= messages.TRANSPORT_MIN_SIZE
        ):
            return fastpath.decapsulate_batch(self, (datagram,), source, now, wall)
        out: list[Action] = []
        self.receive_handshake_message(datagram, source, now, wall, out)
        return out

    def receive_handshake_message(
        self, datagram: bytes, source: Endpoint, now: float, wall: float, out: list[Action]
    ) -> None:
        """Anything but transport data: an initiation, a response or a cookie reply;
        other datagrams are dropped as malformed.  The batch path hands over
        every datagram that is not transport data here."""
        t = messages.message_type(datagram)
        n = len(datagram)
        if t == messages.MESSAGE_INITIATION and n == messages.INITIATION_SIZE:
            self._receive_handshake(datagram, source, now, wall, out)
        elif t == messages.MESSAGE_RESPONSE and n == messages.RESPONSE_SIZE:
            self._receive_handshake(datagram, source, now, wall, out)
        elif t == messages.MESSAGE_COOKIE_REPLY and n == messages.COOKIE_REPLY_SIZE:
            self._receive_cookie_reply(messages.CookieReply.unpack(datagram), now, out)
        else:
            self.drop(DropReason.MALFORMED, source, out)

    def drop(self, reason: DropReason, source: Endpoint, out: list[Action]) -> None:
        """Count a datagram from ``source`` dropped for ``reason`` (and, when
        verbose, log it: rate-limited, since a flood could repeat it)."""
        self.stats.drop(reason)
        if self.verbose:
            out.append(
                LogEvent(
                    f"Dropped packet from {source[0]}:{source[1]}: {reason.value}",
                    rate_limited=True,
                )
            )

    def _note_handshake_load(self, now: float) -> None:
        if now - self._load_window_start >= 1.0:
            self._load_window_start = now
            self._load_count = 0
        self._load_count += 1
        if self._load_count >= UNDER_LOAD_THRESHOLD:
            if now >= self._under_load_until:
                # A new period: the last one is over, count it whole.
                if self._under_load_until > self._under_load_since:
                    self.stats.under_load_seconds += (
                        self._under_load_until - self._under_load_since)
                self._under_load_since = now
            self._under_load_until = now + UNDER_LOAD_AFTER_TIME

    def _receive_handshake(
        self, data: bytes, source: Endpoint, now: float, wall: float, out: list[Action]
    ) -> None:
        self._note_handshake_load(now)
        parsed = self._sources.get(source)
        if parsed is None:
            try:
                parsed = _source_bytes(source)
            except ValueError:
                self.drop(DropReason.MALFORMED, source, out)
                return
            if len(self._sources) >= SOURCE_CACHE:
                self._sources.clear()  # a flood of sources: no worse than no cache
            self._sources[source] = parsed
        ip, src = parsed
        state = self._cookies.check(data, src, now)
        if state is MacState.INVALID_MAC1:
            self.drop(DropReason.BAD_MAC1, source, out)
            return
        if self.under_load(now):
            if state is not MacState.VALID_MAC1_AND_COOKIE:
                sender = int.from_bytes(data[4:8], "little")
                out.append(SendDatagram(source, self._cookies.make_reply(data, sender, src, now)))
                self.stats.cookie_replies_sent += 1
                self.drop(DropReason.BAD_MAC2, source, out)
                return
            if not self._limiter.allow(ip, now):
                self.drop(DropReason.RATE_LIMITED, source, out)
                return
        if messages.message_type(data) == messages.MESSAGE_INITIATION:
            self._receive_initiation(messages.Initiation.unpack(data), data, source, now, wall, out)
        else:
            self._receive_response(messages.Response.unpack(data), data, source, now, wall, out)

    def _receive_initiation(
        self,
        msg: messages.Initiation,
        data: bytes,
        source: Endpoint,
        now: float,
        wall: float,
        out: list[Action],
    ) -> None:
        identity = self.identity
        if identity is None:
            self.drop(DropReason.NO_PRIVATE_KEY, source, out)
            return
        opened = noise.open_initiation(identity, msg)
        if opened is None:
            self.drop(DropReason.HANDSHAKE_DECRYPT, source, out)
            return
        peer = self.peers.get(opened.remote_static)
        if peer is None:
            self.drop(DropReason.UNKNOWN_PEER, source, out)
            return
        hs = peer.handshake
        done = noise.finish_initiation(opened, msg, hs)
        if done is None:
            self.drop(DropReason.HANDSHAKE_DECRYPT, source, out)
            return
        if not noise.timestamp_is_newer(hs, done.timestamp):
            self.drop(DropReason.REPLAYED_TIMESTAMP, source, out)
            return
        if now - hs.last_initiation_consumption < HANDSHAKE_INITIATION_RATE:
            self.drop(DropReason.INITIATION_FLOOD, source, out)
            return
        self.free_handshake_index(peer)
        noise.accept_initiation(hs, done, now)
        self.stats.initiations_received += 1
        peer.rx_bytes += len(data)
        if self.verbose:
            out.append(LogEvent(f"{peer.name} - Received handshake initiation"))
        peer.timers.on_any_authenticated_packet_traversal(now)
        peer.timers.on_any_authenticated_packet_received(now)
        peer.endpoint = source
        self._send_response(peer, now, out)

    def _send_response(self, peer: Peer, now: float, out: list[Action]) -> None:
        hs = peer.handshake
        index = self.allocate_index(peer, None)
        spare = self.take_ephemeral() if hs.prepared_response is None else None
        resp = noise.create_response(hs, index, self.rng, spare)
        if resp is None:
            self.release_index(index)
            hs.clear()
            self.stats.drop(DropReason.LOW_ORDER_KEY)
            return
        data = peer.cookies.add_macs(resp.pack(), now)
        ephemeral = hs.local_ephemeral
        keypair = Keypair(noise.begin_session(hs), now)
        self.indices[index] = IndexEntry(peer, keypair)
        self._install(peer, keypair, ephemeral, now, out)
        self.stats.responses_sent += 1
        # A response counts as a handshake sent (kernel send.c, wireguard-go
        # SendHandshakeResponse): the responder must not race its own
        # initiation against the key confirmation it is waiting for.
        peer.last_sent_handshake = now
        peer.timers.on_any_authenticated_packet_traversal(now)
        peer.timers.on_any_authenticated_packet_sent(now)
        if not self.under_load(now):
            # Its next handshake will likely come from it again (whoever sends
            # first after REKEY_AFTER_TIME); under a flood, no work ahead.
            self.want_prepared(peer, initiation=False)
        if self.verbose:
            out.append(LogEvent(f"{peer.name} - Sending handshake response"))
        assert peer.endpoint is not None  # set from the initiation's source
        out.append(SendDatagram(peer.endpoint, data))
        peer.tx_bytes += len(data)

    def _install(
        self, peer: Peer, keypair: Keypair, ephemeral: bytes, now: float, out: list[Action]
    ) -> None:
        for old in peer.keypairs.install(keypair):
            self.release_index(old.local_index)
        peer.timers.on_session_derived(now)
        if self.verbose:
            role = "initiator" if keypair.is_initiator else "responder"
            out.append(
                LogEvent(f"{peer.name} - Keypair {keypair.local_index} created ({role})")
            )
        if self.keylog and self.identity is not None:
            out.append(
                HandshakeKeys(self.identity.private, peer.public_key, ephemeral, peer.preshared_key)
            )

    def _receive_response(
        self,
        msg: messages.Response,
        data: bytes,
        source: Endpoint,
        now: float,
        wall: float,
        out: list[Action],
    ) -> None:
        entry = self.indices.get(msg.receiver)
        identity = self.identity
        if entry is None or entry.keypair is not None or identity is None:
            self.drop(DropReason.UNKNOWN_INDEX, source, out)
            return
        peer = entry.peer
        hs = peer.handshake
        if not noise.consume_response(identity, hs, msg):
            self.drop(DropReason.UNEXPECTED_RESPONSE, source, out)
            return
        self.stats.responses_received += 1
        peer.rx_bytes += len(data)
        if self.verbose:
            out.append(LogEvent(f"{peer.name} - Received handshake response"))
        peer.timers.on_any_authenticated_packet_traversal(now)
        peer.timers.on_any_authenticated_packet_received(now)
        peer.endpoint = source
        ephemeral = hs.local_ephemeral
        keypair = Keypair(noise.begin_session(hs), now)
        entry.keypair = keypair
        self._install(peer, keypair, ephemeral, now, out)
        self.handshake_complete(peer, now, wall)
        peer.send_keepalive(now, wall, out)

    def handshake_complete(self, peer: Peer, now: float, wall: float) -> None:
        """Call after a response is consumed, or the responder's keypair confirmed."""
        peer.timers.on_handshake_complete(now)
        peer.last_handshake_wall = wall
        self.stats.handshakes_completed += 1

    def _receive_cookie_reply(
        self, reply: messages.CookieReply, now: float, out: list[Action]
    ) -> None:
        entry = self.indices.get(reply.receiver)
        if entry is None:
            self.stats.drop(DropReason.UNKNOWN_INDEX)
            return
        if not entry.peer.cookies.consume_reply(reply, now):
            self.stats.drop(DropReason.BAD_COOKIE)
            return
        self.stats.cookie_replies_received += 1
        if self.verbose:
            out.append(LogEvent(f"{entry.peer.name} - Received cookie reply"))

    # -- timers --------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When ``tick`` should next be called (it may be early; never late)."""
        heap = self._heap
        while heap and heap[0][2].removed:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def tick(self, now: float, wall: float) -> list[Action]:
        """Run the timers that are due."""
        out: list[Action] = []
        heap = self._heap
        due: dict[int, Peer] = {}
        while heap and heap[0][0] <= now:
            _, _, peer = heapq.heappop(heap)
            if not peer.removed:
                due[id(peer)] = peer
        for peer in due.values():
            peer.scheduled = float("inf")
            for kind in peer.timers.due(now):
                peer.on_timer(kind, now, wall, out)
            nd = peer.timers.next_deadline()
            if nd is not None and not peer.removed:
                peer.scheduled = float("inf")
                peer.schedule(nd)
        return out

    def send_staged(self, peer: Peer, now: float, wall: float) -> list[Action]:
        """Send what ``peer`` has queued (starting a handshake if it needs one)."""
        out: list[Action] = []
        peer.send_staged(now, wall, out)
        return out
