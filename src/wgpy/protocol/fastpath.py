"""The transport data path, both directions: many packets in, one action per
peer out.  The single-packet calls (``Device.encapsulate``/``decapsulate``)
are these with one packet, so every check on transport data is written once.

Theory of operation.  At a few Gbit/s the Python around the AEAD call is
what costs.  These functions take a whole batch (the segments of a TUN
super-segment, the datagrams of a GRO read) and do per packet only what
must be per packet: route lookup (cached while the destination repeats),
counter, padding, the AEAD into one preallocated buffer, the replay window,
the inner source check (cached).  Per peer and batch they do once what is
idempotent within one ``now``: timers, endpoint, byte counters, key
freshness (``_settle``).  What is not transport data (handshake messages,
cookie replies, garbage) goes to ``Device.receive_handshake_message``,
after the batch so far has been settled, so the order of effects is that of
the datagrams.  A packet for a peer without a usable session is staged and
starts a handshake (``Peer.send_staged``).

The receive checks, in the kernel's order (receive.c): known receiver
index, keypair not expired, counter not replayed and below
REJECT_AFTER_MESSAGES, AEAD open, then the replay window is updated; only
then does anything about the peer change (endpoint, timers, key
confirmation of a responder's ``next`` keypair).  After that the inner
packet must be IPv4/IPv6 of a sane length from an address in the peer's
allowed IPs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from wgpy.protocol import messages
from wgpy.protocol.constants import REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME
from wgpy.protocol.crypto import NONCE, InvalidTag
from wgpy.protocol.errors import DropReason
from wgpy.protocol.events import Action, Endpoint, LogEvent, SendBatch, WriteTun
from wgpy.protocol.messages import padded_length

if TYPE_CHECKING:
    from wgpy.protocol.device import Device
    from wgpy.protocol.keypair import Keypair
    from wgpy.protocol.peer import Peer

Buffer = bytes | bytearray | memoryview
_HDR = messages.TRANSPORT_HEADER_SIZE
_OVERHEAD = messages.TRANSPORT_MIN_SIZE  # header + tag
_TRANSPORT = messages.TRANSPORT_HEADER
_NONCE = NONCE
_KIND = messages.MESSAGE_TRANSPORT
_NO_ROUTE = object()  # a route-cache miss (None is a cached "no peer")


def encapsulate_batch(
    dev: Device, packets: Sequence[Buffer], now: float, wall: float
) -> list[Action]:
    out: list[Action] = []
    group: list[Buffer] = []
    gpeer: Peer | None = None
    last_dst: bytes | None = None
    peer: Peer | None = None
    lookup4 = dev.allowed_ips.lookup4
    lookup6 = dev.allowed_ips.lookup6
    for pkt in packets:
        # The destination address; its bytes (4 or 16 long) key the route cache.
        size = len(pkt)
        v = pkt[0] >> 4 if size else 0
        if v == 4 and size >= 20:
            dst = bytes(pkt[16:20])
        elif v == 6 and size >= 40:
            dst = bytes(pkt[24:40])
        else:
            dev.stats.drop(DropReason.NOT_IP)
            continue
        if dst != last_dst:
            peer = (lookup4 if v == 4 else lookup6)(int.from_bytes(dst, "big"))
            last_dst = dst
        if peer is None:
            dev.stats.drop(DropReason.NO_ROUTE)
            dev.unreachable(pkt, now, out)
            continue
        if peer is not gpeer:
            if gpeer is not None:
                send_batch(gpeer, group, now, wall, out)
            group = []
            gpeer = peer
        group.append(pkt)
    if gpeer is not None:
        send_batch(gpeer, group, now, wall, out)
    return out


def send_batch(
    peer: Peer, packets: Sequence[Buffer], now: float, wall: float, out: list[Action]
) -> None:
    """Encrypt ``packets`` for ``peer`` into one ``SendBatch``, or fall back to one by one."""
    kp = peer.keypairs.current
    endpoint = peer.endpoint
    n = len(packets)
    if endpoint is None:
        peer.device.stats.drop(DropReason.NO_ENDPOINT, n)
        for p in packets:
            peer.device.unreachable(p, now, out)
        return
    if peer.device.identity is None:
        peer.device.stats.drop(DropReason.NO_PRIVATE_KEY, n)
        return
    # Peer._usable, inlined; the counter checked for the whole batch.
    if (
        peer.staged
        or kp is None
        or kp.send_counter + n >= REJECT_AFTER_MESSAGES
        or now - kp.created >= REJECT_AFTER_TIME
    ):
        # Staged behind a handshake, or no usable session: queue, flush what
        # the session (if any) still takes, start a handshake otherwise.
        for p in packets:
            peer.stage(bytes(p))
            peer.send_staged(now, wall, out)
        return
    mtu = peer.device.mtu
    sizes = []
    padded: dict[int, int] = {}  # the segments of a super-segment share a length
    for p in packets:
        length = len(p)
        size = padded.get(length)
        if size is None:
            size = padded[length] = padded_length(length, mtu) + _OVERHEAD
        sizes.append(size)
    buf = bytearray(sum(sizes))
    mv = memoryview(buf)
    seal = kp.send.encrypt_into
    pack = _TRANSPORT.pack_into
    pack_nonce = _NONCE.pack
    receiver = kp.remote_index
    counter = kp.send_counter
    off = 0
    for p, size in zip(packets, sizes, strict=True):
        pad = size - _OVERHEAD - len(p)
        if pad:
            p = bytes(p) + bytes(pad)
        pack(mv, off, _KIND, receiver, counter)
        seal(pack_nonce(counter), p, None, mv[off + _HDR : off + size])
        counter += 1
        off += size
    kp.send_counter = counter
    out.append(SendBatch(endpoint, buf, sizes))
    peer.tx_bytes += len(buf)
    peer.timers.on_data_batch_sent(now)
    peer.keep_key_fresh_sending(kp, now, wall, out)


class _Touched:
    """What a batch did to one peer, applied once when the batch settles."""

    __slots__ = ("peer", "rx", "data")

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.rx = 0
        self.data = 0  # data (not keepalive) packets authenticated


def decapsulate_batch(
    dev: Device, datagrams: Sequence[Buffer], source: Endpoint, now: float, wall: float
) -> list[Action]:
    out: list[Action] = []
    plain: list[bytes] = []
    touched: dict[int, _Touched] = {}
    routes: dict[bytes, object] = {}
    last_receiver = -1  # the receiver whose keypair is cached below
    kp: Keypair | None = None
    tp: _Touched | None = None
    confirm = False  # kp is its peer's ``next``: the first packet on it confirms it
    indices = dev.indices
    unpack = _TRANSPORT.unpack_from
    pack_nonce = _NONCE.pack
    lookup4 = dev.allowed_ips.lookup4
    lookup6 = dev.allowed_ips.lookup6
    for d in datagrams:
        size = len(d)
        if size < _OVERHEAD:
            kind = 0
        else:
            kind, receiver, counter = unpack(d)
        if kind != _KIND:
            _settle(out, plain, touched, source, now, wall)
            last_receiver = -1
            dev.receive_handshake_message(bytes(d), source, now, wall, out)
            continue
        if receiver != last_receiver:
            last_receiver = -1
            entry = indices.get(receiver)
            kp = entry.keypair if entry is not None else None
            if kp is None or entry is None:
                dev.drop(DropReason.UNKNOWN_INDEX, source, out)
                continue
            if now - kp.created >= REJECT_AFTER_TIME:
                dev.drop(DropReason.KEY_EXPIRED, source, out)
                continue
            last_receiver = receiver
            peer = entry.peer
            confirm = kp is peer.keypairs.next
            tp = touched.get(id(peer))
            if tp is None:
                tp = touched[id(peer)] = _Touched(peer)
            replay = kp.replay
            decrypt = kp.receive.decrypt
        assert tp is not None and kp is not None
        # check() also refuses counters at or past REJECT_AFTER_MESSAGES.
        if not replay.check(counter):
            expired = counter >= REJECT_AFTER_MESSAGES
            dev.drop(DropReason.KEY_EXPIRED if expired else DropReason.REPLAY, source, out)
            continue
        try:
            p = decrypt(pack_nonce(counter), memoryview(d)[_HDR:], None)
        except InvalidTag:
            dev.drop(DropReason.DECRYPT, source, out)
            continue
        if not replay.update(counter):
            dev.drop(DropReason.REPLAY, source, out)
            continue
        # Authenticated from here on.
        tp.rx += size
        if confirm:
            confirm = False
            _confirm(dev, tp.peer, kp, source, now, wall, out)
        if not p:
            if dev.verbose:
                out.append(LogEvent(f"{tp.peer.name} - Receiving keepalive packet"))
            continue
        tp.data += 1
        # Source and total length from the IP header; the route cache is keyed by
        # the source address bytes (4 or 16 long, so the families cannot collide).
        plen = len(p)
        v = p[0] >> 4
        if v == 4 and plen >= 20:
            src = p[12:16]
            length = (p[2] << 8) | p[3]
            bad = length > plen or length < 20
        elif v == 6 and plen >= 40:
            src = p[8:24]
            length = 40 + ((p[4] << 8) | p[5])
            bad = length > plen
        else:
            dev.drop(DropReason.NOT_IP, source, out)
            continue
        if bad:
            dev.drop(DropReason.BAD_INNER_LENGTH, source, out)
            continue
        owner = routes.get(src, _NO_ROUTE)
        if owner is _NO_ROUTE:
            owner = routes[src] = (lookup4 if v == 4 else lookup6)(int.from_bytes(src, "big"))
        if owner is not tp.peer:
            dev.drop(DropReason.DISALLOWED_SOURCE, source, out)
            continue
        plain.append(p[:length] if length < plen else p)
    _settle(out, plain, touched, source, now, wall)
    return out


def _confirm(
    dev: Device, peer: Peer, kp: Keypair, source: Endpoint, now: float, wall: float,
    out: list[Action],
) -> None:
    """The initiator's first transport message on the responder's ``next``
    keypair: promote it, complete the handshake and send what was staged
    (from ``source``, where the initiator is now)."""
    peer.endpoint = source
    retired = peer.keypairs.confirm(kp)
    if retired is not None:
        dev.release_index(retired.local_index)
    dev.handshake_complete(peer, now, wall)
    peer.send_staged(now, wall, out)


def _settle(
    out: list[Action],
    plain: list[bytes],
    touched: dict[int, _Touched],
    source: Endpoint,
    now: float,
    wall: float,
) -> None:
    """Emit what the batch so far decrypted and apply what it did to each peer
    (a function, not a closure: closures turn the loop's locals into cells)."""
    if plain:
        out.append(WriteTun(plain.copy()))
        plain.clear()
    for t in touched.values():
        _settle_peer(t, source, now, wall, out)
    touched.clear()


def _settle_peer(t: _Touched, source: Endpoint, now: float, wall: float, out: list[Action]) -> None:
    peer = t.peer
    if t.rx == 0:
        return
    peer.endpoint = source
    peer.rx_bytes += t.rx
    peer.keep_key_fresh_receiving(now, wall, out)
    peer.timers.on_data_batch_received(now, t.data)
