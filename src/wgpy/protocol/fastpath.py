"""Batched data paths: many packets in, one action per peer out.

Theory of operation.  ``Device.encapsulate``/``decapsulate`` handle one
packet and return per-packet actions; at a few Gbit/s the Python around the
~1.7 µs AEAD call is what costs.  These functions take a whole batch (the
segments of a TUN super-segment, the datagrams of a GRO read) and do per
packet only what must be per packet: route lookup (cached while the
destination repeats), counter, padding, the AEAD into one preallocated
buffer, the replay window, the inner source check (cached).  Per peer and
batch they do once what is idempotent within one ``now``: timers, endpoint,
byte counters, key freshness.  Anything unusual (a handshake message, a
keypair awaiting confirmation, a datagram that fails a check) goes to the
single-packet path, after the batch so far has been settled, so its
behaviour and drop accounting are exactly those of ``decapsulate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from wgpy.protocol import messages
from wgpy.protocol.constants import REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME
from wgpy.protocol.crypto import NONCE, InvalidTag
from wgpy.protocol.errors import DropReason
from wgpy.protocol.events import Action, Endpoint, LogEvent, SendBatch, WriteTunBatch
from wgpy.protocol.peer import padded_length

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
        # ippacket.destination, inlined; the address bytes (4 or 16) key the cache.
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
        for p in packets:
            peer.send_packet(bytes(p), now, wall, out)
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
    peer._keep_key_fresh_sending(kp, now, wall, out)


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
    last_receiver = -1
    kp: Keypair | None = None
    tp: _Touched | None = None
    indices = dev._indices
    unpack = _TRANSPORT.unpack_from
    pack_nonce = _NONCE.pack
    lookup4 = dev.allowed_ips.lookup4
    lookup6 = dev.allowed_ips.lookup6
    for d in datagrams:
        size = len(d)
        # Type 4 as a little-endian u32: d[0] == 4 and d[1:4] zero.
        if size >= _OVERHEAD:
            kind, receiver, counter = unpack(d)
            fast = kind == messages.MESSAGE_TRANSPORT
        else:
            fast = False
        if fast:
            if receiver != last_receiver:
                entry = indices.get(receiver)
                kp = entry.keypair if entry is not None else None
                last_receiver = receiver if kp is not None else -1
                if kp is not None and entry is not None:
                    peer = entry.peer
                    if kp is peer.keypairs.next or now - kp.created >= REJECT_AFTER_TIME:
                        kp = None
                        last_receiver = -1
                    else:
                        tp = touched.get(id(peer))
                        if tp is None:
                            tp = touched[id(peer)] = _Touched(peer)
                        replay = kp.replay
                        decrypt = kp.receive.decrypt
            # check() also refuses counters at or past REJECT_AFTER_MESSAGES.
            fast = kp is not None and replay.check(counter)
        if not fast:
            _settle(out, plain, touched, source, now, wall)
            last_receiver = -1
            out.extend(dev.decapsulate(bytes(d), source, now, wall))
            continue
        assert tp is not None
        try:
            p = decrypt(pack_nonce(counter), memoryview(d)[_HDR:], None)
        except InvalidTag:
            dev._drop(DropReason.DECRYPT, source, out)
            continue
        if not replay.update(counter):
            dev._drop(DropReason.REPLAY, source, out)
            continue
        # Authenticated from here on.
        tp.rx += size
        if not p:
            if dev.verbose:
                out.append(LogEvent(True, f"{tp.peer.name} - Receiving keepalive packet"))
            continue
        tp.data += 1
        # ippacket.source_and_length, inlined; the route cache is keyed by the
        # source address bytes (4 or 16 long, so the families cannot collide).
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
            dev._drop(DropReason.NOT_IP, source, out)
            continue
        if bad:
            dev._drop(DropReason.BAD_INNER_LENGTH, source, out)
            continue
        owner = routes.get(src, _NO_ROUTE)
        if owner is _NO_ROUTE:
            owner = routes[src] = (lookup4 if v == 4 else lookup6)(int.from_bytes(src, "big"))
        if owner is not tp.peer:
            dev._drop(DropReason.DISALLOWED_SOURCE, source, out)
            continue
        plain.append(p[:length] if length < plen else p)
    _settle(out, plain, touched, source, now, wall)
    return out


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
        out.append(WriteTunBatch(plain.copy()))
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
